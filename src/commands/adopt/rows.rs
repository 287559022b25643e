//! What adopt makes of one of the platform's rows: which of opsrun's rules it breaks,
//! the fix a rule allows, or why a person has to decide. Pure, so `--check` and the
//! conversion cannot disagree.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub use super::findings::Finding;
use super::shapes;
use crate::domain::catalog::{IdentityRule, RunType, Scope, Trigger};
use crate::domain::identity::{identity_hash, IdentityPolicy, ScopeKey};
use crate::domain::ids::{TenantId, WorkspaceId};
use crate::domain::inputs::parse_inputs;
use crate::domain::status::{Outcome, RunStatus};

/// Where adopt records what it changed in a row, inside the row's `context`.
pub const ADOPTED_KEY: &str = "adopted";
const KEPT_APART_KEY: &str = "identity_kept_apart_from";

/// One row of the platform's `operation_runs`, as read (every JSON column as text).
#[derive(Clone, Debug)]
pub struct PlatformRow {
    pub id: i64,
    pub workspace_id: i64,
    pub tenant_id: Option<i64>,
    pub run_type: String,
    pub status: String,
    pub outcome: String,
    pub run_identity_hash: String,
    pub has_completed_at: bool,
    pub summary_counts: Option<String>,
    pub failure_summary: Option<String>,
    pub context: Option<String>,
    /// `None` while the table has no `identity_policy` column yet.
    pub identity_policy: Option<String>,
}

/// The changes one row needs; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowFix {
    pub run_type: Option<RunType>,
    pub context: Option<Value>,
    pub summary_counts: Option<Value>,
    pub failure_summary: Option<Value>,
    /// Set completed_at from updated_at.
    pub completed_at_from_updated_at: bool,
    pub run_identity_hash: Option<String>,
    pub identity_policy: Option<IdentityPolicy>,
}

impl RowFix {
    pub fn is_empty(&self) -> bool {
        *self == RowFix::default()
    }
}

/// An identity that one of the unique indexes will compare.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKey {
    /// `(workspace, tenant, hash)` of a queued or running run.
    Active { workspace_id: i64, tenant_id: Option<i64>, hash: String },
    /// `(workspace, hash)` of a strict-once run, whatever its status.
    StrictOnce { workspace_id: i64, hash: String },
}

/// What adopt makes of one row.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Every rule the row breaks or change it gets, with the reason for a refusal.
    pub findings: Vec<(Finding, Option<String>)>,
    pub fix: RowFix,
    /// The identities it will hold once adopted.
    pub identities: Vec<IdentityKey>,
}

impl Verdict {
    fn refuse(mut self, finding: Finding, reason: impl Into<String>) -> Verdict {
        self.findings.push((finding, Some(reason.into())));
        self.fix = RowFix::default();
        self.identities.clear();
        self
    }

    /// Why a rule refuses the row, if one does.
    pub fn refusal(&self) -> Option<(Finding, &str)> {
        self.findings.iter().find_map(|(finding, reason)| Some((*finding, reason.as_deref()?)))
    }
}

fn is_identity_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An identity no other run has: the row's own, for rows kept apart.
pub fn own_identity(hash: &str, id: i64) -> String {
    hex::encode(Sha256::digest(format!("{hash}|adopted:operation_runs:{id}").as_bytes()))
}

/// A JSON column's value as stored (`None`: SQL NULL), or why it cannot be read.
fn json_value(text: Option<&str>) -> Result<Value, String> {
    match text {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(text).map_err(|e| format!("unreadable JSON ({e})")),
    }
}

fn is_empty_json(value: &Value) -> bool {
    value.is_null() || value.as_array().is_some_and(Vec::is_empty)
}

/// A refusal: the rule the row breaks, and why.
type Refusal = (Finding, String);

