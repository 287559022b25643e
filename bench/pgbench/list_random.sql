-- GET /v1/runs?type=inventory_sync&limit=50&created_before=<a random instant of the last 180 days>
\set seconds random(1, 180 * 86400)
SELECT "id", "workspace_id", "tenant_id", "user_id", "initiator_name", "type", "status", "outcome", "summary_counts", "failure_summary", "context", "started_at", "completed_at", "created_at", "updated_at" FROM "operation_runs" WHERE ((("workspace_id" = 1) AND ("type" BETWEEN 'inventory_sync' AND 'inventory_sync')) AND ("created_at" < now() - :seconds * interval '1 second')) ORDER BY "type", "created_at" DESC, "id" DESC LIMIT 51;
