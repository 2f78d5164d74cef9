#!/usr/bin/env bash
# Builds the `shardsign:local` image FROM scratch around binaries built on this host (no image is
# pulled): the four binaries plus the few glibc libraries they link (found with ldd), imported
# with `docker import`. Which build: $SHARDSIGN_PROFILE (release by default; CI uses debug, whose
# dependencies are optimised too).
#
#   scripts/docker-image.sh     (run `cargo build --release --bins` first)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${SHARDSIGN_PROFILE:-release}
bins=(shardsign-node shardsign-coordinator shardsign shardsign-devcert)
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/data" "$rootfs/etc"
chmod 1777 "$rootfs/tmp"
for bin in "${bins[@]}"; do
  src="target/$profile/$bin"
  [ -x "$src" ] || { echo "$src is missing: run cargo build --$profile --bins first" >&2; exit 1; }
  cp "$src" "$rootfs/bin/"
  # The shared libraries it links, at the same paths (the dynamic loader included).
  ldd "$src" | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
done
echo "shardsign:x:0:0:root:/:/bin/shardsign" >"$rootfs/etc/passwd"
tar -C "$rootfs" -c . | docker import \
  --change 'ENTRYPOINT ["/bin/shardsign"]' \
  --change 'ENV RUST_LOG=info' \
  - shardsign:local >/dev/null
echo "built image shardsign:local from target/$profile ($(du -sh "$rootfs" | cut -f1))"
