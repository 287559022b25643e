//! Backfill: one operation run per unlinked legacy row, created in the same transaction
//! as the link written back — a batch of rows per transaction, its runs in one statement —
//! so an interrupted run resumes where it stopped and a second run creates nothing.

use chrono::Utc;
use diesel::prelude::*;
use std::collections::{HashMap, HashSet};

use diesel::sql_types::{Array, BigInt, Text};
use diesel::{sql_query, QueryableByName};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::Digest;

use super::lookups::{OptionalId, Users, WorkspaceResolver};
use super::mapping::{map_row, LegacyInitiator, LegacyTable, Mapped, MappedRun};
use crate::db::models::{CarriedState, NewOperationRun};
use crate::db::shape::{column_exists, table_exists};
use crate::domain::catalog::{LegacySpelling, Trigger, LEGACY_SPELLINGS};
use crate::domain::identity::IdentityPolicy;
use crate::domain::ids::{RunId, WorkspaceId};
use crate::domain::status::RunStatus;
use crate::use_cases::start::{create_runs, Created};

/// The actor on backfilled runs' `created` events.
pub const BACKFILL_ACTOR: &str = "opsrun legacy backfill";

/// What backfill did (or, in a dry run, would do) to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableReport {
    pub created: u64,
    /// Linked to a run (started through the API) that already held the identity.
    pub linked_existing: u64,
    /// Created under an identity of their own, because another legacy row's run held
    /// theirs (duplicate active rows, two fires in one minute).
    pub kept_apart: u64,
    pub skipped: u64,
    /// Rows that could not be mapped: (legacy id, reason).
    pub refused: Vec<(i64, String)>,
    /// Rows mapped with defaults: (legacy id, what was defaulted).
    pub notes: Vec<(i64, String)>,
    pub took: std::time::Duration,
}

impl TableReport {
    /// Legacy rows handled (created, linked, kept apart, skipped or refused) per second.
    pub fn rows_per_second(&self) -> f64 {
        let rows = self.created + self.linked_existing + self.kept_apart + self.skipped + self.refused.len() as u64;
        rows as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

#[derive(QueryableByName)]
struct LegacyRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    row: String,
}

/// Options for one backfill.
pub struct Backfill<'a> {
    pub workspaces: &'a mut WorkspaceResolver,
    pub users: &'a Users,
    pub dry_run: bool,
    pub batch: i64,
}

