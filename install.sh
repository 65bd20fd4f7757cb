#!/usr/bin/env bash
# Builds mayfly in release mode and installs its binaries into a prefix.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: ./install.sh [--prefix DIR] [--pie] [--fast]

Builds mayfly (release mode) and installs into DIR (default: ~/.local/bin):
  mayfly                  the command: setup, exec, doctor, status, audit, explain, demo
  mayfly-demo             the demo `mayfly demo` runs (development servers on loopback)
  git-credential-mayfly   git's credential helper
  mayfly-kube-credential  kubectl's exec credential plugin
  terraform-credentials-mayfly  Terraform's credentials helper
  mayfly-aws-credential   the AWS CLI's and SDKs' credential_process
  cargo-credential-mayfly cargo's credential provider
  docker-credential-mayfly  the docker/OCI credential helper (docker, skopeo, podman, crane)
  mayfly-shim             npm, pnpm, yarn and twine, which have no credential hook
  mayfly-sts              the reference token exchange

Needs: cargo (Rust 1.89 or newer). The demo and the git helper need git 2.46 or newer.

Options:
  --prefix DIR   install into DIR instead of ~/.local/bin
  --pie          build position-independent binaries (ASLR), about 0.3 ms slower per
                 credential request; the default links statically at a fixed address
  --fast         skip link-time optimisation: builds in about a third of the time, for
                 trying mayfly out; binaries are larger and a little slower to start
  -h, --help     show this help
USAGE
}

prefix="${HOME:?HOME is not set}/.local/bin"
pie=0
fast=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }; prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --pie) pie=1; shift ;;
        --fast) fast=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option \`$1\` (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")"

if ! command -v cargo >/dev/null 2>&1; then
    echo "install.sh: \`cargo\` not found: install Rust (https://rustup.rs) and try again" >&2
    exit 1
fi
if ! command -v git >/dev/null 2>&1; then
    echo "install.sh: warning: \`git\` not found: the git helper and \`mayfly demo\` need git 2.46 or newer" >&2
else
    version=$(git --version | awk '{print $3}')
    major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
    if [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -lt 46 ]; }; then
        echo "install.sh: warning: git $version is older than 2.46: tokens fall back to username/password and \`mayfly demo\` will refuse to run" >&2
    fi
fi

# Helpers start on every credential request. On Linux (glibc) they are linked statically
# and, by default, at a fixed address: no dynamic loader, no shared libraries to map and
# no relocations to apply, which makes an unconfigured host cost what /bin/true costs.
# --pie keeps them position-independent (ASLR) for about 0.3 ms more per request.
# The flags go only to the target's code (explicit --target), not to build scripts or
# proc macros, which must stay dynamic.
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
    *-linux-gnu)
        if [ "$pie" = 1 ]; then
            export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs"
        else
            export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static"
        fi
        ;;
esac
# Where cargo puts what it builds: CARGO_TARGET_DIR, build.target-dir or ./target.
target_dir=$(cargo metadata --no-deps --format-version 1 --locked 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-target}
if [ "$fast" = 1 ]; then
    export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
    echo "install.sh: building mayfly without link-time optimisation (--fast)" >&2
else
    echo "install.sh: building mayfly in release mode; this takes several minutes (--fast for a quicker build)" >&2
fi
bins="mayfly mayfly-demo mayfly-sts git-credential-mayfly mayfly-kube-credential terraform-credentials-mayfly mayfly-aws-credential cargo-credential-mayfly docker-credential-mayfly mayfly-shim"
cargo build --release --locked --target "$host" $(printf -- '-p %s ' $bins)
mkdir -p "$prefix"
for bin in $bins; do
    install -m 0755 "$target_dir/$host/release/$bin" "$prefix/$bin"
    echo "installed $prefix/$bin"
done
case ":$PATH:" in
    *":$prefix:"*) ;;
    *) echo "note: $prefix is not on PATH; add it, or run $prefix/mayfly" ;;
esac
echo "next: $prefix/mayfly demo"
