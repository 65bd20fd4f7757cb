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
