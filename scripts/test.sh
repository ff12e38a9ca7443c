#!/usr/bin/env bash
# Runs every MeshWG test, as root on a Debian/Ubuntu host:
#   1. installs what is missing (scripts/deps.sh),
#   2. makes a throw-away PostgreSQL cluster reachable only over a private Unix socket,
#   3. cargo clippy, unit and kernel integration tests against it (with the dashboard's browser
#      test tests/ui_browser.rs, which drives the Chromium that deps.sh installs),
#   4. API fuzzing with Schemathesis (scripts/fuzz-api.sh, its own controller and PostgreSQL),
#   5. the end-to-end harness e2e/run.sh (it makes its own PostgreSQL),
#   6. the guest tier scripts/test-kernel-vm.sh: kernel WireGuard and the systemd unit inside a
#      QEMU guest (skip it with MESHWG_SKIP_VM=1),
# and removes the cluster again, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

. scripts/pg-throwaway.sh

echo "== cargo fmt / clippy"
cargo fmt --check
cargo clippy --all-targets -- -D warnings
echo "== unit and kernel integration tests"
cargo test -- "$@"
if [ $# -eq 0 ]; then
  echo "== API fuzzing (Schemathesis)"
  scripts/fuzz-api.sh
fi
if [ $# -eq 0 ] && [ -x e2e/run.sh ]; then
  echo "== end-to-end harness"
  e2e/run.sh
fi
if [ $# -eq 0 ] && [ -z "${MESHWG_SKIP_VM:-}" ]; then
  echo "== guest tier: kernel WireGuard and systemd in a QEMU guest"
  scripts/test-kernel-vm.sh
fi
