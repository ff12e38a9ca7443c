#!/usr/bin/env bash
# Property-based API fuzzing: Schemathesis generates requests from /api/v1/openapi.json (valid
# and invalid ones, and chains of them along the document's links) against a MeshWG controller of
# this run's own, and fails on any finding:
#   - a 5xx, or a response whose status, content type, headers or body the document does not allow;
#   - a 4xx after which a row or a kernel object differs (scripts/fuzz/hooks.py).
# It runs twice: as an org admin, then as the operator. Run as root (scripts/test.sh does).
#
#   ┌─ fz<pid>-ctl ───────────────────────────────────────────────┐
#   │ meshwg serve   API 127.0.0.1:8080 (loopback of this namespace)│
#   │ schemathesis ──> 127.0.0.1:8080                               │
#   └──────────────────────────────────────────────────────────────┘
#   <prefix>-<id>: tenant namespaces made by the controller; PostgreSQL on a socket in $TMP
set -uo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$PWD

RUN=$$
NS=fz$RUN-ctl
letters() { local n=$1 s=""; for _ in 1 2 3 4; do s=$(printf "\\x$(printf %x $((97 + n % 26)))")$s; n=$((n / 26)); done; echo "f$s"; }
KP=$(letters "$RUN")
umask 077
TMP=$(mktemp -d "/tmp/meshwg-fuzz-$RUN.XXXXXX")
chmod 711 "$TMP"
PGDIR=$TMP/pg
RUNDIR=$TMP/run
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
BIN=${MESHWG_BIN:-$ROOT/target/debug/meshwg}
ST=${SCHEMATHESIS:-/opt/meshwg-fuzz/bin/schemathesis}
API=http://127.0.0.1:8080
OPERATOR=operator@fuzz.test
OPERATOR_PW=fuzz-operator-password
CTL_PID=

say() { printf '[fuzz] %s\n' "$*" >&2; }
in_ns() { ip netns exec "$NS" "$@"; }
psql_q() { runuser -u postgres -- psql -h "$PGDIR" -d "${2:-meshwg}" -XAtqc "$1"; }

cleanup() {
  if [ -n "$CTL_PID" ]; then
    kill -TERM "$CTL_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$CTL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$CTL_PID" 2>/dev/null
  fi
  local f pid ns
  for f in "$RUNDIR"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cut -d' ' -f1 "$f")
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "wireguard-go -f $KP" && kill -9 "$pid"
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^($NS|$KP-)"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -f /var/run/wireguard/"$KP"*.sock
  for f in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep "^$KP" | cut -d@ -f1); do
    ip link del "$f" 2>/dev/null
  done
  if [ -e "$PGDIR/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1
  fi
}
finish() {
  local code=$?
  cleanup
  if [ $code -ne 0 ]; then
    cp "$TMP/serve.log" "/tmp/meshwg-fuzz-$RUN.serve.log" 2>/dev/null && say "controller log: /tmp/meshwg-fuzz-$RUN.serve.log"
  fi
  rm -rf "$TMP"
}

[ "$(id -u)" = 0 ] || { echo "fuzz-api.sh: run as root" >&2; exit 1; }
[ -x "$ST" ] || { echo "fuzz-api.sh: $ST is missing (scripts/deps.sh installs it)" >&2; exit 1; }
trap finish EXIT
trap 'exit 130' INT TERM

if [ -z "${MESHWG_BIN:-}" ]; then
  cargo build --quiet --bin meshwg || { echo "fuzz-api.sh: build failed" >&2; exit 1; }
fi

# PostgreSQL, throw-away, on a socket only this run knows.
mkdir -p "$PGDIR" "$RUNDIR" && chown postgres: "$PGDIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null \
  && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
       -o "-k $PGDIR -c listen_addresses= -c fsync=off" start >/dev/null \
  && psql_q "CREATE DATABASE meshwg" postgres || { echo "fuzz-api.sh: cannot start PostgreSQL" >&2; exit 1; }

# The controller, in its own namespace, entered with nsenter (no private mount namespace).
ip netns add "$NS" && ip -n "$NS" link set lo up || { echo "fuzz-api.sh: cannot make $NS" >&2; exit 1; }
env_vars=(
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  "DATABASE_URL=host=$PGDIR user=postgres dbname=meshwg"
  "ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)"
  "JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
  "ADMIN_EMAIL=$OPERATOR" "ADMIN_PASSWORD=$OPERATOR_PW"
  LISTEN_ADDR=127.0.0.1:8080 METRICS_ADDR=127.0.0.1:9587 PUBLIC_ENDPOINT=127.0.0.1
  "KERNEL_PREFIX=$KP" "RUNTIME_DIR=$RUNDIR" RECONCILE_INTERVAL=2s WG_BACKEND=auto RUST_LOG=info
)
nsenter --net="/run/netns/$NS" env -i "${env_vars[@]}" "$BIN" serve >"$TMP/serve.log" 2>&1 &
CTL_PID=$!
for _ in $(seq 600); do
  in_ns curl -sf --max-time 2 "$API/healthz" >/dev/null 2>&1 && break
  kill -0 "$CTL_PID" 2>/dev/null || { echo "fuzz-api.sh: the controller exited" >&2; cat "$TMP/serve.log" >&2; exit 1; }
  sleep 0.1
done

