-- A run's revision: 1 when created, one more on every update, whoever writes it. It is
-- what the run's ETag names. updated_at cannot serve: it is the writing transaction's
-- start time, so two updates (or an update and a read-back) can share one microsecond.
-- A trigger rather than the service's UPDATE statement, so that no writer (a legacy job,
-- a hand-run fix) can change a run without changing its ETag. A constant default makes
-- the ALTER instant on a large table (no rewrite).
ALTER TABLE operation_runs ADD COLUMN revision bigint NOT NULL DEFAULT 1;

CREATE FUNCTION opsrun_bump_run_revision() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.revision := OLD.revision + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER operation_runs_bump_revision
    BEFORE UPDATE ON operation_runs
    FOR EACH ROW EXECUTE FUNCTION opsrun_bump_run_revision();
