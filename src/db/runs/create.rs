//! Creating runs: one statement inserts a batch of runs and their `created` events,
//! leaving out each run whose identity is held.

use chrono::{DateTime, Utc};
use diesel::dsl::AsSelect;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;

use super::{active, strict_once};
use crate::db::models::{NewOperationRun, OperationRunRow};
use crate::db::schema::operation_runs::dsl::*;
use crate::domain::catalog::RunType;
use crate::domain::identity::IdentityPolicy;
use crate::domain::ids::{RunId, TenantId};
use crate::domain::status::{EventKind, Outcome, RunStatus};

/// A run to create, with who creates it and its `created` event's detail.
pub struct Creation<'a> {
    pub run: &'a NewOperationRun,
    pub actor: &'a str,
    pub detail: &'a Value,
}

/// Creates every run of `batch` whose identity is free, each with its `created` event,
/// and returns each created run with its position in `batch`. A run whose identity is
/// held, even by one earlier in the batch, is left out. Runs started now and runs carried
/// over are one statement each ([`CreateEach`]), so a batch of starts is one statement.
pub fn create_each(conn: &mut PgConnection, batch: &[Creation<'_>]) -> QueryResult<Vec<(usize, OperationRunRow)>> {
    let (carried, started): (Vec<usize>, Vec<usize>) =
        (0..batch.len()).partition(|&position| batch[position].run.carried.is_some());
    let mut created = create_at::<false>(conn, batch, &started)?;
    created.extend(create_at::<true>(conn, batch, &carried)?);
    Ok(created)
}

/// [`create_each`] for the runs of `batch` at `positions`, all of one shape.
fn create_at<const CARRIED: bool>(
    conn: &mut PgConnection,
    batch: &[Creation<'_>],
    positions: &[usize],
) -> QueryResult<Vec<(usize, OperationRunRow)>> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(OperationRunRow, i64)> = CreateEach::<CARRIED>::new(batch, positions).load(conn)?;
    // `position` is the run's 1-based ordinal among `positions`.
    Ok(rows.into_iter().map(|(run, ordinal)| (positions[ordinal as usize - 1], run)).collect())
}

/// One statement that creates runs and their `created` events: the runs' columns arrive
/// as one array each, so the statement's text is the same for any number of runs and
/// PostgreSQL parses it once per connection (a multi-row `VALUES` would be parsed anew
/// for every batch size). Each run's id is drawn before the insert, so that its event can
/// name it and the caller can tell which of its runs were created (`position`).
/// `CARRIED`: the runs carry their state over ([`super::models::CarriedState`]);
/// otherwise the table's defaults start them.
struct CreateEach<'a, const CARRIED: bool> {
    workspace_ids: Vec<i64>,
    tenant_ids: Vec<Option<i64>>,
    user_ids: Vec<Option<i64>>,
    initiator_names: Vec<&'a str>,
    types: Vec<RunType>,
    hashes: Vec<&'a str>,
    policies: Vec<IdentityPolicy>,
    contexts: Vec<&'a Value>,
    actors: Vec<&'a str>,
    details: Vec<&'a Value>,
    statuses: Vec<RunStatus>,
    outcomes: Vec<Outcome>,
    counts: Vec<&'a Value>,
    failures: Vec<&'a Value>,
    started: Vec<Option<DateTime<Utc>>>,
    completed: Vec<Option<DateTime<Utc>>>,
    created: Vec<Option<DateTime<Utc>>>,
    updated: Vec<Option<DateTime<Utc>>>,
    returning: AsSelect<OperationRunRow, Pg>,
}

