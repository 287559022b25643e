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

use super::compat::{
    self, quote_literal, shadow, COMPAT_TRIGGER, CONVERTED, FILL_TRIGGER, KEPT_APART_TABLE, SHADOW_SUFFIX,
};
use crate::db::MIGRATIONS;

/// The scratch schema opsrun's migrations are applied to, to read its schema from.
pub const REFERENCE: &str = "opsrun_adopt_reference";
/// The schema adopt converts.
const TARGET: &str = "public";
/// The table adopt converts row by row; the others it creates or only checks.
const RUNS: &str = "operation_runs";

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

/// Whether `public.operation_runs` is still the platform's: opsrun's `identity_policy` is
/// not there yet, or a conversion into shadow columns is under way.
pub fn needs_conversion(conn: &mut PgConnection) -> anyhow::Result<bool> {
    let current = columns(conn, TARGET, RUNS)?;
    Ok(!current.iter().any(|c| c.name == "identity_policy") || current.iter().any(|c| c.name.ends_with(SHADOW_SUFFIX)))
}

/// The zone an interrupted conversion began with, if one is under way.
pub fn conversion_zone(conn: &mut PgConnection) -> anyhow::Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Zone {
        #[diesel(sql_type = Nullable<Text>)]
        zone: Option<String>,
    }
    let found: Vec<Zone> = sql_query(
        "SELECT col_description(a.attrelid, a.attnum) AS zone FROM pg_attribute a
          WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
    )
    .bind::<Text, _>(format!("{TARGET}.{RUNS}"))
    .bind::<Text, _>(shadow("created_at"))
    .load(conn)?;
    Ok(found.into_iter().next().and_then(|z| z.zone).and_then(|z| z.strip_prefix("zone=").map(str::to_owned)))
}

/// A column's name with every converted column read as its shadow, in a definition.
fn on_shadows(definition: &str, shadowed: &[String]) -> String {
    if shadowed.is_empty() {
        return definition.to_owned();
    }
    let names = shadowed.iter().map(|name| regex::escape(name)).collect::<Vec<_>>().join("|");
    let pattern = regex::Regex::new(&format!(r"\b({names})\b")).expect("escaped names make a valid pattern");
    pattern.replace_all(definition, format!("${{1}}{SHADOW_SUFFIX}")).into_owned()
}

