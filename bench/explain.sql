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

-- The skewed filters (bench/run.sh adds 50,000 newest runs that are queued, of user
-- 9999, one in ten of schedule 42): each must be a range of an index of its own.
\echo '== skewed: status=completed (GET /v1/runs?status=completed)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = 1 AND status = 'completed'
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== skewed: status=active reads the queued range and the running range, then merges them'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM operation_runs WHERE workspace_id = 1 AND status = 'running'
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== skewed: outcome=failed (GET /v1/runs?outcome=failed)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = 1 AND outcome = 'failed'
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== skewed: user_id=1010 (GET /v1/runs?user_id=1010)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = 1 AND user_id = 1010
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== skewed: the day before the burst (GET /v1/runs?created_after=…&created_before=…)'
SELECT min(created_at) AS burst_at FROM operation_runs WHERE user_id = 9999 \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = 1 AND created_at >= :'burst_at'::timestamptz - interval '1 day' AND created_at < :'burst_at'
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== skewed: schedule 42, status=completed (GET /v1/backup-schedules/42/runs?status=completed)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type = ANY('{backup_schedule_run,backup_schedule_retention,backup_schedule_purge}') AND status = 'completed' AND backup_schedule_id = 42
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== a batch of views (32 concurrent GET /v1/runs/{id}): one statement'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE id = ANY(ARRAY(SELECT 10 * g FROM generate_series(1, 32) AS g));
