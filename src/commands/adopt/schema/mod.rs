//! Bringing the platform's tables to opsrun's schema without a second copy of it: the
//! migrations run into a scratch schema (the reference), and adopt applies what
//! `public` lacks, in forms that keep a large live table writable — no rewrite (the
//! platform's own table is converted through shadow columns, `conversion`), constraints
//! `NOT VALID` then validated, indexes built concurrently, an interrupted build dropped
//! and built again.

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sql_types::{Bool, Text};
use diesel::{sql_query, Connection, PgConnection, QueryableByName, RunQueryDsl};
use diesel_migrations::MigrationHarness;

mod conversion;
mod introspect;

use super::compat::{COMPAT_TRIGGER, SHADOW_SUFFIX};
use crate::db::MIGRATIONS;
use conversion::plan_conversion;
pub use conversion::{conversion_zone, finish_steps, needs_conversion};
use introspect::{
    columns, constraints, functions, in_target, indexes, tables, triggers, unqualified, Column, Constraint, Name, Named,
};

/// The scratch schema opsrun's migrations are applied to, to read its schema from.
pub const REFERENCE: &str = "opsrun_adopt_reference";
/// The schema adopt converts.
const TARGET: &str = "public";
/// The table adopt converts row by row; the others it creates or only checks.
const RUNS: &str = "operation_runs";

fn migrations() -> anyhow::Result<Vec<Box<dyn Migration<Pg>>>> {
    MigrationSource::<Pg>::migrations(&MIGRATIONS).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The version of every migration opsrun has.
fn versions() -> anyhow::Result<Vec<String>> {
    Ok(migrations()?.iter().map(|m| m.name().version().to_string()).collect())
}

/// Applies opsrun's migrations to the reference schema, replacing an earlier one.
pub fn build_reference(conn: &mut PgConnection) -> anyhow::Result<()> {
    conn.transaction(|conn| {
        conn.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {REFERENCE} CASCADE; CREATE SCHEMA {REFERENCE}; SET LOCAL search_path = {REFERENCE}"
        ))?;
        for migration in migrations()? {
            migration.run(conn).map_err(|e| anyhow::anyhow!("migration {} in the reference: {e}", migration.name()))?;
        }
        Ok(())
    })
}

pub fn drop_reference(conn: &mut PgConnection) -> anyhow::Result<()> {
    conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {REFERENCE} CASCADE"))?;
    Ok(())
}

/// One statement adopt runs, with what it locks.
#[derive(Clone, Debug)]
pub struct Step {
    pub sql: String,
    pub what: String,
    pub lock: &'static str,
    /// `CREATE INDEX CONCURRENTLY` and `DROP INDEX CONCURRENTLY` cannot run in a transaction.
    pub outside_transaction: bool,
}

impl Step {
    fn new(what: impl Into<String>, lock: &'static str, sql: impl Into<String>) -> Step {
        Step { sql: sql.into(), what: what.into(), lock, outside_transaction: false }
    }

    fn concurrent(what: impl Into<String>, sql: impl Into<String>) -> Step {
        Step { sql: sql.into(), what: what.into(), lock: SHARE_UPDATE_EXCLUSIVE, outside_transaction: true }
    }
}

const ACCESS_EXCLUSIVE_BRIEF: &str = "ACCESS EXCLUSIVE, catalog only";
const SHARE_UPDATE_EXCLUSIVE: &str = "SHARE UPDATE EXCLUSIVE (writes go on)";
const SHARE_ROW_EXCLUSIVE_BRIEF: &str = "SHARE ROW EXCLUSIVE, catalog only";
const NONE: &str = "none on existing tables";

/// What adopt will run, phase by phase. While the platform's columns are still its own
/// (`converting`), the plan adds shadow columns, fills them row by row under a trigger,
/// builds the indexes on them and swaps them in; once they are opsrun's, it finishes.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Whether the rows are converted into shadow columns and swapped in.
    pub converting: bool,
    /// Functions, new tables, columns added without a rewrite, the fill trigger, identities,
    /// defaults, constraints `NOT VALID`.
    pub structure: Vec<Step>,
    /// After the fill: the shadows' checks validated, every index built on them.
    pub before_swap: Vec<Step>,
    /// The one short catalog-only swap of the platform's columns for the shadows.
    pub swap: Option<Step>,
    /// Validations, `NOT NULL`, indexes, constraints over them, triggers.
    pub finish: Vec<Step>,
    /// What needs a person before adopt can go on.
    pub conflicts: Vec<String>,
    /// What adopt leaves as it is.
    pub kept: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        !self.converting && self.structure.is_empty() && self.finish.is_empty()
    }

    /// Every step, in the order adopt runs them (the fill goes between structure and before_swap).
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.structure.iter().chain(&self.before_swap).chain(&self.swap).chain(&self.finish)
    }
}

