//! Who may see and do what (docs/CONTRACT.md, "Authorization"), decided in one
//! function. The answer is ordered: `Hidden` (404: the caller must not learn the run
//! exists) before `Forbidden` (403: a member lacking the capability) before `Allowed`.

use std::collections::BTreeSet;

use super::catalog::{RunType, EXECUTE_CAPABILITY};
use super::ids::{TenantId, WorkspaceId};

/// The tenants a token covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantScope {
    /// `"*"`: every tenant of the workspace.
    All,
    Only(BTreeSet<TenantId>),
}

impl TenantScope {
    pub fn contains(&self, tenant_id: TenantId) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Only(ids) => ids.contains(&tenant_id),
        }
    }
}

/// The verified caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: whose idempotency keys are whose.
    pub subject: String,
    /// The numeric `sub`, when it is one.
    pub user_id: Option<i64>,
    /// Token `name`, else `sub`.
    pub initiator_name: String,
    pub workspace_id: WorkspaceId,
    pub tenants: TenantScope,
    pub capabilities: BTreeSet<String>,
    /// Unix seconds after which the token is no longer accepted (its `exp` plus the
    /// accepted clock skew): a live stream ends then.
    pub valid_until: i64,
}

impl Principal {
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.contains(capability)
    }

    /// The types whose runs this caller may view, among `requested` (empty: all types).
    pub fn viewable_types(&self, requested: &[RunType]) -> Vec<RunType> {
        RunType::ALL
            .into_iter()
            .filter(|t| self.has(t.spec().view_capability) && (requested.is_empty() || requested.contains(t)))
            .collect()
    }

    /// Whether a run in this workspace belonging to `tenant_id` is visible at all.
    pub fn covers(&self, tenant_id: Option<TenantId>) -> bool {
        tenant_id.is_none_or(|tenant_id| self.tenants.contains(tenant_id))
    }
}

/// What the caller wants to do with a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    View,
    Start,
    /// A worker move: start, progress, complete.
    Execute,
    Cancel,
}

/// The caller may see the run or tenant but lacks the capability the action needs (403).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("your token lacks the capability `{needs}`")]
pub struct MissingCapability {
    pub needs: &'static str,
}

/// The decision, ordered from most to least restrictive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Hidden,
    Forbidden { needs: &'static str },
    Allowed,
}

/// The whole authorization rule for one run (or, for `Start`, the run about to be created).
pub fn decide(
    principal: &Principal,
    workspace_id: WorkspaceId,
    tenant_id: Option<TenantId>,
    run_type: RunType,
    action: Action,
) -> Access {
    if principal.workspace_id != workspace_id || !principal.covers(tenant_id) {
        return Access::Hidden;
    }
    let spec = run_type.spec();
    let accepted: &[&'static str] = match action {
        Action::View => &[spec.view_capability],
        Action::Start => &[spec.start_capability],
        Action::Execute => &[EXECUTE_CAPABILITY],
        Action::Cancel => &[EXECUTE_CAPABILITY, spec.start_capability],
    };
    if accepted.iter().any(|capability| principal.has(capability)) {
        Access::Allowed
    } else {
        Access::Forbidden { needs: accepted[0] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn principal(tenants: TenantScope, caps: &[&str]) -> Principal {
        Principal {
            subject: "7".into(),
            user_id: Some(7),
            initiator_name: "Ada".into(),
            workspace_id: WorkspaceId(1),
            tenants,
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            valid_until: i64::MAX,
        }
    }

    #[test]
    fn view_only_capability_can_view_but_not_start_a_connection_check() {
        let viewer = principal(TenantScope::All, &["provider_connections.view"]);
        let t = RunType::ProviderConnectionVerify;
        assert_eq!(decide(&viewer, WorkspaceId(1), Some(TenantId(5)), t, Action::View), Access::Allowed);
        assert_eq!(
            decide(&viewer, WorkspaceId(1), Some(TenantId(5)), t, Action::Start),
            Access::Forbidden { needs: "provider_connections.manage" }
        );
    }

    #[test]
    fn cancel_accepts_the_start_capability_or_execute() {
        let starter = principal(TenantScope::All, &["inventory.sync"]);
        let worker = principal(TenantScope::All, &[EXECUTE_CAPABILITY]);
        for p in [&starter, &worker] {
            assert_eq!(
                decide(p, WorkspaceId(1), Some(TenantId(1)), RunType::InventorySync, Action::Cancel),
                Access::Allowed
            );
        }
        assert!(matches!(
            decide(&starter, WorkspaceId(1), Some(TenantId(1)), RunType::InventorySync, Action::Execute),
            Access::Forbidden { .. }
        ));
    }

    proptest! {
        /// Whatever the capabilities, a run outside the caller's workspace or tenants is hidden,
        /// and inside them it is never hidden.
        #[test]
        fn membership_alone_decides_hidden(
            run_ws in 1i64..4, run_tenant in proptest::option::of(1i64..6),
            tenants in proptest::collection::btree_set(1i64..6, 0..4), star in any::<bool>(),
            type_index in 0usize..10, action_index in 0usize..4, cap_mask in any::<u32>(),
        ) {
            let caps: Vec<&str> = crate::domain::catalog::CATALOG.iter()
                .flat_map(|s| [s.start_capability, s.view_capability])
                .chain([EXECUTE_CAPABILITY])
                .enumerate().filter(|(i, _)| cap_mask & (1 << i) != 0).map(|(_, c)| c).collect();
            let scope = if star { TenantScope::All } else { TenantScope::Only(tenants.iter().copied().map(TenantId).collect()) };
            let p = principal(scope, &caps);
            let action = [Action::View, Action::Start, Action::Execute, Action::Cancel][action_index];
            let access = decide(&p, WorkspaceId(run_ws), run_tenant.map(TenantId), RunType::ALL[type_index], action);
            let member = run_ws == 1 && run_tenant.is_none_or(|t| star || tenants.contains(&t));
            prop_assert_eq!(access == Access::Hidden, !member);
        }
    }
}
