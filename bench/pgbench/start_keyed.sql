-- The statements opsrun runs for POST /v1/runs with a new Idempotency-Key that creates a run.
\set key random(1, 1000000000000)
BEGIN;
SELECT * FROM opsrun_claim_idempotency_key(:key, 1, 'bench', 'k' || :key, interval '24 hours');
INSERT INTO "operation_runs" ("workspace_id", "tenant_id", "user_id", "initiator_name", "type", "run_identity_hash", "identity_policy", "context") VALUES (1, 1001, DEFAULT, 'bench', 'inventory_sync', md5(random()::text) || md5(random()::text), 'dedupe_active', '{"selection_hash": "bench"}') ON CONFLICT DO NOTHING RETURNING "id", "workspace_id", "tenant_id", "user_id", "initiator_name", "type", "status", "outcome", "summary_counts", "failure_summary", "context", "started_at", "completed_at", "created_at", "updated_at" \gset
INSERT INTO "operation_run_events" ("run_id", "workspace_id", "actor", "kind", "from_status", "to_status", "outcome", "detail") VALUES (:id, 1, 'bench', 'created', NULL, 'queued', 'pending', '{"identity_policy": "dedupe_active"}');
INSERT INTO "idempotency_keys" ("workspace_id", "subject", "key", "request_hash", "response_status", "response_type", "response_location", "response_body") VALUES (1, 'bench', 'k' || :key, md5(random()::text) || md5(random()::text), 201, 'application/json', '/v1/runs/' || :id, '{"id": 1, "status": "queued", "outcome": "pending", "summary_counts": {}, "failure_summary": {"items": [], "dropped": 0}, "context": {"selection_hash": "bench"}}') ON CONFLICT ("workspace_id", "subject", "key") DO UPDATE SET "request_hash" = excluded."request_hash";
COMMIT;
