#!/bin/sh
# Prints the RUSTFLAGS mayfly's binaries are built with for a target triple (default: the
# host's): on Linux (glibc), static-pie. Helpers start on every credential request, so
# they carry no dynamic loader and no shared libraries to map; they stay
# position-independent so the kernel loads them at a random address (ASLR), and their
# relocations are packed (`-z pack-relative-relocs`) so applying them costs little.
# install.sh and release/build.sh use it; pass the flags with an explicit `--target`, so
# build scripts and proc macros stay dynamic.
set -eu
target=${1:-$(rustc -vV | sed -n 's/^host: //p')}
case "$target" in
    *-linux-gnu)
        echo "-C target-feature=+crt-static -C relocation-model=pie -C link-arg=-Wl,-z,pack-relative-relocs"
        ;;
    *) echo "" ;;
esac
