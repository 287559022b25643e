-- The statements opsrun runs for POST /v1/runs refused with 409.
BEGIN;
INSERT INTO "operation_runs" ("workspace_id", "tenant_id", "user_id", "initiator_name", "type", "run_identity_hash", "identity_policy", "context") VALUES (1, 1001, DEFAULT, 'bench', 'inventory_sync', :held, 'dedupe_active', '{"selection_hash": "bench-refused"}') ON CONFLICT DO NOTHING RETURNING "id", "workspace_id", "tenant_id", "user_id", "initiator_name", "type", "status", "outcome", "summary_counts", "failure_summary", "context", "started_at", "completed_at", "created_at", "updated_at";
SELECT "id" FROM "operation_runs" WHERE ((("workspace_id" = 1) AND ("run_identity_hash" = :held)) AND ("tenant_id" = 1001)) AND status IN ('queued', 'running') ORDER BY "id" ASC LIMIT 1;
COMMIT;