/// Compares `public` with the reference and plans the difference. `zone` is the time zone
/// the platform's `timestamp without time zone` values were written in.
pub fn plan(conn: &mut PgConnection, zone: &str) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
    let converting = needs_conversion(conn)?;
    for function in functions(conn, REFERENCE)? {
        let current: Vec<Named> = sql_query(
            "SELECT $1 AS name, pg_get_functiondef(to_regprocedure($2)) AS definition WHERE to_regprocedure($2) IS NOT NULL",
        )
        .bind::<Text, _>(&function.name)
        .bind::<Text, _>(format!("{TARGET}.{}", function.name))
        .load(conn)?;
        if current.first().is_none_or(|c| unqualified(&c.definition) != unqualified(&function.definition)) {
            plan.structure.push(Step::new(
                format!("function {}", function.name),
                NONE,
                in_target(&function.definition),
            ));
        }
    }
    let existing = tables(conn, TARGET)?;
    for table in tables(conn, REFERENCE)? {
        let present = existing.contains(&table);
        let current_constraints = if present { constraints(conn, TARGET, &table)? } else { Vec::new() };
        if !present {
            plan.structure.push(Step::new(
                format!("table {table}"),
                NONE,
                format!(
                    "CREATE TABLE {TARGET}.{table} (LIKE {REFERENCE}.{table} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED)"
                ),
            ));
        } else if converting && table == RUNS {
            plan_conversion(conn, zone, &mut plan)?;
            // Constraints, the id's identity and opsrun's triggers come once the
            // converted columns are swapped in: adopt plans again then.
            continue;
        } else {
            plan_columns(conn, &table, &current_constraints, &mut plan)?;
        }
        plan_constraints(conn, &table, &current_constraints, &mut plan)?;
        plan_indexes(conn, &table, present, &mut plan)?;
        let current = if present { triggers(conn, TARGET, &table)? } else { Vec::new() };
        let reference = triggers(conn, REFERENCE, &table)?;
        for trigger in &reference {
            match current.iter().find(|t| t.name == trigger.name) {
                Some(t) if unqualified(&t.definition) == unqualified(&trigger.definition) => {}
                Some(_) => plan
                    .conflicts
                    .push(format!("{table} has a trigger `{}` that is not opsrun's; rename or drop it", trigger.name)),
                None => plan.finish.push(Step::new(
                    format!("trigger {} on {table}", trigger.name),
                    SHARE_ROW_EXCLUSIVE_BRIEF,
                    in_target(&trigger.definition),
                )),
            }
        }
        for extra in current.iter().filter(|t| !reference.iter().any(|r| r.name == t.name)) {
            if extra.name == COMPAT_TRIGGER {
                plan.kept.push(format!(
                    "{table}: trigger `{COMPAT_TRIGGER}` converts the platform's own writes; `opsrun adopt --finish` removes it"
                ));
            } else {
                plan.kept.push(format!("{table}: trigger `{}` (not opsrun's; it still fires)", extra.name));
            }
        }
    }
    if !converting {
        plan.finish.extend(conversion::after_conversion(conn)?);
    }
    Ok(plan)
}

