#!/usr/bin/env bash
# Builds mayfly in release mode and installs its binaries into a prefix.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: ./install.sh [--prefix DIR] [--fast]
       ./install.sh --from FILE_OR_URL [--sha256 HEX] [--prefix DIR]

Builds mayfly (release mode), or takes a release archive, and installs into DIR
(default: ~/.local/bin):
  mayfly                  the command: setup, exec, doctor, status, audit, explain, demo
  mayfly-demo             the demo `mayfly demo` runs (development servers on loopback)
  git-credential-mayfly   git's credential helper
  mayfly-kube-credential  kubectl's exec credential plugin
  terraform-credentials-mayfly  Terraform's credentials helper
  mayfly-aws-credential   the AWS CLI's and SDKs' credential_process
  cargo-credential-mayfly cargo's credential provider
  docker-credential-mayfly  the docker/OCI credential helper (docker, skopeo, podman, crane)
  bazel-credential-mayfly Bazel's credential helper (--credential_helper)
  vault-token-helper-mayfly  Vault's and OpenBao's token_helper
  mayfly-kubelet-credential  the kubelet's image credential provider
  mayfly-shim             npm, pnpm, yarn and twine, which have no credential hook
  mayfly-sts              the reference token exchange

Needs: cargo (Rust 1.89 or newer) to build; tar, gzip and sha256sum for a release archive.
The demo and the git helper need git 2.46 or newer.

Options:
  --prefix DIR        install into DIR instead of ~/.local/bin
  --fast              skip link-time optimisation: builds in about a third of the time, for
                      trying mayfly out; binaries are larger and a little slower to start
  --from FILE_OR_URL  install the binaries of a release archive
                      (mayfly-VERSION-TARGET.tar.gz) instead of building; its SHA-256 is
                      checked before anything is extracted
  --sha256 HEX        the archive's expected SHA-256; without it, the line for the archive
                      in the SHA256SUMS beside it (which only proves the download is whole:
                      a checksum from the same server proves nothing about who made it)
  -h, --help          show this help
USAGE
}

prefix="${HOME:?HOME is not set}/.local/bin"
fast=0
from=""
sha256=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }; prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --from) [ $# -ge 2 ] || { echo "install.sh: --from needs a file or URL" >&2; exit 2; }; from="$2"; shift 2 ;;
        --from=*) from="${1#--from=}"; shift ;;
        --sha256) [ $# -ge 2 ] || { echo "install.sh: --sha256 needs a checksum" >&2; exit 2; }; sha256="$2"; shift 2 ;;
        --sha256=*) sha256="${1#--sha256=}"; shift ;;
        --fast) fast=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option \`$1\` (see --help)" >&2; exit 2 ;;
    esac
done

[ -z "$sha256" ] || [ -n "$from" ] || { echo "install.sh: --sha256 goes with --from" >&2; exit 2; }

# Where every binary goes, and what `next:` says.
finish() {
    case ":$PATH:" in
        *":$prefix:"*) ;;
        *) echo "note: $prefix is not on PATH; add it, or run $prefix/mayfly" ;;
    esac
    echo "next: $prefix/mayfly demo"
}

# A release archive: fetched (a URL) or read (a file), its SHA-256 checked against --sha256
# or the SHA256SUMS beside it before anything is extracted, then its bin/ installed.
if [ -n "$from" ]; then
    digest() {
        if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | awk '{print $1}'
        else shasum -a 256 "$1" | awk '{print $1}'; fi
    }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    name=${from##*/}
    name=${name%%\?*}
    case "$name" in
        mayfly-*.tar.gz) ;;
        *) echo "install.sh: \`$name\` is not a release archive (mayfly-VERSION-TARGET.tar.gz)" >&2; exit 2 ;;
    esac
    case "$from" in
        https://*|http://*)
            fetch() { curl --proto '=https,http' --fail --silent --show-error --location --retry 3 --output "$2" "$1"; }
            command -v curl >/dev/null 2>&1 || { echo "install.sh: \`curl\` not found: it downloads $from" >&2; exit 1; }
            fetch "$from" "$work/$name" || { echo "install.sh: cannot download $from" >&2; exit 1; }
            if [ -z "$sha256" ]; then
                fetch "${from%/*}/SHA256SUMS" "$work/SHA256SUMS" 2>/dev/null || true
            fi
            ;;
        *)
            [ -f "$from" ] || { echo "install.sh: \`$from\` does not exist" >&2; exit 1; }
            cp "$from" "$work/$name"
            [ -n "$sha256" ] || [ ! -f "$(dirname "$from")/SHA256SUMS" ] || cp "$(dirname "$from")/SHA256SUMS" "$work/SHA256SUMS"
            ;;
    esac
    if [ -z "$sha256" ]; then
        [ -f "$work/SHA256SUMS" ] || { echo "install.sh: no checksum for $name: give --sha256 HEX or put SHA256SUMS beside it" >&2; exit 1; }
        sha256=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1; exit }' "$work/SHA256SUMS")
        [ -n "$sha256" ] || { echo "install.sh: SHA256SUMS has no line for $name" >&2; exit 1; }
    fi
    expected=$(printf '%s' "$sha256" | tr 'A-F' 'a-f')
    case "$expected" in
        *[!0-9a-f]*|'') echo "install.sh: \`$sha256\` is not a SHA-256 (64 hex digits)" >&2; exit 2 ;;
    esac
    [ ${#expected} -eq 64 ] || { echo "install.sh: \`$sha256\` is not a SHA-256 (64 hex digits)" >&2; exit 2; }
    actual=$(digest "$work/$name")
    if [ "$actual" != "$expected" ]; then
        echo "install.sh: checksum mismatch for $name: expected $expected, got $actual; nothing installed" >&2
        exit 1
    fi
    mkdir "$work/x"
    tar -xzf "$work/$name" -C "$work/x" --no-same-owner
    top=$(find "$work/x" -mindepth 1 -maxdepth 1 -type d -name 'mayfly-*')
    [ -n "$top" ] && [ -d "$top/bin" ] || { echo "install.sh: $name holds no mayfly-*/bin directory" >&2; exit 1; }
    arch=${top##*/}
    case "$arch" in
        *-"$(uname -m)"-*) ;;
        *) echo "install.sh: $name is built for another machine (this one is $(uname -m))" >&2; exit 1 ;;
    esac
    mkdir -p "$prefix"
    for bin in "$top"/bin/*; do
        install -m 0755 "$bin" "$prefix/${bin##*/}"
        echo "installed $prefix/${bin##*/}"
    done
    finish
    exit 0
fi

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

# On Linux (glibc) the binaries are static-pie: no dynamic loader or shared libraries to
# load on every credential request, still at a random address (ASLR). The flags go only to
# the target's code (explicit --target), not to build scripts or proc macros, which must
# stay dynamic.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="${RUSTFLAGS:-} $(sh release/rustflags.sh "$host")"
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
bins="mayfly mayfly-demo mayfly-sts git-credential-mayfly mayfly-kube-credential terraform-credentials-mayfly mayfly-aws-credential cargo-credential-mayfly docker-credential-mayfly bazel-credential-mayfly vault-token-helper-mayfly mayfly-kubelet-credential mayfly-shim"
cargo build --release --locked --target "$host" $(printf -- '-p %s ' $bins)
mkdir -p "$prefix"
for bin in $bins; do
    install -m 0755 "$target_dir/$host/release/$bin" "$prefix/$bin"
    echo "installed $prefix/$bin"
done
finish
