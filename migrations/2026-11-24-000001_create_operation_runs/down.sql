DROP FUNCTION opsrun_append_failures(jsonb, jsonb);
DROP FUNCTION opsrun_add_counts(jsonb, jsonb);
DROP TABLE operation_run_events;
DROP FUNCTION operation_run_events_append_only();
DROP TABLE operation_runs;
