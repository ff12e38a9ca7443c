#!/usr/bin/env bash
# Runs every MeshWG test, as root on a Debian/Ubuntu host:
#   1. installs what is missing (scripts/deps.sh),
#   2. makes a throw-away PostgreSQL cluster reachable only over a private Unix socket,
#   3. cargo clippy, unit and kernel integration tests against it,
#   4. the end-to-end harness e2e/run.sh (it makes its own PostgreSQL),
# and removes the cluster again, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$(mktemp -d /tmp/meshwg-test-pg.XXXXXX)
chown postgres: "$PGDIR"
cleanup() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap cleanup EXIT
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-k $PGDIR -c listen_addresses= -c max_connections=500 -c fsync=off -c synchronous_commit=off" start >/dev/null
export MESHWG_TEST_DATABASE_URL="host=$PGDIR user=postgres dbname=postgres"

echo "== cargo fmt / clippy"
cargo fmt --check
cargo clippy --all-targets -- -D warnings
echo "== unit and kernel integration tests"
cargo test -- "$@"
if [ $# -eq 0 ] && [ -x e2e/run.sh ]; then
  echo "== end-to-end harness"
  e2e/run.sh
fi