impl Backfill<'_> {
    /// Backfills one table; `None` when it does not exist.
    pub fn table(&mut self, conn: &mut PgConnection, table: LegacyTable) -> anyhow::Result<Option<TableReport>> {
        if !table_exists(conn, table.name())? {
            return Ok(None);
        }
        if !column_exists(conn, table.name(), "operation_run_id")? {
            anyhow::bail!("{} has no operation_run_id column to link rows with", table.name());
        }
        // Each row's run and link commit together, so a commit lost in a crash only means
        // that row is backfilled again on the next pass: durability can wait for the WAL
        // writer instead of an fsync per row.
        sql_query("SET synchronous_commit = off").execute(conn)?;
        let mut report = TableReport::default();
        let total: i64 =
            sql_query(format!("SELECT count(*) AS id FROM {} WHERE operation_run_id IS NULL", table.name()))
                .get_result::<OptionalId>(conn)?
                .id
                .unwrap_or(0);
        let progress = ProgressBar::new(total as u64).with_style(
            ProgressStyle::with_template(&format!(
                "{:<22} {{bar:30}} {{human_pos}}/{{human_len}} {{per_sec}}",
                table.name()
            ))
            .expect("a valid template"),
        );
        let started = std::time::Instant::now();
        let mut after = 0i64;
        loop {
            let rows: Vec<LegacyRow> = sql_query(format!(
                "SELECT id::bigint AS id, row_to_json(t)::text AS row FROM {} t
                 WHERE operation_run_id IS NULL AND id > $1 ORDER BY id LIMIT $2",
                table.name()
            ))
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(self.batch)
            .load(conn)?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            let read = rows.len() as u64;
            let mut pending = Vec::with_capacity(rows.len());
            for legacy in rows {
                if let Some(new) = self.mapped(conn, table, legacy, &mut report)? {
                    pending.push(new);
                }
            }
            if self.dry_run {
                report.created += pending.len() as u64;
            } else if !pending.is_empty() {
                let linked = conn.transaction(|conn| link_batch(conn, table, pending))?;
                for outcome in linked {
                    match outcome {
                        Linked::Created => report.created += 1,
                        Linked::Existing => report.linked_existing += 1,
                        Linked::KeptApart => report.kept_apart += 1,
                        Linked::Before => {}
                    }
                }
            }
            progress.inc(read);
        }
        progress.finish_and_clear();
        report.took = started.elapsed();
        Ok(Some(report))
    }

    /// The run one legacy row maps to, or `None` when it is skipped or refused (noted in
    /// `report`).
    fn mapped(
        &mut self,
        conn: &mut PgConnection,
        table: LegacyTable,
        legacy: LegacyRow,
        report: &mut TableReport,
    ) -> anyhow::Result<Option<(i64, NewOperationRun)>> {
        let json: serde_json::Value = match serde_json::from_str(&legacy.row) {
            Ok(json) => json,
            Err(e) => {
                report.refused.push((legacy.id, format!("unreadable row ({e})")));
                return Ok(None);
            }
        };
        let (mapped, notes) = match map_row(table, &json) {
            Mapped::Run(mapped, notes) => (mapped, notes),
            Mapped::Skip(_) => {
                report.skipped += 1;
                return Ok(None);
            }
            Mapped::Refuse(reason) => {
                report.refused.push((legacy.id, reason));
                return Ok(None);
            }
        };
        report.notes.extend(notes.into_iter().map(|n| (legacy.id, n)));
        let Some(workspace_id) = self.workspaces.workspace_of(conn, mapped.tenant_id)? else {
            report.refused.push((legacy.id, format!("no workspace known for tenant {}", mapped.tenant_id)));
            return Ok(None);
        };
        Ok(Some((legacy.id, self.to_insert(conn, *mapped, workspace_id)?)))
    }

    fn to_insert(
        &self,
        conn: &mut PgConnection,
        mapped: MappedRun,
        workspace_id: WorkspaceId,
    ) -> QueryResult<NewOperationRun> {
        let (user_id, initiator) = match mapped.initiator {
            Some(LegacyInitiator::Named(name)) => (self.users.id_named(conn, &name)?, Some(name)),
            Some(LegacyInitiator::User(user)) => (Some(user), self.users.name_of(conn, user)?),
            None => (None, None),
        };
        let completed_at = match mapped.status {
            RunStatus::Completed => mapped.completed_at.or(mapped.created_at).or_else(|| Some(Utc::now())),
            _ => None,
        };
        Ok(NewOperationRun {
            workspace_id,
            tenant_id: Some(mapped.tenant_id),
            user_id,
            initiator_name: initiator.unwrap_or_else(|| mapped.default_initiator.to_owned()),
            run_type: mapped.run_type,
            run_identity_hash: mapped.identity_hash,
            identity_policy: mapped.identity_policy,
            context: mapped.context,
            carried: Some(CarriedState {
                status: mapped.status,
                outcome: mapped.outcome,
                summary_counts: mapped.summary_counts,
                failure_summary: mapped.failure_summary,
                started_at: mapped.started_at,
                completed_at,
                created_at: mapped.created_at,
                updated_at: mapped.updated_at.or(mapped.created_at),
            }),
        })
    }
}

