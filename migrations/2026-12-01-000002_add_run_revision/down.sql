DROP TRIGGER operation_runs_bump_revision ON operation_runs;
DROP FUNCTION opsrun_bump_run_revision();
ALTER TABLE operation_runs DROP COLUMN revision;
