#!/usr/bin/env bash
# Guest side of scripts/test-kernel-vm.sh, first boot (busybox init, no systemd): runs the
# host-built kernel integration test binaries and e2e/run.sh against kernel WireGuard.
#
#   guest-tests.sh OUT
#
# OUT/params (written by the host script), one item per line:
#   bin NAME PATH         a libtest binary to run (cwd: the source tree)
#   meshwg PATH           the controller binary for e2e/run.sh
#   e2e PHASE…            e2e phases to run ("all" for every phase); no line, no e2e
#   backend NAME          MESHWG_TEST_BACKEND for the tests, WG_BACKEND for e2e
#   threads N             --test-threads of every binary
#   bin_timeout SECONDS   per binary; e2e_timeout SECONDS for the whole harness
#   slowdown N            MESHWG_TEST_SLOWDOWN of the tests, E2E_TIME_SCALE of e2e (deadlines ×N)
#   e2e_reconcile_interval D   E2E_RECONCILE_INTERVAL of e2e
#
# Writes OUT/test-NAME.log, OUT/e2e.out, OUT/e2e-full.log (on failure), OUT/cases,
# OUT/failures and OUT/result ("PASSED FAILED"); prints "@@ " progress lines to the console.
set -uo pipefail
OUT=$1
export LC_ALL=C
. "$(dirname "$0")/guest-lib.sh"

T0=$(now)
setup_guest
watch_memory
say "guest up: kernel $(uname -r), $(nproc) CPUs, booted in $(cut -d' ' -f1 /proc/uptime)s"

BACKEND=$(param backend)
THREADS=$(param threads)
BIN_TIMEOUT=$(param bin_timeout)
E2E_TIMEOUT=$(param e2e_timeout)
MESHWG=$(param meshwg)
SLOWDOWN=$(param slowdown)

# A throw-away PostgreSQL on a private Unix socket, exactly as on the host; removed on exit.
. "$REPO/scripts/pg-throwaway.sh" >"$OUT/pg.log" 2>&1
if ! runuser -u postgres -- psql -h "$PGDIR" -XAtqc 'SELECT 1' >>"$OUT/pg.log" 2>&1; then
  fail postgresql "the throw-away cluster did not start (see pg.log)"
  write_result
  exit 1
fi

# run_bin NAME PATH: one libtest binary; each test case counts.
run_bin() {
  local name=$1 path=$2 log=$OUT/test-$1.log t0 rc p f line
  t0=$(now)
  (cd "$REPO" && MESHWG_TEST_BACKEND=$BACKEND MESHWG_TEST_SLOWDOWN=$SLOWDOWN RUST_BACKTRACE=1 \
    timeout -k 10 "$BIN_TIMEOUT" "$path" --test-threads="$THREADS") >"$log" 2>&1
  rc=$?
  p=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
  f=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
  PASSED=$((PASSED + p))
  grep -E '^test .* \.\.\. ok$' "$log" | sed -E "s/^test (.*) \.\.\. ok$/PASS $name::\1/" >>"$OUT/cases"
  # Each failing test by name, with its panic message (libtest's "---- NAME stdout ----" part).
  while IFS= read -r line; do
    FAILED=$((FAILED + 1))
    local why
    why=$(awk -v t="---- $line stdout ----" '
      $0 == t {on = 1; next}
      on && /^---- / {exit}
      on && /panicked at/ {getline msg; print msg; exit}' "$log")
    printf 'FAIL %s::%s: %s\n' "$name" "$line" "$why" >>"$OUT/cases"
    printf '%s::%s: %s\n' "$name" "$line" "$why" >>"$OUT/failures"
    say "FAIL $name::$line: $why"
  done < <(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/')
  if ! grep -qE '^test result:' "$log"; then
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      fail "$name" "timed out after ${BIN_TIMEOUT}s (see test-$name.log)"
    else
      fail "$name" "exited $rc without a test result (see test-$name.log)"
    fi
  elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    fail "$name" "exited $rc (see test-$name.log)"
  fi
  say "$name: $p passed, $f failed ($(secs_since "$t0")s)"
}

while read -r name path; do
  run_bin "$name" "$path"
done < <(awk '$1 == "bin" {print $2, $3}' "$OUT/params")

# e2e/run.sh: one case per phase plus its leftover check.
if grep -q '^e2e' "$OUT/params"; then
  read -r -a phases <<<"$(param e2e)"
  [ "${phases[*]}" != all ] || phases=()
  t0=$(now)
  : >"$OUT/e2e.out"
  # Phase lines are shown as they come (a whole run takes many minutes here).
  (cd "$REPO" && WG_BACKEND=$BACKEND MESHWG_BIN=$MESHWG E2E_TIME_SCALE=$(param slowdown) \
    E2E_RECONCILE_INTERVAL=$(param e2e_reconcile_interval) timeout -k 10 "$E2E_TIMEOUT" e2e/run.sh "${phases[@]}") \
    2>"$OUT/e2e.err" | while IFS= read -r line; do
      printf '%s\n' "$line" >>"$OUT/e2e.out"
      case "$line" in "PASS "* | "FAIL "*) say "e2e $line" ;; esac
    done
  rc=${PIPESTATUS[0]}
  while IFS= read -r line; do
    case "$line" in
      "PASS "*) PASSED=$((PASSED + 1)); printf 'PASS e2e::%s\n' "${line#PASS }" >>"$OUT/cases" ;;
      "FAIL "*)
        FAILED=$((FAILED + 1))
        printf 'FAIL e2e::%s\n' "${line#FAIL }" >>"$OUT/cases"
        printf 'e2e::%s\n' "${line#FAIL }" >>"$OUT/failures" ;;
    esac
  done <"$OUT/e2e.out"
  kept=$(sed -n 's/^log: //p' "$OUT/e2e.err" | tail -n 1)
  [ -z "$kept" ] || cp "$kept" "$OUT/e2e-full.log"
  if ! grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$OUT/e2e.out"; then
    fail e2e "did not finish (exit $rc$([ "$rc" != 124 ] || echo ", timed out after ${E2E_TIMEOUT}s"); see e2e.out)"
  fi
  say "e2e: $(tail -n 1 "$OUT/e2e.out") ($(secs_since "$t0")s)"
fi

memory_report
write_result
say "boot done in $(secs_since "$T0")s: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