fn plan_columns(conn: &mut PgConnection, table: &str, checks: &[Constraint], plan: &mut Plan) -> anyhow::Result<()> {
    let wanted = columns(conn, REFERENCE, table)?;
    let current = columns(conn, TARGET, table)?;
    let mut added = Vec::new();
    for column in &wanted {
        let name = &column.name;
        let Some(have) = current.iter().find(|c| c.name == *name) else {
            if !column.generated.is_empty() || (column.not_null && column.default_expr.is_none()) {
                plan.conflicts.push(format!("{table}.{name} is missing, and adopt cannot add it without a rewrite"));
                continue;
            }
            let default = column.default_expr.as_deref().map(|d| format!(" DEFAULT {d}")).unwrap_or_default();
            let not_null = if column.not_null { " NOT NULL" } else { "" };
            added.push(format!("ADD COLUMN IF NOT EXISTS {name} {}{default}{not_null}", column.data_type));
            continue;
        };
        if column.generated != have.generated {
            plan.conflicts.push(format!("{table}.{name} exists but is not opsrun's generated column; rename it"));
            continue;
        }
        if column.data_type != have.data_type {
            if binary_coercible(conn, &have.data_type, &column.data_type)? {
                plan.structure.push(retype_in_place(table, name, &have.data_type, &column.data_type));
            } else {
                plan.conflicts.push(format!(
                    "{table}.{name} is {} where opsrun has {}; adopt converts such a column only with the others",
                    have.data_type, column.data_type
                ));
            }
        }
        if !column.identity.is_empty() && have.identity.is_empty() {
            plan.structure.push(identity_step(table, name, &column.identity));
        } else if column.generated.is_empty() && column.identity.is_empty() && column.default_expr != have.default_expr
        {
            let change = match &column.default_expr {
                Some(default) => format!("SET DEFAULT {default}"),
                None => "DROP DEFAULT".to_owned(),
            };
            plan.structure.push(Step::new(
                format!("default of {table}.{name}"),
                ACCESS_EXCLUSIVE_BRIEF,
                format!("ALTER TABLE {TARGET}.{table} ALTER COLUMN {name} {change}"),
            ));
        }
        if column.not_null && !have.not_null {
            // A validated CHECK lets SET NOT NULL skip its scan under the exclusive lock.
            let check = not_null_check(table, name);
            if !checks.iter().any(|c| c.name == check) {
                plan.structure.push(not_null_unchecked(table, name, name));
            }
            plan.finish.push(Step::new(
                format!("validate {table}.{name} IS NOT NULL"),
                SHARE_UPDATE_EXCLUSIVE,
                format!("ALTER TABLE {TARGET}.{table} VALIDATE CONSTRAINT {check}"),
            ));
            // Two statements: in one ALTER the DROP would run first, and SET NOT NULL would
            // scan the table under its exclusive lock after all.
            plan.finish.push(Step::new(
                format!("{table}.{name} NOT NULL"),
                ACCESS_EXCLUSIVE_BRIEF,
                format!("ALTER TABLE {TARGET}.{table} ALTER COLUMN {name} SET NOT NULL"),
            ));
            plan.finish.push(Step::new(
                format!("drop the check {check}"),
                ACCESS_EXCLUSIVE_BRIEF,
                format!("ALTER TABLE {TARGET}.{table} DROP CONSTRAINT {check}"),
            ));
        }
    }
    keep_or_refuse_extra_columns(table, &wanted, &current, plan);
    if !added.is_empty() {
        plan.structure.insert(
            0,
            Step::new(
                format!("{table}: {}", added.join(", ")),
                ACCESS_EXCLUSIVE_BRIEF,
                format!("ALTER TABLE {TARGET}.{table} {}", added.join(", ")),
            ),
        );
    }
    Ok(())
}

fn keep_or_refuse_extra_columns(table: &str, wanted: &[Column], current: &[Column], plan: &mut Plan) {
    for have in current {
        if have.name.ends_with(SHADOW_SUFFIX) || wanted.iter().any(|c| c.name == have.name) {
            continue;
        }
        if have.not_null && have.default_expr.is_none() && have.identity.is_empty() && have.generated.is_empty() {
            plan.conflicts.push(format!(
                "{table}.{} is NOT NULL without a default and not opsrun's: opsrun's inserts would fail; give it a default or drop it",
                have.name
            ));
        } else {
            plan.kept.push(format!("{table}.{} (not opsrun's; opsrun leaves it alone)", have.name));
        }
    }
}

fn not_null_check(table: &str, column: &str) -> String {
    format!("{table}_{column}_not_null_adopt")
}

/// `column IS NOT NULL` as a CHECK `NOT VALID`, named for `name` (the column's name once
/// swapped in), over `column` as it is now (its shadow, while converting).
fn not_null_unchecked(table: &str, name: &str, column: &str) -> Step {
    Step::new(
        format!("{table}.{name} IS NOT NULL, unchecked"),
        ACCESS_EXCLUSIVE_BRIEF,
        format!(
            "ALTER TABLE {TARGET}.{table} ADD CONSTRAINT {} CHECK ({column} IS NOT NULL) NOT VALID",
            not_null_check(table, name)
        ),
    )
}

