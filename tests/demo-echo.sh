#!/usr/bin/env bash
# DockNet-rs echo demo: two microservices exchange TCP echo streams through DockPipes.
# (`bash tests/demo.sh echo` runs it too.)
#
# Builds the release binaries, starts docknetd in a private temporary run directory,
# creates pipes a (10.88.0.2) and b (10.88.0.3), runs a dn-echo server on a and a
# verifying client on b (1 MB x 20) -- first through the master, then through a fast
# channel -- prints the results and the master's counters, and cleans everything up.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins
BIN="${CARGO_TARGET_DIR:-target}/release"

RUN="$(mktemp -d /tmp/docknet-demo.XXXXXX)"
DAEMON_PID=""
SERVER_PID=""
cleanup() {
    set +e
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    if [ -n "$DAEMON_PID" ]; then
        # SIGTERM alone would leave the pipes for a restarted docknetd.
        "$BIN/docknetctl" --run-dir "$RUN" shutdown --remove-all >/dev/null 2>&1
        kill -TERM "$DAEMON_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    umount -l "$RUN/pipes" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

ctl() { "$BIN/docknetctl" --run-dir "$RUN" "$@"; }

echo "== docknetd --run-dir $RUN --nic none"
"$BIN/docknetd" --run-dir "$RUN" --nic none 2>"$RUN/docknetd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do
    grep -q "ready on" "$RUN/docknetd.log" 2>/dev/null && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$RUN/docknetd.log" >&2; exit 1; }
    sleep 0.1
done
grep -q "ready on" "$RUN/docknetd.log" || { echo "docknetd did not start:" >&2; cat "$RUN/docknetd.log" >&2; exit 1; }

echo "== docknetctl pipe create a / b"
ctl pipe create a --ip 10.88.0.2/16
ctl pipe create b --ip 10.88.0.3/16

echo "== DOCKNET_PIPE=$RUN/pipes/a dn-echo server --port 7 &"
DOCKNET_PIPE="$RUN/pipes/a" "$BIN/dn-echo" server --port 7 >"$RUN/server.out" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    grep -q listening "$RUN/server.out" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$RUN/server.out" >&2; exit 1; }
    sleep 0.1
done
grep -q listening "$RUN/server.out" || { echo "dn-echo server did not start:" >&2; cat "$RUN/server.out" >&2; exit 1; }

echo "== through the master: DOCKNET_PIPE=$RUN/pipes/b dn-echo client --to 10.88.0.2:7 --size 1000000 --count 20"
DOCKNET_PIPE="$RUN/pipes/b" "$BIN/dn-echo" client --to 10.88.0.2:7 --size 1000000 --count 20

echo "== through a fast channel: docknetctl fc create a b; same client again"
ctl fc create a b
DOCKNET_PIPE="$RUN/pipes/b" "$BIN/dn-echo" client --to 10.88.0.2:7 --size 1000000 --count 20

echo "== docknetctl stats (frames the master switched; the fast-channel run adds almost none)"
ctl stats
echo "== demo finished; cleaning up $RUN"
