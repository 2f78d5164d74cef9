#!/usr/bin/env bash
# Creates .venv at the repository root with the pinned test dependencies (eth-account for the
# independent cross-check of our Ethereum encodings). Idempotent: does nothing when the venv
# already matches scripts/requirements-test.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=scripts/requirements-test.txt
stamp=.venv/.requirements.sha256
wanted=$(sha256sum "$requirements" | cut -d' ' -f1)

if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "setup-python: $python not found; install Python 3.9+" >&2; exit 1; }
echo "setup-python: creating .venv with $($python --version 2>&1)"
rm -rf .venv
"$python" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
.venv/bin/python -c 'import eth_account; print("setup-python: eth-account", eth_account.__version__ if hasattr(eth_account, "__version__") else "installed")'
echo "$wanted" > "$stamp"
