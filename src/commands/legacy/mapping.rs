//! How one legacy row becomes an operation run (docs/LEGACY.md), as a pure function
//! of the row's JSON (`row_to_json`). Missing or malformed fields are mapped defensively
//! and reported as notes; nothing here can fail on bad data except a row with no tenant.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::domain::catalog::RunType;
use crate::domain::failures::{sanitize, MAX_MESSAGE_CHARS};
use crate::domain::identity::{identity_hash, IdentityPolicy, ScopeKey};
use crate::domain::ids::TenantId;
use crate::domain::inputs::{format_minute, parse_inputs, parse_minute};
use crate::domain::status::{Outcome, RunStatus};

/// The legacy run tables, in the order they are backfilled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyTable {
    InventorySyncRuns,
    EntraGroupSyncRuns,
    BackupScheduleRuns,
    RestoreRuns,
}

impl LegacyTable {
    pub const ALL: [LegacyTable; 4] = [
        LegacyTable::InventorySyncRuns,
        LegacyTable::EntraGroupSyncRuns,
        LegacyTable::BackupScheduleRuns,
        LegacyTable::RestoreRuns,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LegacyTable::InventorySyncRuns => "inventory_sync_runs",
            LegacyTable::EntraGroupSyncRuns => "entra_group_sync_runs",
            LegacyTable::BackupScheduleRuns => "backup_schedule_runs",
            LegacyTable::RestoreRuns => "restore_runs",
        }
    }

    pub fn parse(name: &str) -> Option<LegacyTable> {
        LegacyTable::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn run_type(self) -> RunType {
        match self {
            LegacyTable::InventorySyncRuns => RunType::InventorySync,
            LegacyTable::EntraGroupSyncRuns => RunType::DirectoryGroupsSync,
            LegacyTable::BackupScheduleRuns => RunType::BackupScheduleRun,
            LegacyTable::RestoreRuns => RunType::RestoreExecute,
        }
    }

    /// restore_runs is a domain entity: it is linked, never dropped.
    pub fn droppable(self) -> bool {
        self != LegacyTable::RestoreRuns
    }

    /// The initiator when the row names no user.
    fn default_initiator(self) -> &'static str {
        match self {
            LegacyTable::InventorySyncRuns | LegacyTable::RestoreRuns => "system",
            LegacyTable::EntraGroupSyncRuns | LegacyTable::BackupScheduleRuns => "scheduler",
        }
    }

    /// The restore wizard's states: not executions, so not runs.
    pub const RESTORE_WIZARD_STATES: [&'static str; 5] = ["draft", "scoped", "checked", "previewed", "pending"];
}

/// What a legacy status means canonically; `None` for rows that are not runs.
fn map_status(table: LegacyTable, raw: &str) -> Option<Result<(RunStatus, Outcome), ()>> {
    use Outcome::*;
    use RunStatus::*;
    // CamelCase, snake_case and lower case spellings all count.
    let key: String = raw.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    let mapped = match (table, key.as_str()) {
        (LegacyTable::RestoreRuns, k) if LegacyTable::RESTORE_WIZARD_STATES.contains(&k) => return None,
        (LegacyTable::RestoreRuns, "queued") => (Queued, Pending),
        (LegacyTable::RestoreRuns, "running") => (Running, Pending),
        (LegacyTable::RestoreRuns, "completed") => (Completed, Succeeded),
        (LegacyTable::RestoreRuns, "partial" | "completedwitherrors") => (Completed, PartiallySucceeded),
        (LegacyTable::RestoreRuns, "failed" | "aborted") => (Completed, Failed),
        (LegacyTable::RestoreRuns, "cancelled") => (Completed, Cancelled),
        (_, "pending") => (Queued, Pending),
        (_, "running") => (Running, Pending),
        (_, "success" | "succeeded") => (Completed, Succeeded),
        (_, "partial") => (Completed, PartiallySucceeded),
        (_, "failed") => (Completed, Failed),
        (_, "skipped" | "canceled" | "cancelled") => (Completed, Cancelled),
        _ => return Some(Err(())),
    };
    Some(Ok(mapped))
}

