#!/usr/bin/env bash
# Quick start: build the binaries (release), start a local cluster (three signer nodes and a
# coordinator, state in .shardsign/), run a key ceremony, give the key a signed policy, create an
# agent API key, and sign a first transaction as that agent.
#
#   ./scripts/quickstart.sh          then: target/release/shardsign --help
#   target/release/shardsign dev down   stops the cluster (state stays in .shardsign/)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins
exec target/release/shardsign dev up --demo "$@"
