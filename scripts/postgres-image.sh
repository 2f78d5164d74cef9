#!/usr/bin/env bash
# Builds the `shardsign-postgres:local` image FROM scratch around this host's PostgreSQL server
# (Debian's postgresql package; no image is pulled): the server and initdb with the shared
# libraries they link (found with ldd), the server's own library and share directories, the
# time zones, a shell for initdb and a tiny entrypoint, imported with `docker import`. The
# docker-compose `ha` profile runs it for the two coordinators' shared registry.
#
#   scripts/postgres-image.sh     (scripts/setup-system.sh installs PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$pgbin/postgres" ] || { echo "no PostgreSQL server: run scripts/setup-system.sh" >&2; exit 1; }
pghome="$(dirname "$pgbin")"
version="$(basename "$pghome")"
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
copy_with_libs() { # file...
  for file in "$@"; do
    mkdir -p "$rootfs$(dirname "$file")"
    cp -L "$file" "$rootfs$file"
    ldd "$file" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | while read -r lib; do
      [ -e "$rootfs$lib" ] && continue
      mkdir -p "$rootfs$(dirname "$lib")"
      cp -L "$lib" "$rootfs$lib"
    done
  done
}
copy_with_libs "$pgbin/postgres" "$pgbin/initdb" /bin/sh
# The server loads these at run time (plpgsql, text search dictionaries, ...); not the JIT,
# which would bring LLVM (and is off unless configured).
copy_with_libs $(ls "$pghome"/lib/*.so | grep -v llvmjit)
mkdir -p "$rootfs/usr/share/postgresql" "$rootfs/usr/share"
cp -a "/usr/share/postgresql/$version" "$rootfs/usr/share/postgresql/"
cp -a /usr/share/zoneinfo "$rootfs/usr/share/"
mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/run/postgresql" "$rootfs/var/lib/postgresql"
chmod 1777 "$rootfs/tmp"
echo "postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh" >"$rootfs/etc/passwd"
echo "postgres:x:999:" >"$rootfs/etc/group"
chown 999:999 "$rootfs/var/run/postgresql" "$rootfs/var/lib/postgresql"
cat >"$rootfs/entrypoint" <<SH
#!/bin/sh
# First start: a cluster whose superuser \`shardsign\` logs in with the password in the
# \`pg_password\` secret (SCRAM), and the \`shardsign\` database. Then the server.
set -e
data=/var/lib/postgresql/data
if [ ! -s "\$data/PG_VERSION" ]; then
  $pgbin/initdb -D "\$data" -U shardsign --pwfile=/run/secrets/pg_password \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 --no-locale -E UTF8 >/dev/null
  echo "host all all all scram-sha-256" >>"\$data/pg_hba.conf"
  echo "CREATE DATABASE shardsign" | $pgbin/postgres --single -D "\$data" postgres >/dev/null
fi
exec $pgbin/postgres -D "\$data" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
SH
chmod 755 "$rootfs/entrypoint"
tar -C "$rootfs" -c . | docker import \
  --change 'ENTRYPOINT ["/entrypoint"]' \
  --change 'USER 999:999' \
  - shardsign-postgres:local >/dev/null
echo "built image shardsign-postgres:local from PostgreSQL $version ($(du -sh "$rootfs" | cut -f1))"
