-- Live updates (docs/CONTRACT.md, "Live updates"). Every timeline event is announced on
-- the channel `opsrun_run_events` with its id as the payload. NOTIFY is transactional:
-- the announcement is delivered exactly when the event commits, never before and never
-- without it, whoever wrote the event. Listeners read what they need from the table.
CREATE FUNCTION opsrun_announce_run_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opsrun_run_events', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER operation_run_events_announce
    AFTER INSERT ON operation_run_events
    FOR EACH ROW EXECUTE FUNCTION opsrun_announce_run_event();

-- A stream's catch-up: one workspace's events after a cursor.
CREATE INDEX operation_run_events_workspace_idx ON operation_run_events (workspace_id, id);

-- "What changed since": a workspace's runs by their last change.
CREATE INDEX operation_runs_workspace_updated_idx ON operation_runs (workspace_id, updated_at, id);
