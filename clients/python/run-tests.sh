#!/usr/bin/env bash
# The Python client's tests: installs the package from this directory into the repository's
# .venv (as a user would, with pip), checks the generated stubs match proto/, and runs pytest
# against a real local cluster started from the built binaries ($SHARDSIGN_BIN_DIR, default
# target/debug). Run from anywhere; scripts/test.sh calls it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || scripts/setup-python.sh
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall ./clients/python
clients/python/generate.sh --check
cd clients/python/tests
SHARDSIGN_BIN_DIR=${SHARDSIGN_BIN_DIR:-$OLDPWD/target/debug} ../../../.venv/bin/python -m pytest -q -p no:cacheprovider .
