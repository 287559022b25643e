//! The conversion that runs inside the database: convert.sql, and the catalog it reads
//! (generated here from the one catalog in `domain`), and the two triggers that apply it
//! to `operation_runs` — `fill` while adopt converts into shadow columns, `compat` after
//! the swap, for as long as the platform's application still writes its own shapes.

use crate::domain::catalog::{IdentityRule, InputKind, Requirement, Scope, CATALOG, LEGACY_SPELLINGS};
use crate::domain::counts::COUNT_KEYS;
use crate::domain::failures::REASON_CODES;

/// Suffix of a shadow column: `created_at__opsrun` is `created_at` in opsrun's type and shape.
pub const SHADOW_SUFFIX: &str = "__opsrun";
/// The columns adopt always writes anew (type, shape or value change), so the platform's
/// originals stay untouched until the swap and every row converts from them alone.
pub const CONVERTED: [&str; 9] = [
    "type",
    "run_identity_hash",
    "summary_counts",
    "failure_summary",
    "context",
    "started_at",
    "completed_at",
    "created_at",
    "updated_at",
];
/// Trigger names sort before opsrun's own `operation_runs_backup_schedule_id`, so the
/// converted type and context are what it reads (BEFORE triggers fire in name order).
pub const FILL_TRIGGER: &str = "operation_runs_adopt_fill";
pub const COMPAT_TRIGGER: &str = "operation_runs_adopt_compat";
/// Runs kept apart from the holder of an identity they share, as the survey decided.
pub const KEPT_APART_TABLE: &str = "opsrun_adopt_kept_apart";

pub fn shadow(column: &str) -> String {
    format!("{column}{SHADOW_SUFFIX}")
}

pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn text_array(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().map(|item| quote_literal(&item)).collect();
    format!("ARRAY[{}]::text[]", items.join(", "))
}

fn lookups() -> String {
    let mut scopes = String::new();
    let mut rules = String::new();
    let mut inputs = String::new();
    for spec in &CATALOG {
        let name = quote_literal(spec.run_type.as_str());
        let scope = match spec.scope {
            Scope::Tenant => "tenant",
            Scope::Workspace => "workspace",
        };
        let rule = match spec.identity {
            IdentityRule::DedupeActive => "dedupe_active",
            IdentityRule::StrictOnce => "strict_once",
            IdentityRule::StrictOnceWhenScheduled => "strict_once_when_scheduled",
        };
        let declared = spec.inputs.iter().map(|input| {
            let kind = match input.kind {
                InputKind::Id => "id",
                InputKind::Key => "key",
                InputKind::Trigger => "trigger",
                InputKind::Timestamp => "timestamp",
            };
            let required = match input.required {
                Requirement::Always => "always",
                Requirement::WhenScheduled => "when_scheduled",
            };
            format!("{}:{kind}:{required}", input.name)
        });
        scopes.push_str(&format!(" WHEN {name} THEN '{scope}'"));
        rules.push_str(&format!(" WHEN {name} THEN '{rule}'"));
        inputs.push_str(&format!(" WHEN {name} THEN {}", text_array(declared)));
    }
    let mut spellings = String::new();
    let mut triggers = String::new();
    for legacy in LEGACY_SPELLINGS {
        let name = quote_literal(legacy.name);
        spellings.push_str(&format!(" WHEN {name} THEN {}", quote_literal(legacy.canonical.as_str())));
        if let Some(trigger) = legacy.trigger {
            triggers.push_str(&format!(" WHEN {name} THEN {}", quote_literal(trigger.as_str())));
        }
    }
    // PL/pgSQL and CASE rather than a SQL function over VALUES: a SQL function that cannot
    // be inlined is planned again on every call from PL/pgSQL, which cost the fill most
    // of its time.
    format!(
        "-- The catalog (src/domain/catalog.rs) as the conversion reads it: a canonical name, a
-- legacy spelling, or a dotted spelling of a canonical name.
CREATE OR REPLACE FUNCTION opsrun_adopt_type(name text,
    OUT canonical text, OUT implied_trigger text, OUT scope text, OUT rule text, OUT inputs text[])
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    canonical := CASE name{spellings} END;
    implied_trigger := CASE name{triggers} END;
    scope := CASE coalesce(canonical, name){scopes} END;
    IF canonical IS NULL AND scope IS NOT NULL THEN
        canonical := name;
    ELSIF canonical IS NULL THEN
        scope := CASE replace(name, '.', '_'){scopes} END;
        canonical := CASE WHEN scope IS NOT NULL THEN replace(name, '.', '_') END;
    END IF;
    rule := CASE canonical{rules} END;
    inputs := CASE canonical{inputs} END;
END
$$;
CREATE OR REPLACE FUNCTION opsrun_adopt_reason_codes() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT {reasons} $$;
CREATE OR REPLACE FUNCTION opsrun_adopt_count_keys() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT {counts} $$;
",
        reasons = text_array(REASON_CODES.iter().map(|r| (*r).to_owned())),
        counts = text_array(COUNT_KEYS.iter().map(|c| (*c).to_owned())),
    )
}