/// One of opsrun's rules, applied to a row being judged.
type Rule = fn(&mut Judging<'_>) -> Result<(), Refusal>;

/// Judges one row under opsrun's rules, one after the other; the first that refuses the
/// row ends the judgement, keeping the findings before it.
pub fn judge(row: &PlatformRow) -> Verdict {
    const RULES: [Rule; 6] = [type_name, status_and_outcome, json_columns, scope, set_aside_and_type_notes, identity];
    let mut judging = Judging::new(row);
    for rule in RULES {
        if let Err((finding, reason)) = rule(&mut judging) {
            return judging.verdict.refuse(finding, reason);
        }
    }
    judging.finish()
}

/// What the rules have found out about a row so far.
struct Judging<'a> {
    row: &'a PlatformRow,
    verdict: Verdict,
    run_type: RunType,
    implied_trigger: Option<Trigger>,
    completed: bool,
    tenant_id: Option<TenantId>,
    context: Map<String, Value>,
    context_changed: bool,
    /// Counters set aside, for `context.adopted.summary_counts`.
    aside: Map<String, Value>,
    /// What goes into `context.adopted`.
    notes: Map<String, Value>,
}

impl<'a> Judging<'a> {
    fn new(row: &'a PlatformRow) -> Judging<'a> {
        Judging {
            row,
            verdict: Verdict::default(),
            run_type: RunType::InventorySync,
            implied_trigger: None,
            completed: false,
            tenant_id: None,
            context: Map::new(),
            context_changed: false,
            aside: Map::new(),
            notes: Map::new(),
        }
    }

    fn found(&mut self, finding: Finding) {
        self.verdict.findings.push((finding, None));
    }

    /// The notes go into `context.adopted`; the verdict is complete.
    fn finish(mut self) -> Verdict {
        if !self.notes.is_empty() {
            let adopted = self.context.entry(ADOPTED_KEY).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(adopted) = adopted {
                adopted.extend(std::mem::take(&mut self.notes));
            }
            self.context_changed = true;
        }
        if self.context_changed {
            self.verdict.fix.context = Some(Value::Object(self.context));
        }
        self.verdict
    }
}

/// A canonical type, a legacy spelling, or a dotted spelling of a canonical name.
fn type_name(judging: &mut Judging<'_>) -> Result<(), Refusal> {
    let row = judging.row;
    let (run_type, implied_trigger) = shapes::canonical_type(&row.run_type)
        .ok_or_else(|| (Finding::UnknownType, format!("type `{}`", row.run_type)))?;
    if run_type.as_str() != row.run_type {
        judging.found(Finding::DottedType);
        judging.verdict.fix.run_type = Some(run_type);
    }
    (judging.run_type, judging.implied_trigger) = (run_type, implied_trigger);
    Ok(())
}

/// A known status and outcome that go together, and `completed_at` with completion.
fn status_and_outcome(judging: &mut Judging<'_>) -> Result<(), Refusal> {
    let row = judging.row;
    let (Some(status), Some(outcome)) = (RunStatus::parse(&row.status), Outcome::parse(&row.outcome)) else {
        return Err((Finding::UnknownStatusOrOutcome, format!("status `{}`, outcome `{}`", row.status, row.outcome)));
    };
    let completed = status == RunStatus::Completed;
    if completed == (outcome == Outcome::Pending) {
        return Err((Finding::StatusOutcomeMismatch, format!("{} with outcome {}", status.as_str(), outcome.as_str())));
    }
    match (completed, row.has_completed_at) {
        (true, false) => {
            judging.found(Finding::CompletedWithoutCompletedAt);
            judging.verdict.fix.completed_at_from_updated_at = true;
        }
        (false, true) => {
            return Err((Finding::ActiveWithCompletedAt, format!("{} with completed_at", status.as_str())))
        }
        _ => {}
    }
    judging.completed = completed;
    Ok(())
}

/// The JSON columns in opsrun's shapes: the platform's lists, empty lists and nulls,
/// string counters and keys of its own are converted, anything else refused.
fn json_columns(judging: &mut Judging<'_>) -> Result<(), Refusal> {
    let row = judging.row;
    let read = |column: &str, text: Option<&str>| {
        json_value(text).map_err(|what| (Finding::JsonNotObject, format!("{column} is {what}")))
    };
    let counts = read("summary_counts", row.summary_counts.as_deref())?;
    let failures = read("failure_summary", row.failure_summary.as_deref())?;
    let given_context = read("context", row.context.as_deref())?;
    if [&counts, &failures, &given_context].into_iter().any(is_empty_json) {
        judging.found(Finding::JsonNull);
    }
    let refused = |column: &'static str| move |what: String| (Finding::JsonNotObject, format!("{column} is {what}"));
    let (kept_counts, aside) = shapes::counts(counts.clone()).map_err(refused("summary_counts"))?;
    let stored_failures = shapes::failures(failures.clone()).map_err(refused("failure_summary"))?;
    judging.context = shapes::object(given_context.clone()).map_err(refused("context"))?;
    judging.context_changed = !given_context.is_object();
    judging.aside = aside;
    let kept_counts = Value::Object(kept_counts);
    if kept_counts != counts {
        if !is_empty_json(&counts) {
            judging.found(Finding::PlatformCounts);
        }
        judging.verdict.fix.summary_counts = Some(kept_counts);
    }
    if stored_failures != failures {
        if !is_empty_json(&failures) {
            judging.found(Finding::PlatformFailures);
        }
        judging.verdict.fix.failure_summary = Some(stored_failures);
    }
    Ok(())
}

/// A tenant type has a tenant, a workspace type none.
fn scope(judging: &mut Judging<'_>) -> Result<(), Refusal> {
    let run_type = judging.run_type;
    judging.tenant_id = match (run_type.spec().scope, judging.row.tenant_id) {
        (Scope::Tenant, Some(tenant)) => Some(TenantId(tenant)),
        (Scope::Workspace, None) => None,
        (Scope::Tenant, None) => return Err((Finding::ScopeMismatch, format!("{run_type} without tenant_id"))),
        (Scope::Workspace, Some(_)) => return Err((Finding::ScopeMismatch, format!("{run_type} with tenant_id"))),
    };
    Ok(())
}

/// Counters set aside and the platform's type name are noted in `context.adopted`; a
/// backup-schedule spelling's trigger goes to `context.trigger`.
fn set_aside_and_type_notes(judging: &mut Judging<'_>) -> Result<(), Refusal> {
    if !judging.aside.is_empty() {
        let mut set_aside = judging
            .context
            .get(ADOPTED_KEY)
            .and_then(|adopted| adopted.get("summary_counts"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        set_aside.extend(std::mem::take(&mut judging.aside));
        judging.notes.insert("summary_counts".into(), Value::Object(set_aside));
    }
    if judging.verdict.fix.run_type.is_some() {
        judging.notes.insert("platform_type".into(), Value::String(judging.row.run_type.clone()));
        if let Some(trigger) = judging.implied_trigger {
            judging.context.insert("trigger".into(), Value::String(trigger.as_str().into()));
        }
        judging.context_changed = true;
    }
    Ok(())
}

/// The identity under opsrun's rules, from the inputs the context carries: the hash a
/// start through the API computes, where a unique index compares it.
fn identity(judging: &mut Judging<'_>) -> Result<(), Refusal> {
    let row = judging.row;
    let (run_type, spec) = (judging.run_type, judging.run_type.spec());
    let active = !judging.completed;
    let given: Map<String, Value> = judging
        .context
        .iter()
        .filter(|(key, _)| spec.inputs.iter().any(|input| input.name == *key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let well_formed = is_identity_hash(&row.run_identity_hash);
    let (policy, hash) = match parse_inputs(spec, &given) {
        Ok(inputs) => {
            let policy = IdentityPolicy::for_start(spec.identity, &inputs);
            let nonce = (policy == IdentityPolicy::UniquePerClick).then(|| format!("adopted:{}", row.id));
            let scope = ScopeKey::new(spec.scope, WorkspaceId(row.workspace_id), judging.tenant_id);
            let computed = identity_hash(scope, run_type, &inputs, nonce.as_deref());
            // Only the rows a unique index compares must carry opsrun's hash; a finished
            // dedupe or per-click run keeps the platform's, when it is well formed.
            let hash = if active || policy == IdentityPolicy::StrictOnce || !well_formed {
                computed
            } else {
                row.run_identity_hash.clone()
            };
            (policy, hash)
        }
        Err(error) if active || spec.identity != IdentityRule::DedupeActive => {
            return Err((Finding::IdentityNotComputable, error.to_string()));
        }
        Err(_) => {
            let hash =
                if well_formed { row.run_identity_hash.clone() } else { own_identity(&row.run_identity_hash, row.id) };
            (IdentityPolicy::DedupeActive, hash)
        }
    };
    // A row an earlier adopt kept apart stays apart.
    let adopted = judging.context.get(ADOPTED_KEY);
    let kept_apart = adopted.is_some_and(|adopted| adopted.get(KEPT_APART_KEY).is_some());
    let noted_hash = adopted.is_some_and(|adopted| adopted.get("platform_run_identity_hash").is_some());
    let (policy, hash) = match (kept_apart, well_formed) {
        (true, true) => (IdentityPolicy::UniquePerClick, row.run_identity_hash.clone()),
        (true, false) => (IdentityPolicy::UniquePerClick, own_identity(&hash, row.id)),
        (false, _) => (policy, hash),
    };
    if hash != row.run_identity_hash {
        judging.found(if well_formed { Finding::HashDiffers } else { Finding::MalformedHash });
        if !noted_hash {
            judging.notes.insert("platform_run_identity_hash".into(), Value::String(row.run_identity_hash.clone()));
        }
        judging.verdict.fix.run_identity_hash = Some(hash.clone());
    }
    if row.identity_policy.as_deref() != Some(policy.as_str()) {
        judging.verdict.fix.identity_policy = Some(policy);
    }
    if active {
        judging.verdict.identities.push(IdentityKey::Active {
            workspace_id: row.workspace_id,
            tenant_id: row.tenant_id,
            hash: hash.clone(),
        });
    }
    if policy == IdentityPolicy::StrictOnce && !kept_apart {
        judging.verdict.identities.push(IdentityKey::StrictOnce { workspace_id: row.workspace_id, hash });
    }
    Ok(())
}

/// Gives a row kept apart from `holder` an identity of its own, noted in its context.
pub fn keep_apart(row: &PlatformRow, verdict: &mut Verdict, holder: i64) {
    let computed = verdict.fix.run_identity_hash.clone().unwrap_or_else(|| row.run_identity_hash.clone());
    let original: Map<String, Value> =
        row.context.as_deref().and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
    let mut context = match verdict.fix.context.take() {
        Some(Value::Object(map)) => map,
        _ => original.clone(),
    };
    let adopted = context.entry(ADOPTED_KEY).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(adopted) = adopted {
        adopted.entry("platform_run_identity_hash").or_insert_with(|| Value::String(row.run_identity_hash.clone()));
        adopted.insert(KEPT_APART_KEY.into(), json!(holder));
    }
    verdict.fix.context = (context != original).then_some(Value::Object(context));
    let own = own_identity(&computed, row.id);
    verdict.fix.run_identity_hash = (own != row.run_identity_hash).then_some(own.clone());
    verdict.fix.identity_policy = (row.identity_policy.as_deref() != Some(IdentityPolicy::UniquePerClick.as_str()))
        .then_some(IdentityPolicy::UniquePerClick);
    // Its own identity is unique: it only still counts for the active index.
    let active = RunStatus::parse(&row.status).is_some_and(|status| status != RunStatus::Completed);
    verdict.identities = if active {
        vec![IdentityKey::Active { workspace_id: row.workspace_id, tenant_id: row.tenant_id, hash: own }]
    } else {
        Vec::new()
    };
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn row(run_type: &str, status: &str, outcome: &str, context: &str) -> PlatformRow {
        PlatformRow {
            id: 42,
            workspace_id: 1,
            tenant_id: Some(7),
            run_type: run_type.into(),
            status: status.into(),
            outcome: outcome.into(),
            run_identity_hash: "f".repeat(64),
            has_completed_at: status == "completed",
            summary_counts: Some("{}".into()),
            failure_summary: Some(r#"{"items": [], "dropped": 0}"#.into()),
            context: Some(context.into()),
            identity_policy: None,
        }
    }

    fn names(verdict: &Verdict) -> Vec<&'static str> {
        verdict.findings.iter().map(|(f, _)| f.name()).collect()
    }

    /// The row as it reads once its fix is written.
    fn fixed(mut row: PlatformRow, fix: &RowFix) -> PlatformRow {
        if let Some(run_type) = fix.run_type {
            row.run_type = run_type.as_str().into();
        }
        if let Some(context) = &fix.context {
            row.context = Some(context.to_string());
        }
        if let Some(counts) = &fix.summary_counts {
            row.summary_counts = Some(counts.to_string());
        }
        if let Some(failures) = &fix.failure_summary {
            row.failure_summary = Some(failures.to_string());
        }
        row.has_completed_at |= fix.completed_at_from_updated_at;
        if let Some(hash) = &fix.run_identity_hash {
            row.run_identity_hash = hash.clone();
        }
        row.identity_policy = Some(fix.identity_policy.map_or_else(
            || row.identity_policy.clone().unwrap_or_else(|| "dedupe_active".into()),
            |p| p.as_str().into(),
        ));
        row
    }

    #[test]
    fn a_dotted_backup_spelling_keeps_its_trigger_and_gets_opsruns_identity() {
        let platform = row(
            "backup_schedule.scheduled",
            "running",
            "pending",
            r#"{"backup_schedule_id": 7, "scheduled_for": "2026-03-01T02:00:00Z"}"#,
        );
        let verdict = judge(&platform);
        assert_eq!(names(&verdict), ["dotted_type", "identity_hash_differs"]);
        assert_eq!(verdict.fix.run_type, Some(RunType::BackupScheduleRun));
        assert_eq!(verdict.fix.identity_policy, Some(IdentityPolicy::StrictOnce));
        let context = verdict.fix.context.clone().unwrap();
        assert_eq!(context["trigger"], "scheduled");
        assert_eq!(context[ADOPTED_KEY]["platform_type"], "backup_schedule.scheduled");
        assert_eq!(context[ADOPTED_KEY]["platform_run_identity_hash"], "f".repeat(64));
        // The hash a start through the API computes for the same inputs.
        let material =
            "t:7|backup_schedule_run|backup_schedule_id=7|trigger=scheduled|scheduled_for=2026-03-01T02:00:00Z";
        assert_eq!(verdict.fix.run_identity_hash.as_deref(), Some(hex::encode(Sha256::digest(material)).as_str()));
    }

    #[test]
    fn a_finished_dedupe_run_keeps_the_platforms_hash() {
        let verdict = judge(&row("inventory_sync", "completed", "succeeded", r#"{"selection_hash": "a"}"#));
        assert!(verdict.findings.is_empty());
        assert_eq!(verdict.fix, RowFix { identity_policy: Some(IdentityPolicy::DedupeActive), ..RowFix::default() });
    }

    #[test]
    fn rows_a_rule_cannot_fix_are_refused_with_a_reason() {
        let cases = [
            (row("inventory.sync_v2", "completed", "succeeded", "{}"), "unknown_type"),
            (row("inventory_sync", "Completed", "succeeded", "{}"), "unknown_status_or_outcome"),
            (row("inventory_sync", "completed", "pending", "{}"), "status_outcome_mismatch"),
            (
                PlatformRow { has_completed_at: true, ..row("inventory_sync", "running", "pending", "{}") },
                "active_with_completed_at",
            ),
            (row("inventory_sync", "completed", "succeeded", "[1]"), "json_not_object"),
            (
                PlatformRow { tenant_id: None, ..row("inventory_sync", "completed", "succeeded", "{}") },
                "scope_mismatch",
            ),
            (row("restore_execute", "running", "pending", "{}"), "identity_not_computable"),
            (row("restore_execute", "completed", "succeeded", "{}"), "identity_not_computable"),
        ];
        for (platform, expected) in cases {
            let verdict = judge(&platform);
            assert!(verdict.refusal().is_some(), "{expected}");
            assert_eq!(names(&verdict).last(), Some(&expected));
            assert!(verdict.fix.is_empty() && verdict.identities.is_empty(), "{expected}: a refused row is left alone");
        }
    }

    #[test]
    fn a_row_kept_apart_stays_apart_on_the_next_adopt() {
        let platform = row("inventory_sync", "running", "pending", r#"{"selection_hash": "dup"}"#);
        let mut verdict = judge(&platform);
        keep_apart(&platform, &mut verdict, 99);
        let again = fixed(platform, &verdict.fix);
        let second = judge(&again);
        assert!(second.findings.is_empty(), "{:?}", second.findings);
        assert!(second.fix.is_empty(), "{:?}", second.fix);
        assert_eq!(second.identities.len(), 1);
        assert_ne!(
            second.identities,
            judge(&row("inventory_sync", "running", "pending", r#"{"selection_hash": "dup"}"#)).identities
        );
    }

    fn platform_rows() -> impl Strategy<Value = PlatformRow> {
        let types = prop::sample::select(vec![
            "inventory_sync",
            "inventory.sync",
            "directory_groups.sync",
            "backup_schedule.scheduled",
            "backup_schedule.run_now",
            "backup_schedule_run",
            "restore_execute",
            "workspace_audit_export",
            "policy_sync",
            "restore.execute",
            "no_such_type",
        ]);
        let states = prop::sample::select(vec![
            ("queued", "pending"),
            ("running", "pending"),
            ("completed", "succeeded"),
            ("completed", "failed"),
            ("completed", "pending"),
            ("running", "succeeded"),
        ]);
        let contexts = prop::sample::select(vec![
            "{}",
            "null",
            "[]",
            r#"{"selection_hash": "a"}"#,
            r#"{"selection_key": "k", "restore_run_id": 3}"#,
            r#"{"backup_schedule_id": 7, "scheduled_for": "2026-03-01T02:00:00Z"}"#,
            r#"{"backup_schedule_id": 7, "trigger": "run_now", "note": "x"}"#,
        ]);
        let hashes = prop::sample::select(vec!["f".repeat(64), "F".repeat(64), "abc".to_owned()]);
        let json = prop::sample::select(vec![None, Some("null"), Some("{}"), Some(r#"{"processed": 3}"#)]);
        (types, states, contexts, hashes, any::<bool>(), prop::option::of(1..5i64), json.clone(), json).prop_map(
            |(run_type, (status, outcome), context, hash, has_completed_at, tenant, counts, failures)| PlatformRow {
                id: 42,
                workspace_id: 1,
                tenant_id: tenant,
                run_type: run_type.into(),
                status: status.into(),
                outcome: outcome.into(),
                run_identity_hash: hash,
                has_completed_at,
                summary_counts: counts.map(Into::into),
                failure_summary: failures.map(Into::into),
                context: Some(context.into()),
                identity_policy: None,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever a row holds, either a rule refuses it and it is left alone, or
        /// judging it again once its fix is written finds nothing: adopt converges in one
        /// pass, and a second adopt changes nothing.
        #[test]
        fn a_row_is_refused_untouched_or_fixed_for_good(platform in platform_rows()) {
            let verdict = judge(&platform);
            if verdict.refusal().is_some() {
                prop_assert!(verdict.fix.is_empty());
            } else {
                let again = judge(&fixed(platform.clone(), &verdict.fix));
                prop_assert!(again.findings.is_empty(), "{:?} → {:?}", platform, again.findings);
                prop_assert!(again.fix.is_empty(), "{:?} → {:?}", platform, again.fix);
                prop_assert_eq!(again.identities, verdict.identities);
            }
        }
    }
}
