//! Run identity (docs/CONTRACT.md, "Run identity"): which policy applies to a start,
//! and the hash that the database's unique indexes compare.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::catalog::{IdentityRule, RunType, Scope};
use super::ids::{TenantId, WorkspaceId};
use super::inputs::{RunInputs, Trigger};

named_enum! {
    /// The identity policy one run was created under; stored with the run so the
    /// strict-once unique index can find its members.
    #[derive(Serialize, ToSchema, AsExpression, FromSqlRow)]
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[serde(rename_all = "snake_case")]
    pub enum IdentityPolicy {
        DedupeActive = "dedupe_active",
        UniquePerClick = "unique_per_click",
        StrictOnce = "strict_once",
    }
}

impl IdentityPolicy {
    /// The policy a start of `rule` with these inputs falls under.
    pub fn for_start(rule: IdentityRule, inputs: &RunInputs) -> IdentityPolicy {
        IdentityPolicy::for_trigger(rule, inputs.trigger())
    }

    /// The policy a start of `rule` fired by `trigger` (if its type has one) falls under.
    pub fn for_trigger(rule: IdentityRule, trigger: Option<Trigger>) -> IdentityPolicy {
        match (rule, trigger) {
            (IdentityRule::DedupeActive, _) => IdentityPolicy::DedupeActive,
            (IdentityRule::StrictOnce, _) => IdentityPolicy::StrictOnce,
            (IdentityRule::StrictOnceWhenScheduled, Some(Trigger::Scheduled)) => IdentityPolicy::StrictOnce,
            (IdentityRule::StrictOnceWhenScheduled, _) => IdentityPolicy::UniquePerClick,
        }
    }
}

/// Whose identity space a run lives in: one tenant, or the whole workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKey {
    Tenant(TenantId),
    Workspace(WorkspaceId),
}

impl ScopeKey {
    pub fn new(scope: Scope, workspace_id: WorkspaceId, tenant_id: Option<TenantId>) -> ScopeKey {
        match (scope, tenant_id) {
            (Scope::Tenant, Some(tenant_id)) => ScopeKey::Tenant(tenant_id),
            _ => ScopeKey::Workspace(workspace_id),
        }
    }

    fn text(self) -> String {
        match self {
            ScopeKey::Tenant(id) => format!("t:{id}"),
            ScopeKey::Workspace(id) => format!("w:{id}"),
        }
    }
}

/// `sha256_hex(scope_key | type | name=value | ... [| nonce=...])`.
///
/// `nonce` is the server's per-click nonce for `unique_per_click` starts.
pub fn identity_hash(scope: ScopeKey, run_type: RunType, inputs: &RunInputs, nonce: Option<&str>) -> String {
    let mut material = format!("{}|{}", scope.text(), run_type.as_str());
    for (name, value) in inputs.iter() {
        material.push('|');
        material.push_str(name);
        material.push('=');
        material.push_str(&value.identity_text());
    }
    if let Some(nonce) = nonce {
        material.push_str("|nonce=");
        material.push_str(nonce);
    }
    hex::encode(Sha256::digest(material.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::inputs::parse_inputs;
    use serde_json::json;

    fn inputs(run_type: RunType, raw: serde_json::Value) -> RunInputs {
        parse_inputs(run_type.spec(), raw.as_object().unwrap()).unwrap()
    }

    #[test]
    fn policy_names_are_their_serde_names() {
        for policy in IdentityPolicy::ALL {
            assert_eq!(serde_json::to_value(policy).unwrap(), policy.as_str());
            assert_eq!(IdentityPolicy::parse(policy.as_str()), Some(policy));
        }
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        let hash = identity_hash(
            ScopeKey::Workspace(WorkspaceId(1)),
            RunType::WorkspaceAuditExport,
            &inputs(RunType::WorkspaceAuditExport, json!({})),
            None,
        );
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // sha256("w:1|workspace_audit_export"), computed independently.
        assert_eq!(hash, hex::encode(Sha256::digest(b"w:1|workspace_audit_export")));
    }

    #[test]
    fn scope_type_inputs_and_nonce_each_change_the_hash() {
        let a = inputs(RunType::InventorySync, json!({"selection_hash": "abc"}));
        let b = inputs(RunType::InventorySync, json!({"selection_hash": "abd"}));
        let base = identity_hash(ScopeKey::Tenant(TenantId(1)), RunType::InventorySync, &a, None);
        assert_ne!(base, identity_hash(ScopeKey::Tenant(TenantId(2)), RunType::InventorySync, &a, None));
        assert_ne!(base, identity_hash(ScopeKey::Workspace(WorkspaceId(1)), RunType::InventorySync, &a, None));
        assert_ne!(base, identity_hash(ScopeKey::Tenant(TenantId(1)), RunType::PolicySync, &a, None));
        assert_ne!(base, identity_hash(ScopeKey::Tenant(TenantId(1)), RunType::InventorySync, &b, None));
        assert_ne!(base, identity_hash(ScopeKey::Tenant(TenantId(1)), RunType::InventorySync, &a, Some("n")));
        assert_eq!(base, identity_hash(ScopeKey::Tenant(TenantId(1)), RunType::InventorySync, &a, None));
    }

    #[test]
    fn backup_schedule_runs_are_strict_once_only_when_scheduled() {
        let rule = RunType::BackupScheduleRun.spec().identity;
        let scheduled = inputs(
            RunType::BackupScheduleRun,
            json!({"backup_schedule_id": 1, "trigger": "scheduled", "scheduled_for": "2026-01-01T00:00:00Z"}),
        );
        let run_now = inputs(RunType::BackupScheduleRun, json!({"backup_schedule_id": 1, "trigger": "run_now"}));
        assert_eq!(IdentityPolicy::for_start(rule, &scheduled), IdentityPolicy::StrictOnce);
        assert_eq!(IdentityPolicy::for_start(rule, &run_now), IdentityPolicy::UniquePerClick);
    }
}
