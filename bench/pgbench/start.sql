-- The statements opsrun runs for POST /v1/runs that creates a run.
BEGIN;
INSERT INTO "operation_runs" ("workspace_id", "tenant_id", "user_id", "initiator_name", "type", "run_identity_hash", "identity_policy", "context") VALUES (1, 1001, DEFAULT, 'bench', 'inventory_sync', md5(random()::text) || md5(random()::text), 'dedupe_active', '{"selection_hash": "bench"}') ON CONFLICT DO NOTHING RETURNING "id", "workspace_id", "tenant_id", "user_id", "initiator_name", "type", "status", "outcome", "summary_counts", "failure_summary", "context", "started_at", "completed_at", "created_at", "updated_at" \gset
INSERT INTO "operation_run_events" ("run_id", "workspace_id", "actor", "kind", "from_status", "to_status", "outcome", "detail") VALUES (:id, 1, 'bench', 'created', NULL, 'queued', 'pending', '{"identity_policy": "dedupe_active"}');
COMMIT;
