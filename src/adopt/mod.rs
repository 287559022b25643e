//! `opsrun adopt`: takes over a database whose `operation_runs` the platform created and
//! wrote (docs/ADOPT.md). `--check` reports; without it adopt converts the table in place
//! to opsrun's schema, fixes the rows a rule can fix, and refuses — changing nothing —
//! while any row needs a person. Every step looks at what is there before acting, so a
//! crash at any point is mended by running adopt again, and a second run changes nothing.

mod rows;
mod schema;
mod survey;

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::sql_types::{Bool, Text};
use diesel::{sql_query, Connection, PgConnection, QueryableByName, RunQueryDsl};

pub use rows::Finding;
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
    #[arg(long)]
    pub timezone: String,
    /// Report what adopt finds and would do; change nothing. Exits 1 when something needs
    /// a decision.
    #[arg(long)]
    pub check: bool,
    /// Where active runs share an identity, the newest keeps it and the others get one of
    /// their own (they stay active; the reaper completes them once they go quiet).
    #[arg(long)]
    pub keep_duplicates_apart: bool,
    /// How long one schema change may wait for its lock before adopt stops (run it again
    /// later): a change queued behind a long transaction would hold up every writer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
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
    if !crate::db::catalog::table_exists(conn, "operation_runs")? {
        anyhow::bail!(
            "this database has no operation_runs table to adopt; `opsrun migrate` creates opsrun's schema in an empty one"
        );
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
    run_steps(conn, &plan.structure, args.lock_timeout)?;
    let (fixed, last) = timed("fix rows", "row locks, a batch at a time", || survey::fix_rows(conn, &survey, 0, keep))?;
    run_steps(conn, &plan.fill_defaults, args.lock_timeout)?;
    // Rows the platform wrote while the first pass ran.
    let (late, _) = timed("fix rows written meanwhile", "row locks", || survey::fix_rows(conn, &survey, last, keep))?;
    run_steps(conn, &plan.finish, args.lock_timeout)?;
    timed("record opsrun's migrations as applied", "none", || schema::record_migrations(conn))?;
    println!(
        "\nadopted: {} row(s) fixed; `opsrun migrate`, `opsrun serve` and `opsrun legacy` now treat it as theirs",
        fixed + late
    );
    Ok(())
}

fn timed<T>(what: &str, lock: &str, work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    let result = work()?;
    println!("{what:<64} {lock:<40} {:>9.2?}", started.elapsed());
    Ok(result)
}

fn run_steps(conn: &mut PgConnection, steps: &[Step], lock_timeout: Duration) -> anyhow::Result<()> {
    for step in steps {
        let took = schema::run_step(conn, step, lock_timeout)?;
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
    let steps = plan.structure.iter().chain(&plan.fill_defaults).chain(&plan.finish);
    let mut any = false;
    for step in steps {
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
