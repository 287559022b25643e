//! `opsrun adopt`: takes over a database whose `operation_runs` the platform created and
//! wrote (docs/ADOPT.md). `--check` reports; without it adopt converts the table in place
//! to opsrun's schema, fixes the rows a rule can fix, and refuses — changing nothing —
//! while any row needs a person. Every step looks at what is there before acting, so a
//! crash at any point is mended by running adopt again, and a second run changes nothing.

mod compat;
mod fill;
mod findings;
mod rows;
mod schema;
mod shapes;
mod survey;

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::sql_types::{Bool, Text};
use diesel::{sql_query, Connection, PgConnection, QueryableByName, RunQueryDsl};

pub use compat::functions_sql as conversion_functions_sql;
pub use rows::{judge, Finding, PlatformRow, RowFix, Verdict};
use schema::{Plan, Step};
use survey::Survey;

#[derive(clap::Args)]
pub struct AdoptArgs {
    /// The platform's database (default: DATABASE_URL). Connect directly, not through a
    /// transaction pooler: adopt holds a session lock.
    #[arg(long)]
    pub database_url: Option<String>,
    /// The IANA time zone the platform wrote its `timestamp without time zone` values in
    /// (e.g. UTC, Europe/Berlin). Required: adopt never guesses it.
    #[arg(long, required_unless_present = "finish", default_value = "")]
    pub timezone: String,
    /// Report what adopt finds and would do; change nothing. Exits 1 when something needs
    /// a decision.
    #[arg(long)]
    pub check: bool,
    /// Where active runs share an identity, the newest keeps it and the others get one of
    /// their own (they stay active; the reaper completes them once they go quiet).
    #[arg(long)]
    pub keep_duplicates_apart: bool,
    /// How long one schema change may wait for its lock before it gives up and tries
    /// again: while it waits, every writer queues behind it.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// How often a schema change that could not get its lock is tried again (a second
    /// apart) before adopt stops; run it again later.
    #[arg(long, default_value_t = 60)]
    pub lock_retries: u32,
    /// The most rows converted in one transaction (batches are sized to take about 100 ms:
    /// a write of the platform's to one of their rows waits for the batch).
    #[arg(long, default_value_t = 5000)]
    pub batch: i64,
    /// Remove the compatibility trigger that converts the platform's own writes, once its
    /// application writes through opsrun's API only (docs/CUTOVER.md).
    #[arg(long)]
    pub finish: bool,
}

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Bool)]
    found: bool,
}

fn known_time_zone(conn: &mut PgConnection, zone: &str) -> anyhow::Result<bool> {
    let found: Found = sql_query("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1) AS found")
        .bind::<Text, _>(zone)
        .get_result(conn)?;
    Ok(found.found)
}

/// Runs `opsrun adopt` against `database_url`.
pub fn run(args: AdoptArgs, default_url: Option<String>) -> anyhow::Result<()> {
    let url = args.database_url.clone().or(default_url).context("--database-url or DATABASE_URL is required")?;
    let mut conn = PgConnection::establish(&url).context("cannot connect to the database")?;
    let conn = &mut conn;
    if !crate::db::shape::table_exists(conn, "operation_runs")? {
        anyhow::bail!(
            "this database has no operation_runs table to adopt; `opsrun migrate` creates opsrun's schema in an empty one"
        );
    }
    if args.finish {
        return crate::db::with_migration_lock(conn, |conn| finish(conn, &args));
    }
    if !known_time_zone(conn, &args.timezone)? {
        anyhow::bail!(
            "`{}` is not a time zone PostgreSQL knows; give the IANA name the platform wrote its timestamps in, such as UTC or Europe/Berlin",
            args.timezone
        );
    }
    // One adopt (or migrate) at a time.
    crate::db::with_migration_lock(conn, |conn| adopt(conn, &args))
}

fn adopt(conn: &mut PgConnection, args: &AdoptArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // Index builds (in the rewrite and concurrently) sort in memory rather than on disk.
    conn.batch_execute("SET maintenance_work_mem = '512MB'")?;
    schema::build_reference(conn)?;
    let result = plan_and_apply(conn, args);
    schema::drop_reference(conn)?;
    result?;
    eprintln!("done in {:.1?}", started.elapsed());
    Ok(())
}

fn plan_and_apply(conn: &mut PgConnection, args: &AdoptArgs) -> anyhow::Result<()> {
    let keep = args.keep_duplicates_apart;
    let plan = schema::plan(conn, &args.timezone)?;
    let survey = survey::survey(conn)?;
    let unrecorded = schema::unrecorded_migrations(conn)?;
    print_survey(&survey, keep);
    print_plan(&plan, unrecorded);
    let decisions = survey.decisions(keep);
    if !decisions.is_empty() || !plan.conflicts.is_empty() {
        let names: Vec<&str> = decisions.iter().map(|f| f.name()).collect();
        anyhow::bail!(
            "nothing was changed: {} need a decision first{}{}",
            if names.is_empty() { "schema conflicts".to_owned() } else { names.join(", ") },
            if names.is_empty() || plan.conflicts.is_empty() { "" } else { " (and schema conflicts)" },
            "; see above for each one and what to do"
        );
    }
    if plan.is_empty() && !survey.changes_rows() && unrecorded == 0 {
        println!("\noperation_runs is opsrun's already: nothing to do");
        return Ok(());
    }
    if args.check {
        println!("\nnothing needs a decision: `opsrun adopt` without --check would do the above");
        return Ok(());
    }

    println!("\n{:<64} {:<40} {:>9}", "step", "lock on existing rows", "took");
    let mut changed = 0;
    let converted = plan.converting;
    if converted {
        changed += convert(conn, &plan, &survey, args)?;
    }
    // Once the columns are opsrun's: constraints, the id's identity, NOT NULL, triggers.
    let plan = if converted { schema::plan(conn, &args.timezone)? } else { plan };
    if !plan.conflicts.is_empty() {
        anyhow::bail!("after the swap: {}", plan.conflicts.join("; "));
    }
    run_steps(conn, &plan.structure, args)?;
    // Rows of a table whose columns were opsrun's already (the conversion did the others).
    if !converted && survey.changes_rows() {
        let (fixed, _) =
            timed("fix rows", "row locks, a batch at a time", || survey::fix_rows(conn, &survey, 0, keep))?;
        changed += fixed as u64;
    }
    run_steps(conn, &plan.finish, args)?;
    timed("forget which runs were kept apart", "none", || fill::forget_kept_apart(conn))?;
    timed("record opsrun's migrations as applied", "none", || schema::record_migrations(conn))?;
    println!(
        "\nadopted: {changed} row(s) converted; `opsrun migrate`, `opsrun serve` and `opsrun legacy` now treat it as theirs"
    );
    println!(
        "the platform's own writes go on being converted on their way in until `opsrun adopt --finish` (docs/CUTOVER.md)"
    );
    Ok(())
}

