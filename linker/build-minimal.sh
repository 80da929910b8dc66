#!/usr/bin/env bash
# Build DockNet services as minimal static binaries: static, stripped, position-independent
# (static-PIE), unused sections removed. Usage: linker/build-minimal.sh -p dn-echo [-p ...]
# Output: target/x86_64-unknown-linux-gnu/minimal/<bin> (or the host's target triple).
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
# - crt-static + relocation-model=pie: glibc's static-PIE (no dynamic loader, ASLR kept).
# - --gc-sections: drop every section nothing references (with -ffunction-sections style
#   codegen, which rustc does by default).
# - --build-id=none, -z norelro off? no: keep RELRO; drop the build id so identical input
#   gives identical bytes (reproducible images).
# - the linker script linker/minimal.ld only discards notes and comment sections.
# Passing --target makes RUSTFLAGS apply to the service, not to build scripts.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=pie \
  -C link-arg=-Wl,--gc-sections -C link-arg=-Wl,--build-id=none \
  -C link-arg=-Wl,-T,$PWD/linker/minimal.ld"
exec cargo build --profile minimal --target "$target" "$@"
