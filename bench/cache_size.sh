#!/usr/bin/env bash
# What `mayfly status`, the end of a `mayfly exec` session and `mayfly exec --redact` cost
# as the token cache grows: 1, 100, 1,000 and 10,000 live entries of other sessions,
# written through the real cache API (crates/core/examples/fill_cache.rs). Prints each
# mean and its ratio to the 1-entry case; flat means ratios near 1.
#
# Usage: bench/cache_size.sh BIN_DIR   (the directory holding the `mayfly` binary);
# MAYFLY_BENCH_SIZES="1 100" and MAYFLY_BENCH_RUNS=5 keep it short.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cd "${1:?usage: bench/cache_size.sh BIN_DIR}" && pwd)
cargo build -q -p mayfly-core --example fill_cache --locked
fill="$PWD/target/debug/examples/fill_cache"

scratch=$(mktemp -d)
runtime=$(mktemp -d /dev/shm/mayfly-bench-XXXXXX)
trap 'rm -rf "$scratch" "$runtime"' EXIT
: > "$scratch/config.toml"
export MAYFLY_CONFIG="$scratch/config.toml" MAYFLY_RUNTIME_DIR="$runtime/rt"
export MAYFLY_AUDIT_LOG="$scratch/audit.jsonl" MAYFLY_KEY_STORE=runtime

declare -A base
printf '%-8s %-14s %10s %8s\n' entries command "mean ms" ratio
for n in ${MAYFLY_BENCH_SIZES:-1 100 1000 10000}; do
    export MAYFLY_CACHE_DIR="$scratch/tokens-$n"
    "$fill" "$n"
    hyperfine -N --warmup 3 --runs "${MAYFLY_BENCH_RUNS:-20}" --style none --export-csv "$scratch/$n.csv" \
        -n status "$bin/mayfly status" \
        -n exec-end "$bin/mayfly exec -- /bin/true" \
        -n redact "$bin/mayfly exec --redact -- /bin/true" >/dev/null
    while IFS=, read -r name mean _; do
        ms=$(awk -v m="$mean" 'BEGIN { printf "%.1f", m * 1000 }')
        [[ $n == 1 ]] && base[$name]=$mean
        ratio=$(awk -v m="$mean" -v b="${base[$name]}" 'BEGIN { printf "%.2f", m / b }')
        printf '%-8s %-14s %10s %8s\n' "$n" "$name" "$ms" "${ratio}x"
    done < <(tail -n +2 "$scratch/$n.csv")
done
