#!/usr/bin/env bash
# Installs what MeshWG needs on a Debian/Ubuntu host, as root. Idempotent: installs only what is
# missing, so repeated runs are quick and need no network once everything is there.
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "deps.sh: run as root" >&2; exit 1; }

# package:command-that-proves-it-is-there
need=(
  wireguard-go:wireguard-go
  wireguard-tools:wg-quick
  iptables:iptables-restore
  ipset:ipset
  iproute2:ip
  iputils-ping:ping
  tcpdump:tcpdump
  iperf3:iperf3
  wrk:wrk
  postgresql:pg_ctlcluster
  curl:curl
  jq:jq
  procps:pgrep
  conntrack:conntrack
  ca-certificates:update-ca-certificates
  gcc:cc
  pkg-config:pkg-config
  # The dashboard's browser tests (tests/ui_browser.rs): Chromium driven over WebDriver.
  chromium:chromium
  chromium-driver:chromedriver
  # The guest test tier (scripts/test-kernel-vm.sh): Debian's stock kernel under QEMU/TCG.
  qemu-system-x86:qemu-system-x86_64
  busybox-static:busybox
  cpio:cpio
  kmod:depmod
)
missing=()
for entry in "${need[@]}"; do
  pkg=${entry%%:*} cmd=${entry#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt (a concurrent deps.sh, unattended-upgrades) instead of failing.
  apt=(apt-get -o DPkg::Lock::Timeout=600)
  "${apt[@]}" update -q
  # iperf3 asks whether to start a daemon; the answer is no.
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
  "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}"
fi

# PostgreSQL server binaries (pg_ctlcluster comes with postgresql-common; the server may not).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends postgresql
fi

# A Rust toolchain new enough for edition 2024.
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "deps.sh: installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
# Schemathesis for the API fuzzing tier (scripts/fuzz-api.sh): pinned, in its own virtual
# environment, from PyPI. Reinstalled only when the pinned version is not the one there.
SCHEMATHESIS_VERSION=4.32.5
FUZZ_VENV=/opt/meshwg-fuzz
if [ "$("$FUZZ_VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  if ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-venv
  fi
  echo "deps.sh: installing schemathesis $SCHEMATHESIS_VERSION into $FUZZ_VENV"
  rm -rf "$FUZZ_VENV"
  /usr/bin/python3 -m venv "$FUZZ_VENV"
  "$FUZZ_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

modprobe tun 2>/dev/null || true
[ -c /dev/net/tun ] || { echo "deps.sh: /dev/net/tun is missing; wireguard-go cannot run" >&2; exit 1; }
