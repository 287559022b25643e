//! The catalog of operation types: the one table that says, for every type, who may
//! start and view it, how its identity is formed, what inputs it needs and how long
//! it is expected to take. Handlers and queries ask this module; they never spell a
//! type, capability or label themselves.

use std::fmt;
use std::time::Duration;

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

named_enum! {
    /// A canonical operation type.
    #[derive(PartialOrd, Ord, Serialize, Deserialize, ToSchema, AsExpression, FromSqlRow)]
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[serde(rename_all = "snake_case")]
    pub enum RunType {
        InventorySync = "inventory_sync",
        DirectoryGroupsSync = "directory_groups_sync",
        DirectoryRoleDefinitionsSync = "directory_role_definitions_sync",
        PolicySync = "policy_sync",
        BackupScheduleRun = "backup_schedule_run",
        BackupScheduleRetention = "backup_schedule_retention",
        BackupSchedulePurge = "backup_schedule_purge",
        RestoreExecute = "restore_execute",
        ProviderConnectionVerify = "provider_connection_verify",
        WorkspaceAuditExport = "workspace_audit_export",
    }
}

/// Whether a type's runs belong to one tenant or to the whole workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Tenant,
    Workspace,
}

/// How a type's run identity behaves, as the catalog states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityRule {
    /// At most one queued or running run per identity.
    DedupeActive,
    /// At most one run ever per identity, whatever its status.
    StrictOnce,
    /// `strict_once` when `trigger` is `scheduled`, `unique_per_click` for `run_now` and `retry`.
    StrictOnceWhenScheduled,
}

/// The shape an input value must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A positive 64-bit integer id.
    Id,
    /// A non-empty string of at most 200 characters.
    Key,
    /// One of `scheduled`, `run_now`, `retry`.
    Trigger,
    /// An RFC 3339 timestamp.
    Timestamp,
}

/// When an input must be present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    Always,
    /// Required with `trigger: scheduled`, refused otherwise.
    WhenScheduled,
}

/// One input a type takes.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct InputSpec {
    pub name: &'static str,
    pub kind: InputKind,
    pub required: Requirement,
}

/// Everything the service knows about one operation type.
#[derive(Debug)]
pub struct TypeSpec {
    pub run_type: RunType,
    pub label: &'static str,
    pub scope: Scope,
    pub start_capability: &'static str,
    pub view_capability: &'static str,
    pub identity: IdentityRule,
    /// Inputs in the fixed order they join the identity hash.
    pub inputs: &'static [InputSpec],
    pub expected: Duration,
}

const fn input(name: &'static str, kind: InputKind) -> InputSpec {
    InputSpec { name, kind, required: Requirement::Always }
}

const fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// The capability a worker's service token carries to move runs.
pub const EXECUTE_CAPABILITY: &str = "operations.execute";

/// The types whose runs make up a backup schedule's history.
pub const BACKUP_SCHEDULE_TYPES: [RunType; 3] =
    [RunType::BackupScheduleRun, RunType::BackupScheduleRetention, RunType::BackupSchedulePurge];

/// The catalog, in the order `GET /v1/operation-types` lists it.
pub static CATALOG: [TypeSpec; 10] = [
    TypeSpec {
        run_type: RunType::InventorySync,
        label: "Inventory sync",
        scope: Scope::Tenant,
        start_capability: "inventory.sync",
        view_capability: "inventory.sync",
        identity: IdentityRule::DedupeActive,
        inputs: &[input("selection_hash", InputKind::Key)],
        expected: minutes(15),
    },
    TypeSpec {
        run_type: RunType::DirectoryGroupsSync,
        label: "Directory groups sync",
        scope: Scope::Tenant,
        start_capability: "directory_groups.sync",
        view_capability: "directory_groups.sync",
        identity: IdentityRule::DedupeActive,
        inputs: &[input("selection_key", InputKind::Key)],
        expected: minutes(15),
    },
    TypeSpec {
        run_type: RunType::DirectoryRoleDefinitionsSync,
        label: "Directory role definitions sync",
        scope: Scope::Tenant,
        start_capability: "directory_roles.sync",
        view_capability: "directory_roles.sync",
        identity: IdentityRule::DedupeActive,
        inputs: &[],
        expected: minutes(5),
    },
    TypeSpec {
        run_type: RunType::PolicySync,
        label: "Policy sync",
        scope: Scope::Tenant,
        start_capability: "policies.sync",
        view_capability: "policies.sync",
        identity: IdentityRule::DedupeActive,
        inputs: &[input("selection_hash", InputKind::Key)],
        expected: minutes(15),
    },
    TypeSpec {
        run_type: RunType::BackupScheduleRun,
        label: "Backup schedule run",
        scope: Scope::Tenant,
        start_capability: "backup_schedules.run",
        view_capability: "backup_schedules.run",
        identity: IdentityRule::StrictOnceWhenScheduled,
        inputs: &[
            input("backup_schedule_id", InputKind::Id),
            input("trigger", InputKind::Trigger),
            InputSpec { name: "scheduled_for", kind: InputKind::Timestamp, required: Requirement::WhenScheduled },
        ],
        expected: minutes(30),
    },
    TypeSpec {
        run_type: RunType::BackupScheduleRetention,
        label: "Backup schedule retention",
        scope: Scope::Tenant,
        start_capability: "backup_schedules.manage",
        view_capability: "backup_schedules.manage",
        identity: IdentityRule::DedupeActive,
        inputs: &[input("backup_schedule_id", InputKind::Id)],
        expected: minutes(10),
    },
    TypeSpec {
        run_type: RunType::BackupSchedulePurge,
        label: "Backup schedule purge",
        scope: Scope::Tenant,
        start_capability: "backup_schedules.manage",
        view_capability: "backup_schedules.manage",
        identity: IdentityRule::DedupeActive,
        inputs: &[input("backup_schedule_id", InputKind::Id)],
        expected: minutes(10),
    },
    TypeSpec {
        run_type: RunType::RestoreExecute,
        label: "Restore",
        scope: Scope::Tenant,
        start_capability: "restore.execute",
        view_capability: "restore.execute",
        identity: IdentityRule::StrictOnce,
        inputs: &[input("restore_run_id", InputKind::Id)],
        expected: minutes(60),
    },
    TypeSpec {
        run_type: RunType::ProviderConnectionVerify,
        label: "Provider connection check",
        scope: Scope::Tenant,
        start_capability: "provider_connections.manage",
        view_capability: "provider_connections.view",
        identity: IdentityRule::DedupeActive,
        inputs: &[input("provider_connection_id", InputKind::Id)],
        expected: minutes(5),
    },
    TypeSpec {
        run_type: RunType::WorkspaceAuditExport,
        label: "Workspace audit export",
        scope: Scope::Workspace,
        start_capability: "audit.export",
        view_capability: "audit.export",
        identity: IdentityRule::DedupeActive,
        inputs: &[],
        expected: minutes(15),
    },
];

