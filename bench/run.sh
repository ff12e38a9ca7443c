#!/usr/bin/env bash
# Runs the benchmarks (as root) and writes their markdown tables to bench/RESULTS.md.
# Speed is measured here, never asserted in tests.
#
#     bench/run.sh [--guest]
#
# --guest also runs bench/core.rs per backend and bench/relay.rs in the QEMU guest with kernel
# WireGuard (scripts/test-kernel-vm.sh bench, ~15 min) and appends the kernel ÷ userspace ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
. scripts/pg-throwaway.sh
out=bench/RESULTS.md
{
  echo "# MeshWG benchmarks"
  echo
  echo "Measured by \`bench/run.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), userspace backend (wireguard-go)."
  echo
  for b in core api metrics; do cargo bench --bench "$b"; done
  if [ "${1:-}" = --guest ]; then
    KVM_BENCH_OUT=$PWD/target/guest-bench.md bash scripts/test-kernel-vm.sh bench >&2
    cat target/guest-bench.md
  fi
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
