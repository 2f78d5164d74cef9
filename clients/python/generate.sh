#!/usr/bin/env bash
# Regenerates the gRPC stubs (shardsign/v1/shardsign_pb2*.py) from proto/ with a pinned
# grpcio-tools in a throw-away venv. The generated files are committed so that
# `pip install clients/python` needs no code generator; `--check` fails if they are stale.
set -euo pipefail
cd "$(dirname "$0")"
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q grpcio-tools==1.85.1 protobuf==7.36.2
out=$(mktemp -d)
"$venv/bin/python" -m grpc_tools.protoc -I ../../proto --python_out="$out" --grpc_python_out="$out" \
  ../../proto/shardsign/v1/shardsign.proto
if [ "${1:-}" = "--check" ]; then
  for f in shardsign_pb2.py shardsign_pb2_grpc.py; do
    cmp -s "$out/shardsign/v1/$f" "shardsign/v1/$f" || { echo "shardsign/v1/$f is stale: run clients/python/generate.sh" >&2; exit 1; }
  done
  echo "generated stubs are up to date"
else
  cp "$out/shardsign/v1/shardsign_pb2.py" "$out/shardsign/v1/shardsign_pb2_grpc.py" shardsign/v1/
  echo "regenerated shardsign/v1/shardsign_pb2.py and shardsign_pb2_grpc.py"
fi
rm -rf "$out"
