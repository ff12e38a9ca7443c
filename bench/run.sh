#!/usr/bin/env bash
# Runs the benchmarks (as root) and writes their markdown tables to bench/RESULTS.md.
# Speed is measured here, never asserted in tests.
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
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
