#!/usr/bin/env bash
# Times `opsrun adopt` on the platform's operation_runs at 1,000,000 rows
# (tests/fixtures/platform-schema.sql's generator) while a writer keeps updating runs,
# and reports the longest any of its writes waited: the longest lock adopt held.
#
#   bench/adopt-1m.sh postgres://user@host/scratch_db [rows]   # its public schema is replaced
#   OPSRUN=/path/to/opsrun bench/adopt-1m.sh …                  # a binary built already
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:?usage: bench/adopt-1m.sh DATABASE_URL (a scratch database) [rows]}
rows=${2:-1000000}
opsrun=${OPSRUN:-target/release/opsrun}
[ -n "${OPSRUN:-}" ] || cargo build --release --quiet --bin opsrun
venv=target/bench-venv
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import psycopg' 2>/dev/null || {
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'psycopg[binary]~=3.2'
}
PGOPTIONS='-c client_min_messages=warning' psql "$url" -q -v ON_ERROR_STOP=1 -c 'DROP SCHEMA public CASCADE' -c 'CREATE SCHEMA public' \
  -f tests/fixtures/platform-schema.sql -f tests/fixtures/legacy-schema.sql
echo "== $rows platform rows"
/usr/bin/time -f "   (generated in %e s)" psql "$url" -q -o /dev/null -c "SELECT generate_platform_runs($rows)"
psql "$url" -q -c 'VACUUM ANALYZE operation_runs'
psql "$url" -At -c "SELECT 'table ' || pg_size_pretty(pg_table_size('operation_runs')) || ', indexes ' || pg_size_pretty(pg_indexes_size('operation_runs'))"

writes=$(mktemp)
"$venv/bin/python" bench/adopt_writer.py "$url" "$rows" > "$writes" &
writer=$!
trap 'kill $writer 2>/dev/null || true' EXIT
sleep 3
echo "== opsrun adopt --check"
/usr/bin/time -f "   (%e s wall, %M KiB peak RSS)" "$opsrun" adopt --check --timezone Europe/Berlin --database-url "$url" 2>&1 \
  | sed -n '/^finding/,/^schema/p;/wall/p'
echo "== opsrun adopt"
/usr/bin/time -f "   (%e s wall, %M KiB peak RSS)" "$opsrun" adopt --timezone Europe/Berlin --database-url "$url" 2>&1 \
  | sed -n '/^step/,$p'
sleep 3
kill -TERM $writer
wait $writer || true
trap - EXIT
echo "== the writer beside it (updates of random runs, two connections)"
cat "$writes"
rm -f "$writes"
echo "== a second adopt"
"$opsrun" adopt --timezone Europe/Berlin --database-url "$url" | tail -1
