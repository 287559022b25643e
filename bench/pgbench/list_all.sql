-- GET /v1/runs?limit=50
SELECT "id", "workspace_id", "tenant_id", "user_id", "initiator_name", "type", "status", "outcome", "summary_counts", "failure_summary", "context", "started_at", "completed_at", "created_at", "updated_at", "backup_schedule_id", "revision" FROM "operation_runs" WHERE ("workspace_id" = 1) ORDER BY "created_at" DESC, "id" DESC LIMIT 51;