/// Every function of the conversion, created or replaced.
pub fn functions_sql() -> String {
    format!("{}\n{}", lookups(), include_str!("convert.sql"))
}

/// The statements that set NEW's converted columns from `opsrun_adopt_convert`'s
/// `converted` record; `target` names a column as written (itself, or its shadow).
fn assign_converted(target: &dyn Fn(&str) -> String) -> String {
    [
        ("type", "run_type"),
        ("run_identity_hash", "run_identity_hash"),
        ("summary_counts", "summary_counts"),
        ("failure_summary", "failure_summary"),
        ("context", "context"),
    ]
    .iter()
    .map(|(column, field)| format!("NEW.{} := converted.{field};", target(column)))
    .collect::<Vec<_>>()
    .join("\n    ")
}

/// The trigger function that fills the shadow columns from the platform's own, while
/// adopt converts. `timestamp_expr(column)` reads one of the platform's timestamp
/// columns as a `timestamptz` (its type and the zone are known when adopt plans).
pub fn fill_function_sql(timestamp_expr: &dyn Fn(&str) -> String, extra_shadows: &[(String, String)]) -> String {
    let converted = assign_converted(&|column| shadow(column));
    let stamps: Vec<String> = ["started_at", "created_at", "updated_at"]
        .iter()
        .map(|column| format!("NEW.{} := {};", shadow(column), timestamp_expr(&format!("NEW.{column}"))))
        .collect();
    let extras: Vec<String> =
        extra_shadows.iter().map(|(column, to)| format!("NEW.{} := NEW.{column}::{to};", shadow(column))).collect();
    format!(
        "CREATE OR REPLACE FUNCTION opsrun_adopt_fill() RETURNS trigger
LANGUAGE plpgsql AS $fill$
DECLARE
    converted record;
BEGIN
    converted := opsrun_adopt_convert(
        NEW.id, NEW.workspace_id, NEW.tenant_id, NEW.type::text, NEW.status::text, NEW.outcome::text,
        NEW.run_identity_hash::text, NEW.summary_counts::text::jsonb, NEW.failure_summary::text::jsonb,
        NEW.context::text::jsonb, (SELECT k.holder FROM {KEPT_APART_TABLE} k WHERE k.id = NEW.id));
    {converted}
    NEW.identity_policy := converted.identity_policy;
    {stamps}
    -- A completed run without completed_at finished at its last change.
    NEW.{completed} := CASE WHEN NEW.status::text = 'completed' AND NEW.completed_at IS NULL
                            THEN NEW.{updated} ELSE {completed_expr} END;
    {extras}
    NEW.backup_schedule_id := opsrun_backup_schedule_id(converted.run_type, converted.context);
    RETURN NEW;
END
$fill$",
        stamps = stamps.join("\n    "),
        extras = extras.join("\n    "),
        completed = shadow("completed_at"),
        updated = shadow("updated_at"),
        completed_expr = timestamp_expr("NEW.completed_at"),
    )
}