/// An operation run derived from one legacy row.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedRun {
    pub tenant_id: TenantId,
    pub run_type: RunType,
    pub status: RunStatus,
    pub outcome: Outcome,
    pub identity_policy: IdentityPolicy,
    /// Without the scope: the workspace is resolved later, the tenant is known.
    pub identity_hash: String,
    pub summary_counts: Value,
    pub failure_summary: Value,
    pub context: Value,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Who started it, when the row says.
    pub initiator: Option<LegacyInitiator>,
    /// The initiator name when the row names nobody (or a user who is gone).
    pub default_initiator: &'static str,
}

/// Who started a legacy run, as its row records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LegacyInitiator {
    /// A user id, whose name the `users` table may know.
    User(i64),
    /// A name, whose user id the `users` table may know.
    Named(String),
}

/// The result of mapping one row.
#[derive(Debug, PartialEq)]
pub enum Mapped {
    Run(Box<MappedRun>, Vec<String>),
    /// Not an execution (restore wizard states).
    Skip(String),
    /// Cannot be mapped at all.
    Refuse(String),
}

fn text(row: &Value, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn id(row: &Value, key: &str) -> Option<i64> {
    match row.get(key)? {
        Value::Number(n) => n.as_i64().filter(|v| *v > 0),
        Value::String(s) => s.trim().parse().ok().filter(|v: &i64| *v > 0),
        _ => None,
    }
}

fn count(value: Option<&Value>) -> Option<i64> {
    let n = match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    Some(n.clamp(0, crate::domain::counts::MAX_COUNT))
}

fn time(row: &Value, key: &str) -> Option<DateTime<Utc>> {
    let raw = row.get(key)?.as_str()?;
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        // row_to_json writes timestamp without time zone as 2026-01-05T01:10:34.123; read it as UTC.
        .or_else(|| chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc()))
}

/// A JSON column that may hold JSON, a JSON string holding JSON, or garbage.
fn json_field(row: &Value, key: &str, notes: &mut Vec<String>) -> Option<Value> {
    match row.get(key)? {
        Value::Null => None,
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(value) => Some(value),
            Err(_) => {
                notes.push(format!("`{key}` is not JSON; ignored"));
                None
            }
        },
        other => Some(other.clone()),
    }
}

fn failure(code: &str, reason_code: &str, message: &str) -> Value {
    let known = crate::domain::failures::REASON_CODES;
    let code: String = code.chars().filter(|c| c.is_ascii_alphanumeric() || "_.-:".contains(*c)).take(64).collect();
    json!({
        "code": if code.is_empty() { "legacy.error".to_owned() } else { code },
        "reason_code": if known.contains(&reason_code) { reason_code } else { "unknown" },
        "message": sanitize(message, MAX_MESSAGE_CHARS),
    })
}

fn nonzero_counts(pairs: &[(&str, Option<i64>)]) -> Value {
    Value::Object(pairs.iter().filter_map(|(k, v)| Some(((*k).to_owned(), Value::from((*v)?)))).collect::<Map<_, _>>())
}

