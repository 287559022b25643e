-- GET /v1/backup-schedules/{id}/runs
\set schedule random(1, 200)
SELECT "id", "workspace_id", "tenant_id", "user_id", "initiator_name", "type", "status", "outcome", "summary_counts", "failure_summary", "context", "started_at", "completed_at", "created_at", "updated_at", "backup_schedule_id", "revision" FROM "operation_runs" WHERE ((("workspace_id" = 1) AND ("type" = ANY('{backup_schedule_run,backup_schedule_retention,backup_schedule_purge}'))) AND ("backup_schedule_id" BETWEEN :schedule AND :schedule)) ORDER BY "backup_schedule_id", "created_at" DESC, "id" DESC LIMIT 51;
