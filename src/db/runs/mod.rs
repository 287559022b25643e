//! Queries and statements on `operation_runs`. Uniqueness of identities is left to the
//! database's unique indexes: creation is one `INSERT … ON CONFLICT DO NOTHING`, never
//! a check followed by an insert.

use diesel::dsl::sql;
use diesel::sql_types::Bool;

use std::sync::LazyLock;

use crate::domain::identity::IdentityPolicy;
use crate::domain::status::RunStatus;

/// A predicate on a text column spelled with literals, so the planner can match the
/// partial unique indexes (whose predicates are literals too) even under a generic
/// prepared plan. The values come from the domain's enums, never from a client.
pub(super) fn column_in(column: &str, values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|value| format!("'{value}'")).collect();
    format!("{column} IN ({})", quoted.join(", "))
}

/// `status IN ('queued', 'running')`: the statuses during which a run holds its identity.
pub(super) fn active() -> diesel::expression::SqlLiteral<Bool> {
    static ACTIVE: LazyLock<String> = LazyLock::new(|| column_in("status", &RunStatus::ACTIVE.map(RunStatus::as_str)));
    sql::<Bool>(&ACTIVE)
}

/// `identity_policy IN ('strict_once')`: the runs whose identity is held forever.
pub(super) fn strict_once() -> diesel::expression::SqlLiteral<Bool> {
    static STRICT_ONCE: LazyLock<String> =
        LazyLock::new(|| column_in("identity_policy", &[IdentityPolicy::StrictOnce.as_str()]));
    sql::<Bool>(&STRICT_ONCE)
}

mod create;
mod list;
mod moves;
mod stale;

pub use create::{create_each, identity_holder, Creation};
pub use list::{list, visit_page, RunQuery};
pub use moves::{find, find_each, update, Change};
pub use stale::stale;
