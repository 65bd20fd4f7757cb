#!/usr/bin/env bash
# Measures git-credential-mayfly's `get` beside git's own credential-cache and /bin/true,
# in one hyperfine run, and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's hyperfine 1.15 has no --input; 1.20 does.
if ! hyperfine --version 2>/dev/null | grep -qE 'hyperfine 1\.(1[6-9]|[2-9][0-9])'; then
    cargo install hyperfine@1.20.0 --locked
fi
# Measure the binaries exactly as install.sh builds them.
./install.sh --prefix target/bench-bin
MAYFLY_BIN_DIR="$PWD/target/bench-bin" cargo bench -p mayfly-tests --bench git_helper --locked
# What a hostile 64 KiB request costs mayfly-sts, and exchange latency while they arrive.
MAYFLY_BIN_DIR="$PWD/target/bench-bin" cargo bench -p mayfly-tests --bench sts_hostile --locked
# Exchanges with 100 Cedar policies: server CPU per exchange beside one RS256 verify plus
# one ES256 sign, and latency at concurrency 1, 8 and 64 (MAYFLY_BENCH_* keep it short).
MAYFLY_BIN_DIR="$PWD/target/bench-bin" cargo bench -p mayfly-tests --bench sts_throughput --locked
# Two replicas on one PostgreSQL beside one replica on redb: exchanges/s, p50 and p99 at
# concurrency 64, plain and through a session (needs PostgreSQL installed).
MAYFLY_BIN_DIR="$PWD/target/bench-bin" cargo bench -p mayfly-tests --bench sts_replicas --locked

# What a hookless tool's shim and a `mayfly exec` session add to the command they run
# (no route matches, so this is the wrapping alone: config read, PATH walk, exec; and for
# exec, the session directory, wiring, signal handling and the end-of-session sweep).
bin="$PWD/target/bench-bin"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
ln -s "$bin/mayfly-shim" "$scratch/npm"
: > "$scratch/config.toml"
export MAYFLY_CONFIG="$scratch/config.toml"
if command -v npm >/dev/null 2>&1; then
    hyperfine -N --warmup 5 --runs 30 "npm --version" "$scratch/npm --version"
fi
hyperfine -N --warmup 20 --runs 200 "/bin/true" "$bin/mayfly exec -- /bin/true"

# What a helper costs around its exchange (mayfly-sts on loopback): a cold `get` beside
# the exchange alone, a refresh beside a cold `get`, a session's end with 1/10/30 tokens
# beside one with none; medians and ratios.
MAYFLY_BIN_DIR="$bin" cargo bench -p mayfly-tests --bench client_costs --locked

# What `mayfly exec --proxy` adds: a small GET through the proxy (token cached) beside the
# same GET direct, p50/p99; a 200 MB `git clone` through the proxy beside the helper's.
MAYFLY_BIN_DIR="$bin" cargo bench -p mayfly-tests --bench proxy --locked

# Cache size: status, session end and --redact at 1 ... 10,000 cached entries (flat is
# the goal), with the release binaries.
bench/cache_size.sh "$bin"
