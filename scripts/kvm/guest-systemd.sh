#!/usr/bin/env bash
# Guest side of scripts/test-kernel-vm.sh, second boot: systemd is PID 1 and this script runs
# from a oneshot unit. For each backend it installs the controller exactly as README's
# "Production install" says and checks deploy/meshwg.service for real:
#
#   - /usr/local/bin/meshwg, /etc/meshwg.env (0600, from deploy/meshwg.env.example, PostgreSQL
#     made here), the unit in /etc/systemd/system, `systemctl daemon-reload`, `enable --now`;
#   - an org and two machines over the API, their configs brought up with wg-quick in two client
#     namespaces bridged to the guest's root namespace (where the controller runs);
#   - `systemctl restart meshwg`, then `systemctl stop meshwg`, while `ping -i 0.2` runs between
#     the machines through the hub: no packet lost, the tenant adopted after the restart (same
#     namespace inode, same wg0 ifindex or the same wireguard-go pid, still in the unit's cgroup);
#   - start again and delete the org; the unit's limits; `journalctl -u meshwg` free of
#     refusals by the sandboxing (capabilities, RestrictNamespaces, RestrictAddressFamilies…).
#
#   guest-systemd.sh OUT        OUT/params: "meshwg PATH", "backends NAME…"
set -uo pipefail
OUT=$1
export LC_ALL=C
. "$(dirname "$0")/guest-lib.sh"

T0=$(now)
setup_guest
watch_memory
say "systemd guest up: kernel $(uname -r), $(systemctl --version | head -n 1), test unit after $(cut -d' ' -f1 /proc/uptime)s"

MESHWG=$(param meshwg)
read -r -a BACKENDS <<<"$(param backends)"
W=/tmp/sdtest
mkdir -p "$W"
chmod 700 "$W"
API=http://127.0.0.1:8080
PUBLIC=172.29.0.1
OPERATOR=operator@guest.test
OPERATOR_PW=guest-operator-password

# PostgreSQL made in the guest. Its socket directory is world-searchable like
# /var/run/postgresql: the unit keeps no CAP_DAC_OVERRIDE, so root in it cannot enter a 0700
# directory of another user.
. "$REPO/scripts/pg-throwaway.sh" >"$OUT/pg.log" 2>&1
chmod 755 "$PGDIR"
psql_q() { runuser -u postgres -- psql -h "$PGDIR" -d postgres -XAtqc "$1" >>"$OUT/pg.log" 2>&1; }
if ! psql_q 'SELECT 1'; then
  fail postgresql "the cluster did not start (see pg.log)"
  write_result
  exit 1
fi

# The clients' side of the network: a bridge in the root namespace = PUBLIC_ENDPOINT.
ip link add sdbr0 type bridge
ip addr add "$PUBLIC/24" dev sdbr0
ip link set sdbr0 up

# api METHOD PATH [JSON]: sets STATUS and BODY (cookie jar and CSRF token of the operator).
api() {
  local args=(-sS -o "$W/body" -w '%{http_code}' -X "$1" --max-time 120 -b "$W/jar" -c "$W/jar"
    -H "X-CSRF-Token: $(cat "$W/csrf" 2>/dev/null)")
  [ -z "${3:-}" ] || args+=(-H 'Content-Type: application/json' --data-binary "$3")
  STATUS=$(curl "${args[@]}" "$API/api/v1$2" 2>>"$LOG") || STATUS=000
  BODY=$(cat "$W/body" 2>/dev/null)
  echo "api $1 $2 -> $STATUS $(head -c 300 <<<"$BODY" | sed -E 's/(PrivateKey *= *)[^\\]+/\1<redacted>/g')" >>"$LOG"
}
login() {
  rm -f "$W/jar"
  STATUS=$(curl -sS -o "$W/body" -w '%{http_code}' -c "$W/jar" -H 'Content-Type: application/json' \
    --data-binary "{\"email\":\"$OPERATOR\",\"password\":\"$OPERATOR_PW\"}" "$API/api/v1/auth/login" 2>>"$LOG") || STATUS=000
  [ "$STATUS" = 200 ] || return 1
  jq -r .csrf_token "$W/body" >"$W/csrf"
}
healthy() { curl -sf --max-time 20 "$API/healthz" >/dev/null; }
j() { jq -r "$1" <<<"$BODY"; }