/// Converts every row into the shadow columns, builds the indexes on them and swaps them
/// in. Returns how many rows the fill converted.
fn convert(conn: &mut PgConnection, plan: &Plan, survey: &Survey, args: &AdoptArgs) -> anyhow::Result<u64> {
    if let Some(zone) = schema::conversion_zone(conn)? {
        if zone != args.timezone {
            anyhow::bail!(
                "a conversion begun with --timezone {zone} is under way; run adopt again with --timezone {zone}"
            );
        }
    }
    run_steps(conn, &plan.structure, args)?;
    timed("remember which runs keep an identity apart", "none", || {
        fill::remember_kept_apart(conn, survey, args.keep_duplicates_apart)
    })?;
    let converted = timed("convert every row into the new columns", "row locks, a batch at a time", || {
        fill::fill(conn, survey.rows, args.batch)
    })?;
    run_steps(conn, &plan.before_swap, args)?;
    if let Some(swap) = &plan.swap {
        run_steps(conn, std::slice::from_ref(swap), args)?;
    }
    Ok(converted)
}

/// Removes the conversion of the platform's writes: from now on a write in the platform's
/// shapes is refused by opsrun's constraints, as any client's.
fn finish(conn: &mut PgConnection, args: &AdoptArgs) -> anyhow::Result<()> {
    if schema::needs_conversion(conn)? || schema::unrecorded_migrations(conn)? > 0 {
        anyhow::bail!("operation_runs is not adopted yet: run `opsrun adopt` first; --finish comes after it");
    }
    let steps = schema::finish_steps();
    run_steps(conn, &steps, args)?;
    println!("\nthe platform's writes are no longer converted: operation_runs takes opsrun's shapes only");
    Ok(())
}

fn timed<T>(what: &str, lock: &str, work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    let result = work()?;
    println!("{what:<64} {lock:<40} {:>9.2?}", started.elapsed());
    Ok(result)
}

fn run_steps(conn: &mut PgConnection, steps: &[Step], args: &AdoptArgs) -> anyhow::Result<()> {
    for step in steps {
        let took = schema::run_step(conn, step, args.lock_timeout, args.lock_retries)?;
        println!("{:<64} {:<40} {:>9.2?}", clip(&step.what, 64), step.lock, took);
    }
    Ok(())
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    }
}

fn print_survey(survey: &Survey, keep: bool) {
    println!("operation_runs: {} row(s)\n", survey.rows);
    println!("{:<36} {:<12} {:<22} {:>10}", "type", "status", "outcome", "rows");
    for ((run_type, status, outcome), rows) in &survey.kinds {
        println!("{:<36} {:<12} {:<22} {rows:>10}", clip(run_type, 36), clip(status, 12), clip(outcome, 22));
    }
    if survey.findings.is_empty() {
        println!("\nevery row follows opsrun's rules");
        return;
    }
    println!("\n{:<32} {:>8}  {:<8} examples / what adopt does", "finding", "rows", "");
    for (finding, tally) in &survey.findings {
        let mark = if finding.needs_decision(keep) { "DECIDE" } else { "fix" };
        println!("{:<32} {:>8}  {mark:<8} {}", finding.name(), tally.rows, finding.action(keep));
        let (refused, fixed): (Vec<_>, Vec<_>) = tally.examples.iter().partition(|(_, reason)| reason.is_some());
        if !fixed.is_empty() {
            let ids: Vec<String> = fixed.iter().map(|(id, _)| id.to_string()).collect();
            let more = if tally.rows > ids.len() as u64 { ", …" } else { "" };
            println!("{:<52} runs {}{more}", "", ids.join(", "));
        }
        for (id, reason) in refused {
            println!("{:<52} run {id}: {}", "", reason.as_deref().unwrap_or_default());
        }
    }
}

fn print_plan(plan: &Plan, unrecorded: usize) {
    println!("\nschema changes:");
    let mut any = false;
    if plan.converting {
        println!("  (rows are converted into columns beside the platform's, then swapped in; constraints,");
        println!("   the id's identity and opsrun's triggers follow the swap)");
    }
    for step in plan.steps() {
        println!("  {:<62} {}", clip(&step.what, 62), step.lock);
        any = true;
    }
    if unrecorded > 0 {
        println!("  record {unrecorded} migration(s) as applied");
        any = true;
    }
    if !any {
        println!("  none: the schema is opsrun's");
    }
    for kept in &plan.kept {
        println!("  kept: {kept}");
    }
    for conflict in &plan.conflicts {
        println!("  DECIDE: {conflict}");
    }
}