/// How one legacy row ended up linked.
#[derive(Clone, Copy)]
enum Linked {
    /// To a run created for it.
    Created,
    /// To the run (not a backfilled one) that already held its identity.
    Existing,
    /// To a run of its own under a unique identity: a backfilled run held its identity.
    KeptApart,
    /// It was linked already (another backfill got there first).
    Before,
}

/// Inside one transaction, for a batch of legacy rows and their runs: lock the rows still
/// unlinked (in id order, so two backfills never deadlock), create their runs in bulk,
/// and write every link in one statement. A row whose identity a run started through the
/// API holds links to that run; one whose identity another backfilled run holds
/// (duplicate "running" rows, two fires in one minute) gets an identity of its own, so
/// each legacy row keeps its own run. Stale active ones are left to the reaper.
fn link_batch(
    conn: &mut PgConnection,
    table: LegacyTable,
    pending: Vec<(i64, NewOperationRun)>,
) -> anyhow::Result<Vec<Linked>> {
    let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
    let unlinked: Vec<OptionalId> = sql_query(format!(
        "SELECT id::bigint AS id FROM {} WHERE id = ANY($1) AND operation_run_id IS NULL ORDER BY id FOR UPDATE",
        table.name()
    ))
    .bind::<Array<BigInt>, _>(&ids)
    .load(conn)?;
    let unlinked: HashSet<i64> = unlinked.into_iter().filter_map(|row| row.id).collect();
    let mut outcomes = vec![Linked::Before; pending.len() - unlinked.len()]; // another backfill got there first
    let batch: Vec<(i64, NewOperationRun)> = pending.into_iter().filter(|(id, _)| unlinked.contains(id)).collect();
    let create = |conn: &mut PgConnection, batch| {
        create_runs(
            conn,
            batch,
            Some(BACKFILL_ACTOR),
            |legacy_id| json!({ "backfilled_from": { "source": table.name(), "id": legacy_id } }),
        )
    };
    let mut links: Vec<(i64, RunId)> = Vec::with_capacity(unlinked.len());
    let mut backfilled_holders: HashMap<RunId, bool> = HashMap::new();
    let mut apart = Vec::new();
    for (legacy_id, mut new, created) in create(conn, batch)? {
        match created {
            Created::Run(run) => {
                links.push((legacy_id, run.id));
                outcomes.push(Linked::Created);
            }
            Created::Held { existing_run_id } => {
                let backfilled = match backfilled_holders.get(&existing_run_id) {
                    Some(&known) => known,
                    None => {
                        let backfilled = is_backfilled(conn, existing_run_id)?;
                        backfilled_holders.insert(existing_run_id, backfilled);
                        backfilled
                    }
                };
                if backfilled {
                    let unique = format!("{}|legacy:{}:{legacy_id}", new.run_identity_hash, table.name());
                    new.run_identity_hash = hex::encode(sha2::Sha256::digest(unique.as_bytes()));
                    new.identity_policy = IdentityPolicy::UniquePerClick;
                    apart.push((legacy_id, new));
                } else {
                    links.push((legacy_id, existing_run_id));
                    outcomes.push(Linked::Existing);
                }
            }
        }
    }
    for (legacy_id, _, created) in create(conn, apart)? {
        match created {
            Created::Run(run) => {
                links.push((legacy_id, run.id));
                outcomes.push(Linked::KeptApart);
            }
            Created::Held { .. } => anyhow::bail!("a unique legacy identity conflicted"),
        }
    }
    let (legacy_ids, run_ids): (Vec<i64>, Vec<i64>) =
        links.into_iter().map(|(legacy, run)| (legacy, run.get())).unzip();
    sql_query(format!(
        "UPDATE {} t SET operation_run_id = v.run FROM unnest($1::bigint[], $2::bigint[]) AS v (id, run) WHERE t.id = v.id",
        table.name()
    ))
    .bind::<Array<BigInt>, _>(legacy_ids)
    .bind::<Array<BigInt>, _>(run_ids)
    .execute(conn)?;
    Ok(outcomes)
}

