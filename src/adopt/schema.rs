//! Bringing the platform's tables to opsrun's schema without a second copy of it: the
//! migrations run into a scratch schema (the reference), and adopt applies what
//! `public` lacks, in forms that keep a large live table writable — one rewrite for
//! every column change, constraints `NOT VALID` then validated, indexes built
//! concurrently, an interrupted build dropped and built again.

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel::{sql_query, Connection, PgConnection, QueryableByName, RunQueryDsl};
use diesel_migrations::MigrationHarness;

use crate::db::MIGRATIONS;

/// The scratch schema opsrun's migrations are applied to, to read its schema from.
pub const REFERENCE: &str = "opsrun_adopt_reference";
/// The schema adopt converts.
const TARGET: &str = "public";

#[derive(QueryableByName, Clone, Debug)]
struct Column {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Text)]
    identity: String,
    #[diesel(sql_type = Text)]
    generated: String,
    #[diesel(sql_type = Nullable<Text>)]
    default_expr: Option<String>,
}

#[derive(QueryableByName, Clone, Debug)]
struct Constraint {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    definition: String,
    #[diesel(sql_type = Bool)]
    validated: bool,
    /// For primary keys and unique constraints: their index's definition.
    #[diesel(sql_type = Nullable<Text>)]
    index_definition: Option<String>,
}

#[derive(QueryableByName, Clone, Debug)]
struct Index {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    definition: String,
    #[diesel(sql_type = Bool)]
    valid: bool,
    #[diesel(sql_type = Bool)]
    backs_constraint: bool,
}

