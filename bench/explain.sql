-- The query shapes the API runs, as diesel sends them, with typical values.
-- Run against a seeded database: psql -f bench/explain.sql
\pset pager off
\echo '== backup-schedule history (GET /v1/backup-schedules/42/runs)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type = ANY('{backup_schedule_run,backup_schedule_retention,backup_schedule_purge}') AND backup_schedule_id = 42
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== history, retention question (type=backup_schedule_run&outcome=succeeded&limit=5)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type = ANY('{backup_schedule_run}') AND outcome = ANY('{succeeded}') AND backup_schedule_id = 42
ORDER BY created_at DESC, id DESC LIMIT 6;

\echo '== list, first page (GET /v1/runs?type=inventory_sync)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type = ANY('{inventory_sync}')
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== list, deep page via cursor (10,000 rows in)'
SELECT created_at AS cursor_at, id AS cursor_id FROM operation_runs
WHERE workspace_id = 1 AND type = 'inventory_sync' ORDER BY created_at DESC, id DESC OFFSET 10000 LIMIT 1 \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type = ANY('{inventory_sync}') AND (created_at, id) < (:'cursor_at', :cursor_id)
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== list, one tenant (GET /v1/runs?tenant_id=1005)'

EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND tenant_id = 1005
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== list, a caller restricted to tenants 1005 and 1006 (GET /v1/runs): one range per tenant, then the workspace-scoped runs'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND tenant_id = 1006
ORDER BY created_at DESC, id DESC LIMIT 51;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND tenant_id IS NULL
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== the same as one query, which the service uses only for callers with more than 16 tenants'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM operation_runs
WHERE workspace_id = 1 AND (tenant_id IS NULL OR tenant_id = ANY('{1005,1006}'))
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== list, everything the caller sees (GET /v1/runs)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== list, active runs (GET /v1/runs?status=active)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM operation_runs
WHERE workspace_id = 1 AND status IN ('queued', 'running')
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== view (GET /v1/runs/11)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = 1 AND id = 11 LIMIT 1;

\echo '== identity holder after a refused start'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM operation_runs
WHERE workspace_id = 1 AND run_identity_hash = repeat('a', 64) AND tenant_id = 1005 AND status IN ('queued', 'running')
ORDER BY id ASC LIMIT 1;

\echo '== the reaper'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM operation_runs
WHERE status IN ('queued', 'running') AND updated_at < now() - make_interval(secs => 900000 / 1000.0)
  AND updated_at < now() - make_interval(secs => (CASE type WHEN 'inventory_sync' THEN 2700000 ELSE 900000 END) / 1000.0)
ORDER BY updated_at ASC LIMIT 500 FOR UPDATE SKIP LOCKED;
