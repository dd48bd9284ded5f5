#!/usr/bin/env bash
# Quick start: builds the module, makes sure PostgreSQL runs with the example
# schema (database pgsync_example), and starts a server on 127.0.0.1:6380 with
# the module and redis.conf.example. Stop it with: redis-cli -p 6380 shutdown
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
admin=$(bash scripts/ensure-postgres.sh)
base=${admin%/*}
url="$base/pgsync_example"
psql "$admin" -Atqc "select 1 from pg_database where datname = 'pgsync_example'" | grep -q 1 \
  || psql "$admin" -qc "create database pgsync_example"
psql "$url" -q -f examples/schema.sql

cargo build --release
server=$(bash scripts/servers.sh | awk 'NR==1 {print $2}')
mkdir -p .pgsync/redis
# redis.conf.example with the Postgres in use, absolute paths and a data dir.
sed -e "s|^pgsync.postgres-url .*|pgsync.postgres-url \"$url\"|" -e "s|\./|$PWD/|g" \
  -e "s|^# dir .*|dir $PWD/.pgsync/redis|" redis.conf.example > .pgsync/redis.conf
"$server" .pgsync/redis.conf --daemonize yes --logfile "$PWD/.pgsync/redis/server.log"
for _ in $(seq 1 50); do
  redis-cli -p 6380 ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p 6380 ping >/dev/null || { tail -n 20 .pgsync/redis/server.log; exit 1; }
cat <<MSG
$("$server" --version | cut -d' ' -f1-3) with redis-pgsync is listening on 127.0.0.1:6380
(log: .pgsync/redis/server.log). Try:
  redis-cli -p 6380 HSET '__{users:1}' username fulano email fulano@detal.com.br pwhash d1e8 score 0
  psql "$url" -c 'select * from users'
  redis-cli -p 6380 HGETALL users:1
  redis-cli -p 6380 SYNC.STATUS users
MSG
