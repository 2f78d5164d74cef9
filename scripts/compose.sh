#!/usr/bin/env bash
# The docker-compose cluster: three node containers and a coordinator from the local FROM-scratch
# image, each node with its own volume, the API on 127.0.0.1:$SHARDSIGN_API_PORT (default 7300).
#
#   scripts/compose.sh up     build the image, generate certificates/configs/secrets into
#                             deploy/generated/ (0700, git-ignored), init the node stores in
#                             their volumes, start, and create an admin API key
#   scripts/compose.sh down   remove containers, network and volumes (keys are lost)
#   scripts/compose.sh test   up, ceremony through the CLI, sign, stop one node and sign again,
#                             restart it, down -v; always cleans up (CI runs this)
#   scripts/compose.sh up-ha  `--profile ha`: PostgreSQL and two coordinators sharing it (API on
#                             127.0.0.1:$SHARDSIGN_API_PORT and :$SHARDSIGN_API_PORT_2, default 7301)
#   scripts/compose.sh test-ha  up-ha, then signs from four clients given both endpoints while the
#                             first coordinator is killed; every request must succeed and the
#                             audit log verify; always cleans up (CI runs this)
#
# Which binaries: $SHARDSIGN_PROFILE (release by default; `cargo build --$profile --bins` first).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${SHARDSIGN_PROFILE:-release}
port=${SHARDSIGN_API_PORT:-7300}
gen=deploy/generated
if command -v docker-compose >/dev/null; then
  compose=(docker-compose -p shardsign -f docker-compose.yml)
else
  compose=(docker compose -p shardsign -f docker-compose.yml)
fi
port2=${SHARDSIGN_API_PORT_2:-7301}
ha=(--profile ha)
cli=(target/$profile/shardsign --endpoint "https://127.0.0.1:$port" --ca "$gen/certs/ca.pem" --dir "$gen")
# Both coordinators, the first first: the CLI fails over to the second.
cli_ha=(target/$profile/shardsign --endpoint "https://127.0.0.1:$port,https://127.0.0.1:$port2" --ca "$gen/certs/ca.pem" --dir "$gen")
export SHARDSIGN_API_PORT=$port SHARDSIGN_API_PORT_2=$port2

random_hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

