#!/usr/bin/env bash
# System packages the tests need beyond the Rust toolchain: tshark (the network-capture leak
# test), promtool, from Debian's prometheus package (the alert rules' checks), age (the
# interoperability test of our age encryption, and the backup test's operator key), and
# PostgreSQL (the registry's second backend; scripts/postgres.sh starts a throw-away server). Installs them from Debian's packages when missing; needs root, as the disk-full test
# (tmpfs mounts) and the capture test (capturing on lo) do themselves.
set -euo pipefail
missing=()
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v age >/dev/null 2>&1 || missing+=(age)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup-system.sh: missing ${missing[*]}; install as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
echo "installed: ${missing[*]}"
