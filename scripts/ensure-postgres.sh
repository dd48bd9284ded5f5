#!/usr/bin/env bash
# Makes sure a PostgreSQL server that the tests and the quick start can use is
# running, and prints its admin URL (user postgres, no password).
#
# 1. If PGSYNC_TEST_PG is set and answers, use it.
# 2. Else, if 127.0.0.1:5432 accepts user postgres without a password, use it
#    (starting Debian's cluster first if it is installed but stopped).
# 3. Else, run a private cluster with trust auth under .pgsync/pg on port 55432.
set -euo pipefail
cd "$(dirname "$0")/.."

answers() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

if [ -n "${PGSYNC_TEST_PG:-}" ] && answers "$PGSYNC_TEST_PG"; then
  echo "$PGSYNC_TEST_PG"; exit 0
fi

shared="postgres://postgres@127.0.0.1:5432/postgres"
if answers "$shared"; then echo "$shared"; exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1; then
  for conf in /etc/postgresql/*/main; do
    [ -d "$conf" ] || continue
    ver=$(basename "$(dirname "$conf")")
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 20); do answers "$shared" && { echo "$shared"; exit 0; }; sleep 0.5; done
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "PostgreSQL is not installed: run scripts/install-deps.sh" >&2; exit 1; }
root="$PWD/.pgsync/pg"
port=55432
private="postgres://postgres@127.0.0.1:$port/postgres"
if answers "$private"; then echo "$private"; exit 0; fi
run_as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ ! -f "$root/data/PG_VERSION" ]; then
  mkdir -p "$root"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$root" && chmod 755 "$PWD/.pgsync"
  run_as_pg "$bin/initdb" -D "$root/data" -U postgres --auth=trust -E UTF8 >/dev/null
fi
run_as_pg "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w \
  -o "-p $port -k $root -c listen_addresses=127.0.0.1" start >/dev/null
answers "$private" || { echo "private PostgreSQL did not start; see $root/server.log" >&2; exit 1; }
echo "$private"