generate() { # [--ha]
  mkdir -p "$gen/secrets" "$gen/config" && chmod 700 "$gen" "$gen/secrets"
  (umask 077
   [ -f "$gen/secrets/node-passphrase" ] || random_hex >"$gen/secrets/node-passphrase"
   [ -f "$gen/secrets/bootstrap-token" ] || echo "bootstrap-$(random_hex)" >"$gen/secrets/bootstrap-token"
   # Used with --profile ha: PostgreSQL's password, and the hashing key both coordinators share.
   [ -f "$gen/secrets/pg-password" ] || random_hex >"$gen/secrets/pg-password"
   [ -f "$gen/secrets/api-key-hmac-key" ] || random_hex >"$gen/secrets/api-key-hmac-key")
  [ -f "$gen/secrets/policy.key" ] || "${cli[@]}" policy keygen --out "$gen/secrets/policy.key" >/dev/null
  [ -f "$gen/certs/ca.pem" ] || "target/$profile/shardsign-devcert" "$gen/certs" >/dev/null
  # Private keys are read by the containers' root user through read-only bind mounts.
  # PostgreSQL's server runs as its own user (999), so its password file is readable too.
  chmod 644 "$gen"/certs/*.key "$gen"/secrets/node-passphrase "$gen"/secrets/bootstrap-token \
    "$gen"/secrets/pg-password
  # Bind-mount sources must exist before any container starts (else Docker makes directories).
  for name in node-1 node-2 node-3 coordinator coordinator-2; do touch "$gen/config/$name.toml"; done
  for i in 1 2 3; do
    if [ ! -s "$gen/identity-$i.json" ]; then
      "${compose[@]}" run --rm --no-deps -T node-$i init --data-dir /data/store --node-id "$i" \
        --cluster-id compose --passphrase-file /run/secrets/node_passphrase --json >"$gen/identity-$i.json"
    fi
  done
  # The config files, from the same types the binaries parse (crates/provision).
  "${cli[@]}" dev compose-configs --policy-key "$gen/secrets/policy.key" "$@"
}

up() {
  scripts/docker-image.sh
  generate
  "${compose[@]}" up -d
  wait_for_api_port
  create_admin_key
}

up_ha() {
  scripts/docker-image.sh
  scripts/postgres-image.sh
  generate --ha
  "${compose[@]}" "${ha[@]}" up -d
  wait_for_api_port
  wait_for_api_port "$port2"
  create_admin_key
}

create_admin_key() {
  if [ ! -s "$gen/secrets/admin.key" ]; then
    "${cli[@]}" --bootstrap-token-file "$gen/secrets/bootstrap-token" --json apikeys create \
      --label "compose admin" --scopes admin |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])' >"$gen/secrets/admin.key"
    chmod 600 "$gen/secrets/admin.key"
  fi
  echo "compose cluster up: API https://127.0.0.1:$port (CA $gen/certs/ca.pem), admin key in $gen/secrets/admin.key"
}

# The API answers: any reply but "cannot connect" (the bootstrap token is refused for cluster
# status, which is fine: it proves the server is up).
wait_for_api_port() { # [port]
  local on=${1:-$port}
  for _ in $(seq 1 300); do
    out=$(target/$profile/shardsign --endpoint "https://127.0.0.1:$on" --ca "$gen/certs/ca.pem" \
      --dir "$gen" --bootstrap-token-file "$gen/secrets/bootstrap-token" cluster status 2>&1 || true)
    grep -qE "cannot connect|transport|tls" <<<"$out" || return 0
    sleep 0.2
  done
  echo "the coordinator did not answer on 127.0.0.1:$on" >&2
  "${compose[@]}" logs --tail 30 >&2 || true
  return 1
}

down() {
  "${compose[@]}" "${ha[@]}" down -v --remove-orphans
  rm -rf "$gen"
}

sign() { # label
  SHARDSIGN_API_KEY=$(cat "$gen/secrets/agent.key") "${cli[@]}" --json sign tx --key compose-key \
    --chain-id 11155111 --nonce "$1" --to 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed --value 0.01eth
}

# Node 2's disk is lost: its container and volume go, a fresh store with a new identity is made
# in a new volume, two of the three membership keys sign the change, and `cluster replace-node`
# repairs and refreshes every key; then the pairs without node 1 and without node 3 sign.
replace_node_2() {
  "${compose[@]}" rm -sf node-2
  docker volume rm shardsign_node-2 >/dev/null
  "${compose[@]}" run --rm --no-deps -T node-2 init --data-dir /data/store --node-id 2 \
    --cluster-id compose --passphrase-file /run/secrets/node_passphrase --json >"$gen/identity-2.json"
  "${cli[@]}" dev compose-configs --policy-key "$gen/secrets/policy.key"
  "${compose[@]}" up -d node-2
  rm -f "$gen/replace-node-2.json"
  for signer in 1 3; do
    "${cli[@]}" membership sign --identity "$gen/identity-2.json" --version 1 \
      --key "$gen/secrets/membership-$signer.key" --out "$gen/replace-node-2.json"
  done
  for _ in $(seq 1 300); do
    "${cli[@]}" "${admin[@]}" cluster status | grep -qE "^node 2 .* up " && break
    sleep 0.2
  done
  "${cli[@]}" "${admin[@]}" cluster replace-node 2 --identity "$gen/identity-2.json" \
    --statement "$gen/replace-node-2.json"
  "${cli[@]}" "${admin[@]}" --json keys show compose-key |
    python3 -c 'import json,sys; k=json.load(sys.stdin); assert k["epoch"] == 2, k; print("compose-key at epoch", k["epoch"])'
  "${compose[@]}" stop node-1
  sign 4
  "${compose[@]}" start node-1
  "${compose[@]}" stop node-3
  sign 5
  "${compose[@]}" start node-3
  echo "node 2 replaced; the new node signs with node 3 and with node 1"
}

# An online backup inside node 3's container (onto its own volume); node 3 stopped and restored
# from it: it signs nothing until it has re-learned from nodes 1 and 2 (each cluster status call
# has the coordinator teach it), then it signs with node 2 while node 1 is stopped.
backup_and_restore_node_3() {
  "${compose[@]}" exec -T node-3 /bin/shardsign-node backup --config /config/node-3.toml \
    --out /data/node-3.backup
  "${compose[@]}" stop node-3
  "${compose[@]}" run --rm --no-deps -T node-3 restore --config /config/node-3.toml \
    --from /data/node-3.backup
  "${compose[@]}" start node-3
  for _ in $(seq 1 300); do
    "${cli[@]}" "${admin[@]}" cluster status | grep -E "^node 3 .* up " | grep -qv RESTORED && break
    sleep 0.2
  done
  "${cli[@]}" "${admin[@]}" cluster status | grep -E "^node 3 .* up " | grep -qv RESTORED
  "${cli[@]}" "${admin[@]}" audit list | grep -q "node 3, restored from a backup, re-learned"
  "${compose[@]}" stop node-1
  sign 6
  "${compose[@]}" start node-1
  echo "node 3 restored from its backup re-learned from its peers and signs with node 2"
}

# A key made by the ceremony, its signed policy, and an agent API key (in secrets/agent.key)
# allowed $2 requests a minute.
key_and_agent() { # key-id requests-per-minute
  "${cli[@]}" "${admin[@]}" keys create --label "$1" --chain-id 11155111 --key-id "$1"
  cat >"$gen/policy.json" <<JSON
{"allowed_chain_ids": [11155111], "max_value_per_tx": "1eth", "allowed_recipients": ["*"],
 "max_fee_per_gas": "100gwei", "max_total_fee": "0.01eth"}
JSON
  "${cli[@]}" "${admin[@]}" policy set --key "$1" --policy-file "$gen/policy.json" \
    --policy-key "$gen/secrets/policy.key" --cluster-id compose
  cat >"$gen/agent-policy.json" <<JSON
{"allowed_chain_ids": [11155111], "max_value_per_tx": "0.1eth", "max_value_per_24h": "1eth",
 "allowed_recipients": ["*"], "max_fee_per_gas": "100gwei", "max_total_fee": "0.01eth",
 "requests_per_minute": $2}
JSON
  "${cli[@]}" "${admin[@]}" --json apikeys create --label agent --scopes sign --key "$1" \
    --policy-file "$gen/agent-policy.json" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])' >"$gen/secrets/agent.key"
}

test_cluster() {
  trap 'status=$?; [ $status -eq 0 ] || "${compose[@]}" logs --tail 40 >&2 || true; down >/dev/null 2>&1 || true; exit $status' EXIT
  down >/dev/null 2>&1 || true
  up
  admin=(--api-key-file "$gen/secrets/admin.key")
  key_and_agent compose-key 60
  sign 0
  echo "signed with all three nodes up"
  "${compose[@]}" stop node-2
  "${cli[@]}" "${admin[@]}" cluster status || true
  sign 1
  echo "signed with node-2 stopped"
  "${compose[@]}" start node-2
  for _ in $(seq 1 300); do
    "${cli[@]}" "${admin[@]}" cluster status | grep -q "can create keys: true" && break
    sleep 0.2
  done
  "${cli[@]}" "${admin[@]}" cluster status | grep -q "can create keys: true"
  sign 2
  # A share refresh across the three containers: the key moves to epoch 1, the address stays.
  "${cli[@]}" "${admin[@]}" keys refresh compose-key
  "${cli[@]}" "${admin[@]}" --json keys show compose-key |
    python3 -c 'import json,sys; k=json.load(sys.stdin); assert k["epoch"] == 1, k; print("compose-key at epoch", k["epoch"])'
  sign 3
  echo "signed at epoch 1 after the refresh"
  replace_node_2
  backup_and_restore_node_3
  "${cli[@]}" "${admin[@]}" audit verify
  echo "compose test passed"
}

# Two coordinators on PostgreSQL: four clients sign through both endpoints (the first first for
# two of them, the second first for the others) while the first coordinator is killed (SIGKILL)
# a third of the way through; every request succeeds, and the audit log verifies.
test_ha() {
  trap 'status=$?; [ $status -eq 0 ] || "${compose[@]}" "${ha[@]}" logs --tail 40 >&2 || true; down >/dev/null 2>&1 || true; exit $status' EXIT
  down >/dev/null 2>&1 || true
  up_ha
  admin=(--api-key-file "$gen/secrets/admin.key")
  key_and_agent ha-key 600
  local results="$gen/ha-results" per_client=12
  mkdir -p "$results"
  for client in 1 2 3 4; do
    (
      if [ $((client % 2)) -eq 0 ]; then
        endpoints="https://127.0.0.1:$port2,https://127.0.0.1:$port"
      else
        endpoints="https://127.0.0.1:$port,https://127.0.0.1:$port2"
      fi
      for n in $(seq 1 $per_client); do
        nonce=$((client * 100 + n))
        if SHARDSIGN_API_KEY=$(cat "$gen/secrets/agent.key") target/$profile/shardsign \
          --endpoint "$endpoints" --ca "$gen/certs/ca.pem" --dir "$gen" --json sign tx \
          --key ha-key --chain-id 11155111 --nonce "$nonce" \
          --to 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed --value 0.001eth \
          >"$results/$nonce.json" 2>"$results/$nonce.err"; then
          touch "$results/$nonce.ok"
        else
          touch "$results/$nonce.failed"
        fi
      done
    ) &
  done
  for _ in $(seq 1 600); do
    # A third of the way, less what signs while the kill is being sent.
    [ "$(ls "$results" | grep -c '\.ok$' || true)" -ge 10 ] && break
    sleep 0.1
  done
  "${compose[@]}" "${ha[@]}" kill coordinator
  echo "killed the first coordinator after $(ls "$results" | grep -c '\.ok$') of $((4 * per_client)) signatures"
  wait
  local failed
  failed=$(ls "$results" | grep -c '\.failed$' || true)
  if [ "$failed" -ne 0 ]; then
    for f in "$results"/*.failed; do echo "${f%.failed}:"; cat "${f%.failed}.err"; done >&2
    echo "$failed requests failed" >&2
    return 1
  fi
  echo "all $((4 * per_client)) requests signed across the failover"
  target/$profile/shardsign --endpoint "https://127.0.0.1:$port2" --ca "$gen/certs/ca.pem" \
    --dir "$gen" "${admin[@]}" audit verify
  echo "compose HA test passed"
}

case ${1:-} in
  up) up ;;
  up-ha) up_ha ;;
  down) down ;;
  test) test_cluster ;;
  test-ha) test_ha ;;
  *) echo "usage: $0 up|up-ha|down|test|test-ha" >&2; exit 2 ;;
esac