/// Maps one legacy row (the JSON of `row_to_json`).
pub fn map_row(table: LegacyTable, row: &Value) -> Mapped {
    let mut notes = Vec::new();
    let Some(legacy_id) = id(row, "id") else { return Mapped::Refuse("the row has no id".into()) };
    let Some(tenant_id) = id(row, "tenant_id").map(TenantId) else {
        return Mapped::Refuse(format!("row {legacy_id} has no tenant_id"));
    };
    let raw_status = text(row, "status").unwrap_or_default();
    let (status, outcome) = match map_status(table, &raw_status) {
        None => return Mapped::Skip(format!("`{raw_status}` is a restore wizard state, not an execution")),
        Some(Ok(mapped)) => mapped,
        Some(Err(())) => {
            notes.push(format!("unknown status `{raw_status}`, mapped as completed/failed"));
            (RunStatus::Completed, Outcome::Failed)
        }
    };
    let run_type = table.run_type();
    let parts = match table {
        LegacyTable::InventorySyncRuns => inventory_sync_run(row, &mut notes),
        LegacyTable::EntraGroupSyncRuns => group_sync_run(row, &mut notes),
        LegacyTable::BackupScheduleRuns => backup_schedule_run(row, &mut notes),
        LegacyTable::RestoreRuns => restore_run(legacy_id, row, &mut notes),
    };
    let Parts { mut context, inputs, summary_counts, mut failures, initiator } = match parts {
        Ok(parts) => parts,
        Err(refusal) => return Mapped::Refuse(refusal),
    };

    // The identity follows the API's rules, so a backfilled active run blocks a duplicate start.
    let spec = run_type.spec();
    let parsed = match parse_inputs(spec, &inputs) {
        Ok(parsed) => parsed,
        Err(error) => return Mapped::Refuse(error.to_string()),
    };
    let identity_policy = IdentityPolicy::for_start(spec.identity, &parsed);
    let hash = identity_hash(ScopeKey::Tenant(tenant_id), run_type, &parsed, None);
    for (name, value) in parsed.iter() {
        context.insert((*name).to_owned(), value.to_json());
    }
    context.insert("legacy".into(), json!({ "source": table.name(), "id": legacy_id }));

    let dropped = failures.len().saturating_sub(crate::domain::failures::MAX_STORED_FAILURES);
    failures.truncate(crate::domain::failures::MAX_STORED_FAILURES);
    let completed_at = match status {
        RunStatus::Completed => {
            time(row, "finished_at").or_else(|| time(row, "completed_at")).or_else(|| time(row, "updated_at"))
        }
        _ => None,
    };
    Mapped::Run(
        Box::new(MappedRun {
            tenant_id,
            run_type,
            status,
            outcome,
            identity_policy,
            identity_hash: hash,
            summary_counts,
            failure_summary: json!({ "items": failures, "dropped": dropped }),
            context: Value::Object(context),
            started_at: time(row, "started_at"),
            completed_at,
            created_at: time(row, "created_at"),
            updated_at: time(row, "updated_at"),
            initiator,
            default_initiator: table.default_initiator(),
        }),
        notes,
    )
}

/// What one legacy table's row says beyond the columns every table has.
struct Parts {
    context: Map<String, Value>,
    inputs: Map<String, Value>,
    summary_counts: Value,
    failures: Vec<Value>,
    initiator: Option<LegacyInitiator>,
}

/// A row of `inventory_sync_runs`.
fn inventory_sync_run(row: &Value, notes: &mut Vec<String>) -> Result<Parts, String> {
    let mut inputs = Map::new();
    let mut context = Map::new();
    let mut failures = Vec::new();
    let selection = text(row, "selection_hash").unwrap_or_else(|| {
        notes.push("no selection_hash; identity uses `unknown`".into());
        "unknown".into()
    });
    inputs.insert("selection_hash".into(), Value::from(selection));
    if let Some(payload) = json_field(row, "selection_payload", notes) {
        context.insert("selection_payload".into(), payload);
    }
    let summary_counts = nonzero_counts(&[
        ("total", count(row.get("items_observed_count"))),
        ("succeeded", count(row.get("items_upserted_count"))),
        ("failed", count(row.get("errors_count"))),
    ]);
    match json_field(row, "error_codes", notes) {
        Some(Value::Array(codes)) => failures.extend(codes.iter().map(|c| {
            let code = c.as_str().map(str::to_owned).unwrap_or_else(|| c.to_string());
            failure(&code, "unknown", "")
        })),
        Some(_) => notes.push("`error_codes` is not an array; ignored".into()),
        None => {}
    }
    let initiator = id(row, "user_id").map(LegacyInitiator::User);
    Ok(Parts { context, inputs, summary_counts, failures, initiator })
}

