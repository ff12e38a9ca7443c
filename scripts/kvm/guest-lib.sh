# Sourced by the guest scripts (scripts/kvm/guest-*.sh), inside the QEMU guest, as root.
# OUT is the run's output folder (writable, shared with the host); REPO the source tree
# (read-only from the host, with a tmpfs overlay). Only lines starting with "@@ " reach CI's
# output; everything else goes to files in OUT.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PASSED=0
FAILED=0
: >"$OUT/failures"

say() { printf '@@ %s\n' "$*"; }

# pass NAME / fail NAME WHY: one test case (counted in the summary line).
pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$1" >>"$OUT/cases"; }
fail() {
  FAILED=$((FAILED + 1))
  printf 'FAIL %s: %s\n' "$1" "${*:2}" >>"$OUT/cases"
  printf '%s: %s\n' "$1" "${*:2}" >>"$OUT/failures"
  say "FAIL $1: ${*:2}"
}

# The host script reads the counts from here; its absence means the guest did not finish.
write_result() { printf '%s %s\n' "$PASSED" "$FAILED" >"$OUT/result"; sync; }

# param KEY: the value of KEY in OUT/params (lines "KEY VALUE…", written by the host script).
param() { awk -v k="$1" '$1 == k {sub(/^[^ ]+ ?/, ""); print; exit}' "$OUT/params"; }

now() { date +%s%N; }
secs_since() { printf '%d.%d' $((($(now) - $1) / 1000000000)) $(((($(now) - $1) / 100000000) % 10)); }

# poll SECONDS CMD…: retries CMD (10 per second) until it succeeds or the deadline passes.
poll() {
  local deadline=$(($(now) + $1 * 1000000000))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# What a minimal boot (no systemd) leaves to us: pseudo filesystems, loopback, limits, modules
# the tests expect (TUN for wireguard-go; wireguard itself is in the initramfs).
setup_guest() {
  mkdir -p /dev/pts /dev/shm
  mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
  mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
  [ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
  mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
  # What udev would make: tools read secrets from /dev/stdin (`wg set … private-key /dev/stdin`).
  [ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
  [ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
  [ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
  [ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr
  hostname meshwg-guest 2>/dev/null || true
  ip link set lo up
  modprobe tun 2>/dev/null || true
  modprobe wireguard 2>/dev/null || true
  ulimit -n 65536 2>/dev/null || true
  sysctl -qw kernel.printk="3 4 1 3" 2>/dev/null || true
}

# Lowest MemAvailable seen while the guest ran, sampled every 2 s into OUT/memory.
watch_memory() {
  (
    local low=999999999 a
    while :; do
      a=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
      [ "$a" -ge "$low" ] || { low=$a; echo "$low" >"$OUT/memory"; }
      sleep 2
    done
  ) &
  MEMORY_WATCH=$!
}
memory_report() {
  [ -z "${MEMORY_WATCH:-}" ] || kill "$MEMORY_WATCH" 2>/dev/null
  local total low
  total=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
  low=$(cat "$OUT/memory" 2>/dev/null || echo "?")
  say "memory: $total MiB, lowest available $low MiB"
}
