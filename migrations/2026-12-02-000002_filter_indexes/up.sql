-- A selective filter over a skewed history ("the failures", while the newest 50,000 runs
-- are queued) must be an index range, not a walk down the workspace's newest runs past
-- every run that does not match. One index per filter a list offers that no other index
-- leads with; `status=active` reads the queued and the running range and merges them,
-- and several outcomes read one range each, so neither needs an index of its own.
--
-- On a large table, build these beforehand with CREATE INDEX CONCURRENTLY under the same
-- names (docs/DEPLOYMENT.md): the migration then finds them and takes no lock.
CREATE INDEX IF NOT EXISTS operation_runs_workspace_status_created_idx
    ON operation_runs (workspace_id, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS operation_runs_workspace_outcome_created_idx
    ON operation_runs (workspace_id, outcome, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS operation_runs_workspace_user_created_idx
    ON operation_runs (workspace_id, user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS operation_runs_backup_schedule_status_idx
    ON operation_runs (workspace_id, backup_schedule_id, status, created_at DESC, id DESC)
    WHERE backup_schedule_id IS NOT NULL;
-- Retention's question: a schedule's newest succeeded runs, past however many failures.
CREATE INDEX IF NOT EXISTS operation_runs_backup_schedule_outcome_idx
    ON operation_runs (workspace_id, backup_schedule_id, outcome, created_at DESC, id DESC)
    WHERE backup_schedule_id IS NOT NULL;