/// The trigger function that converts the platform's writes once the table is opsrun's:
/// an insert without `identity_policy` is the platform's (opsrun always gives one) and
/// converts whole; an update converts what it changed into a shape of the platform's.
/// The platform writes timestamps as wall-clock text in `zone`, parsed in its session's
/// zone on the way in: a changed value that is not the transaction's `now()` is read
/// again as wall-clock time in `zone`.
pub fn compat_function_sql(zone: &str) -> String {
    let converted = assign_converted(&|column| column.to_owned());
    let zone = quote_literal(zone);
    format!(
        "CREATE OR REPLACE FUNCTION opsrun_adopt_compat() RETURNS trigger
LANGUAGE plpgsql AS $compat$
DECLARE
    converted record;
    counts record;
BEGIN
    IF TG_OP = 'INSERT' AND NEW.identity_policy IS NULL THEN
        NEW.started_at := opsrun_adopt_wall_clock(NEW.started_at, NULL, {zone});
        NEW.completed_at := opsrun_adopt_wall_clock(NEW.completed_at, NULL, {zone});
        NEW.created_at := opsrun_adopt_wall_clock(NEW.created_at, NULL, {zone});
        NEW.updated_at := opsrun_adopt_wall_clock(NEW.updated_at, NULL, {zone});
        converted := opsrun_adopt_convert(
            NEW.id, NEW.workspace_id, NEW.tenant_id, NEW.type, NEW.status, NEW.outcome, NEW.run_identity_hash,
            NEW.summary_counts, NEW.failure_summary, NEW.context, NULL);
        {converted}
        NEW.identity_policy := converted.identity_policy;
    ELSIF TG_OP = 'UPDATE' THEN
        NEW.started_at := opsrun_adopt_wall_clock(NEW.started_at, OLD.started_at, {zone});
        NEW.completed_at := opsrun_adopt_wall_clock(NEW.completed_at, OLD.completed_at, {zone});
        NEW.updated_at := opsrun_adopt_wall_clock(NEW.updated_at, OLD.updated_at, {zone});
        IF NEW.type IS DISTINCT FROM OLD.type AND (opsrun_adopt_type(NEW.type)).canonical <> NEW.type THEN
            NEW.context := jsonb_set(opsrun_adopt_object(NEW.context, 'context'), '{{adopted}}',
                coalesce(NEW.context -> 'adopted', '{{}}') || jsonb_build_object('platform_type', NEW.type));
            NEW.type := (opsrun_adopt_type(NEW.type)).canonical;
        END IF;
        IF NEW.context IS DISTINCT FROM OLD.context THEN
            NEW.context := opsrun_adopt_object(NEW.context, 'context');
        END IF;
        IF NEW.failure_summary IS DISTINCT FROM OLD.failure_summary
           AND NOT (jsonb_typeof(NEW.failure_summary) = 'object' AND NEW.failure_summary ? 'items'
                    AND NEW.failure_summary ? 'dropped') THEN
            NEW.failure_summary := opsrun_adopt_failures(NEW.failure_summary);
        END IF;
        IF NEW.summary_counts IS DISTINCT FROM OLD.summary_counts THEN
            counts := opsrun_adopt_counts(NEW.summary_counts);
            NEW.summary_counts := counts.kept;
            IF counts.aside <> '{{}}' THEN
                NEW.context := jsonb_set(NEW.context, '{{adopted}}', coalesce(NEW.context -> 'adopted', '{{}}')
                    || jsonb_build_object('summary_counts', coalesce(NEW.context #> '{{adopted,summary_counts}}', '{{}}') || counts.aside));
            END IF;
        END IF;
    END IF;
    IF NEW.status = 'completed' AND NEW.completed_at IS NULL THEN
        NEW.completed_at := NEW.updated_at;
    END IF;
    RETURN NEW;
END
$compat$"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_and_spelling_is_in_the_generated_catalog() {
        let sql = lookups();
        for spec in &CATALOG {
            assert!(sql.contains(&format!("'{}'", spec.run_type.as_str())), "{}", spec.run_type);
        }
        for legacy in LEGACY_SPELLINGS {
            assert!(sql.contains(&format!("'{}'", legacy.name)), "{}", legacy.name);
        }
    }
}