/// Whether a run came from a legacy row.
fn is_backfilled(conn: &mut PgConnection, run: RunId) -> QueryResult<bool> {
    use crate::db::schema::operation_runs::dsl::{context, id, operation_runs as runs};
    let found: serde_json::Value = runs.filter(id.eq(run)).select(context).first(conn)?;
    Ok(found.get("legacy").is_some())
}

/// Rewrites dotted types to canonical ones (backup-schedule spellings keep their
/// trigger in the context). Returns how many runs changed per spelling.
pub fn canonicalize_types(conn: &mut PgConnection, dry_run: bool) -> QueryResult<Vec<(&'static str, i64)>> {
    let mut changed = Vec::new();
    for LegacySpelling { name: dotted, canonical, trigger } in LEGACY_SPELLINGS {
        let count = sql_query("SELECT count(*)::bigint AS id FROM operation_runs WHERE type = $1")
            .bind::<Text, _>(dotted)
            .get_result::<OptionalId>(conn)?
            .id
            .unwrap_or(0);
        if count > 0 && !dry_run {
            sql_query(
                "UPDATE operation_runs SET type = $2,
                        context = CASE WHEN $3::text IS NULL THEN context ELSE context || jsonb_build_object('trigger', $3::text) END
                 WHERE type = $1",
            )
            .bind::<Text, _>(dotted)
            .bind::<Text, _>(canonical)
            .bind::<diesel::sql_types::Nullable<Text>, _>(trigger.map(Trigger::as_str))
            .execute(conn)?;
        }
        changed.push((dotted, count));
    }
    Ok(changed)
}

/// The references that point at inventory sync runs, and the column each gains.
pub const REFERENCES: [(&str, &str, &str); 3] = [
    ("findings", "baseline_run_id", "baseline_operation_run_id"),
    ("findings", "current_run_id", "current_operation_run_id"),
    ("inventory_items", "last_seen_run_id", "last_seen_operation_run_id"),
];

/// Points drift findings and inventory items at operation runs (docs/LEGACY.md, step 2): where the
/// legacy run they name is linked and its run exists, copy the link. Returns the rows
/// filled per column.
pub fn repoint_references(conn: &mut PgConnection, dry_run: bool) -> QueryResult<Vec<(String, i64)>> {
    let mut filled = Vec::new();
    if !table_exists(conn, "inventory_sync_runs")? {
        return Ok(filled);
    }
    for (table, legacy_column, canonical_column) in REFERENCES {
        if !table_exists(conn, table)? || !column_exists(conn, table, legacy_column)? {
            continue;
        }
        let resolvable = format!(
            "FROM inventory_sync_runs i JOIN operation_runs o ON o.id = i.operation_run_id
             WHERE t.{legacy_column} = i.id AND t.{canonical_column} IS NULL"
        );
        let count = if dry_run && !column_exists(conn, table, canonical_column)? {
            sql_query(format!(
                "SELECT count(*)::bigint AS id FROM {table} t JOIN inventory_sync_runs i ON t.{legacy_column} = i.id
                 JOIN operation_runs o ON o.id = i.operation_run_id"
            ))
            .get_result::<OptionalId>(conn)?
            .id
            .unwrap_or(0)
        } else if dry_run {
            sql_query(format!("SELECT count(*)::bigint AS id FROM {table} t WHERE EXISTS (SELECT 1 {resolvable})"))
                .get_result::<OptionalId>(conn)?
                .id
                .unwrap_or(0)
        } else {
            sql_query(format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {canonical_column} bigint REFERENCES operation_runs (id) ON DELETE SET NULL"
            ))
            .execute(conn)?;
            sql_query(format!("UPDATE {table} t SET {canonical_column} = i.operation_run_id {resolvable}"))
                .execute(conn)? as i64
        };
        filled.push((format!("{table}.{canonical_column}"), count));
    }
    Ok(filled)
}