impl<'a, const CARRIED: bool> CreateEach<'a, CARRIED> {
    /// The statement for the runs of `batch` at `positions`.
    fn new(batch: &[Creation<'a>], positions: &[usize]) -> Self {
        let creations: Vec<&Creation<'a>> = positions.iter().map(|&position| &batch[position]).collect();
        let runs = || creations.iter().map(|creation| creation.run);
        let carried = || runs().filter_map(|run| run.carried.as_ref());
        CreateEach {
            workspace_ids: runs().map(|run| run.workspace_id.get()).collect(),
            tenant_ids: runs().map(|run| run.tenant_id.map(TenantId::get)).collect(),
            user_ids: runs().map(|run| run.user_id).collect(),
            initiator_names: runs().map(|run| run.initiator_name.as_str()).collect(),
            types: runs().map(|run| run.run_type).collect(),
            hashes: runs().map(|run| run.run_identity_hash.as_str()).collect(),
            policies: runs().map(|run| run.identity_policy).collect(),
            contexts: runs().map(|run| &run.context).collect(),
            actors: creations.iter().map(|creation| creation.actor).collect(),
            details: creations.iter().map(|creation| creation.detail).collect(),
            statuses: carried().map(|state| state.status).collect(),
            outcomes: carried().map(|state| state.outcome).collect(),
            counts: carried().map(|state| &state.summary_counts).collect(),
            failures: carried().map(|state| &state.failure_summary).collect(),
            started: carried().map(|state| state.started_at).collect(),
            completed: carried().map(|state| state.completed_at).collect(),
            created: carried().map(|state| state.created_at).collect(),
            updated: carried().map(|state| state.updated_at).collect(),
            returning: OperationRunRow::as_returning(),
        }
    }
}

impl<const CARRIED: bool> QueryFragment<Pg> for CreateEach<'_, CARRIED> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let carried = |names: &'static str| if CARRIED { names } else { "" };
        out.push_sql(
            "WITH input AS MATERIALIZED (\
             SELECT nextval(pg_get_serial_sequence('operation_runs', 'id')::regclass) AS id, input_row.* FROM unnest(",
        );
        out.push_bind_param::<Array<BigInt>, _>(&self.workspace_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.tenant_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.user_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.initiator_names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.types)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.hashes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.policies)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&self.contexts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.actors)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&self.details)?;
        if CARRIED {
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&self.statuses)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&self.outcomes)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Jsonb>, _>(&self.counts)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Jsonb>, _>(&self.failures)?;
            for times in [&self.started, &self.completed, &self.created, &self.updated] {
                out.push_sql(", ");
                out.push_bind_param::<Array<Nullable<Timestamptz>>, _>(times)?;
            }
        }
        out.push_sql(
            ") WITH ORDINALITY AS input_row (workspace_id, tenant_id, user_id, initiator_name, type, \
             run_identity_hash, identity_policy, context, actor, detail",
        );
        out.push_sql(carried(
            ", status, outcome, summary_counts, failure_summary, started_at, completed_at, created_at, updated_at",
        ));
        out.push_sql(
            ", position)), \
             created AS (INSERT INTO operation_runs (id, workspace_id, tenant_id, user_id, initiator_name, type, \
             run_identity_hash, identity_policy, context",
        );
        out.push_sql(carried(
            ", status, outcome, summary_counts, failure_summary, started_at, completed_at, created_at, updated_at",
        ));
        out.push_sql(
            ") OVERRIDING SYSTEM VALUE \
             SELECT id, workspace_id, tenant_id, user_id, initiator_name, type, run_identity_hash, identity_policy, context",
        );
        out.push_sql(carried(
            ", status, outcome, summary_counts, failure_summary, started_at, completed_at, \
             coalesce(created_at, now()), coalesce(updated_at, now())",
        ));
        // In the batch's order: of two runs of one identity, the first is created.
        out.push_sql(" FROM input ORDER BY position ON CONFLICT DO NOTHING RETURNING ");
        self.returning.walk_ast(out.reborrow())?;
        out.push_sql(
            "), \
             logged AS (INSERT INTO operation_run_events (run_id, workspace_id, actor, kind, to_status, outcome, detail) \
             SELECT created.id, created.workspace_id, input.actor, ",
        );
        out.push_bind_param::<Text, _>(&EventKind::Created)?;
        out.push_sql(
            ", created.status, created.outcome, input.detail FROM created JOIN input USING (id) ORDER BY id) \
             SELECT created.*, input.position FROM created JOIN input USING (id)",
        );
        Ok(())
    }
}

impl<const CARRIED: bool> Query for CreateEach<'_, CARRIED> {
    type SqlType = (AsSelect<OperationRunRow, Pg>, BigInt);
}

impl<const CARRIED: bool> QueryId for CreateEach<'_, CARRIED> {
    type QueryId = CreateEach<'static, CARRIED>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const CARRIED: bool> RunQueryDsl<PgConnection> for CreateEach<'_, CARRIED> {}

/// The run that holds `new`'s identity, if any: under strict-once any run with it, else
/// an active one in the same scope.
pub fn identity_holder(conn: &mut PgConnection, new: &NewOperationRun) -> QueryResult<Option<RunId>> {
    let same_identity = operation_runs
        .filter(workspace_id.eq(new.workspace_id))
        .filter(run_identity_hash.eq(&new.run_identity_hash))
        .select(id)
        .order(id.asc())
        .limit(1);
    match (new.identity_policy, new.tenant_id) {
        (IdentityPolicy::StrictOnce, _) => same_identity.filter(strict_once()).first(conn).optional(),
        (_, Some(tenant)) => same_identity.filter(tenant_id.eq(tenant)).filter(active()).first(conn).optional(),
        (_, None) => same_identity.filter(tenant_id.is_null()).filter(active()).first(conn).optional(),
    }
}
