#!/bin/sh
# Compile linker/abi-check.c against glibc's headers (gcc) and musl's (musl-gcc), run
# both, and fail unless they print the same: the struct layouts and constants the
# gnu-target Rust code and musl's libc.a must agree on (linker/README.md, "ABI audit").
# Run by linker/build-minimal.sh before every musl link; prints nothing when they agree.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -Wall -Werror -o "$tmp/glibc" "$here/abi-check.c"
musl-gcc -static -Wall -Werror -o "$tmp/musl" "$here/abi-check.c"
"$tmp/glibc" >"$tmp/glibc.txt"
"$tmp/musl" >"$tmp/musl.txt"
if ! diff -u "$tmp/glibc.txt" "$tmp/musl.txt" >"$tmp/diff"; then
    echo "abi-check.sh: glibc (-) and musl (+) disagree on an ABI detail the musl link relies on:" >&2
    cat "$tmp/diff" >&2
    exit 1
fi