/// A row of `entra_group_sync_runs`.
fn group_sync_run(row: &Value, notes: &mut Vec<String>) -> Result<Parts, String> {
    let mut inputs = Map::new();
    let mut context = Map::new();
    let mut failures = Vec::new();
    let selection = text(row, "selection_key").unwrap_or_else(|| {
        notes.push("no selection_key; identity uses `unknown`".into());
        "unknown".into()
    });
    inputs.insert("selection_key".into(), Value::from(selection));
    if let Some(slot) = text(row, "slot_key") {
        context.insert("slot_key".into(), Value::from(slot));
    }
    context.insert(
        "safety_stop".into(),
        json!({ "triggered": row.get("safety_stop_triggered").and_then(Value::as_bool).unwrap_or(false),
                "reason": text(row, "safety_stop_reason") }),
    );
    let summary_counts = nonzero_counts(&[
        ("total", count(row.get("items_observed_count"))),
        ("succeeded", count(row.get("items_upserted_count"))),
        ("failed", count(row.get("error_count"))),
        ("items", count(row.get("pages_fetched"))),
    ]);
    if let Some(code) = text(row, "error_code") {
        let reason = text(row, "error_category").unwrap_or_else(|| "unknown".into());
        failures.push(failure(&code, &reason, &text(row, "error_summary").unwrap_or_default()));
    }
    let initiator = id(row, "initiator_user_id").map(LegacyInitiator::User);
    Ok(Parts { context, inputs, summary_counts, failures, initiator })
}

/// A row of `backup_schedule_runs`: every one was a scheduled fire.
fn backup_schedule_run(row: &Value, notes: &mut Vec<String>) -> Result<Parts, String> {
    let mut inputs = Map::new();
    let mut context = Map::new();
    let mut failures = Vec::new();
    let schedule = id(row, "backup_schedule_id").ok_or("no backup_schedule_id")?;
    let scheduled_for = text(row, "scheduled_for")
        .and_then(|raw| parse_minute(&raw).or_else(|| time(row, "scheduled_for")))
        .map(format_minute)
        .ok_or("no readable scheduled_for")?;
    inputs.insert("backup_schedule_id".into(), Value::from(schedule));
    inputs.insert("trigger".into(), Value::from("scheduled"));
    inputs.insert("scheduled_for".into(), Value::from(scheduled_for));
    if let Some(set) = id(row, "backup_set_id") {
        context.insert("backup_set_id".into(), Value::from(set));
    }
    let summary = json_field(row, "summary", notes).unwrap_or(Value::Null);
    let summary_counts = nonzero_counts(&[
        ("total", count(summary.get("total_policies"))),
        ("succeeded", count(summary.get("backed_up"))),
        ("failed", count(summary.get("errors"))),
    ]);
    if let Some(code) = text(row, "error_code") {
        failures.push(failure(&code, "unknown", &text(row, "error_message").unwrap_or_default()));
    }
    let initiator = id(row, "user_id").map(LegacyInitiator::User);
    Ok(Parts { context, inputs, summary_counts, failures, initiator })
}

