#!/usr/bin/env bash
# Builds the release twice, from scratch each time (two fresh target directories), and
# compares the checksums: the same commit and SOURCE_DATE_EPOCH must give the same bytes.
# Takes two full release builds' time; not part of .ci/run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mayfly-reproduce.XXXXXX")
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct)}
for run in one two; do
    echo "release/reproduce.sh: build $run" >&2
    "$root/release/build.sh" --target-dir "$work/target-$run" --out "$work/out-$run" >/dev/null
done
if diff -u "$work/out-one/SHA256SUMS" "$work/out-two/SHA256SUMS"; then
    echo "release/reproduce.sh: both builds gave the same bytes"
    cat "$work/out-one/SHA256SUMS"
else
    echo "release/reproduce.sh: the two builds differ (above)" >&2
    exit 1
fi
