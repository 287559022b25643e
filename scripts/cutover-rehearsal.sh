#!/usr/bin/env bash
# The whole cut-over, rehearsed as the platform would run it (docs/CUTOVER.md): a
# database shaped like the platform's (its operation_runs in its own column types and
# shapes, its legacy run tables with findings and inventory items pointing at them), a
# writer that keeps writing runs the way the platform's application does, and in order
# adopt --check, adopt, legacy analyze/backfill/verify, the gated legacy drop, then serve
# under API load. Prints a timeline with the longest wait the writer and the API clients
# saw in each step, and proves at the end that nothing was lost.
#
#   scripts/cutover-rehearsal.sh [--runs N]                      # default 1,000,000; its own PostgreSQL
#   scripts/cutover-rehearsal.sh --runs N --database-url URL     # a scratch database it may empty
#   OPSRUN=target/debug/opsrun scripts/cutover-rehearsal.sh …    # a binary built already
set -euo pipefail
cd "$(dirname "$0")/.."
runs=1000000
url=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --database-url) url=$2; shift 2 ;;
    *) echo "usage: scripts/cutover-rehearsal.sh [--runs N] [--database-url URL]" >&2; exit 2 ;;
  esac
done
# shellcheck source=bench/tools.sh
. bench/tools.sh
opsrun_binary
psycopg_python

if [ -z "$url" ]; then
  # A throwaway cluster of its own, as the postgres user when run as root.
  bin=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
  dir=$(mktemp -d /tmp/opsrun-rehearsal.XXXXXX)
  port=$((20000 + RANDOM % 20000))
  as_pg() { if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
  as_pg "'$bin/initdb' -D '$dir/data' -A trust -U postgres >/dev/null"
  as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -w -o \"-p $port -k $dir -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=8GB -c maintenance_work_mem=512MB\" start >/dev/null"
  trap 'as_pg "\"$bin/pg_ctl\" -D \"$dir/data\" -m fast stop >/dev/null"; rm -rf "$dir"' EXIT
  url="postgres://postgres@127.0.0.1:$port/postgres"
fi
"$python" scripts/cutover_rehearsal.py "$url" "$runs" "$opsrun"
