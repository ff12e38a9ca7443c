# Sourced by scripts/test.sh and bench/run.sh: starts a throw-away PostgreSQL reachable only over
# a private Unix socket, exports MESHWG_TEST_DATABASE_URL, and removes it on exit.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$(mktemp -d /tmp/meshwg-pg.XXXXXX)
chown postgres: "$PGDIR"
pg_throwaway_stop() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap pg_throwaway_stop EXIT
trap 'exit 143' TERM INT    # so that a stop by signal still runs the EXIT trap
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-k $PGDIR -c listen_addresses= -c max_connections=500 -c fsync=off -c synchronous_commit=off" start >/dev/null
export MESHWG_TEST_DATABASE_URL="host=$PGDIR user=postgres dbname=postgres"