/// A row of `restore_runs` past the wizard: the restore entity stays, its execution is a run.
fn restore_run(legacy_id: i64, row: &Value, notes: &mut Vec<String>) -> Result<Parts, String> {
    let mut inputs = Map::new();
    let mut context = Map::new();
    let mut failures = Vec::new();
    inputs.insert("restore_run_id".into(), Value::from(legacy_id));
    if let Some(set) = id(row, "backup_set_id") {
        context.insert("backup_set_id".into(), Value::from(set));
    }
    if let Some(dry_run) = row.get("is_dry_run").and_then(Value::as_bool) {
        context.insert("is_dry_run".into(), Value::from(dry_run));
    }
    let results = json_field(row, "results", notes);
    let items = results.as_ref().and_then(|r| r.get("items").or(Some(r))).and_then(Value::as_array);
    let summary_counts = match items {
        Some(items) => {
            let ok = items.iter().filter(|i| i.get("ok").and_then(Value::as_bool) == Some(true)).count() as i64;
            json!({ "total": items.len(), "succeeded": ok, "failed": items.len() as i64 - ok })
        }
        None => json!({}),
    };
    if let Some(reason) = text(row, "failure_reason") {
        failures.push(failure("restore.failed", "unknown", &reason));
    }
    let initiator = text(row, "requested_by").map(LegacyInitiator::Named);
    Ok(Parts { context, inputs, summary_counts, failures, initiator })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(table: LegacyTable, row: Value) -> (MappedRun, Vec<String>) {
        match map_row(table, &row) {
            Mapped::Run(run, notes) => (*run, notes),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn inventory_statuses_map_as_the_report_says() {
        for (legacy, status, outcome) in [
            ("pending", RunStatus::Queued, Outcome::Pending),
            ("running", RunStatus::Running, Outcome::Pending),
            ("success", RunStatus::Completed, Outcome::Succeeded),
            ("partial", RunStatus::Completed, Outcome::PartiallySucceeded),
            ("failed", RunStatus::Completed, Outcome::Failed),
            ("skipped", RunStatus::Completed, Outcome::Cancelled),
        ] {
            let (mapped, _) = run(
                LegacyTable::InventorySyncRuns,
                json!({"id": 1, "tenant_id": 2, "status": legacy, "selection_hash": "s", "finished_at": "2026-01-01T00:00:00+00:00"}),
            );
            assert_eq!((mapped.status, mapped.outcome), (status, outcome), "{legacy}");
        }
    }

    #[test]
    fn restore_wizard_states_are_skipped_and_enum_spellings_accepted() {
        for wizard in ["Draft", "scoped", "CHECKED", "Previewed", "pending"] {
            assert!(
                matches!(
                    map_row(LegacyTable::RestoreRuns, &json!({"id": 1, "tenant_id": 2, "status": wizard})),
                    Mapped::Skip(_)
                ),
                "{wizard}"
            );
        }
        let (mapped, _) =
            run(LegacyTable::RestoreRuns, json!({"id": 5, "tenant_id": 2, "status": "CompletedWithErrors"}));
        assert_eq!(mapped.outcome, Outcome::PartiallySucceeded);
        let (mapped, _) =
            run(LegacyTable::RestoreRuns, json!({"id": 5, "tenant_id": 2, "status": "completed_with_errors"}));
        assert_eq!(mapped.outcome, Outcome::PartiallySucceeded);
    }

    #[test]
    fn malformed_data_is_mapped_defensively_with_notes() {
        let (mapped, notes) = run(
            LegacyTable::BackupScheduleRuns,
            json!({"id": 9, "tenant_id": 2, "backup_schedule_id": 4, "scheduled_for": "2026-01-05T01:10:34", "status": "exploded", "summary": "{not json"}),
        );
        assert_eq!((mapped.status, mapped.outcome), (RunStatus::Completed, Outcome::Failed));
        assert_eq!(mapped.context["scheduled_for"], "2026-01-05T01:10:00Z");
        assert_eq!(mapped.context["trigger"], "scheduled");
        assert_eq!(mapped.identity_policy, IdentityPolicy::StrictOnce);
        assert!(
            notes.iter().any(|n| n.contains("unknown status")) && notes.iter().any(|n| n.contains("summary")),
            "{notes:?}"
        );
        assert!(matches!(
            map_row(LegacyTable::InventorySyncRuns, &json!({"id": 3, "status": "success"})),
            Mapped::Refuse(_)
        ));
    }

    #[test]
    fn the_identity_matches_an_api_start_of_the_same_inputs() {
        let (mapped, _) = run(
            LegacyTable::InventorySyncRuns,
            json!({"id": 1, "tenant_id": 7, "status": "running", "selection_hash": "abc"}),
        );
        let inputs =
            parse_inputs(RunType::InventorySync.spec(), json!({"selection_hash": "abc"}).as_object().unwrap()).unwrap();
        assert_eq!(
            mapped.identity_hash,
            identity_hash(ScopeKey::Tenant(TenantId(7)), RunType::InventorySync, &inputs, None)
        );
        assert_eq!(mapped.context["legacy"], json!({"source": "inventory_sync_runs", "id": 1}));
    }

    #[test]
    fn failure_messages_are_sanitized_and_reason_codes_kept_to_the_taxonomy() {
        let (mapped, _) = run(
            LegacyTable::EntraGroupSyncRuns,
            json!({"id": 1, "tenant_id": 2, "status": "failed", "selection_key": "k", "error_code": "graph 403!",
                   "error_category": "provider_throttled", "error_summary": format!("token=abc123 {}", "x".repeat(300))}),
        );
        let failure = &mapped.failure_summary["items"][0];
        assert_eq!(failure["code"], "graph403");
        assert_eq!(failure["reason_code"], "provider_throttled");
        assert!(!failure["message"].as_str().unwrap().contains("abc123"));
        assert!(failure["message"].as_str().unwrap().chars().count() <= 120);
    }
}
