#!/usr/bin/env bash
# DockNet-rs demo: a NAT-balanced web cluster behind one virtual IP.
#
# Builds the release binaries, starts docknetd on a TAP (the host kernel gets
# 10.88.0.1/16), writes a cluster file (dn-nat on the VIP 10.88.0.100:80, three dn-httpd
# members on 10.88.1.0/24), runs `docknetctl cluster up` on it, fetches the page through
# the VIP with curl, sends 300 requests on new connections and shows how they spread,
# and cleans everything up. Needs root (the TAP).
#
#   bash tests/demo.sh          # the cluster demo
#   bash tests/demo.sh --keep   # ... and keep it up until Ctrl-C (open the printed URL)
#   bash tests/demo.sh echo     # the echo demo (no root needed): tests/demo-echo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "echo" ]; then
    exec bash tests/demo-echo.sh
fi
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
if [ "$(id -u)" != 0 ]; then
    echo "The cluster demo needs root (it makes a TAP interface); running the echo demo instead."
    echo "(sudo bash tests/demo.sh for the cluster demo.)"
    exec bash tests/demo-echo.sh
fi
for tool in curl ip; do
    command -v "$tool" >/dev/null || { echo "the demo needs $tool (apt-get install curl iproute2)" >&2; exit 1; }
done

cargo build --release --bins
BIN="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"

RUN="$(mktemp -d /tmp/docknet-demo.XXXXXX)"
TAP="dndemo$$"
TAP="${TAP:0:15}"
VIP=10.88.0.100
DAEMON_PID=""
cleanup() {
    set +e
    if [ -n "$DAEMON_PID" ]; then
        # Stops the cluster's processes and removes every pipe (SIGTERM alone would
        # leave them for a restarted docknetd).
        "$BIN/docknetctl" --run-dir "$RUN" shutdown --remove-all >/dev/null 2>&1
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    ip link del "$TAP" 2>/dev/null
    umount -l "$RUN/pipes" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

ctl() { "$BIN/docknetctl" --run-dir "$RUN" "$@"; }

echo "== docknetd --run-dir $RUN --nic tap:$TAP"
"$BIN/docknetd" --run-dir "$RUN" --nic "tap:$TAP" 2>"$RUN/docknetd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do
    grep -q "ready on" "$RUN/docknetd.log" 2>/dev/null && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$RUN/docknetd.log" >&2; exit 1; }
    sleep 0.1
done
grep -q "ready on" "$RUN/docknetd.log" || { echo "docknetd did not start:" >&2; cat "$RUN/docknetd.log" >&2; exit 1; }

cat >"$RUN/web.toml" <<TOML
name = "web"
vip = "$VIP:80"
replicas = 3
policy = "maglev"                 # maglev | rr | least-conn
binary = "$BIN/dn-httpd"
args = ["--backlog", "128"]
subnet = "10.88.1.0/24"           # member addresses
health = { kind = "http", path = "/", interval_ms = 200 }
TOML
echo "== the cluster file ($RUN/web.toml):"
sed 's/^/   /' "$RUN/web.toml"
echo "== docknetctl cluster up web.toml   (returns once every member is healthy)"
ctl cluster up "$RUN/web.toml"

echo "== curl http://$VIP/   (the kernel, through the TAP, to dn-nat, to a member)"
curl -sS --max-time 5 "http://$VIP/" | head -n 8
echo "   ..."

N=300
echo "== $N requests on new connections to the VIP"
codes=$(for _ in $(seq $N); do curl -s -o /dev/null --max-time 5 -w '%{http_code}\n' "http://$VIP/"; done | sort | uniq -c)
echo "$codes" | sed 's/^/   status /'
sleep 0.3   # the NAT reports what it saw every 100 ms
echo "== how they spread (docknetctl cluster status web)"
ctl cluster status web

if [ "$KEEP" = 1 ]; then
    echo
    echo "Open http://$VIP/ in a browser on this host. Ctrl-C stops the demo and cleans up."
    echo "(In another shell: $BIN/docknetctl --run-dir $RUN cluster status web)"
    while kill -0 "$DAEMON_PID" 2>/dev/null; do sleep 1; done
else
    echo "== open http://$VIP/ while it runs: bash tests/demo.sh --keep"
fi
echo "== demo finished; cleaning up $RUN"