named_enum! {
    /// What fired a backup schedule run.
    pub enum Trigger {
        Scheduled = "scheduled",
        RunNow = "run_now",
        Retry = "retry",
    }
}

/// A dotted type name the legacy run tables used.
#[derive(Clone, Copy, Debug)]
pub struct LegacySpelling {
    pub name: &'static str,
    pub canonical: RunType,
    /// For backup-schedule spellings: the trigger the name implied.
    pub trigger: Option<Trigger>,
}

const fn legacy(name: &'static str, canonical: RunType, trigger: Option<Trigger>) -> LegacySpelling {
    LegacySpelling { name, canonical, trigger }
}

/// Every dotted spelling, and what it becomes: the API refuses them naming the
/// canonical type, and `opsrun legacy backfill` rewrites stored ones.
pub const LEGACY_SPELLINGS: [LegacySpelling; 7] = [
    legacy("inventory.sync", RunType::InventorySync, None),
    legacy("directory_groups.sync", RunType::DirectoryGroupsSync, None),
    legacy("directory_role_definitions.sync", RunType::DirectoryRoleDefinitionsSync, None),
    legacy("backup_schedule.scheduled", RunType::BackupScheduleRun, Some(Trigger::Scheduled)),
    legacy("backup_schedule.run_now", RunType::BackupScheduleRun, Some(Trigger::RunNow)),
    legacy("backup_schedule.retry", RunType::BackupScheduleRun, Some(Trigger::Retry)),
    legacy("restore.execute", RunType::RestoreExecute, None),
];

/// Why a type name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeNameError {
    #[error("`{given}` is a legacy spelling; use the canonical type `{canonical}`")]
    Legacy { given: String, canonical: RunType },
    #[error("`{0}` is not an operation type; GET /v1/operation-types lists them")]
    Unknown(String),
}

impl RunType {
    /// A client's type name: a canonical one, or why not (naming the canonical type for a
    /// legacy spelling).
    pub fn resolve(name: &str) -> Result<RunType, TypeNameError> {
        if let Some(run_type) = RunType::parse(name) {
            return Ok(run_type);
        }
        match LEGACY_SPELLINGS.iter().find(|legacy| legacy.name == name) {
            Some(legacy) => Err(TypeNameError::Legacy { given: name.to_owned(), canonical: legacy.canonical }),
            None => Err(TypeNameError::Unknown(name.to_owned())),
        }
    }

    /// This type's catalog entry.
    pub fn spec(self) -> &'static TypeSpec {
        CATALOG
            .iter()
            .find(|spec| spec.run_type == self)
            .expect("every RunType has a catalog entry (checked by a unit test)")
    }

    pub fn is_backup_schedule_type(self) -> bool {
        BACKUP_SCHEDULE_TYPES.contains(&self)
    }
}

impl fmt::Display for RunType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunType {
    type Err = TypeNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunType::resolve(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_exactly_one_catalog_entry() {
        for run_type in RunType::ALL {
            assert_eq!(CATALOG.iter().filter(|s| s.run_type == run_type).count(), 1, "{run_type}");
        }
    }

    #[test]
    fn canonical_names_round_trip_through_parse_and_serde() {
        for run_type in RunType::ALL {
            assert_eq!(RunType::resolve(run_type.as_str()), Ok(run_type));
            let json = serde_json::to_string(&run_type).unwrap();
            assert_eq!(json, format!("\"{}\"", run_type.as_str()));
        }
    }

    #[test]
    fn legacy_spellings_are_refused_with_the_canonical_name() {
        for LegacySpelling { name, canonical, trigger } in LEGACY_SPELLINGS {
            let error = RunType::resolve(name).unwrap_err();
            assert_eq!(error, TypeNameError::Legacy { given: name.into(), canonical });
            assert!(error.to_string().contains(canonical.as_str()));
            // Only backup-schedule spellings imply a trigger, and theirs is in their name.
            assert_eq!(trigger.is_some(), canonical == RunType::BackupScheduleRun);
            assert!(trigger.is_none_or(|t| name.ends_with(t.as_str())), "{name}");
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        assert!(matches!(RunType::resolve("Inventory_Sync"), Err(TypeNameError::Unknown(_))));
        assert!(matches!(RunType::resolve(""), Err(TypeNameError::Unknown(_))));
    }

    #[test]
    fn only_provider_connection_verify_has_a_separate_view_capability() {
        for spec in &CATALOG {
            let separate = spec.start_capability != spec.view_capability;
            assert_eq!(separate, spec.run_type == RunType::ProviderConnectionVerify);
        }
    }
}
