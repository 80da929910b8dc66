#!/usr/bin/env bash
# Build DockNet services as minimal static binaries: static, stripped, position-independent
# (static-PIE), unused sections removed. Usage: linker/build-minimal.sh -p dn-echo [-p ...]
# Output: target/x86_64-unknown-linux-gnu/minimal/<bin> (or the host's target triple).
#
# The C library: on x86_64 the binaries are linked against musl's libc.a (Debian
# musl-tools + musl-dev) through linker/musl-cc, which keeps the gnu target's prebuilt std
# and only swaps the libc underneath it; see linker/README.md (size, ABI audit, shims).
# DOCKNET_MINIMAL_LIBC picks it: `musl` (fail if musl is missing), `glibc` (glibc's
# libc.a, ~0.8 MB bigger), or unset = musl if installed, else glibc with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
# - crt-static + relocation-model=pie: static-PIE (no dynamic loader, ASLR kept).
# - --gc-sections: drop every section nothing references (with -ffunction-sections style
#   codegen, which rustc does by default).
# - --build-id=none: keep RELRO; drop the build id so identical input gives identical
#   bytes (reproducible images).
# - the linker script linker/minimal.ld only discards notes and comment sections.
# Passing --target makes RUSTFLAGS apply to the service, not to build scripts.
flags="-C target-feature=+crt-static -C relocation-model=pie \
  -C link-arg=-Wl,--gc-sections -C link-arg=-Wl,--build-id=none \
  -C link-arg=-Wl,-T,$PWD/linker/minimal.ld"

musl_libdir=${DOCKNET_MUSL_LIBDIR:-/usr/lib/x86_64-linux-musl}
have_musl() {
  [[ $target == x86_64-unknown-linux-gnu ]] && command -v musl-gcc >/dev/null &&
    [[ -f $musl_libdir/libc.a && -f $musl_libdir/rcrt1.o ]]
}
libc=${DOCKNET_MINIMAL_LIBC:-}
case "$libc" in
  musl)
    if ! have_musl; then
      echo "build-minimal.sh: DOCKNET_MINIMAL_LIBC=musl, but musl is not usable here" \
        "(needs an x86_64-unknown-linux-gnu host, musl-gcc and $musl_libdir/{libc.a,rcrt1.o}:" \
        "apt-get install musl-tools musl-dev)" >&2
      exit 1
    fi ;;
  glibc) ;;
  "")
    if have_musl; then
      libc=musl
    else
      libc=glibc
      echo "build-minimal.sh: warning: musl not found (apt-get install musl-tools musl-dev);" \
        "linking against glibc's libc.a instead: ~0.8 MB bigger, dn-httpd exceeds 1 MiB" >&2
    fi ;;
  *)
    echo "build-minimal.sh: DOCKNET_MINIMAL_LIBC must be musl or glibc, not '$libc'" >&2
    exit 1 ;;
esac
if [[ $libc == musl ]]; then
  # The struct layouts and constants the musl link relies on, glibc vs musl (~0.1 s).
  linker/abi-check.sh
  # Cargo does not know what linker/musl-cc links in: put a hash of it (and of musl's
  # libc.a, gcc's libgcc_eh.a and crtbeginS.o) into RUSTFLAGS, so editing the shims or a
  # new musl or gcc relinks. -D is a preprocessor option, which gcc ignores when it only
  # links.
  gcclib=$(dirname "$(gcc -print-libgcc-file-name)")
  rev=$(cat linker/musl-cc linker/musl-shims.c linker/musl-static-pie.specs \
    "$musl_libdir/libc.a" "$gcclib/libgcc_eh.a" "$gcclib/crtbeginS.o" \
    | sha256sum | cut -c1-16)
  flags="$flags -C linker=$PWD/linker/musl-cc -C link-arg=-DDOCKNET_MUSL_LINK=$rev"
fi
export RUSTFLAGS="${RUSTFLAGS:-} $flags"
exec cargo build --profile minimal --target "$target" "$@"
