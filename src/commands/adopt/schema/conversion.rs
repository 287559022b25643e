//! Planning the conversion of a table that is still the platform's: opsrun's columns and a
//! shadow of each converted column added beside the platform's, the fill trigger, the
//! indexes built on the shadows, and the one catalog-only swap (docs/CUTOVER.md).

use diesel::sql_types::{Nullable, Text};
use diesel::{sql_query, PgConnection, QueryableByName, RunQueryDsl};

use super::introspect::{columns, constraints, in_target, indexes, triggers, unqualified};
use super::{
    binary_coercible, index_steps, keep_or_refuse_extra_columns, not_null_check, not_null_unchecked, retype_in_place,
    Plan, Step, ACCESS_EXCLUSIVE_BRIEF, NONE, REFERENCE, RUNS, SHARE_ROW_EXCLUSIVE_BRIEF, SHARE_UPDATE_EXCLUSIVE,
    TARGET,
};
use crate::commands::adopt::compat::{
    self, quote_literal, shadow, COMPAT_TRIGGER, CONVERTED, FILL_TRIGGER, KEPT_APART_TABLE, SHADOW_SUFFIX,
};

/// Whether `public.operation_runs` is still the platform's: opsrun's `identity_policy` is
/// not there yet, or a conversion into shadow columns is under way.
pub fn needs_conversion(conn: &mut PgConnection) -> anyhow::Result<bool> {
    let current = columns(conn, TARGET, RUNS)?;
    Ok(!current.iter().any(|c| c.name == "identity_policy") || current.iter().any(|c| c.name.ends_with(SHADOW_SUFFIX)))
}

/// What a conversion under way notes on a column of its own: `zone=<zone>`, and
/// `;autovacuum=paused` when it paused autovacuum on the table. The note rides on the
/// shadow of `created_at`, and so stays on `created_at` after the swap until adopt ends.
fn conversion_note(conn: &mut PgConnection, column: &str) -> anyhow::Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Note {
        #[diesel(sql_type = Nullable<Text>)]
        note: Option<String>,
    }
    let found: Vec<Note> = sql_query(
        "SELECT col_description(a.attrelid, a.attnum) AS note FROM pg_attribute a
          WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
    )
    .bind::<Text, _>(format!("{TARGET}.{RUNS}"))
    .bind::<Text, _>(column)
    .load(conn)?;
    Ok(found.into_iter().next().and_then(|n| n.note).filter(|n| n.starts_with("zone=")))
}

const PAUSED: &str = ";autovacuum=paused";

/// The zone an interrupted conversion began with, if one is under way.
pub fn conversion_zone(conn: &mut PgConnection) -> anyhow::Result<Option<String>> {
    let note = conversion_note(conn, &shadow("created_at"))?;
    Ok(note.map(|n| n.trim_start_matches("zone=").split(';').next().unwrap_or_default().to_owned()))
}

/// Whether the table's own settings name autovacuum (adopt then leaves it as it is).
fn autovacuum_configured(conn: &mut PgConnection) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Configured {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        configured: bool,
    }
    let found: Configured = sql_query(
        "SELECT coalesce(EXISTS (SELECT 1 FROM unnest(reloptions) AS o WHERE o LIKE 'autovacuum_enabled=%'), false) AS configured
           FROM pg_class WHERE oid = to_regclass($1)",
    )
    .bind::<Text, _>(format!("{TARGET}.{RUNS}"))
    .get_result(conn)?;
    Ok(found.configured)
}

/// Once the conversion is swapped in: autovacuum as it was, the note gone, and the row
/// versions the fill left behind vacuumed (writes go on).
pub(super) fn after_conversion(conn: &mut PgConnection) -> anyhow::Result<Vec<Step>> {
    let Some(note) = conversion_note(conn, "created_at")? else { return Ok(Vec::new()) };
    let mut steps = Vec::new();
    if note.ends_with(PAUSED) {
        steps.push(Step::new(
            format!("{RUNS}: autovacuum on again"),
            SHARE_UPDATE_EXCLUSIVE,
            format!("ALTER TABLE {TARGET}.{RUNS} RESET (autovacuum_enabled)"),
        ));
    }
    steps.push(Step::new(
        "forget the conversion's note",
        SHARE_UPDATE_EXCLUSIVE,
        format!("COMMENT ON COLUMN {TARGET}.{RUNS}.created_at IS NULL"),
    ));
    steps.push(Step {
        outside_transaction: true,
        ..Step::new(
            format!("vacuum {RUNS}: the row versions the conversion left"),
            SHARE_UPDATE_EXCLUSIVE,
            format!("VACUUM (ANALYZE) {TARGET}.{RUNS}"),
        )
    });
    Ok(steps)
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
pub(super) fn plan_conversion(conn: &mut PgConnection, zone: &str, plan: &mut Plan) -> anyhow::Result<()> {
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
    // Autovacuum would start on the table the fill rewrites, and a catalog change must then
    // wait for it to give way (a second, deadlock_timeout) while writers queue behind:
    // paused while converting, unless the table's own settings name it.
    let paused = conversion_note(conn, &shadow("created_at"))?.is_some_and(|note| note.ends_with(PAUSED));
    let pause = !paused && !autovacuum_configured(conn)?;
    let note = format!("zone={zone}{}", if paused || pause { PAUSED } else { "" });
    if pause {
        plan.structure.insert(
            0,
            Step::new(
                format!("{table}: autovacuum paused while converting"),
                SHARE_UPDATE_EXCLUSIVE,
                format!("ALTER TABLE {TARGET}.{table} SET (autovacuum_enabled = false)"),
            ),
        );
    }
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
                    quote_literal(&note)
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
