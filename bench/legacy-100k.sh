#!/usr/bin/env bash
# Times `opsrun legacy` on a 100,000-row legacy database: 40,000 inventory syncs,
# 20,000 group syncs, 30,000 backup-schedule runs and 10,000 restore runs (a fifth of
# them wizard states), in every status, with findings pointing at inventory syncs.
#
#   bench/legacy-100k.sh postgres://user@host/scratch_db   # a database it may fill
#   BEFORE=/path/to/older/opsrun bench/legacy-100k.sh URL  # also times that binary's backfill
#                                                          # on a copy, side by side
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:?usage: bench/legacy-100k.sh DATABASE_URL (a scratch database)}
# shellcheck source=bench/tools.sh
. bench/tools.sh
opsrun_binary   # OPSRUN=<binary>: one built already
DATABASE_URL="$url" OPSRUN_JWT_SECRET=unused-for-migrations-only-0123456789 "$opsrun" migrate
psql "$url" -q -v ON_ERROR_STOP=1 -f tests/fixtures/legacy-schema.sql
psql "$url" -q -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO tenants SELECT g, 1 + g % 3, 'tenant ' || g FROM generate_series(4, 50) g;
INSERT INTO inventory_sync_runs (id, tenant_id, user_id, selection_hash, status, error_codes, items_observed_count,
                                 items_upserted_count, errors_count, started_at, finished_at, created_at, updated_at)
SELECT g, 1 + g % 50, 10 + g % 2, 'sel-' || g, (ARRAY['success','success','success','partial','failed','skipped','pending','running','exploded'])[1 + g % 9],
       CASE WHEN g % 5 = 0 THEN '["graph.403"]'::jsonb END, 100, 90, g % 3,
       now() - g * interval '1 minute', now() - g * interval '1 minute' + interval '30 seconds',
       now() - g * interval '1 minute', now() - g * interval '1 minute'
FROM generate_series(1, 40000) g;
INSERT INTO entra_group_sync_runs (id, tenant_id, selection_key, slot_key, status, error_code, error_category, error_summary,
                                   pages_fetched, finished_at, created_at, updated_at)
SELECT g, 1 + g % 50, 'all-groups', 'slot-' || g, (ARRAY['succeeded','succeeded','partial','failed','pending','running'])[1 + g % 6],
       CASE WHEN g % 6 = 3 THEN 'graph.throttled' END, 'provider_throttled', 'Bearer secret-token refused', 3,
       now(), now() - g * interval '1 minute', now()
FROM generate_series(1, 20000) g;
INSERT INTO backup_schedule_runs (id, backup_schedule_id, tenant_id, scheduled_for, status, summary, backup_set_id,
                                  started_at, finished_at, created_at, updated_at)
SELECT g, 1 + g % 300, 1 + g % 50, timestamp '2026-01-01' + g * interval '1 minute',
       (ARRAY['success','success','success','partial','failed','canceled','skipped','running'])[1 + g % 8],
       CASE WHEN g % 97 = 0 THEN '{broken' ELSE '{"total_policies": 10, "backed_up": 9, "errors": 1}' END, g,
       now(), now(), now(), now()
FROM generate_series(1, 30000) g;
INSERT INTO restore_runs (id, tenant_id, backup_set_id, requested_by, is_dry_run, status, results, started_at, completed_at, created_at, updated_at)
SELECT g, 1 + g % 50, g, (ARRAY['Ada', 'Grace', NULL])[1 + g % 3], false,
       (ARRAY['draft','previewed','queued','running','completed','completed_with_errors','failed','aborted','cancelled','completed'])[1 + g % 10],
       '{"items": [{"ok": true}, {"ok": false}]}', now(), now(), now(), now()
FROM generate_series(1, 10000) g;
INSERT INTO findings (baseline_run_id, current_run_id) SELECT g, g + 1 FROM generate_series(1, 5000) g;
INSERT INTO inventory_items (last_seen_run_id) SELECT g FROM generate_series(1, 5000) g;
SQL
if [ -n "${BEFORE:-}" ]; then
  # The same rows in a copy (CREATE DATABASE … TEMPLATE), backfilled by the older binary first.
  db=${url##*/}; db=${db%%\?*}
  copy_url=${url/\/$db/\/${db}_before}
  admin_url=${url/\/$db/\/postgres}
  PGOPTIONS="-c client_min_messages=warning" psql "$admin_url" -q -c "DROP DATABASE IF EXISTS ${db}_before" -c "CREATE DATABASE ${db}_before TEMPLATE $db"
  echo "== before: $BEFORE legacy backfill"
  /usr/bin/time -f "   (%e s wall, %M KiB peak RSS)" "$BEFORE" legacy backfill --database-url "$copy_url" | sed -n 1,5p
  psql "$admin_url" -q -c "DROP DATABASE ${db}_before"
fi
for step in analyze "backfill --dry-run" backfill verify; do
  echo "== opsrun legacy $step"
  # shellcheck disable=SC2086
  /usr/bin/time -f "   (%e s wall, %M KiB peak RSS)" "$opsrun" legacy $step --database-url "$url"
done
