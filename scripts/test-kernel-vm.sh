#!/usr/bin/env bash
# The guest test tier: kernel WireGuard, and the systemd unit, tested inside a QEMU guest.
#
#     sudo scripts/test-kernel-vm.sh [PART…]      PART: tests, e2e, systemd (default: all three),
#                                                 bench (only when asked: bench/run.sh --guest)
#
# CI and development machines have no WireGuard kernel module, and PID 1 there is not systemd.
# This script boots Debian's stock kernel (it has wireguard.ko) under QEMU with TCG — KVM hangs
# on the machines we measured, so it is never used — and runs, as root in the guest:
#
#   boot 1 (busybox init, scripts/kvm/guest-tests.sh):
#     - the kernel integration test binaries tests/kernel_*.rs, tests/metrics.rs, tests/cli.rs,
#       built on the host beforehand (never compiled in the guest), with MESHWG_TEST_BACKEND=kernel
#       and a throw-away PostgreSQL made in the guest (scripts/pg-throwaway.sh);
#     - e2e/run.sh with WG_BACKEND=kernel and the host-built target/debug/meshwg (MESHWG_BIN);
#   boot 2 (systemd as PID 1, scripts/kvm/guest-systemd.sh):
#     - deploy/meshwg.service installed as the README's "Production install" says, per backend
#       (userspace, kernel): enable --now, an org and two wg-quick machines, `systemctl restart`
#       and `systemctl stop` under a `ping -i 0.2` through the hub (no packet may be lost, the
#       tenant must be adopted, not rebuilt), org deletion, and a journal free of refusals by
#       the unit's sandboxing.
#   bench (boot 1, only when asked): bench/core.rs once per backend (org create, machine add,
#     policy change) and bench/relay.rs (iperf3 hub-relayed vs direct) with kernel WireGuard,
#     release builds made on the host; the tables and the kernel ÷ userspace ratios are written
#     to $RUN/bench.md (and to KVM_BENCH_OUT when set). Under TCG only ratios mean anything.
#
# The guest's root filesystem is this host's own `/`, exported read-only over 9p with a tmpfs
# overlay: the binaries, wg, ip, iptables, PostgreSQL and wg-quick are the host's files. The
# kernel package's module tree is bound over /lib/modules/<kver>. The guest has no network
# device: it uses its own loopback and its own namespaces only.
#
# e2e phases in the guest: all of them. Measured on 2 cores the whole harness takes 6.5 min in
# the guest when the host is otherwise idle (~11 min when it is busy; ~2.5 min on the host) and
# the whole tier 11.5 min (~19 min busy), which with the host run (~10 min plus the build) keeps
# .ci/run well under 45 min, so no phase is left to the host alone. The ones that do not depend on the WireGuard backend — 01 startup refusal, 02 auth
# flow, 03 login rate limit (pure HTTP/auth, ~20 s together) — would be the first to drop
# (KVM_E2E_PHASES="04 05 …") if the budget ever tightens; 06, 19 and 24 touch the hub only
# through org and machine creation. KVM_E2E_PHASES narrows the list.
#
# Output: progress lines, then exactly one line `guest: N passed, M failed` (test cases of all
# binaries + e2e phases + systemd checks); on failure the failing names and the log folder.
# Exit status non-zero if anything failed, a guest did not finish, or it timed out.
#
# Cache: target/kvm/ holds the downloaded .debs, the extracted kernel and the initramfs, rebuilt
# only when the kernel package version, scripts/kvm/init or the module list changes; each run's
# logs (console of every boot, every test binary's output, e2e and journal logs) are kept in
# target/kvm/run-*/ (the last three runs; target/kvm/last points at the newest).
#
# Environment: KVM_MEM (MiB, default 3072), KVM_TIMEOUT_TESTS / KVM_TIMEOUT_SYSTEMD (seconds
# per boot), KVM_E2E_PHASES, KVM_TEST_THREADS, KVM_SLOWDOWN (deadline factor, default 8),
# KVM_E2E_RECONCILE_INTERVAL, KVM_SYSTEMD_BACKENDS ("userspace kernel"), KVM_BACKEND (backend
# of boot 1, default kernel), MESHWG_BIN and KVM_BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH" LC_ALL=C

