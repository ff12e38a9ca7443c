#!/usr/bin/env bash
# Runs the MeshWG controller on this host, as root (Debian/Ubuntu):
#   - installs what is missing (scripts/deps.sh) and builds the release binary;
#   - reads /etc/meshwg.env, creating it with fresh secrets (mode 0600) if it does not exist;
#   - without DATABASE_URL, makes (or reuses) a local PostgreSQL cluster "meshwg" with a database
#     of the same name that root reaches over the Unix socket by peer authentication;
#   - runs `meshwg serve` in the foreground (Ctrl-C stops the controller; tunnels keep running).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root" >&2; exit 1; }

bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bin meshwg

ENV_FILE=${MESHWG_ENV_FILE:-/etc/meshwg.env}
if [ ! -f "$ENV_FILE" ]; then
  umask 077
  admin_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20)
  cat > "$ENV_FILE" <<ENV
# Made by scripts/run.sh on $(date -u +%Y-%m-%d); see deploy/meshwg.env.example for every variable.
ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
ADMIN_EMAIL=admin@meshwg.local
ADMIN_PASSWORD=$admin_password
ENV
  echo "run.sh: wrote $ENV_FILE; operator login: admin@meshwg.local / $admin_password"
fi
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a

if [ -z "${DATABASE_URL:-}" ]; then
  ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$ver meshwg"; then
    pg_createcluster "$ver" meshwg >/dev/null
  fi
  pg_ctlcluster "$ver" meshwg start 2>/dev/null || true
  port=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "meshwg" {print $3}')
  psql_pg() { runuser -u postgres -- psql -p "$port" -qAtc "$1"; }
  [ "$(psql_pg "SELECT 1 FROM pg_roles WHERE rolname = 'root'")" = 1 ] || psql_pg "CREATE ROLE root LOGIN"
  [ "$(psql_pg "SELECT 1 FROM pg_database WHERE datname = 'meshwg'")" = 1 ] || psql_pg "CREATE DATABASE meshwg OWNER root ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
  export DATABASE_URL="host=/var/run/postgresql port=$port user=root dbname=meshwg"
  echo "run.sh: using the local PostgreSQL cluster $ver/meshwg on port $port"
fi
if [ -z "${PUBLIC_ENDPOINT:-}" ]; then
  PUBLIC_ENDPOINT=$(hostname -I 2>/dev/null | awk '{print $1}')
  export PUBLIC_ENDPOINT=${PUBLIC_ENDPOINT:-127.0.0.1}
  echo "run.sh: PUBLIC_ENDPOINT not set; configs will point at $PUBLIC_ENDPOINT"
fi
exec target/release/meshwg serve