/// The plan while `operation_runs` is still the platform's: everything goes into columns
/// added beside its own, so no statement rewrites the table or holds a lock for long.
fn plan_conversion(conn: &mut PgConnection, zone: &str, plan: &mut Plan) -> anyhow::Result<()> {
    plan.converting = true;
    let table = RUNS;
    let wanted = columns(conn, REFERENCE, table)?;
    let current = columns(conn, TARGET, table)?;
    let checks = constraints(conn, TARGET, table)?;
    let mut shadowed: Vec<String> = Vec::new();
    let mut extra_shadows = Vec::new();
    let mut added = Vec::new();
    let mut defaults = Vec::new();
    // Checks over the new columns come after the trigger that fills them on every write.
    let mut checks_after_trigger = Vec::new();
    for column in &wanted {
        let name = &column.name;
        let Some(have) = current.iter().find(|c| c.name == *name) else {
            if CONVERTED.contains(&name.as_str()) {
                plan.conflicts.push(format!("{table} has no column {name}: it is not the platform's operation_runs"));
            } else {
                let default = column.default_expr.as_deref().map(|d| format!(" DEFAULT {d}")).unwrap_or_default();
                // NOT NULL only with a default; identity_policy is filled by the conversion
                // and made NOT NULL once every row has it.
                let not_null = if column.not_null && column.default_expr.is_some() { " NOT NULL" } else { "" };
                added.push(format!("ADD COLUMN IF NOT EXISTS {name} {}{default}{not_null}", column.data_type));
                if column.not_null && column.default_expr.is_none() {
                    plan.before_swap.push(validate_not_null(table, name));
                    if !checks.iter().any(|c| c.name == not_null_check(table, name)) {
                        checks_after_trigger.push(not_null_unchecked(table, name, name));
                    }
                }
            }
            continue;
        };
        let convert = CONVERTED.contains(&name.as_str())
            || (column.data_type != have.data_type && !binary_coercible(conn, &have.data_type, &column.data_type)?);
        if !convert {
            if column.data_type != have.data_type {
                plan.structure.push(retype_in_place(table, name, &have.data_type, &column.data_type));
            }
            continue;
        }
        shadowed.push(name.clone());
        if !CONVERTED.contains(&name.as_str()) {
            extra_shadows.push((name.clone(), column.data_type.clone()));
        }
        added.push(format!("ADD COLUMN IF NOT EXISTS {} {}", shadow(name), column.data_type));
        if let Some(default) = &column.default_expr {
            defaults.push(format!("ALTER COLUMN {name} SET DEFAULT {default}"));
        }
        if column.not_null {
            plan.before_swap.push(validate_not_null(table, name));
            if !checks.iter().any(|c| c.name == not_null_check(table, name)) {
                checks_after_trigger.push(not_null_unchecked(table, name, &shadow(name)));
            }
        }
    }
    keep_or_refuse_extra_columns(table, &wanted, &current, plan);
    if !added.is_empty() {
        plan.structure.insert(
            0,
            Step::new(
                format!("{table}: add {} column(s) beside the platform's, no rewrite", added.len()),
                ACCESS_EXCLUSIVE_BRIEF,
                format!(
                    "ALTER TABLE {TARGET}.{table} {}; COMMENT ON COLUMN {TARGET}.{table}.{} IS {}",
                    added.join(", "),
                    shadow("created_at"),
                    quote_literal(&format!("zone={zone}"))
                ),
            ),
        );
    }
    let timestamp_expr = |column: &str| -> String {
        let name = column.trim_start_matches("NEW.");
        match current.iter().find(|c| c.name == name).map(|c| c.data_type.as_str()) {
            Some("timestamp without time zone") => format!("{column} AT TIME ZONE {}", quote_literal(zone)),
            _ => format!("{column}::timestamptz"),
        }
    };
    plan.structure.push(Step::new(
        "the conversion's functions (opsrun_adopt_*)",
        NONE,
        format!(
            "{}
{};
{}",
            compat::functions_sql(),
            compat::fill_function_sql(&timestamp_expr, &extra_shadows),
            compat::compat_function_sql(zone)
        ),
    ));
    plan.structure.push(Step::new(
        format!("table {KEPT_APART_TABLE}: runs kept apart from an identity's holder"),
        NONE,
        format!(
            "CREATE TABLE IF NOT EXISTS {TARGET}.{KEPT_APART_TABLE} (id bigint PRIMARY KEY, holder bigint NOT NULL)"
        ),
    ));
    if !triggers(conn, TARGET, table)?.iter().any(|t| t.name == FILL_TRIGGER) {
        plan.structure.push(Step::new(
            format!("trigger {FILL_TRIGGER}: the platform's writes fill the new columns"),
            SHARE_ROW_EXCLUSIVE_BRIEF,
            format!(
                "CREATE TRIGGER {FILL_TRIGGER} BEFORE INSERT OR UPDATE ON {TARGET}.{table}
                 FOR EACH ROW EXECUTE FUNCTION opsrun_adopt_fill()"
            ),
        ));
    }

    plan.structure.extend(checks_after_trigger);

    // Every index of opsrun's, built on the shadows under its final name; the platform's
    // own indexes over a converted column, built again beside it.
    let have = indexes(conn, TARGET, table)?;
    let mut renames = Vec::new();
    for wanted in indexes(conn, REFERENCE, table)?.iter().filter(|i| !i.backs_constraint) {
        let definition = on_shadows(&in_target(&wanted.definition), &shadowed);
        match have.iter().find(|i| i.name == wanted.name) {
            Some(i) if i.valid && unqualified(&i.definition) == unqualified(&definition) => {}
            Some(i) if i.valid => plan.conflicts.push(format!(
                "{table} has an index `{}` that differs from opsrun's ({}); drop or rename it",
                i.name, i.definition
            )),
            existing => plan.before_swap.extend(index_steps(&definition, &wanted.name, existing.is_some())),
        }
    }
    let reference = indexes(conn, REFERENCE, table)?;
    for platform in have.iter().filter(|i| !reference.iter().any(|r| r.name == i.name)) {
        if platform.name.ends_with(SHADOW_SUFFIX) {
            continue;
        }
        let rebuilt = on_shadows(&platform.definition, &shadowed);
        if rebuilt == platform.definition {
            continue;
        }
        if platform.backs_constraint {
            plan.conflicts.push(format!(
                "{table}: the constraint behind index `{}` covers a column adopt converts; drop it (opsrun's own constraints take its place) and run adopt again",
                platform.name
            ));
            continue;
        }
        let twin =
            format!("{}{SHADOW_SUFFIX}", platform.name.chars().take(63 - SHADOW_SUFFIX.len()).collect::<String>());
        let definition = rebuilt.replacen(&format!(" INDEX {} ON", platform.name), &format!(" INDEX {twin} ON"), 1);
        match have.iter().find(|i| i.name == twin) {
            Some(i) if i.valid => {}
            existing => plan.before_swap.extend(index_steps(&definition, &twin, existing.is_some())),
        }
        renames.push(format!("ALTER INDEX {TARGET}.{twin} RENAME TO {}", platform.name));
        plan.kept
            .push(format!("{table}: index `{}` (not opsrun's; built again over the converted columns)", platform.name));
    }

    let drops: Vec<String> = shadowed.iter().map(|name| format!("DROP COLUMN {name}")).collect();
    let mut swap = vec![
        format!("LOCK TABLE {TARGET}.{table} IN ACCESS EXCLUSIVE MODE"),
        format!("DROP TRIGGER IF EXISTS {FILL_TRIGGER} ON {TARGET}.{table}"),
        format!("ALTER TABLE {TARGET}.{table} {}", drops.join(", ")),
    ];
    swap.extend(
        shadowed.iter().map(|name| format!("ALTER TABLE {TARGET}.{table} RENAME COLUMN {} TO {name}", shadow(name))),
    );
    swap.extend(renames);
    if !defaults.is_empty() {
        swap.push(format!("ALTER TABLE {TARGET}.{table} {}", defaults.join(", ")));
    }
    swap.push(format!(
        "CREATE TRIGGER {COMPAT_TRIGGER} BEFORE INSERT OR UPDATE ON {TARGET}.{table} FOR EACH ROW EXECUTE FUNCTION opsrun_adopt_compat()"
    ));
    plan.swap = Some(Step::new(
        format!("swap in the converted columns ({})", shadowed.join(", ")),
        ACCESS_EXCLUSIVE_BRIEF,
        swap.join(
            ";
",
        ),
    ));
    Ok(())
}

