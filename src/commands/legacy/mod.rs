//! `opsrun legacy`: carries a database through the cut-over from the legacy run tables
//! (inventory_sync_runs, entra_group_sync_runs, backup_schedule_runs, restore_runs) to
//! operation_runs: analyze, backfill, verify, drop (docs/LEGACY.md).

mod archive;
mod backfill;
mod checks;
mod lookups;
pub mod mapping;

use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use diesel::{Connection, PgConnection};

pub use archive::{drop_table, restore_table};
pub use backfill::{canonicalize_types, repoint_references, Backfill, TableReport, BACKFILL_ACTOR};
pub use checks::{analyze, verify, Check, TableSummary};
pub use lookups::{Users, WorkspaceResolver, WorkspaceSource};
use mapping::LegacyTable;

#[derive(clap::Args)]
pub struct LegacyArgs {
    /// The database holding the legacy tables beside operation_runs (default: DATABASE_URL).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: LegacyCommand,
}

#[derive(Subcommand)]
pub enum LegacyCommand {
    /// Per legacy table: rows, linked, unlinked, and what backfill would create.
    Analyze,
    /// Create one operation run per unlinked legacy row and link it; idempotent.
    Backfill {
        /// Change nothing; print what would be done.
        #[arg(long)]
        dry_run: bool,
        /// Legacy rows per transaction (their runs are created in one statement).
        #[arg(long, default_value_t = 500)]
        batch: i64,
        /// Every tenant belongs to this workspace (when tenants has no workspace_id).
        #[arg(long)]
        workspace: Option<i64>,
        /// SQL giving a tenant's workspace, with the tenant id as $1.
        #[arg(long)]
        workspace_of_tenant_sql: Option<String>,
    },
    /// Check that the cut-over is complete; exits non-zero when a check fails.
    Verify,
    /// Archive a legacy table to _archive_<table> and drop it, only while its checks pass.
    Drop {
        /// The table (inventory_sync_runs, entra_group_sync_runs, backup_schedule_runs).
        table: String,
        /// Bring the archived table back instead.
        #[arg(long)]
        restore: bool,
    },
}

/// A batch's runs are one INSERT: PostgreSQL takes at most 65,535 parameters, 17 per run.
const MAX_BATCH: i64 = 2_000;

fn legacy_table(name: &str) -> anyhow::Result<LegacyTable> {
    LegacyTable::parse(name).with_context(|| {
        format!("`{name}` is not a legacy run table; they are inventory_sync_runs, entra_group_sync_runs, backup_schedule_runs, restore_runs")
    })
}

/// Rows with the same message, counted, with the first few ids.
fn grouped(table: LegacyTable, kind: &str, rows: &[(i64, String)]) -> Vec<String> {
    let mut groups: std::collections::BTreeMap<&str, Vec<i64>> = std::collections::BTreeMap::new();
    for (id, message) in rows {
        groups.entry(message.as_str()).or_default().push(*id);
    }
    groups
        .into_iter()
        .map(|(message, ids)| {
            let first: Vec<String> = ids.iter().take(5).map(ToString::to_string).collect();
            let more = if ids.len() > 5 { ", …" } else { "" };
            format!("{}: {kind}: {message}: {} row(s) (ids {}{more})", table.name(), ids.len(), first.join(", "))
        })
        .collect()
}

fn print_checks(checks: &[Check]) -> bool {
    println!("{:<24} {:<62} {:>8}", "table", "check", "failing");
    for check in checks {
        let table = check.table.map_or("operation_runs", |t| t.name());
        let mark = if check.passed() { "ok" } else { "FAIL" };
        println!("{table:<24} {:<62} {:>8}  {mark}", check.name, check.failing);
    }
    checks.iter().all(Check::passed)
}

/// Runs one legacy command against `database_url`.
pub fn run(args: LegacyArgs, default_url: Option<String>) -> anyhow::Result<()> {
    let url = args.database_url.or(default_url).context("--database-url or DATABASE_URL is required")?;
    let mut conn = PgConnection::establish(&url).context("cannot connect to the database")?;
    let conn = &mut conn;
    crate::db::migrate(conn)?;
    let started = Instant::now();
    match args.command {
        LegacyCommand::Analyze => {
            println!("{:<24} {:>10} {:>10} {:>10} {:>12}", "table", "rows", "linked", "unlinked", "to backfill");
            for summary in analyze(conn)? {
                if summary.present {
                    println!(
                        "{:<24} {:>10} {:>10} {:>10} {:>12}",
                        summary.table.name(),
                        summary.rows,
                        summary.linked,
                        summary.unlinked,
                        summary.to_backfill
                    );
                } else {
                    println!("{:<24} {:>10}", summary.table.name(), "absent");
                }
            }
        }
        LegacyCommand::Backfill { dry_run, batch, workspace, workspace_of_tenant_sql } => {
            let source = WorkspaceSource::choose(conn, workspace_of_tenant_sql, workspace)?;
            let mut workspaces = WorkspaceResolver::new(source);
            let users = Users::new(conn)?;
            let mut backfill =
                Backfill { workspaces: &mut workspaces, users: &users, dry_run, batch: batch.clamp(1, MAX_BATCH) };
            let verb = if dry_run { "would create" } else { "created" };
            println!(
                "{:<24} {:>12} {:>16} {:>11} {:>8} {:>8} {:>8} {:>9} {:>8}",
                "table", verb, "linked existing", "kept apart", "skipped", "refused", "notes", "took", "rows/s"
            );
            let mut problems = Vec::new();
            for table in LegacyTable::ALL {
                match backfill.table(conn, table)? {
                    None => println!("{:<24} {:>12}", table.name(), "absent"),
                    Some(report) => {
                        println!(
                            "{:<24} {:>12} {:>16} {:>11} {:>8} {:>8} {:>8} {:>9.1?} {:>8.0}",
                            table.name(),
                            report.created,
                            report.linked_existing,
                            report.kept_apart,
                            report.skipped,
                            report.refused.len(),
                            report.notes.len(),
                            report.took,
                            report.rows_per_second()
                        );
                        problems.extend(grouped(table, "refused", &report.refused));
                        problems.extend(grouped(table, "note", &report.notes));
                    }
                }
            }
            for (dotted, count) in canonicalize_types(conn, dry_run)? {
                if count > 0 {
                    let done = if dry_run { "would be canonicalized" } else { "canonicalized" };
                    println!("operation_runs: {count} run(s) of `{dotted}` {done}");
                }
            }
            for (column, count) in repoint_references(conn, dry_run)? {
                println!("{column}: {count} reference(s) {}", if dry_run { "would be filled" } else { "filled" });
            }
            for problem in problems {
                println!("  {problem}");
            }
        }
        LegacyCommand::Verify => {
            if !print_checks(&verify(conn)?) {
                anyhow::bail!("verification failed");
            }
        }
        LegacyCommand::Drop { table, restore } => {
            let table = legacy_table(&table)?;
            if restore {
                let rows = restore_table(conn, table)?;
                println!("restored {} ({rows} rows) from _archive_{}", table.name(), table.name());
            } else {
                let rows = drop_table(conn, table)?;
                println!("archived {rows} rows of {} to _archive_{} and dropped it", table.name(), table.name());
            }
        }
    }
    eprintln!("done in {:.1?}", started.elapsed());
    Ok(())
}
