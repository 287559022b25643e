-- The query shapes the API runs, as diesel sends them, with typical values.
-- Run against a seeded database: psql -f bench/explain.sql
\pset pager off
\echo '== backup-schedule history (GET /v1/backup-schedules/42/runs)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type = ANY('{backup_schedule_run,backup_schedule_retention,backup_schedule_purge}') AND backup_schedule_id BETWEEN 42 AND 42
ORDER BY backup_schedule_id, created_at DESC, id DESC LIMIT 51;

\echo '== history, retention question (type=backup_schedule_run&outcome=succeeded&limit=5)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type = ANY('{backup_schedule_run}') AND backup_schedule_id = 42 AND outcome BETWEEN 'succeeded' AND 'succeeded'
ORDER BY outcome, created_at DESC, id DESC LIMIT 6;

\echo '== list, first page (GET /v1/runs?type=inventory_sync)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type BETWEEN 'inventory_sync' AND 'inventory_sync'
ORDER BY type, created_at DESC, id DESC LIMIT 51;

\echo '== list, deep page via cursor (10,000 rows in)'
SELECT created_at AS cursor_at, id AS cursor_id FROM operation_runs
WHERE workspace_id = 1 AND type = 'inventory_sync' ORDER BY created_at DESC, id DESC OFFSET 10000 LIMIT 1 \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND type BETWEEN 'inventory_sync' AND 'inventory_sync' AND (created_at, id) < (:'cursor_at', :cursor_id)
ORDER BY type, created_at DESC, id DESC LIMIT 51;

\echo '== list, one tenant (GET /v1/runs?tenant_id=1005)'

EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND tenant_id BETWEEN 1005 AND 1005
ORDER BY tenant_id, created_at DESC, id DESC LIMIT 51;

\echo '== list, a caller restricted to some tenants (GET /v1/runs): the workspace-scoped runs, then one statement over every tenant (below)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs
WHERE workspace_id = 1 AND tenant_id IS NULL
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== list, a caller restricted to 20 tenants (1005-1024): a page of each tenant'\''s range, in one statement'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT page.* FROM unnest('{1005,1006,1007,1008,1009,1010,1011,1012,1013,1014,1015,1016,1017,1018,1019,1020,1021,1022,1023,1024}'::bigint[]) AS each_tenant(tenant)
CROSS JOIN LATERAL (
    SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
    FROM operation_runs
    WHERE workspace_id = 1 AND tenant_id BETWEEN each_tenant.tenant AND each_tenant.tenant
    ORDER BY tenant_id, created_at DESC, id DESC LIMIT 51
) AS page
ORDER BY created_at DESC, id DESC LIMIT 51;

\echo '== for comparison, the same tenants as one query with ANY, as opsrun read more than 16 tenants before: it walks past every run of the other tenants'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM operation_runs
WHERE workspace_id = 1 AND tenant_id = ANY('{1005,1006,1007,1008,1009,1010,1011,1012,1013,1014,1015,1016,1017,1018,1019,1020,1021,1022,1023,1024}')
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
-- A filter with an index of its own is written `column BETWEEN v AND v` and leads the
-- ORDER BY: with `column = v` the planner may walk the workspace's newest-first index and
-- filter (it assumes matches are spread evenly), reading every newer run that does not
-- match (tests/api/pagination.rs saw it). The first query is that shape; the rest are the shapes opsrun sends. They are
-- prepared and planned generically, as a pooled connection's cached statements end up,
-- so the plan cannot depend on the values.
\echo '== skewed: status=completed written as an equality (not what opsrun sends): the planner picks either index'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = 1 AND status = 'completed'
ORDER BY created_at DESC, id DESC LIMIT 51;

SET plan_cache_mode = force_generic_plan;
\echo '== skewed: status=completed (GET /v1/runs?status=completed), a generic plan'
PREPARE by_status(bigint, text, text, bigint) AS
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = $1 AND status BETWEEN $2 AND $3
ORDER BY status, created_at DESC, id DESC LIMIT $4;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE by_status(1, 'completed', 'completed', 51);

\echo '== skewed: outcome=succeeded (GET /v1/runs?outcome=succeeded), a generic plan'
PREPARE by_outcome(bigint, text, text, bigint) AS
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = $1 AND outcome BETWEEN $2 AND $3
ORDER BY outcome, created_at DESC, id DESC LIMIT $4;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE by_outcome(1, 'succeeded', 'succeeded', 51);
RESET plan_cache_mode;

\echo '== skewed: status=active reads the queued range and the running range, then merges them'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM operation_runs WHERE workspace_id = 1 AND status BETWEEN 'running' AND 'running'
ORDER BY status, created_at DESC, id DESC LIMIT 51;

\echo '== skewed: outcome=failed (GET /v1/runs?outcome=failed)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = 1 AND outcome BETWEEN 'failed' AND 'failed'
ORDER BY outcome, created_at DESC, id DESC LIMIT 51;

\echo '== skewed: user_id=1010 (GET /v1/runs?user_id=1010)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE workspace_id = 1 AND user_id BETWEEN 1010 AND 1010
ORDER BY user_id, created_at DESC, id DESC LIMIT 51;

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
WHERE workspace_id = 1 AND type = ANY('{backup_schedule_run,backup_schedule_retention,backup_schedule_purge}') AND backup_schedule_id = 42 AND status BETWEEN 'completed' AND 'completed'
ORDER BY status, created_at DESC, id DESC LIMIT 51;

\echo '== a batch of views (32 concurrent GET /v1/runs/{id}): one statement'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at
FROM operation_runs WHERE id = ANY(ARRAY(SELECT 10 * g FROM generate_series(1, 32) AS g));
