//! `opsrun seed`: loads many realistic runs fast, for benchmarks and for trying the API
//! on a table of real size. Rows are generated inside PostgreSQL (INSERT … SELECT over
//! generate_series), one batch per statement, with their timeline events.

use std::time::Instant;

use diesel::sql_types::{BigInt, Text};
use diesel::{sql_query, Connection, PgConnection, QueryableByName, RunQueryDsl};
use indicatif::{ProgressBar, ProgressStyle};

/// How the seeded runs are spread.
#[derive(Clone, Copy, Debug)]
pub struct SeedPlan {
    pub runs: i64,
    pub workspaces: i64,
    pub tenants_per_workspace: i64,
    pub schedules_per_workspace: i64,
    pub batch: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One batch: rows `first..=last` of the plan, spread over 180 days up to now, newest
/// last, so ids grow with `created_at` as they do in production.
const BATCH_SQL: &str = r#"
WITH params AS (
    SELECT $1::bigint AS first, $2::bigint AS last, $3::bigint AS total, $4::bigint AS workspaces,
           $5::bigint AS tenants, $6::bigint AS schedules, $7::text AS salt
),
generated AS (
    SELECT g,
           1 + (g % p.workspaces) AS workspace_id,
           (ARRAY['inventory_sync', 'directory_groups_sync', 'directory_role_definitions_sync', 'policy_sync',
                  'backup_schedule_run', 'backup_schedule_run', 'backup_schedule_retention', 'backup_schedule_purge',
                  'restore_execute', 'provider_connection_verify', 'workspace_audit_export',
                  'inventory_sync'])[1 + (g / p.workspaces) % 12] AS type,
           (g * 7919) % 1000 AS dice,
           p.tenants, p.schedules, p.salt,
           now() - ((p.total - g) * (interval '180 days' / greatest(p.total, 1))) AS created_at
    FROM params p, generate_series(p.first, p.last) AS g
),
shaped AS (
    SELECT *,
           CASE WHEN dice < 20 THEN 'queued' WHEN dice < 50 THEN 'running' ELSE 'completed' END AS status,
           CASE WHEN dice < 50 THEN 'pending'
                WHEN dice < 870 THEN 'succeeded' WHEN dice < 930 THEN 'partially_succeeded'
                WHEN dice < 980 THEN 'failed' WHEN dice < 990 THEN 'blocked' ELSE 'cancelled' END AS outcome
    FROM generated
),
inserted AS (
    INSERT INTO operation_runs (workspace_id, tenant_id, user_id, initiator_name, type, status, outcome,
                                run_identity_hash, identity_policy, summary_counts, context,
                                started_at, completed_at, created_at, updated_at)
    SELECT workspace_id,
           CASE WHEN type = 'workspace_audit_export' THEN NULL ELSE workspace_id * 1000 + 1 + (g / 7) % tenants END,
           1000 + g % 50,
           'seed user ' || (g % 50),
           type, status, outcome,
           encode(sha256(convert_to(salt || ':' || g, 'UTF8')), 'hex'),
           CASE WHEN type = 'restore_execute' OR (type = 'backup_schedule_run' AND g % 3 <> 0) THEN 'strict_once'
                WHEN type = 'backup_schedule_run' THEN 'unique_per_click' ELSE 'dedupe_active' END,
           CASE WHEN status = 'completed'
                THEN jsonb_build_object('total', 100 + g % 900, 'processed', 100 + g % 900, 'failed', g % 7)
                ELSE '{}'::jsonb END,
           CASE
             WHEN type LIKE 'backup_schedule_%' THEN jsonb_build_object(
                 'backup_schedule_id', 1 + (g / 13) % schedules,
                 'trigger', CASE WHEN type <> 'backup_schedule_run' THEN NULL WHEN g % 3 <> 0 THEN 'scheduled' ELSE 'run_now' END,
                 'scheduled_for', CASE WHEN type = 'backup_schedule_run' AND g % 3 <> 0
                                       THEN to_char(date_trunc('minute', created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:00"Z"') END,
                 'backup_set_id', g)
             WHEN type = 'restore_execute' THEN jsonb_build_object('restore_run_id', g)
             WHEN type = 'provider_connection_verify' THEN jsonb_build_object('provider_connection_id', 1 + g % 40)
             WHEN type IN ('inventory_sync', 'policy_sync') THEN jsonb_build_object('selection_hash', md5(g::text))
             WHEN type = 'directory_groups_sync' THEN jsonb_build_object('selection_key', 'groups-' || g % 97)
             ELSE '{}'::jsonb
           END,
           CASE WHEN status = 'queued' THEN NULL ELSE created_at + interval '2 seconds' END,
           CASE WHEN status = 'completed' THEN created_at + interval '3 minutes' END,
           created_at,
           -- Active runs are recent in real life: touched within the last ten minutes.
           CASE WHEN status = 'completed' THEN created_at + interval '3 minutes'
                ELSE greatest(created_at, now() - (g % 10) * interval '1 minute') END
    FROM shaped
    RETURNING id, workspace_id, initiator_name, status, outcome, created_at, completed_at
),
created_events AS (
    INSERT INTO operation_run_events (run_id, workspace_id, at, actor, kind, to_status, outcome)
    SELECT id, workspace_id, created_at, initiator_name, 'created', 'queued', 'pending' FROM inserted
)
INSERT INTO operation_run_events (run_id, workspace_id, at, actor, kind, from_status, to_status, outcome)
SELECT id, workspace_id, completed_at, 'seed worker', 'completed', 'running', 'completed', outcome
FROM inserted WHERE status = 'completed'
"#;

/// Adds `plan.runs` runs to the database and returns the table's new size.
pub fn seed(conn: &mut PgConnection, plan: SeedPlan) -> anyhow::Result<i64> {
    let started = Instant::now();
    let mut salt_bytes = [0u8; 8];
    getrandom::fill(&mut salt_bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = hex::encode(salt_bytes);
    let progress = ProgressBar::new(plan.runs as u64).with_style(
        ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} runs, {per_sec}, eta {eta}")
            .expect("a valid template"),
    );
    let mut first = 1;
    while first <= plan.runs {
        let last = (first + plan.batch - 1).min(plan.runs);
        conn.transaction(|conn| {
            sql_query(BATCH_SQL)
                .bind::<BigInt, _>(first)
                .bind::<BigInt, _>(last)
                .bind::<BigInt, _>(plan.runs)
                .bind::<BigInt, _>(plan.workspaces)
                .bind::<BigInt, _>(plan.tenants_per_workspace)
                .bind::<BigInt, _>(plan.schedules_per_workspace)
                .bind::<Text, _>(&salt)
                .execute(conn)
        })?;
        progress.inc((last - first + 1) as u64);
        first = last + 1;
    }
    progress.finish_and_clear();
    sql_query("ANALYZE operation_runs, operation_run_events").execute(conn)?;
    let total = sql_query("SELECT count(*) AS n FROM operation_runs").get_result::<Count>(conn)?.n;
    eprintln!("seeded {} runs in {:.1?}; the table holds {total}", plan.runs, started.elapsed());
    Ok(total)
}
