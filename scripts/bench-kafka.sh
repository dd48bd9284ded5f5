#!/usr/bin/env bash
# The Kafka source benchmark (bench/kafka/bench.py): records/s from a topic into
# Redis and on into Postgres with the module, against a plain Python consumer
# (kafka-python + HSET) into a server without it, in the same run. Installs what
# is missing, makes sure PostgreSQL runs, builds the module (release).
# Environment: PGSYNC_SERVER_BIN (default valkey-server). Extra arguments go to
# the script (e.g. --records 50000).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
pg=$(bash scripts/ensure-postgres.sh)
cargo build --release
mkdir -p bench/target
cp target/release/libredis_pgsync.so bench/target/libredis_pgsync_kafka.so
python3 bench/kafka/bench.py --module "$PWD/bench/target/libredis_pgsync_kafka.so" \
  --server "${PGSYNC_SERVER_BIN:-valkey-server}" --pg "$pg" "$@"
