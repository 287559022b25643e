DROP TRIGGER operation_runs_backup_schedule_id ON operation_runs;
DROP FUNCTION opsrun_set_backup_schedule_id();
-- Back to a generated column: this rewrites the table, and the indexes over the column
-- are made again.
ALTER TABLE operation_runs DROP COLUMN backup_schedule_id CASCADE;
ALTER TABLE operation_runs ADD COLUMN backup_schedule_id bigint GENERATED ALWAYS AS (
    CASE WHEN type IN ('backup_schedule_run', 'backup_schedule_retention', 'backup_schedule_purge')
          AND context ->> 'backup_schedule_id' ~ '^[0-9]{1,18}$'
         THEN (context ->> 'backup_schedule_id')::bigint
    END
) STORED;
DROP FUNCTION opsrun_backup_schedule_id(text, jsonb);
CREATE INDEX operation_runs_backup_schedule_history_idx
    ON operation_runs (workspace_id, backup_schedule_id, created_at DESC, id DESC)
    WHERE backup_schedule_id IS NOT NULL;
CREATE INDEX operation_runs_backup_schedule_status_idx
    ON operation_runs (workspace_id, backup_schedule_id, status, created_at DESC, id DESC)
    WHERE backup_schedule_id IS NOT NULL;
CREATE INDEX operation_runs_backup_schedule_outcome_idx
    ON operation_runs (workspace_id, backup_schedule_id, outcome, created_at DESC, id DESC)
    WHERE backup_schedule_id IS NOT NULL;