# login WHO EMAIL PASSWORD: writes $TMP/cookie.WHO (Cookie header value), $TMP/session.WHO
# (the session cookie's value) and $TMP/csrf.WHO.
login() {
  local d; d=$(jq -nc --arg e "$2" --arg p "$3" '{email:$e,password:$p}')
  in_ns curl -sf -D "$TMP/h.$1" -o "$TMP/b.$1" -H 'Content-Type: application/json' --data-binary "$d" \
    "$API/api/v1/auth/login" || { echo "fuzz-api.sh: login $2 failed" >&2; return 1; }
  grep -i '^set-cookie:' "$TMP/h.$1" | sed -E 's/^[Ss]et-[Cc]ookie: *([^;]*).*/\1/' | paste -sd';' - | sed 's/;/; /g' >"$TMP/cookie.$1"
  jq -r .csrf_token "$TMP/b.$1" >"$TMP/csrf.$1"
  tr ';' '\n' <"$TMP/cookie.$1" | sed -n 's/^ *[^=]*meshwg_session=//p' >"$TMP/session.$1"
}
# call WHO METHOD PATH JSON: prints the response body, fails unless 2xx.
call() {
  in_ns curl -sf -X "$2" -H "Cookie: $(cat "$TMP/cookie.$1")" -H "X-CSRF-Token: $(cat "$TMP/csrf.$1")" \
    -H 'Content-Type: application/json' --data-binary "$4" "$API$3"
}
login op "$OPERATOR" "$OPERATOR_PW" || exit 1
ORG_ADMIN=$(call op POST /api/v1/orgs '{"name":"fuzz admin org","cidr":"10.90.0.0/24"}' | jq -r .id) || exit 1
call op POST "/api/v1/orgs/$ORG_ADMIN/users" '{"email":"admin@fuzz.test","password":"fuzz-admin-password","role":"admin"}' >/dev/null || exit 1
login admin admin@fuzz.test fuzz-admin-password || exit 1

# The state a 4xx must not change: rows (fingerprints; audit entries by count) and kernel objects.
# Watches (MWG-WATCH) are left out: one made by an earlier 201 ends on its own timer, which may
# fall between the two snapshots of an unrelated 4xx.
cat >"$TMP/snapshot.sh" <<SNAP
#!/bin/bash
export LC_ALL=C
runuser -u postgres -- psql -h "$PGDIR" -d meshwg -XAtq <<'SQL'
SELECT 'orgs', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM (SELECT id, kid, name, cidr, listen_port, hub_public_key, default_action, state FROM orgs) t;
SELECT 'users', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM (SELECT id, org_id, email, password_hash, role FROM users) t;
SELECT 'sessions', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM (SELECT id, user_id, csrf_token, expires_at FROM sessions) t;
SELECT 'machines', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM (SELECT id, org_id, name, address, public_key, tags, pending_until FROM machines) t;
SELECT 'policies', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM (SELECT id, org_id, name, priority, action, src, dst, protocol, ports, enabled, pending_until FROM policies) t;
SELECT 'audit', count(*), max(id) FROM audit_log;
SQL
for ns in \$(ip netns list | awk '{print \$1}' | grep '^$KP-' | sort); do
  echo "== \$ns"
  ip netns exec "\$ns" sh -c 'iptables-save -t filter | grep -v "^#" | grep -v MWG-WATCH | sed -E "s/\\[[0-9]+:[0-9]+\\]//"; ipset save; ip -o addr; ip -o link | cut -d" " -f2,3'
done
for s in \$(ls /var/run/wireguard 2>/dev/null | grep '^$KP' | sort); do
  wg show "\${s%.sock}" allowed-ips 2>/dev/null | sort
done
SNAP
chmod 700 "$TMP/snapshot.sh"

# Not among the checks: ensure_resource_availability (ST302). Its stateful runs follow inferred
# links from a new org to operations whose 404 is about ids in the body or query (machines of
# another org in a batch, an address that is no machine), and take that for "the org just
# created is not found" (seed 947 reproduces it; a per-operation opt-out in the config file
# loses to the command line's list). That a new org is found by every operation is proven by
# the integration tests (tests/http_tenants.rs and every kernel test), not by this check.
# fuzz WHO [ORG]: one Schemathesis run with WHO's session; with ORG, every {org} in a path is
# that org (an org admin can reach no other, nor create one). The operator's runs follow the
# ids its own creations return instead.
fuzz() {
  cp "$ROOT/scripts/fuzz/schemathesis.toml" "$TMP/fuzz.$1.toml"
  [ -z "${2:-}" ] || printf '\n[parameters]\n"path.org" = "%s"\n' "$2" >>"$TMP/fuzz.$1.toml"
  say "schemathesis as $1"
  # From $TMP: Schemathesis leaves a .schemathesis directory wherever it runs.
  (cd "$TMP" && in_ns env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$TMP" PYTHONDONTWRITEBYTECODE=1 \
    SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$ROOT/scripts/fuzz" MESHWG_FUZZ_SNAPSHOT="$TMP/snapshot.sh" \
    MESHWG_FUZZ_SESSION="$(cat "$TMP/session.$1")" \
    "$ST" --config-file "$TMP/fuzz.$1.toml" run "$API/api/v1/openapi.json" \
      --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,use_after_free,no_state_change_on_client_error \
      -H "X-CSRF-Token: $(cat "$TMP/csrf.$1")" \
      --seed "${FUZZ_SEED:-$RUN}" --no-color ${FUZZ_ARGS:-})
}
failed=0
passed=0
for run in "admin $ORG_ADMIN" "op"; do
  # shellcheck disable=SC2086 # two words on purpose
  if fuzz $run; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
kill -0 "$CTL_PID" 2>/dev/null || { say "the controller died"; failed=$((failed + 1)); }
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