fn retype_in_place(table: &str, name: &str, from: &str, to: &str) -> Step {
    Step::new(
        format!("{table}.{name} {from} → {to} (no rewrite)"),
        ACCESS_EXCLUSIVE_BRIEF,
        format!("ALTER TABLE {TARGET}.{table} ALTER COLUMN {name} TYPE {to}"),
    )
}

/// Whether PostgreSQL changes `from` to `to` without touching a row (`varchar` → `text`).
fn binary_coercible(conn: &mut PgConnection, from: &str, to: &str) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Coercible {
        #[diesel(sql_type = Bool)]
        coercible: bool,
    }
    let found: Coercible = sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_cast WHERE castsource = $1::regtype AND casttarget = $2::regtype
                                              AND castmethod = 'b') AS coercible",
    )
    .bind::<Text, _>(from)
    .bind::<Text, _>(to)
    .get_result(conn)?;
    Ok(found.coercible)
}

/// A serial column becomes an identity column that goes on after the largest id it ever gave.
fn identity_step(table: &str, column: &str, kind: &str) -> Step {
    let generated = if kind == "a" { "ALWAYS" } else { "BY DEFAULT" };
    Step::new(
        format!("{table}.{column} becomes an identity column"),
        ACCESS_EXCLUSIVE_BRIEF,
        format!(
            "DO $adopt$
             DECLARE serial regclass := pg_get_serial_sequence('{TARGET}.{table}', '{column}')::regclass;
                     next bigint;
             BEGIN
                 LOCK TABLE {TARGET}.{table} IN ACCESS EXCLUSIVE MODE;
                 SELECT coalesce(max({column}), 0) + 1 INTO next FROM {TARGET}.{table};
                 IF serial IS NOT NULL THEN
                     -- Never hand out an id the platform gave a run it since deleted.
                     EXECUTE format('SELECT greatest($1, last_value + 1) FROM %s', serial) INTO next USING next;
                 END IF;
                 ALTER TABLE {TARGET}.{table} ALTER COLUMN {column} DROP DEFAULT;
                 IF serial IS NOT NULL THEN EXECUTE format('DROP SEQUENCE %s', serial); END IF;
                 EXECUTE format('ALTER TABLE {TARGET}.{table} ALTER COLUMN {column} ADD GENERATED {generated} AS IDENTITY (START WITH %s)', next);
             END
             $adopt$"
        ),
    )
}