die() { echo "test-kernel-vm.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root"

PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(tests e2e systemd)
for p in "${PARTS[@]}"; do
  case "$p" in tests | e2e | systemd | bench) ;; *) die "unknown part $p (tests, e2e, systemd, bench)" ;; esac
done
want() { local p; for p in "${PARTS[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

MEM=${KVM_MEM:-3072}
TIMEOUT_TESTS=${KVM_TIMEOUT_TESTS:-2100}
TIMEOUT_SYSTEMD=${KVM_TIMEOUT_SYSTEMD:-480}
E2E_PHASES=${KVM_E2E_PHASES:-all}
# TCG runs CPU-bound code ~30x and a process start ~10x slower than the host: deadlines of the
# tests (MESHWG_TEST_SLOWDOWN) and of e2e (E2E_TIME_SCALE) stretch by SLOWDOWN, and e2e's
# controller glances at its tenants every 3 s instead of every second.
SLOWDOWN=${KVM_SLOWDOWN:-8}
E2E_RECONCILE_INTERVAL=${KVM_E2E_RECONCILE_INTERVAL:-3s}
THREADS=${KVM_TEST_THREADS:-2}
BACKEND=${KVM_BACKEND:-kernel}
SYSTEMD_BACKENDS=${KVM_SYSTEMD_BACKENDS:-userspace kernel}
# Modules the initramfs loads (with their dependencies) before the root filesystem exists.
MODULES="virtio_pci 9pnet_virtio 9p overlay wireguard"
INITRD_FORMAT=3   # bump when the way the initramfs is assembled changes

KVM=$ROOT/target/kvm
case "$KVM" in *[[:space:]]*) die "the source path must not contain spaces (it goes on the guest's kernel command line)" ;; esac

for c in qemu-system-x86_64:qemu-system-x86 cpio:cpio depmod:kmod jq:jq; do
  command -v "${c%%:*}" >/dev/null 2>&1 || { bash scripts/deps.sh; break; }
done

mkdir -p "$KVM"
# One guest run per tree at a time: it owns the cache while it runs (and two TCG guests on two
# cores would only slow each other down).
exec 9>"$KVM/lock"
flock -n 9 || { echo "test-kernel-vm.sh: waiting for another guest run in $ROOT"; flock 9; }

