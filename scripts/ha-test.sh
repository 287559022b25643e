#!/usr/bin/env bash
# The high-availability checks (docs/DEPLOYMENT.md): builds the lab (scripts/ha-lab.sh),
# runs the API suite with its services' requests going through PgBouncer in transaction
# mode, then the failover and replica tests, and takes the lab down again, also on failure.
# Figures of the failovers land in target/ha-failover-figures.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ha-lab.sh down >/dev/null 2>&1 || true
trap 'scripts/ha-lab.sh down' EXIT
urls=$(scripts/ha-lab.sh up)
pooler=$(sed -n 's/^POOLER_URL=//p' <<<"$urls")
# PgBouncer sends to the node that was primary when the lab came up: the first host.
primary=$(sed -n 's|^DATABASE_URL=postgres://\([^@]*\)@\([^,]*\),.*|postgres://\1@\2|p' <<<"$urls")

echo "== the API suite through PgBouncer (transaction mode, statement cache off)"
# Less one test that times a kernel socket stall, not a database path: with four more
# PostgreSQL servers on the machine its timing is noise (it runs in the plain suite).
TEST_DATABASE_URL="$primary/postgres" TEST_DATABASE_POOLER_URL="${pooler%/*}/postgres" \
  cargo test --test api -- --skip stream::a_stalled_reader_is_dropped_while_other_streams_keep_flowing
"${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}/psql" -X -q -h 127.0.0.1 \
  -p "$(sed 's|.*:\([0-9]*\)/.*|\1|' <<<"$pooler")" -U postgres -d pgbouncer -c "SHOW TOTALS" | sed -n '1,5p'

echo "== failover and read replica"
cargo test --test api ha:: -- --ignored --test-threads 1 --nocapture
cat target/ha-failover-figures.txt
