#!/usr/bin/env bash
# The test command: prepares the pinned Python venv for the eth-account cross-check and the
# system packages (tshark, PostgreSQL, ...), starts a throw-away PostgreSQL server (the registry
# tests run on SQLite and on PostgreSQL; $SHARDSIGN_TEST_POSTGRES, when set, names another
# server to use instead), builds the binaries, runs every Rust test in the workspace (unit,
# property, engine, cluster, cross-check, disk full, capture), a smoke of every fuzz target and
# the kept fuzz findings, the Python client's tests against a real local cluster, then the
# docker-compose cluster test (skipped, loudly, where no Docker engine runs). Extra arguments run only `cargo test` with them
# (e.g. `scripts/test.sh -p shardsign-eth`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
scripts/setup-system.sh
export SHARDSIGN_PYTHON="$PWD/.venv/bin/python"
if [ -z "${SHARDSIGN_TEST_POSTGRES:-}" ]; then
  eval "$(scripts/postgres.sh start)"
  trap 'scripts/postgres.sh stop' EXIT
fi
# The cluster tests start the real binaries: build them first (cargo test builds a binary only
# for its own package's integration tests).
cargo build --locked --workspace --bins
# The trust-model tests run one node as a cheater: a test-only binary, built on its own so that
# its `malicious` feature never reaches another build (.ci/run checks the workspace resolution).
cargo build --locked -p shardsign-node --features malicious --bin shardsign-node-malicious
if [ "$#" -gt 0 ]; then
  cargo test --locked "$@"
  exit
fi
cargo test --locked --workspace

echo "== the public-API suites again, the coordinator's registry on PostgreSQL"
SHARDSIGN_TEST_REGISTRY=postgres cargo test --locked -p shardsign-tests \
  --test agent_access --test approvals --test token_rules --test coordinator_api --test signing_surface

echo "== Prometheus alert rules (promtool check and unit tests)"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml

echo "== fuzz smoke (every decoder's target for a few seconds, then every kept finding)"
scripts/fuzz.sh smoke 5
scripts/fuzz.sh regressions

if [ -x clients/python/run-tests.sh ]; then
  echo "== Python client tests (pytest, real local cluster)"
  clients/python/run-tests.sh
fi

echo "== docker-compose cluster test"
if docker info >/dev/null 2>&1 && { command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; }; then
  SHARDSIGN_PROFILE=debug scripts/compose.sh test
  echo "== docker-compose HA test (--profile ha: PostgreSQL, two coordinators, one killed)"
  SHARDSIGN_PROFILE=debug scripts/compose.sh test-ha
else
  echo "##########################################################################"
  echo "## SKIPPED: the docker-compose cluster test needs a running Docker engine ##"
  echo "## and docker-compose; none here. It did NOT run and did NOT pass.        ##"
  echo "##########################################################################"
fi