RUN_ID=run-$(date +%Y%m%d-%H%M%S)-$$
RUN=$KVM/$RUN_ID
BUILD=$KVM/build-$$
mkdir -p "$RUN"
QEMU_PID=
cleanup() {
  if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; wait "$QEMU_PID" 2>/dev/null || true; fi
  rm -rf "$BUILD"
  # Keep the last three runs' logs.
  ln -sfn "$RUN_ID" "$KVM/last"
  ls -d "$KVM"/run-* 2>/dev/null | sort | head -n -3 | while read -r old; do rm -rf "$old"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

elapsed() { echo $(($(date +%s) - $1)); }

# --- kernel and initramfs (cached) ------------------------------------------------------------
# The stock kernel's packages: the image linux-image-amd64 (Debian) or linux-image-generic
# (Ubuntu) depends on, and, where modules come apart from it (Ubuntu), linux-modules[-extra]-KVER.
kernel_packages() {
  local meta img k extra
  for meta in linux-image-amd64 linux-image-generic; do
    img=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    [ -z "$img" ] || break
  done
  [ -n "$img" ] || return 0
  echo "$img"
  k=${img#linux-image-}
  k=${k#unsigned-}
  for extra in "linux-modules-$k" "linux-modules-extra-$k"; do
    apt-cache show --no-all-versions "$extra" >/dev/null 2>&1 && echo "$extra"
  done
  return 0
}
version_of() { apt-cache show --no-all-versions "$1" 2>/dev/null | awk '/^Version:/ {print $2; exit}'; }

# resolve NAME TREE: the module's path in modules.dep (relative to TREE), "builtin" if it is
# built into the kernel, nothing if it does not exist.
resolve() {
  local path
  path=$(awk -F: -v n="$1" '{m = $1; sub(/.*\//, "", m); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", m); if (m == n) {print $1; exit}}' "$2/modules.dep")
  if [ -n "$path" ]; then echo "$path"; elif grep -qE "/$1\.ko\$" "$2/modules.builtin" 2>/dev/null; then echo builtin; fi
}

# build_initrd KEY PKG=VER…: downloads (into target/kvm/debs, kept while the versions stay),
# extracts, and assembles busybox, the modules of MODULES with their dependencies and
# scripts/kvm/init into target/kvm/initrd.gz, next to target/kvm/vmlinuz and target/kvm/kernel.
build_initrd() {
  local key=$1 t0 bb k tree order="" m pv deb have=1
  shift
  t0=$(date +%s)
  echo "kvm: building the initramfs for $*"
  rm -rf "$BUILD"; mkdir -p "$BUILD/kernel" "$KVM/debs"
  for pv in "$@"; do
    deb=$(ls "$KVM/debs/${pv%%=*}_"*.deb 2>/dev/null | head -n 1) || true
    { [ -n "$deb" ] && [ "$(dpkg-deb -f "$deb" Version)" = "${pv#*=}" ]; } || have=
  done
  ls "$KVM"/debs/busybox-static_*.deb >/dev/null 2>&1 || have=
  if [ -z "$have" ]; then
    (cd "$KVM/debs" && rm -f ./*.deb && apt-get -q -o APT::Sandbox::User=root download "$@" busybox-static >"$BUILD/download.log" 2>&1) \
      || { cat "$BUILD/download.log" >&2; die "apt-get download $* busybox-static failed"; }
  fi
  for pv in "$@"; do dpkg -x "$(ls "$KVM/debs/${pv%%=*}_"*.deb)" "$BUILD/kernel"; done
  dpkg -x "$(ls "$KVM"/debs/busybox-static_*.deb)" "$BUILD/bb"
  # Packages built for a merged /usr ship /usr/lib/modules; the guest binds from lib/modules.
  if [ ! -d "$BUILD/kernel/lib/modules" ] && [ -d "$BUILD/kernel/usr/lib/modules" ]; then
    mkdir -p "$BUILD/kernel/lib" && mv "$BUILD/kernel/usr/lib/modules" "$BUILD/kernel/lib/modules"
  fi
  k=$(ls "$BUILD/kernel/lib/modules")
  tree=$BUILD/kernel/lib/modules/$k
  depmod -b "$BUILD/kernel" "$k"
  add() {
    local m=$1 d
    case " $order " in *" $m "*) return ;; esac
    for d in $(awk -F: -v m="$m" '$1 == m {print $2; exit}' "$tree/modules.dep"); do add "$d"; done
    order="$order $m"
  }
  for m in $MODULES; do
    local path; path=$(resolve "$m" "$tree")
    [ -n "$path" ] || die "module $m is neither in $* nor built into the kernel"
    [ "$path" = builtin ] || add "$path"
  done
  mkdir -p "$BUILD/ird/"{bin,mods,proc,sys,dev,host,up,newroot}
  : >"$BUILD/ird/mods/order"
  bb=
  for m in bin usr/bin sbin usr/sbin; do [ -x "$BUILD/bb/$m/busybox" ] && { bb=$BUILD/bb/$m/busybox; break; }; done
  [ -n "$bb" ] || die "no busybox in busybox-static"
  cp "$bb" "$BUILD/ird/bin/busybox"
  # busybox's insmod takes plain .ko files only.
  for m in $order; do
    local base; base=$(basename "$m")
    case "$base" in
      *.ko) cp "$tree/$m" "$BUILD/ird/mods/$base" ;;
      *.ko.xz) xz -dc "$tree/$m" >"$BUILD/ird/mods/${base%.xz}"; base=${base%.xz} ;;
      *.ko.zst) zstd -qdc "$tree/$m" >"$BUILD/ird/mods/${base%.zst}" || die "zstd is needed for $base"; base=${base%.zst} ;;
      *.ko.gz) gzip -dc "$tree/$m" >"$BUILD/ird/mods/${base%.gz}"; base=${base%.gz} ;;
    esac
    echo "$base" >>"$BUILD/ird/mods/order"
  done
  install -m 0755 scripts/kvm/init "$BUILD/ird/init"
  (cd "$BUILD/ird" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$BUILD/initrd.gz")
  # Swap the new cache in (we hold the lock); the key goes last, so a run killed half-way here
  # leaves no key and the next run builds again.
  rm -rf "$KVM/key" "$KVM/kernel" "$KVM/initrd.gz" "$KVM/vmlinuz"
  mkdir -p "$KVM/kernel/lib/modules"
  mv "$tree" "$KVM/kernel/lib/modules/$k"
  mv "$(ls "$BUILD/kernel/boot/vmlinuz-"* | head -n 1)" "$KVM/vmlinuz"
  mv "$BUILD/initrd.gz" "$KVM/initrd.gz"
  echo "$key" >"$KVM/key"
  rm -rf "$BUILD"
  echo "kvm: initramfs built in $(elapsed "$t0")s ($(echo $order | wc -w) modules, kernel $k)"
}

prepare_kernel() {
  local pkgs=() p pv=() key
  mapfile -t pkgs < <(kernel_packages)
  if [ ${#pkgs[@]} -eq 0 ]; then
    apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null 2>&1 || true
    mapfile -t pkgs < <(kernel_packages)
  fi
  if [ ${#pkgs[@]} -eq 0 ]; then
    [ -f "$KVM/key" ] || die "cannot tell which kernel package linux-image-amd64 (or linux-image-generic) depends on (apt-get update?)"
    echo "kvm: package lists unavailable; using the cached kernel ($(head -c 60 "$KVM/key"))"
    return 0
  fi
  for p in "${pkgs[@]}"; do pv+=("$p=$(version_of "$p")"); done
  key="${pv[*]} init:$(sha256sum scripts/kvm/init | cut -c1-16) modules:${MODULES// /,} format:$INITRD_FORMAT"
  if [ -f "$KVM/key" ] && [ "$(cat "$KVM/key")" = "$key" ] && [ -f "$KVM/initrd.gz" ] && [ -f "$KVM/vmlinuz" ]; then
    echo "kvm: cached kernel and initramfs (${pv[*]})"
  else
    build_initrd "$key" "${pv[@]}"
  fi
}

# --- binaries, built on the host ------------------------------------------------------------
TEST_BINS=()
MESHWG=${MESHWG_BIN:-}
build_binaries() {
  local args=() t t0
  t0=$(date +%s)
  for t in tests/kernel_*.rs tests/metrics.rs tests/cli.rs; do
    [ -e "$t" ] && args+=(--test "$(basename "$t" .rs)")
  done
  echo "kvm: building the test binaries on the host (cargo test --no-run)"
  cargo test --no-run --message-format=json "${args[@]}" >"$RUN/cargo.json" 2>"$RUN/cargo.log" \
    || { tail -n 30 "$RUN/cargo.log" >&2; die "cargo test --no-run failed (see $RUN/cargo.log)"; }
  mapfile -t TEST_BINS < <(jq -r 'select(.reason == "compiler-artifact" and .target.kind == ["test"] and .executable != null)
    | "\(.target.name) \(.executable)"' "$RUN/cargo.json")
  [ -n "$MESHWG" ] || MESHWG=$(jq -r 'select(.reason == "compiler-artifact" and .target.kind == ["bin"] and .target.name == "meshwg") | .executable' "$RUN/cargo.json" | tail -n 1)
  [ ${#TEST_BINS[@]} -gt 0 ] || die "cargo built no test binary"
  [ -x "$MESHWG" ] || die "no meshwg binary at $MESHWG"
  echo "kvm: ${#TEST_BINS[@]} test binaries and meshwg ready in $(elapsed "$t0")s"
}

# Release builds of the benchmarks the guest runs (never compiled in the guest).
build_benches() {
  local t0
  t0=$(date +%s)
  echo "kvm: building the benchmarks on the host (cargo bench --no-run)"
  cargo bench --no-run --message-format=json --bench core --bench relay >"$RUN/cargo-bench.json" 2>"$RUN/cargo-bench.log" \
    || { tail -n 30 "$RUN/cargo-bench.log" >&2; die "cargo bench --no-run failed (see $RUN/cargo-bench.log)"; }
  mapfile -t BENCH_BINS < <(jq -r 'select(.reason == "compiler-artifact" and .target.kind == ["bench"] and .executable != null)
    | "\(.target.name) \(.executable)"' "$RUN/cargo-bench.json")
  [ ${#BENCH_BINS[@]} -eq 2 ] || die "cargo built ${#BENCH_BINS[@]} benchmarks, expected core and relay"
  echo "kvm: benchmarks ready in $(elapsed "$t0")s"
}

# The guest's benchmark tables, and the kernel ÷ userspace ratio of each core operation's median.
bench_report() {
  local out=$RUN/tests f
  {
    echo "## Kernel WireGuard against userspace, in one QEMU/TCG guest"
    echo
    echo "Measured by \`bench/run.sh --guest\` (scripts/test-kernel-vm.sh bench) on $(date -u +%Y-%m-%d): Debian's"
    echo "stock kernel $(cat "$out/kernel" 2>/dev/null || echo '?') under QEMU TCG on $(nproc) host cores. Emulation slows"
    echo "everything by one to two orders of magnitude, so only the ratios carry over to real hosts."
    echo
    echo "bench/core.rs, 20 operations each, two interleaved rounds per backend; the better median of each."
    echo
    echo "| operation | kernel median ms | userspace median ms | kernel ÷ userspace |"
    echo "|---|---|---|---|"
    # Each backend's best median over the rounds.
    awk -F'|' '
      FNR == 1 {b = (FILENAME ~ /kernel/) ? "k" : "u"}
      /^\| [a-z]/ && $3 ~ /[0-9]/ {gsub(/^ +| +$/, "", $2); gsub(/ /, "", $5)
        if (m[b, $2] == "" || $5 + 0 < m[b, $2] + 0) m[b, $2] = $5
        if (!($2 in seen)) {seen[$2] = 1; order[++n] = $2}}
      END {for (i = 1; i <= n; i++) {o = order[i]; k = m["k", o]; u = m["u", o];
        printf "| %s | %s | %s | %s |\n", o, k, u, (u > 0 && k != "") ? sprintf("%.2f", k / u) : "?"}}' \
      "$out"/bench-core-kernel-*.md "$out"/bench-core-userspace-*.md 2>/dev/null
    echo
    for f in "$out"/bench-relay-*.md; do [ -s "$f" ] && cat "$f"; done
  } >"$RUN/bench.md"
  cat "$RUN/bench.md"
  [ -z "${KVM_BENCH_OUT:-}" ] || cp "$RUN/bench.md" "$KVM_BENCH_OUT"
}

# --- one guest boot -------------------------------------------------------------------------
TOTAL_PASSED=0
TOTAL_FAILED=0
PROBLEMS=()

# boot NAME SCRIPT TIMEOUT [systemd]: params are in $RUN/NAME/params already.
boot() {
  local name=$1 script=$2 timeout=$3 systemd=${4:-} out=$RUN/$1 console=$RUN/console-$1.log t0 rc append
  append="console=ttyS0 panic=-1 quiet loglevel=3 mwg.cmd=$ROOT/scripts/kvm/$script mwg.out=$out"
  append+=" mwg.mods=$KVM/kernel/lib/modules/$(ls "$KVM/kernel/lib/modules")"
  [ -z "$systemd" ] || append+=" systemd systemd.unit=multi-user.target systemd.show_status=0 systemd.log_level=warning fstab=no"
  : >"$console"
  t0=$(date +%s)
  echo "kvm: boot $name ($(basename "$script"), -m $MEM, timeout ${timeout}s)"
  timeout -k 10 "$timeout" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m "$MEM" \
    -nodefaults -no-user-config -nic none -display none -monitor none -no-reboot \
    -serial "file:$console" \
    -kernel "$KVM/vmlinuz" -initrd "$KVM/initrd.gz" -append "$append" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$out,mount_tag=mwgout,security_model=none,multidevs=remap" \
    </dev/null >"$RUN/qemu-$name.log" 2>&1 &
  QEMU_PID=$!
  # Only the guest's "@@ " lines reach this output; the whole console stays in the file. The
  # filter runs in the background so that a signal to this script is handled at once (bash
  # defers traps until a foreground pipeline ends, but not during `wait`).
  tail -n +1 -F --pid="$QEMU_PID" "$console" 2>/dev/null | sed -un 's/\r$//; s/^@@ /  /p' &
  local filter=$!
  rc=0; wait "$QEMU_PID" || rc=$?
  wait "$filter" 2>/dev/null || true
  QEMU_PID=
  local secs; secs=$(elapsed "$t0")
  if [ -s "$out/result" ]; then
    local p f
    read -r p f <"$out/result"
    TOTAL_PASSED=$((TOTAL_PASSED + p)); TOTAL_FAILED=$((TOTAL_FAILED + f))
    echo "kvm: boot $name: $p passed, $f failed (${secs}s wall)"
  else
    # What the guest finished before it stopped still counts.
    local p f
    p=$(grep -c '^PASS ' "$out/cases" 2>/dev/null) || true
    f=$(grep -c '^FAIL ' "$out/cases" 2>/dev/null) || true
    TOTAL_PASSED=$((TOTAL_PASSED + ${p:-0})); TOTAL_FAILED=$((TOTAL_FAILED + ${f:-0} + 1))
    local why="the guest did not finish"
    [ "$rc" != 124 ] || why="timed out after ${timeout}s"
    [ "$rc" = 0 ] || [ "$rc" = 124 ] || why="$why (qemu exit $rc: $(tail -n 1 "$RUN/qemu-$name.log"))"
    echo "$name: $why" >>"$out/failures"
    echo "kvm: boot $name: $why (${secs}s wall); console tail:"
    tr -d '\r' <"$console" | tail -n 15 | sed 's/^/    /'
  fi
  if [ -s "$out/failures" ]; then
    PROBLEMS+=("$out/failures")
  fi
}

# --- main -----------------------------------------------------------------------------------
T_ALL=$(date +%s)
prepare_kernel
if want tests || want e2e || want systemd; then build_binaries; fi
if want bench; then build_benches; fi

if want tests || want e2e || want bench; then
  mkdir -p "$RUN/tests"
  {
    echo "backend $BACKEND"
    echo "threads $THREADS"
    echo "bin_timeout 600"
    echo "e2e_timeout 1500"
    echo "slowdown $SLOWDOWN"
    echo "e2e_reconcile_interval $E2E_RECONCILE_INTERVAL"
    echo "meshwg $MESHWG"
    if want tests; then printf 'bin %s\n' "${TEST_BINS[@]}"; fi
    if want e2e; then echo "e2e $E2E_PHASES"; fi
    if want bench; then
      for b in "${BENCH_BINS[@]}"; do
        case "$b" in
          # Interleaved rounds, so that a busy spell of the host hurts both backends alike.
          "core "*) for r in 1 2; do echo "bench $b kernel $r"; echo "bench $b userspace $r"; done ;;
          *) echo "bench $b kernel 1" ;;
        esac
      done
    fi
  } >"$RUN/tests/params"
  boot tests guest-tests.sh "$TIMEOUT_TESTS"
  if want bench; then bench_report; fi
fi
if want systemd; then
  mkdir -p "$RUN/systemd"
  {
    echo "meshwg $MESHWG"
    echo "backends $SYSTEMD_BACKENDS"
  } >"$RUN/systemd/params"
  boot systemd guest-systemd.sh "$TIMEOUT_SYSTEMD" systemd
fi

echo "kvm: whole guest tier $(elapsed "$T_ALL")s; logs in $RUN"
echo "guest: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
if [ "$TOTAL_FAILED" -gt 0 ]; then
  echo "failed in the guest:"
  cat "${PROBLEMS[@]}" 2>/dev/null | sed 's/^/  /'
  echo "guest console logs: $RUN/console-*.log (test output, e2e and journal logs beside them)"
  exit 1
fi
