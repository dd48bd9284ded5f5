#!/usr/bin/env bash
# Runs the benchmarks and rewrites BENCHMARKS.md: installs what is missing, makes
# sure PostgreSQL runs, builds the module (release) and the bench program (bench/),
# then runs it. The bench starts its own servers on free ports and creates (and
# drops) its own database; it takes under ~15 minutes on 2 cores.
#
# Environment: PGSYNC_SERVER_BIN (server binary, default valkey-server; e.g. the
# Redis 8.2 redis-server listed by scripts/servers.sh). Extra arguments go to the
# bench program (e.g. --quick, --phases 1,6, --out /tmp/b.md; --module-before <.so> gives
# figure 9 its baseline, another build of the module).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
pg=$(bash scripts/ensure-postgres.sh)
server=${PGSYNC_SERVER_BIN:-valkey-server}
echo "PostgreSQL: $pg; server: $server"

cargo build --release
(cd bench && cargo build --release)

# The bench loads a copy, so a rebuild of target/ during the run changes nothing.
mkdir -p bench/target
cp target/release/libredis_pgsync.so bench/target/libredis_pgsync.so
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
  commit="$commit + uncommitted changes"
fi

bench/target/release/pgsync-bench --module bench/target/libredis_pgsync.so --server "$server" \
  --pg "$pg" --out BENCHMARKS.md --commit "$commit" "$@"
