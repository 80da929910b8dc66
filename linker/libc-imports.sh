#!/usr/bin/env bash
# List the libc symbols one minimal binary imports, for the ABI audit in linker/README.md:
# every symbol that musl's libc.a defines and that the Rust code, libgcc or the shims
# reference, with the libc.a member and who references it. Relinks the binary unstripped
# with a link map (-Wl,-Map,--cref) in a separate target directory, so the real build is
# untouched. Select exactly one binary:
#   linker/libc-imports.sh -p dn-httpd
#   linker/libc-imports.sh -p docknet-master --bin docknetd
set -euo pipefail
cd "$(dirname "$0")/.."
base=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TARGET_DIR=$base/libc-audit
mkdir -p "$CARGO_TARGET_DIR"
map=$CARGO_TARGET_DIR/link.map
rm -f "$map"
# Cargo would not relink an up-to-date binary (and so write no map): delete the linked
# executables of earlier runs in this audit-only directory; libraries stay built.
target=$(rustc -vV | sed -n 's/^host: //p')
find "$CARGO_TARGET_DIR/$target/minimal" -maxdepth 2 -type f -perm -u+x \
  ! -path '*/build/*' -delete 2>/dev/null || true
exe=$(RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-Map=$map -C link-arg=-Wl,--cref" \
  CARGO_PROFILE_MINIMAL_STRIP=false DOCKNET_MINIMAL_LIBC=musl \
  linker/build-minimal.sh --message-format=json-render-diagnostics "$@" |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[[ -s $map && -n $exe ]] || { echo "libc-imports.sh: no link map or executable" >&2; exit 1; }
echo "# $exe: libc symbol, musl libc.a member, referenced by"
# The cross-reference table: a symbol line (name, defining file), then one indented line
# per referencing file.
awk '
  function who(f) {
    if (f ~ /libgcc_eh\.a/) return "libgcc_eh"
    if (f ~ /libgcc\.a/) return "libgcc"
    if (f ~ /musl-shims\.o/) return "shims"
    if (f ~ /\.rcgu\.o/) return "rust"
    return ""
  }
  function flush() {
    if (sym != "" && def ~ /libc\.a\(/ && refs != "") {
      m = def; sub(/.*libc\.a\(/, "", m); sub(/\)$/, "", m)
      printf "%-36s %-28s %s\n", sym, m, substr(refs, 2)
    }
    sym = ""; refs = ""; seen_r = ""
  }
  /^Cross Reference Table/ { on = 1; next }
  !on || /^Symbol/ || /^$/ { next }
  /^[^ ]/ { flush(); sym = $1; def = $2; next }
  {
    w = who($1)
    if (w != "" && index(seen_r, "," w ",") == 0) { refs = refs "," w; seen_r = seen_r "," w "," }
  }
  END { flush() }
' "$map" | sort
echo "# weak references left undefined (null at run time; see linker/README.md)"
nm "$exe" | awk '$1 ~ /^[wv]$/ { print $2 }'