fn validate_not_null(table: &str, name: &str) -> Step {
    Step::new(
        format!("validate {table}.{name} IS NOT NULL"),
        SHARE_UPDATE_EXCLUSIVE,
        format!("ALTER TABLE {TARGET}.{table} VALIDATE CONSTRAINT {}", not_null_check(table, name)),
    )
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

/// What `opsrun adopt --finish` runs: the compatibility trigger and the conversion's
/// functions go.
pub fn finish_steps() -> Vec<Step> {
    vec![
        Step::new(
            format!("drop the trigger {COMPAT_TRIGGER}"),
            SHARE_ROW_EXCLUSIVE_BRIEF,
            format!("DROP TRIGGER IF EXISTS {COMPAT_TRIGGER} ON {TARGET}.{RUNS}"),
        ),
        Step::new(
            "drop the conversion's functions (opsrun_adopt_*)",
            NONE,
            format!(
                "DO $finish$ DECLARE f regprocedure; BEGIN
                   FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
                             WHERE p.pronamespace = '{TARGET}'::regnamespace AND p.proname LIKE 'opsrun\\_adopt\\_%' LOOP
                     EXECUTE format('DROP FUNCTION %s', f);
                   END LOOP;
                 END $finish$"
            ),
        ),
    ]
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
    if !crate::db::catalog::table_exists(conn, "__diesel_schema_migrations")? {
        return Ok(versions.len());
    }
    let recorded: Vec<Name> = sql_query("SELECT version::text AS name FROM __diesel_schema_migrations").load(conn)?;
    Ok(versions.iter().filter(|v| !recorded.iter().any(|r| r.name == **v)).count())
}
