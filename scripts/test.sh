#!/usr/bin/env bash
# The one test command: installs what is missing, makes sure PostgreSQL runs,
# checks formatting and lints, builds the module, and runs every test against
# each supported server (Valkey 8 and Redis 8.2).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
PGSYNC_TEST_PG=$(bash scripts/ensure-postgres.sh)
export PGSYNC_TEST_PG
echo "PostgreSQL for tests: $PGSYNC_TEST_PG"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build
cargo test --lib

servers=$(bash scripts/servers.sh)
[ "$(echo "$servers" | grep -c .)" -ge 2 ] || { echo "need both Valkey 8 and Redis 8.2; found: $servers" >&2; exit 1; }
threads="${PGSYNC_TEST_THREADS:-4}"
while read -r name bin; do
  echo "== integration tests on $name ($("$bin" --version | cut -d' ' -f3))"
  # cargo-nextest (on the machines we test on) schedules every binary's tests in
  # one pool (.config/nextest.toml); plain cargo test is the fallback. The
  # cluster tests (six servers each, failovers with timeouts) run after the
  # others, two at a time, with the machine to themselves.
  if cargo nextest --version >/dev/null 2>&1; then
    PGSYNC_SERVER_BIN="$bin" cargo nextest run --tests -E 'kind(test) & !binary(cluster)' --no-fail-fast -j "$threads"
    PGSYNC_SERVER_BIN="$bin" cargo nextest run --tests -E 'binary(cluster)' --no-fail-fast -j 2
  else
    PGSYNC_SERVER_BIN="$bin" cargo test --tests -- --test-threads "$threads"
  fi
done <<< "$servers"
