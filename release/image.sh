#!/usr/bin/env bash
# Builds the mayfly-sts container image (release/Containerfile) with podman, from a
# static-pie mayfly-sts and this machine's CA certificates.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: release/image.sh BIN_DIR [TAG]

Builds the image TAG (default: mayfly-sts:VERSION) from BIN_DIR/mayfly-sts, which must be
statically linked (release/build.sh, or install.sh, builds it so), and
/etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates). The image's date is
SOURCE_DATE_EPOCH (default: the last commit's time).
USAGE
}

case "${1:-}" in -h|--help|'') usage; [ -n "${1:-}" ]; exit ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$1/mayfly-sts"
version=$(awk '/^\[workspace.package\]/ { p = 1; next } /^\[/ { p = 0 }
               p && /^version *=/ { gsub(/[" ]/, "", $0); sub(/^version=/, "", $0); print; exit }' "$root/Cargo.toml")
tag=${2:-mayfly-sts:$version}
certs=/etc/ssl/certs/ca-certificates.crt
[ -x "$bin" ] || { echo "release/image.sh: $bin is missing" >&2; exit 1; }
[ -f "$certs" ] || { echo "release/image.sh: $certs is missing: install ca-certificates" >&2; exit 1; }
command -v podman >/dev/null 2>&1 || { echo "release/image.sh: \`podman\` not found" >&2; exit 1; }
# An image FROM scratch has no loader: a binary that asks for one (a PT_INTERP program
# header) would not start.
field() { od -An -t "u$2" -j "$1" -N "$2" "$bin" | tr -d ' '; }
[ "$(od -An -c -j1 -N3 "$bin" | tr -d ' ')" = ELF ] \
    || { echo "release/image.sh: $bin is not an ELF binary" >&2; exit 1; }
phoff=$(field 32 8) phentsize=$(field 54 2) phnum=$(field 56 2)
for ((i = 0; i < phnum; i++)); do
    if [ "$(field $((phoff + i * phentsize)) 4)" = 3 ]; then
        echo "release/image.sh: $bin is not a statically linked binary (build it with release/build.sh)" >&2
        exit 1
    fi
done
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null) \
        || { echo "release/image.sh: set SOURCE_DATE_EPOCH (not a git checkout)" >&2; exit 1; }
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
install -m 0755 "$bin" "$context/mayfly-sts"
install -m 0644 "$certs" "$context/ca-certificates.crt"
podman build --quiet --timestamp "$SOURCE_DATE_EPOCH" --tag "$tag" \
    --file "$root/release/Containerfile" "$context"
