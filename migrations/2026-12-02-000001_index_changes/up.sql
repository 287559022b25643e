-- Live updates and "what changed since" (docs/CONTRACT.md, "Live updates").

-- A stream's catch-up, and each instance's listener: one workspace's (or every)
-- event after a cursor.
CREATE INDEX operation_run_events_workspace_idx ON operation_run_events (workspace_id, id);

-- "What changed since": a workspace's runs by their last change.
CREATE INDEX operation_runs_workspace_updated_idx ON operation_runs (workspace_id, updated_at, id);
