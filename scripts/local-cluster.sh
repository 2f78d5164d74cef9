#!/usr/bin/env bash
# A local cluster by hand, with the real binaries: development certificates, three encrypted node
# stores, their configs, three nodes and a coordinator on loopback.
#
#   scripts/local-cluster.sh up      # build (release), create what is missing, start, wait until ready
#   scripts/local-cluster.sh down    # stop the four processes (state stays in .shardsign/)
#   scripts/local-cluster.sh status  # which processes run
#
# State lives in $SHARDSIGN_DIR (default .shardsign/, mode 0700, git-ignored): certificates,
# node stores, configs, logs, and secrets.env (0600) with the generated tokens and passphrase.
# Ports: API $SHARDSIGN_BASE_PORT (default 7100), nodes +1..+3.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SHARDSIGN_DIR:-.shardsign}
base=${SHARDSIGN_BASE_PORT:-7100}
bin=target/release

random_hex() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }

wait_ready() { # name file pid
  for _ in $(seq 1 600); do
    [ -s "$2" ] && return 0
    kill -0 "$3" 2>/dev/null || { echo "$1 failed to start; see its log:" >&2; tail -n 20 "$dir/$1.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$1 did not become ready" >&2; exit 1
}

start() { # name command...
  local name=$1; shift
  if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$dir/$name.pid"))"; return
  fi
  rm -f "$dir/$name.ready"
  nohup "$@" >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  wait_ready "$name" "$dir/$name.ready" "$!"
  echo "$name ready on $(cat "$dir/$name.ready")"
}

up() {
  cargo build --release --locked --bins
  mkdir -p "$dir" && chmod 700 "$dir"
  if [ ! -f "$dir/secrets.env" ]; then
    umask 077
    {
      echo "SHARDSIGN_ADMIN_TOKEN=admin-$(random_hex)"
      echo "SHARDSIGN_SIGNER_TOKEN=signer-$(random_hex)"
      echo "SHARDSIGN_NODE_PASSPHRASE=$(random_hex)"
    } >"$dir/secrets.env"
    umask 022
  fi
  set -a; . "$dir/secrets.env"; set +a
  [ -f "$dir/certs/ca.pem" ] || "$bin/shardsign-devcert" "$dir/certs"
  for i in 1 2 3; do
    if [ ! -f "$dir/node-$i/node.db" ]; then
      "$bin/shardsign-node" init --data-dir "$dir/node-$i" --node-id "$i" --cluster-id local \
        --passphrase-env SHARDSIGN_NODE_PASSPHRASE --json >"$dir/identity-$i.json"
    fi
  done
  members=$(python3 - "$dir" <<'PY'
import json, sys
for i in (1, 2, 3):
    identity = json.load(open(f"{sys.argv[1]}/identity-{i}.json"))
    print(f'[[members]]\nnode_id = {i}\nsigning_key = "{identity["signing_key"]}"\nkx_key = "{identity["kx_key"]}"\n')
PY
)
  pin=$(cat "$dir/certs/coordinator-client.sha256")
  abs=$(cd "$dir" && pwd)
  for i in 1 2 3; do
    cat >"$dir/node-$i.toml" <<TOML
node_id = $i
cluster_id = "local"
data_dir = "$abs/node-$i"
listen = "127.0.0.1:$((base + i))"
ready_file = "$abs/node-$i.ready"
kek = { passphrase_env = "SHARDSIGN_NODE_PASSPHRASE" }
tls = { cert = "$abs/certs/node-$i.pem", key = "$abs/certs/node-$i.key", client_ca = "$abs/certs/ca.pem", coordinator_cert_sha256 = "$pin" }

$members
TOML
  done
  cat >"$dir/coordinator.toml" <<TOML
cluster_id = "local"
listen = "127.0.0.1:$base"
database = "$abs/coordinator.db"
ready_file = "$abs/coordinator.ready"
auth = { admin_token_env = "SHARDSIGN_ADMIN_TOKEN", signer_token_env = "SHARDSIGN_SIGNER_TOKEN" }
tls = { cert = "$abs/certs/api.pem", key = "$abs/certs/api.key" }
node_tls = { ca = "$abs/certs/ca.pem", cert = "$abs/certs/coordinator-client.pem", key = "$abs/certs/coordinator-client.key" }
$(for i in 1 2 3; do printf '\n[[nodes]]\nnode_id = %s\naddress = "https://127.0.0.1:%s"\ntls_name = "localhost"\n' "$i" "$((base + i))"; done)
TOML
  for i in 1 2 3; do start "node-$i" "$bin/shardsign-node" run --config "$dir/node-$i.toml"; done
  start coordinator "$bin/shardsign-coordinator" run --config "$dir/coordinator.toml"
  cat <<EOF_INFO

shardsign is running: API https://127.0.0.1:$base (TLS, CA $dir/certs/ca.pem)
tokens are in $dir/secrets.env (admin: SHARDSIGN_ADMIN_TOKEN, agents: SHARDSIGN_SIGNER_TOKEN)
logs: $dir/*.log    stop: scripts/local-cluster.sh down
EOF_INFO
}

down() {
  for name in coordinator node-1 node-2 node-3; do
    if [ -f "$dir/$name.pid" ]; then
      pid=$(cat "$dir/$name.pid")
      if kill "$pid" 2>/dev/null; then
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        echo "$name stopped"
      fi
      rm -f "$dir/$name.pid"
    fi
  done
}

status() {
  for name in node-1 node-2 node-3 coordinator; do
    if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
      echo "$name: running (pid $(cat "$dir/$name.pid"), $(cat "$dir/$name.ready" 2>/dev/null))"
    else
      echo "$name: stopped"
    fi
  done
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
