-- backup_schedule_id kept by a trigger instead of as a generated column: the same value
-- from the same expression, but a plain column can be added to a large table that
-- opsrun adopts without rewriting it (docs/CUTOVER.md), where adding a stored generated
-- column rewrites the whole table under an exclusive lock. DROP EXPRESSION keeps every
-- stored value and takes the lock only for a catalog change.
CREATE FUNCTION opsrun_backup_schedule_id(run_type text, context jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN run_type IN ('backup_schedule_run', 'backup_schedule_retention', 'backup_schedule_purge')
                 AND context ->> 'backup_schedule_id' ~ '^[0-9]{1,18}$'
                THEN (context ->> 'backup_schedule_id')::bigint
           END
$$;

ALTER TABLE operation_runs ALTER COLUMN backup_schedule_id DROP EXPRESSION;

CREATE FUNCTION opsrun_set_backup_schedule_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.backup_schedule_id := opsrun_backup_schedule_id(NEW.type, NEW.context);
    RETURN NEW;
END
$$;

-- Whoever writes a run, its schedule follows its type and context.
CREATE TRIGGER operation_runs_backup_schedule_id
    BEFORE INSERT OR UPDATE OF type, context, backup_schedule_id ON operation_runs
    FOR EACH ROW EXECUTE FUNCTION opsrun_set_backup_schedule_id();