# The hub's identity: for the kernel backend wg0's ifindex in the tenant namespace, for the
# userspace backend the wireguard-go daemon's pid (from the controller's pidfile).
hub_id() {
  if [ "$B" = kernel ]; then
    ip -n "$NS" -o link show dev wg0 2>/dev/null | cut -d: -f1
  else
    local pid; pid=$(cut -d' ' -f1 "/run/meshwg/$DEV.pid" 2>/dev/null)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
  fi
}
inode() { stat -Lc %i "/run/netns/$NS" 2>/dev/null; }
replies() { grep -c 'icmp_seq=' "$W/ping" 2>/dev/null || echo 0; }
more_replies() { [ "$(replies)" -ge $(($1 + $2)) ]; }   # more_replies BASE N
status_ok() {
  api GET "/orgs/$ORG/status"
  [ "$STATUS" = 200 ] && [ "$(j .hub.up)" = true ] && [ "$(j .last_error)" = null ]
}

# env_file BACKEND PREFIX: deploy/meshwg.env.example with this guest's values filled in.
env_file() {
  local -A set=(
    [DATABASE_URL]="host=$PGDIR user=postgres dbname=meshwg_$1"
    [ENCRYPTION_KEY]="$(head -c 32 /dev/urandom | base64)"
    [JWT_SECRET]="$(head -c 48 /dev/urandom | base64 -w0)"
    [ADMIN_EMAIL]="$OPERATOR"
    [ADMIN_PASSWORD]="$OPERATOR_PW"
    [LISTEN_ADDR]=127.0.0.1:8080
    [METRICS_ADDR]=127.0.0.1:9587
    [PUBLIC_ENDPOINT]="$PUBLIC"
    [WG_BACKEND]="$1"
    [COOKIE_SECURE]=false
    [RECONCILE_INTERVAL]=1s
    [KERNEL_PREFIX]="$2"
  )
  local line key
  while IFS= read -r line; do
    key=${line#\#}
    key=${key%%=*}
    if [[ "$line" =~ ^#?[A-Z_]+= ]] && [ -n "${set[$key]+x}" ]; then
      printf '%s=%s\n' "$key" "${set[$key]}"
      unset "set[$key]"
    else
      printf '%s\n' "$line"
    fi
  done <"$REPO/deploy/meshwg.env.example"
  for key in "${!set[@]}"; do printf '%s=%s\n' "$key" "${set[$key]}"; done
}

# check_backend BACKEND LETTER: the whole production check for one backend; one case per step.
check_backend() {
  B=$1
  local x=$2 c="systemd/$1" prefix=sd$2 cursor t0 n before ino id
  LOG=$OUT/$B.log
  : >"$LOG"
  say "systemd check, $B backend"
  cursor=$(journalctl --show-cursor -n 0 -q 2>/dev/null | sed -n 's/^-- cursor: //p')
  psql_q "CREATE DATABASE meshwg_$B ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"

  # README, "Production install".
  install -m 0755 "$MESHWG" /usr/local/bin/meshwg
  (umask 077 && env_file "$B" "$prefix" >/etc/meshwg.env)
  chmod 0600 /etc/meshwg.env
  install -m 0644 "$REPO/deploy/meshwg.service" /etc/systemd/system/meshwg.service
  systemctl daemon-reload
  t0=$(now)
  if systemctl enable --now meshwg >>"$LOG" 2>&1 && poll 90 healthy && login; then
    pass "$c: enable --now"
    say "$B: controller answers $(secs_since "$t0")s after enable --now"
  else
    fail "$c: enable --now" "not healthy within 90s: $(systemctl is-active meshwg) $(journalctl -u meshwg -n 3 -o cat --no-pager | tr '\n' ' ' | head -c 400)"
    journal_check "$c" "$cursor"
    systemctl disable --now meshwg >>"$LOG" 2>&1
    return
  fi
  local lim
  lim=$(systemctl show meshwg -p LimitNOFILE -p TasksMax -p KillMode | sort | tr '\n' ' ')
  echo "unit: $lim" >>"$LOG"
  if [ "$lim" = "KillMode=process LimitNOFILE=65536 TasksMax=infinity " ] \
    && grep -q '^Max open files *65536 ' "/proc/$(systemctl show -p MainPID --value meshwg)/limits"; then
    pass "$c: unit limits"
  else
    fail "$c: unit limits" "$lim"
  fi

  # An org, two machines, two wg-quick clients talking through the hub.
  api POST /orgs '{"name":"Guest org","cidr":"10.77.0.0/24"}'
  if [ "$STATUS" != 201 ]; then
    fail "$c: tunnel through the hub" "create org: HTTP $STATUS $(head -c 200 <<<"$BODY")"
    finish_backend "$c" "$cursor"
    return
  fi
  ORG=$(j .id)
  api GET "/orgs/$ORG/status"
  NS=$(j .hub.netns) DEV=$(j .hub.device)
  local ips=() i
  for i in 1 2; do
    api POST "/orgs/$ORG/machines" "{\"name\":\"c$i\"}"
    [ "$STATUS" = 201 ] || { fail "$c: tunnel through the hub" "create machine c$i: HTTP $STATUS"; finish_backend "$c" "$cursor"; return; }
    ips+=("$(j .machine.address)")
    j .config >"$W/${prefix}c$i.conf"
    chmod 600 "$W/${prefix}c$i.conf"
    ip netns add "${prefix}-c$i"
    ip link add "${prefix}h$i" type veth peer name eth0 netns "${prefix}-c$i"
    ip link set "${prefix}h$i" master sdbr0 up
    ip -n "${prefix}-c$i" addr add "172.29.0.$(( $([ "$x" = u ] && echo 10 || echo 20) + i ))/24" dev eth0
    ip -n "${prefix}-c$i" link set eth0 up
    ip -n "${prefix}-c$i" link set lo up
    ip netns exec "${prefix}-c$i" wg-quick up "$W/${prefix}c$i.conf" >>"$LOG" 2>&1 \
      || { fail "$c: tunnel through the hub" "wg-quick up c$i failed (see $B.log)"; finish_backend "$c" "$cursor"; return; }
  done
  if poll 60 ip netns exec "${prefix}-c1" ping -c1 -W1 "${ips[1]}"; then
    pass "$c: tunnel through the hub"
  else
    fail "$c: tunnel through the hub" "c1 cannot ping c2 (${ips[1]}) within 60s"
    finish_backend "$c" "$cursor"
    return
  fi

  ino=$(inode) id=$(hub_id)
  echo "hub before: netns $NS inode $ino, identity $id" >>"$LOG"
  [ "$B" = kernel ] || grep -q meshwg.service "/proc/$id/cgroup" || echo "daemon $id not in meshwg.service: $(cat "/proc/$id/cgroup")" >>"$LOG"
  ip netns exec "${prefix}-c1" ping -i 0.2 -W 2 "${ips[1]}" >"$W/ping" 2>&1 &
  local pinger=$!
  poll 20 more_replies 0 5

  # Restart under traffic: the tenant is adopted, not rebuilt.
  t0=$(now); before=$(replies)
  if systemctl restart meshwg >>"$LOG" 2>&1 && poll 90 healthy && login && poll 30 status_ok; then
    say "$B: restarted and adopted in $(secs_since "$t0")s"
    if [ "$(inode)" = "$ino" ] && [ "$(hub_id)" = "$id" ]; then
      pass "$c: restart adopts the tenant"
    else
      fail "$c: restart adopts the tenant" "namespace inode $ino -> $(inode), hub identity $id -> $(hub_id)"
    fi
  else
    fail "$c: restart adopts the tenant" "not healthy and up again within 120s: $(systemctl is-active meshwg); status $STATUS $(head -c 200 <<<"$BODY")"
  fi
  poll 10 more_replies "$before" 5

  # Stop under traffic: the data plane stays.
  before=$(replies)
  systemctl stop meshwg >>"$LOG" 2>&1
  if [ "$(systemctl is-active meshwg)" != active ] && [ "$(systemctl show -p Result --value meshwg)" = success ] \
    && [ "$(inode)" = "$ino" ] && [ "$(hub_id)" = "$id" ] && poll 10 more_replies "$before" 15; then
    pass "$c: stop leaves the tunnels up"
  else
    fail "$c: stop leaves the tunnels up" "active=$(systemctl is-active meshwg) result=$(systemctl show -p Result --value meshwg) inode $ino -> $(inode) hub $id -> $(hub_id), $(($(replies) - before)) replies while stopped"
  fi
  kill -INT "$pinger" 2>/dev/null
  wait "$pinger" 2>/dev/null
  cat "$W/ping" >>"$LOG"
  # Every echo request but the last (in flight when ping was interrupted) must have its reply.
  local sent lost
  sent=$(grep -oE '^[0-9]+ packets transmitted' "$W/ping" | cut -d' ' -f1)
  lost=$(seq 1 $((${sent:-1} - 1)) | grep -vxFf <(grep -oE 'icmp_seq=[0-9]+' "$W/ping" | cut -d= -f2 | sort -u) | grep -c .)
  say "$B: ping through the hub: ${sent:-?} sent, $lost lost across restart and stop"
  if [ -n "$sent" ] && [ "$sent" -gt 10 ] && [ "$lost" = 0 ]; then
    pass "$c: no packet lost"
  else
    fail "$c: no packet lost" "$lost of ${sent:-?} echo requests unanswered: $(grep -E 'transmitted' "$W/ping")"
  fi

  # Start again; the org can be deleted (namespace, device, daemon, port gone).
  if systemctl start meshwg >>"$LOG" 2>&1 && poll 90 healthy && login; then
    api DELETE "/orgs/$ORG"
    if [ "$STATUS" = 204 ] && [ ! -e "/run/netns/$NS" ] && { [ "$B" = kernel ] || ! kill -0 "$id" 2>/dev/null; }; then
      pass "$c: delete the org"
    else
      fail "$c: delete the org" "HTTP $STATUS, namespace $([ -e "/run/netns/$NS" ] && echo left || echo gone), daemon $(kill -0 "$id" 2>/dev/null && echo alive || echo gone)"
    fi
  else
    fail "$c: delete the org" "the controller did not start again"
  fi
  finish_backend "$c" "$cursor"
}

# finish_backend CASE CURSOR: removes the clients, stops and disables the unit, checks the journal.
finish_backend() {
  local i
  for i in 1 2; do
    [ -e "/run/netns/sd$x-c$i" ] || continue
    ip netns exec "sd$x-c$i" wg-quick down "$W/sd${x}c$i.conf" >>"$LOG" 2>&1
    ip netns del "sd$x-c$i"
  done
  systemctl disable --now meshwg >>"$LOG" 2>&1
  journal_check "$1" "$2"
}

# journal_check CASE CURSOR: what the unit logged since CURSOR, kept in OUT/journal-BACKEND.log.
journal_check() {
  local j=$OUT/journal-$B.log refusals errors
  journalctl -u meshwg ${2:+--after-cursor="$2"} -o short-precise --no-pager 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$j"
  refusals=$(grep -iE 'permission denied|operation not permitted|EPERM|EACCES|address family not supported|bad system call|SIGSYS|seccomp|read-only file system|protocol not supported|function not implemented|meshwg\.service: Failed' "$j" | head -n 3)
  if [ -z "$refusals" ]; then
    pass "$1: journal shows no sandbox refusal"
  else
    fail "$1: journal shows no sandbox refusal" "$(tr '\n' ' ' <<<"$refusals" | head -c 600)"
  fi
  # warp logs a client that hangs up mid-request at ERROR; that is no fault of the unit.
  errors=$(grep -E ' ERROR ' "$j" | grep -v 'warp::server::run: server connection error' | head -n 3)
  if [ -z "$errors" ]; then
    pass "$1: journal shows no ERROR"
  else
    fail "$1: journal shows no ERROR" "$(tr '\n' ' ' <<<"$errors" | head -c 600)"
  fi
}

for b in "${BACKENDS[@]}"; do
  case "$b" in
    userspace) x=u ;;
    kernel) x=k ;;
    *) fail "systemd/$b" "unknown backend"; continue ;;
  esac
  t_b=$(now)
  check_backend "$b" "$x"
  say "$b: done in $(secs_since "$t_b")s"
done

memory_report
write_result
say "boot done in $(secs_since "$T0")s: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
