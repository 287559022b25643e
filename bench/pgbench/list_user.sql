-- GET /v1/runs?user_id=1010&limit=50
SELECT "id", "workspace_id", "tenant_id", "user_id", "initiator_name", "type", "status", "outcome", "summary_counts", "failure_summary", "context", "started_at", "completed_at", "created_at", "updated_at" FROM "operation_runs" WHERE (("workspace_id" = 1) AND ("user_id" BETWEEN 1010 AND 1010)) ORDER BY "user_id", "created_at" DESC, "id" DESC LIMIT 51;
