DROP TRIGGER operation_runs_backup_schedule_id ON operation_runs;
DROP FUNCTION opsrun_set_backup_schedule_id();
-- Back to a generated column: this rewrites the table.
ALTER TABLE operation_runs DROP COLUMN backup_schedule_id CASCADE;
ALTER TABLE operation_runs ADD COLUMN backup_schedule_id bigint GENERATED ALWAYS AS (
    CASE WHEN type IN ('backup_schedule_run', 'backup_schedule_retention', 'backup_schedule_purge')
          AND context ->> 'backup_schedule_id' ~ '^[0-9]{1,18}$'
         THEN (context ->> 'backup_schedule_id')::bigint
    END
) STORED;
DROP FUNCTION opsrun_backup_schedule_id(text, jsonb);
