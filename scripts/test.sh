#!/usr/bin/env bash
# The test command: prepares the pinned Python venv for the eth-account cross-check, then runs
# every Rust test in the workspace (unit, property, engine, cross-check). Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh -p shardsign-eth`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
export SHARDSIGN_PYTHON="$PWD/.venv/bin/python"
if [ "$#" -eq 0 ]; then
  set -- --workspace
fi
# The cluster tests start the real binaries: build them first (cargo test builds a binary only
# for its own package's integration tests).
cargo build --locked --workspace --bins
exec cargo test --locked "$@"