fn plan_constraints(
    conn: &mut PgConnection,
    table: &str,
    current: &[Constraint],
    plan: &mut Plan,
) -> anyhow::Result<()> {
    for wanted in constraints(conn, REFERENCE, table)? {
        let name = &wanted.name;
        let have = current.iter().find(|c| c.name == *name);
        if have.is_some_and(|have| unqualified(&have.definition) != unqualified(&wanted.definition)) {
            plan.conflicts.push(format!(
                "{table} has a constraint `{name}` that differs from opsrun's ({}); drop or rename it",
                wanted.definition
            ));
            continue;
        }
        match (wanted.kind.as_str(), have) {
            ("c" | "f", None) => {
                plan.structure.push(Step::new(
                    format!("constraint {name}, unchecked"),
                    if wanted.kind == "f" { SHARE_ROW_EXCLUSIVE_BRIEF } else { ACCESS_EXCLUSIVE_BRIEF },
                    format!(
                        "ALTER TABLE {TARGET}.{table} ADD CONSTRAINT {name} {} NOT VALID",
                        in_target(&wanted.definition)
                    ),
                ));
                plan.finish.push(validate_step(table, name));
            }
            ("c" | "f", Some(have)) if !have.validated => plan.finish.push(validate_step(table, name)),
            ("p" | "u", None) => {
                let index = wanted.index_definition.as_deref().context("a key constraint has an index")?;
                plan.finish.extend(index_steps(&in_target(index), name, current_index_is_invalid(conn, name)?));
                let key = if wanted.kind == "p" { "PRIMARY KEY" } else { "UNIQUE" };
                plan.finish.push(Step::new(
                    format!("constraint {name}"),
                    ACCESS_EXCLUSIVE_BRIEF,
                    format!("ALTER TABLE {TARGET}.{table} ADD CONSTRAINT {name} {key} USING INDEX {name}"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_step(table: &str, name: &str) -> Step {
    Step::new(
        format!("validate {name}"),
        SHARE_UPDATE_EXCLUSIVE,
        format!("ALTER TABLE {TARGET}.{table} VALIDATE CONSTRAINT {name}"),
    )
}

fn current_index_is_invalid(conn: &mut PgConnection, name: &str) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Invalid {
        #[diesel(sql_type = Bool)]
        invalid: bool,
    }
    let found: Vec<Invalid> =
        sql_query("SELECT NOT i.indisvalid AS invalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)")
            .bind::<Text, _>(format!("{TARGET}.{name}"))
            .load(conn)?;
    Ok(found.first().is_some_and(|f| f.invalid))
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY`, after dropping what an interrupted build left
/// (two statements: neither may run inside a transaction block).
fn index_steps(definition: &str, name: &str, drop_invalid: bool) -> Vec<Step> {
    let build = definition.replacen("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX CONCURRENTLY ", 1).replacen(
        "CREATE INDEX ",
        "CREATE INDEX CONCURRENTLY ",
        1,
    );
    let mut steps = Vec::new();
    if drop_invalid {
        steps.push(Step::concurrent(
            format!("drop the unfinished index {name}"),
            format!("DROP INDEX CONCURRENTLY {TARGET}.{name}"),
        ));
    }
    steps.push(Step::concurrent(format!("index {name}"), build));
    steps
}

fn plan_indexes(conn: &mut PgConnection, table: &str, present: bool, plan: &mut Plan) -> anyhow::Result<()> {
    let current = if present { indexes(conn, TARGET, table)? } else { Vec::new() };
    let reference = indexes(conn, REFERENCE, table)?;
    for wanted in reference.iter().filter(|i| !i.backs_constraint) {
        let name = &wanted.name;
        match current.iter().find(|i| i.name == *name) {
            Some(have) if have.valid && unqualified(&have.definition) == unqualified(&wanted.definition) => {}
            Some(have) if have.valid => plan.conflicts.push(format!(
                "{table} has an index `{name}` that differs from opsrun's ({}); drop or rename it",
                have.definition
            )),
            have => plan.finish.extend(index_steps(&in_target(&wanted.definition), name, have.is_some())),
        }
    }
    for have in &current {
        if !have.backs_constraint && !reference.iter().any(|i| i.name == have.name) {
            plan.kept.push(format!("{table}: index `{}` (not opsrun's; it stays)", have.name));
        }
    }
    Ok(())
}

/// Runs one step. A step whose lock would hold up writers waits at most `lock_timeout`
/// for it (while it waits, every writer queues behind it), then gives up and is tried
/// again a second later, up to `retries` times. Returns how long it took.
pub fn run_step(
    conn: &mut PgConnection,
    step: &Step,
    lock_timeout: Duration,
    retries: u32,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // A lock that lets writes go on may be waited for as long as it takes.
    let blocks_writers = step.lock != SHARE_UPDATE_EXCLUSIVE && step.lock != NONE;
    let timeout = if blocks_writers { format!("{}ms", lock_timeout.as_millis().max(1)) } else { "0".to_owned() };
    let mut attempt = 0;
    loop {
        let result = if step.outside_transaction {
            conn.batch_execute(&format!("SET lock_timeout = '{timeout}'")).and_then(|()| conn.batch_execute(&step.sql))
        } else {
            conn.transaction(|conn| {
                conn.batch_execute(&format!("SET LOCAL lock_timeout = '{timeout}'"))?;
                conn.batch_execute(&step.sql)
            })
        };
        match result {
            Ok(()) => return Ok(started.elapsed()),
            Err(error) if attempt < retries && error.to_string().contains("lock timeout") => {
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "{} failed; nothing of this step was applied, and adopt can be run again",
                    step.what
                )))
            }
        }
    }
}

/// Records every migration as applied, so `opsrun migrate` and `serve` treat the schema as
/// theirs. The last step: until it is done, they refuse the database.
pub fn record_migrations(conn: &mut PgConnection) -> anyhow::Result<usize> {
    conn.applied_migrations().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut recorded = 0;
    for version in versions()? {
        recorded += sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind::<Text, _>(version)
            .execute(conn)?;
    }
    Ok(recorded)
}

/// How many of opsrun's migrations the database has no record of.
pub fn unrecorded_migrations(conn: &mut PgConnection) -> anyhow::Result<usize> {
    let versions = versions()?;
    if !crate::db::shape::table_exists(conn, "__diesel_schema_migrations")? {
        return Ok(versions.len());
    }
    let recorded: Vec<Name> = sql_query("SELECT version::text AS name FROM __diesel_schema_migrations").load(conn)?;
    Ok(versions.iter().filter(|v| !recorded.iter().any(|r| r.name == **v)).count())
}