#[derive(QueryableByName, Clone, Debug)]
struct Named {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Object definitions as PostgreSQL prints them, without the schema they live in.
fn unqualified(definition: &str) -> String {
    let definition = definition.strip_suffix(" NOT VALID").unwrap_or(definition);
    definition.replace(&format!("{REFERENCE}."), "").replace(&format!("{TARGET}."), "")
}

fn in_target(definition: &str) -> String {
    definition.replace(&format!("{REFERENCE}."), &format!("{TARGET}."))
}

fn columns(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Vec<Column>> {
    Ok(sql_query(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS data_type, a.attnotnull AS not_null,
                a.attidentity::text AS identity, a.attgenerated::text AS generated,
                pg_get_expr(d.adbin, d.adrelid) AS default_expr
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind::<Text, _>(format!("{schema}.{table}"))
    .load(conn)?)
}

fn constraints(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Vec<Constraint>> {
    Ok(sql_query(
        "SELECT conname::text AS name, contype::text AS kind, pg_get_constraintdef(oid) AS definition,
                convalidated AS validated,
                CASE WHEN contype IN ('p', 'u') THEN pg_get_indexdef(conindid) END AS index_definition
           FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype IN ('c', 'f', 'p', 'u') ORDER BY conname",
    )
    .bind::<Text, _>(format!("{schema}.{table}"))
    .load(conn)?)
}

fn indexes(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Vec<Index>> {
    Ok(sql_query(
        "SELECT c.relname::text AS name, pg_get_indexdef(i.indexrelid) AS definition, i.indisvalid AS valid,
                EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) AS backs_constraint
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass($1) ORDER BY c.relname",
    )
    .bind::<Text, _>(format!("{schema}.{table}"))
    .load(conn)?)
}

fn triggers(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Vec<Named>> {
    Ok(sql_query(
        "SELECT tgname::text AS name, pg_get_triggerdef(oid) AS definition FROM pg_trigger
          WHERE tgrelid = to_regclass($1) AND NOT tgisinternal ORDER BY tgname",
    )
    .bind::<Text, _>(format!("{schema}.{table}"))
    .load(conn)?)
}

fn tables(conn: &mut PgConnection, schema: &str) -> anyhow::Result<Vec<String>> {
    let names: Vec<Name> = sql_query(
        "SELECT relname::text AS name FROM pg_class WHERE relnamespace = to_regnamespace($1) AND relkind = 'r' ORDER BY relname",
    )
    .bind::<Text, _>(schema)
    .load(conn)?;
    Ok(names.into_iter().map(|n| n.name).collect())
}

/// `(signature without schema, definition)` of every function in `schema`.
fn functions(conn: &mut PgConnection, schema: &str) -> anyhow::Result<Vec<Named>> {
    Ok(sql_query(
        "SELECT p.proname::text || '(' || oidvectortypes(p.proargtypes) || ')' AS name,
                pg_get_functiondef(p.oid) AS definition
           FROM pg_proc p WHERE p.pronamespace = to_regnamespace($1) ORDER BY 1",
    )
    .bind::<Text, _>(schema)
    .load(conn)?)
}

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

/// How one column of the platform's table becomes opsrun's.
fn conversion(column: &str, from: &str, to: &str, zone: &str) -> String {
    match (from, to) {
        ("timestamp without time zone", "timestamp with time zone") => {
            format!("{column} AT TIME ZONE {}", quote_literal(zone))
        }
        _ => format!("{column}::{to}"),
    }
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
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

const ACCESS_EXCLUSIVE: &str = "ACCESS EXCLUSIVE";
const ACCESS_EXCLUSIVE_BRIEF: &str = "ACCESS EXCLUSIVE, catalog only";
const SHARE_UPDATE_EXCLUSIVE: &str = "SHARE UPDATE EXCLUSIVE (writes go on)";
const SHARE_ROW_EXCLUSIVE_BRIEF: &str = "SHARE ROW EXCLUSIVE, catalog only";
const NONE: &str = "none on existing tables";

/// What adopt will run, phase by phase: structure before the rows are fixed, the rest after.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Functions, new tables, the one rewrite per table, identities, defaults, constraints `NOT VALID`.
    pub structure: Vec<Step>,
    /// Defaults that only served to fill a new column, dropped before the rows are checked once more.
    pub fill_defaults: Vec<Step>,
    /// Validations, `NOT NULL`, indexes, constraints over them, triggers.
    pub finish: Vec<Step>,
    /// What needs a person before adopt can go on.
    pub conflicts: Vec<String>,
    /// What adopt leaves as it is.
    pub kept: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.structure.is_empty() && self.fill_defaults.is_empty() && self.finish.is_empty()
    }
}

/// A NOT NULL column opsrun adds with no default of its own, and the value existing rows
/// start with until the row pass sets each.
const FILLED_BY_ADOPT: [(&str, &str, &str); 1] = [("operation_runs", "identity_policy", "'dedupe_active'")];

/// Compares `public` with the reference and plans the difference. `zone` is the time zone
/// the platform's `timestamp without time zone` values were written in.
pub fn plan(conn: &mut PgConnection, zone: &str) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
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
        } else {
            plan_columns(conn, &table, zone, &current_constraints, &mut plan)?;
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
            plan.kept.push(format!("{table}: trigger `{}` (not opsrun's; it still fires)", extra.name));
        }
    }
    Ok(plan)
}

fn plan_columns(
    conn: &mut PgConnection,
    table: &str,
    zone: &str,
    checks: &[Constraint],
    plan: &mut Plan,
) -> anyhow::Result<()> {
    let wanted = columns(conn, REFERENCE, table)?;
    let current = columns(conn, TARGET, table)?;
    let mut rewrite = Vec::new();
    let mut described = Vec::new();
    for column in &wanted {
        let name = &column.name;
        let Some(have) = current.iter().find(|c| c.name == *name) else {
            let fill = FILLED_BY_ADOPT.iter().find(|(t, c, _)| *t == table && c == name).map(|(_, _, fill)| *fill);
            let definition = if column.generated == "s" {
                format!(
                    "{} GENERATED ALWAYS AS ({}) STORED",
                    column.data_type,
                    column.default_expr.as_deref().unwrap_or("NULL")
                )
            } else {
                let default = column.default_expr.as_deref().or(fill);
                if column.not_null && default.is_none() {
                    anyhow::bail!(
                        "opsrun's {table}.{name} is NOT NULL without a default, and adopt does not know how to fill it"
                    );
                }
                let not_null = if column.not_null { " NOT NULL" } else { "" };
                match default {
                    Some(default) => format!("{} DEFAULT {default}{not_null}", column.data_type),
                    None => column.data_type.clone(),
                }
            };
            if fill.is_some() && column.default_expr.is_none() {
                plan.fill_defaults.push(Step::new(
                    format!("default of {table}.{name}"),
                    ACCESS_EXCLUSIVE_BRIEF,
                    format!("ALTER TABLE {TARGET}.{table} ALTER COLUMN {name} DROP DEFAULT"),
                ));
            }
            rewrite.push(format!("ADD COLUMN {name} {definition}"));
            described.push(format!("add {name}"));
            continue;
        };
        if column.generated != have.generated {
            plan.conflicts.push(format!("{table}.{name} exists but is not opsrun's generated column; rename it"));
            continue;
        }
        if column.data_type != have.data_type {
            rewrite.push(format!(
                "ALTER COLUMN {name} TYPE {} USING {}",
                column.data_type,
                conversion(name, &have.data_type, &column.data_type, zone)
            ));
            described.push(format!("{name} {} → {}", have.data_type, column.data_type));
        }
        if !column.identity.is_empty() && have.identity.is_empty() {
            plan.structure.push(identity_step(table, name, &column.identity));
        } else if column.generated.is_empty() && column.identity.is_empty() && column.default_expr != have.default_expr
        {
            match &column.default_expr {
                Some(default) => plan.structure.push(Step::new(
                    format!("default of {table}.{name}"),
                    ACCESS_EXCLUSIVE_BRIEF,
                    format!("ALTER TABLE {TARGET}.{table} ALTER COLUMN {name} SET DEFAULT {default}"),
                )),
                None => plan.fill_defaults.push(Step::new(
                    format!("default of {table}.{name}"),
                    ACCESS_EXCLUSIVE_BRIEF,
                    format!("ALTER TABLE {TARGET}.{table} ALTER COLUMN {name} DROP DEFAULT"),
                )),
            }
        }
        if column.not_null && !have.not_null {
            // A validated CHECK lets SET NOT NULL skip its scan under the exclusive lock.
            let check = format!("{table}_{name}_not_null_adopt");
            if !checks.iter().any(|c| c.name == check) {
                plan.structure.push(Step::new(
                    format!("{table}.{name} IS NOT NULL, unchecked"),
                    ACCESS_EXCLUSIVE_BRIEF,
                    format!("ALTER TABLE {TARGET}.{table} ADD CONSTRAINT {check} CHECK ({name} IS NOT NULL) NOT VALID"),
                ));
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
    for have in &current {
        if !wanted.iter().any(|c| c.name == have.name) {
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
    if !rewrite.is_empty() {
        plan.structure.insert(
            0,
            Step::new(
                format!("{table}: {}", described.join(", ")),
                ACCESS_EXCLUSIVE,
                format!("ALTER TABLE {TARGET}.{table} {}", rewrite.join(", ")),
            ),
        );
    }
    Ok(())
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

/// Runs one step, refusing to queue behind a long transaction for more than `lock_timeout`
/// (a queued ALTER would block every writer behind it). Returns how long it took.
pub fn run_step(conn: &mut PgConnection, step: &Step, lock_timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let timeout = format!("SET lock_timeout = '{}ms'", lock_timeout.as_millis());
    let result = if step.outside_transaction {
        conn.batch_execute(&timeout).and_then(|()| conn.batch_execute(&step.sql))
    } else {
        conn.transaction(|conn| {
            conn.batch_execute(&format!("SET LOCAL lock_timeout = '{}ms'", lock_timeout.as_millis()))?;
            conn.batch_execute(&step.sql)
        })
    };
    result.with_context(|| {
        format!("{} failed; nothing of this step was applied, and adopt can be run again", step.what)
    })?;
    Ok(started.elapsed())
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
    if !crate::db::catalog::table_exists(conn, "__diesel_schema_migrations")? {
        return Ok(versions.len());
    }
    let recorded: Vec<Name> = sql_query("SELECT version::text AS name FROM __diesel_schema_migrations").load(conn)?;
    Ok(versions.iter().filter(|v| !recorded.iter().any(|r| r.name == **v)).count())
}
