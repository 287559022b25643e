//! Planning and reading a page of runs: one index range per filter, or one per tenant.

use chrono::{DateTime, Utc};
use diesel::connection::LoadConnection;
use diesel::dsl::{sql, AsSelect};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};

use super::active;
use crate::db::models::OperationRunRow;
use crate::db::run_fields::{self, RunFields};
use crate::db::schema::operation_runs::{self, dsl::*};
use crate::domain::catalog::{RunType, Trigger};
use crate::domain::ids::{TenantId, WorkspaceId};
use crate::domain::status::{Outcome, RunStatus, StatusFilter};

/// A page request over runs of one workspace, newest first. Equal queries read equal
/// pages (they share one execution: [`super::shared_reads`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunQuery {
    pub workspace_id: WorkspaceId,
    /// Only these types; the caller's viewable types intersected with any type filter.
    pub types: Vec<RunType>,
    /// `None`: every tenant; otherwise runs of these tenants and workspace-scoped runs.
    pub visible_tenants: Option<Vec<TenantId>>,
    pub tenant_id: Option<TenantId>,
    pub user_id: Option<i64>,
    pub status: Option<StatusFilter>,
    pub outcomes: Vec<Outcome>,
    /// Inclusive lower bound.
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub created_before: Option<DateTime<Utc>>,
    pub backup_schedule_id: Option<i64>,
    pub trigger: Option<Trigger>,
    /// Inclusive lower bound, a normalized `scheduled_for`.
    pub scheduled_after: Option<String>,
    /// Exclusive upper bound, a normalized `scheduled_for`.
    pub scheduled_before: Option<String>,
    /// "What changed since": only runs last changed at or after this instant, in the
    /// order they last changed, oldest first (instead of newest created first).
    pub updated_after: Option<DateTime<Utc>>,
    /// Keyset position: only runs strictly past this (sort time, id) in the list's order.
    pub after: Option<(DateTime<Utc>, i64)>,
    pub limit: i64,
}

impl RunQuery {
    /// Every run of these types in the workspace, visible tenants unrestricted: narrow it
    /// with the other fields.
    pub fn new(workspace: WorkspaceId, types: Vec<RunType>) -> RunQuery {
        RunQuery {
            workspace_id: workspace,
            types,
            visible_tenants: None,
            tenant_id: None,
            user_id: None,
            status: None,
            outcomes: Vec::new(),
            created_after: None,
            created_before: None,
            backup_schedule_id: None,
            updated_after: None,
            trigger: None,
            scheduled_after: None,
            scheduled_before: None,
            after: None,
            limit: 0,
        }
    }
}

impl RunQuery {
    /// Where `row` stands in this list's order: what a cursor after it holds.
    pub fn position(&self, row: &RunFields<'_>) -> (DateTime<Utc>, i64) {
        match self.updated_after {
            Some(_) => (row.updated_at, row.id.get()),
            None => (row.created_at, row.id.get()),
        }
    }

    /// The index ranges that together hold this list's page, each in the list's order.
    ///
    /// An `IN` list cannot be read from a btree in the order of the columns after it (not
    /// before PostgreSQL 17), so a filter with several values would sort every match.
    /// Instead each value is a range of its own, read `limit` rows deep, and the ranges
    /// are merged: a caller limited to some tenants reads each of its tenants (all in one
    /// statement, [`EachTenantPage`]) and the workspace-scoped runs; `status=active` reads
    /// the queued and the running runs; several outcomes read one each. That is at most
    /// 2 × 2 × (the number of outcomes) statements. "What changed since" is ordered by
    /// `updated_at`, which only its own index serves, so it is never split.
    fn ranges(&self) -> Vec<Range<'_>> {
        let tenants: Vec<TenantFilter> = match (&self.visible_tenants, self.tenant_id) {
            (Some(visible), Some(tenant)) if !visible.contains(&tenant) => return Vec::new(),
            // A user's or a schedule's own index range is narrower than the tenants'.
            (Some(visible), None) if self.user_id.is_some() || self.backup_schedule_id.is_some() => {
                vec![TenantFilter::Visible(visible)]
            }
            (Some(visible), None) => vec![TenantFilter::EachOf(visible), TenantFilter::WorkspaceScoped],
            (_, Some(tenant)) => vec![TenantFilter::One(tenant)],
            (None, None) => vec![TenantFilter::Any],
        };
        let split = self.updated_after.is_none();
        let statuses: Vec<Option<StatusFilter>> = match self.status {
            Some(StatusFilter::Active) if split => {
                RunStatus::ACTIVE.into_iter().map(|s| Some(StatusFilter::Is(s))).collect()
            }
            wanted => vec![wanted],
        };
        let outcomes: Vec<&[Outcome]> = match self.outcomes.len() {
            2.. if split => self.outcomes.chunks(1).collect(),
            _ => vec![&self.outcomes[..]],
        };
        let mut ranges = Vec::new();
        for tenant in &tenants {
            for wanted in &statuses {
                for outcomes in &outcomes {
                    ranges.push(Range { tenants: *tenant, status: *wanted, outcomes });
                }
            }
        }
        ranges
    }
}

/// The runs a query selects, in its order, at most `limit`.
pub fn list(conn: &mut PgConnection, query: &RunQuery) -> QueryResult<Vec<OperationRunRow>> {
    let mut ranges = query.ranges();
    if ranges.len() <= 1 {
        return ranges.pop().map_or(Ok(Vec::new()), |range| list_range(query, range).load(conn));
    }
    let mut rows = Vec::new();
    for range in ranges {
        rows.extend(list_range(query, range).load::<OperationRunRow>(conn)?);
    }
    match query.updated_after {
        Some(_) => rows.sort_unstable_by_key(|row| query.position(&row.fields())),
        None => rows.sort_unstable_by_key(|row| std::cmp::Reverse(query.position(&row.fields()))),
    }
    rows.truncate(usize::try_from(query.limit).unwrap_or(0));
    Ok(rows)
}

/// The runs of [`list`], in its order, each handed to `visit` as it arrives. A query read
/// from one index range (nearly every page) is read borrowed from the driver's buffer.
pub fn visit_page(conn: &mut PgConnection, query: &RunQuery, visit: &mut dyn FnMut(RunFields<'_>)) -> QueryResult<()> {
    let mut ranges = query.ranges();
    if ranges.len() > 1 {
        list(conn, query)?.iter().for_each(|row| visit(row.fields()));
        return Ok(());
    }
    let Some(range) = ranges.pop() else { return Ok(()) };
    for row in <PgConnection as LoadConnection>::load(conn, list_range(query, range))? {
        run_fields::visit_row(&row?, visit).map_err(diesel::result::Error::DeserializationError)?;
    }
    Ok(())
}

/// Which tenants' runs one range read covers.
#[derive(Clone, Copy)]
enum TenantFilter<'a> {
    Any,
    One(TenantId),
    WorkspaceScoped,
    /// These tenants' runs and the workspace-scoped ones.
    Visible(&'a [TenantId]),
    /// These tenants' runs, one index range each, read in one statement ([`EachTenantPage`]).
    EachOf(&'a [TenantId]),
}

/// One index range of a list: the query's other filters, with these in place of its own.
#[derive(Clone, Copy)]
struct Range<'a> {
    tenants: TenantFilter<'a>,
    status: Option<StatusFilter>,
    outcomes: &'a [Outcome],
}

/// The equality filter whose index a range reads: written `column BETWEEN v AND v` and
/// put first in the `ORDER BY`, so that index is the only one that yields the page in
/// order.
///
/// With `column = v`, PostgreSQL drops the column from the ordering (it is constant), and
/// the workspace's newest-first index with `column = v` as a filter looks as cheap: the
/// planner assumes matches are spread evenly, so it walks past every newer run that does
/// not match (the 50,000 newest being queued, say) to find the page of completed ones.
/// Spelled as a range, the value leaves no such choice; the only other plans sort every
/// match of a more selective filter, which the planner takes when that one is smaller.
#[derive(Clone, Copy)]
enum Lead {
    Schedule(i64),
    User(i64),
    Tenant(TenantId),
    /// The tenant of [`EachTenantPage`]'s current range.
    EachTenant,
    Outcome(Outcome),
    Status(RunStatus),
    Type(RunType),
}

impl Range<'_> {
    /// The most selective filter of this range that an index leads with, if any: a
    /// schedule's runs of one status or outcome read (workspace, schedule, status or
    /// outcome, …), a user's or a tenant's their own index, then one outcome, one status,
    /// one type.
    fn lead(&self, query: &RunQuery) -> Option<Lead> {
        let one_status = match self.status {
            Some(StatusFilter::Is(wanted)) => Some(wanted),
            _ => None,
        };
        let one_outcome = match self.outcomes {
            [only] => Some(Lead::Outcome(*only)),
            _ => None,
        };
        if let Some(schedule) = query.backup_schedule_id {
            return one_status.map(Lead::Status).or(one_outcome).or(Some(Lead::Schedule(schedule)));
        }
        let tenant = match self.tenants {
            TenantFilter::One(tenant) => Some(Lead::Tenant(tenant)),
            TenantFilter::EachOf(_) => Some(Lead::EachTenant),
            _ => None,
        };
        let one_type = match query.types[..] {
            [only] => Some(Lead::Type(only)),
            _ => None,
        };
        (query.user_id.map(Lead::User)).or(tenant).or(one_outcome).or(one_status.map(Lead::Status)).or(one_type)
    }
}

/// The statement that reads one range of a list.
fn list_range<'a>(query: &'a RunQuery, range: Range<'a>) -> RangeStatement<RunSelect<'a>> {
    let mut select = operation_runs::table
        .filter(workspace_id.eq(query.workspace_id))
        .select(OperationRunRow::as_select())
        .into_boxed::<Pg>();
    let lead = range.lead(query);

    if query.types.len() < RunType::ALL.len() && !matches!(lead, Some(Lead::Type(_))) {
        select = select.filter(type_.eq_any(query.types.clone()));
    }
    match range.tenants {
        TenantFilter::Any => {}
        TenantFilter::One(_) if matches!(lead, Some(Lead::Tenant(_))) => {}
        TenantFilter::One(tenant) => select = select.filter(tenant_id.eq(tenant)),
        TenantFilter::WorkspaceScoped => select = select.filter(tenant_id.is_null()),
        TenantFilter::Visible(visible) => {
            select = select.filter(tenant_id.is_null().or(tenant_id.eq_any(visible.to_vec())))
        }
        // Always the lead: `ranges` uses it only without a user or schedule filter.
        TenantFilter::EachOf(_) => {}
    }
    if let Some(user) = query.user_id.filter(|_| !matches!(lead, Some(Lead::User(_)))) {
        select = select.filter(user_id.eq(user));
    }
    match range.status {
        Some(StatusFilter::Is(_)) if matches!(lead, Some(Lead::Status(_))) => {}
        Some(StatusFilter::Is(wanted)) => select = select.filter(status.eq(wanted)),
        Some(StatusFilter::Active) => select = select.filter(active()),
        None => {}
    }
    match range.outcomes {
        [] => {}
        [_] if matches!(lead, Some(Lead::Outcome(_))) => {}
        [only] => select = select.filter(outcome.eq(*only)),
        several => select = select.filter(outcome.eq_any(several.to_vec())),
    }
    if let Some(after) = query.created_after {
        select = select.filter(created_at.ge(after));
    }
    if let Some(before) = query.created_before {
        select = select.filter(created_at.lt(before));
    }
    if let Some(schedule) = query.backup_schedule_id.filter(|_| !matches!(lead, Some(Lead::Schedule(_)))) {
        select = select.filter(backup_schedule_id.eq(schedule));
    }
    select = match lead {
        None => select,
        Some(Lead::Schedule(v)) => select.filter(backup_schedule_id.between(v, v)).order(backup_schedule_id),
        Some(Lead::User(v)) => select.filter(user_id.between(v, v)).order(user_id),
        Some(Lead::Tenant(v)) => select.filter(tenant_id.between(v, v)).order(tenant_id),
        Some(Lead::EachTenant) => {
            let each = || sql::<Nullable<BigInt>>(EACH_TENANT);
            select.filter(tenant_id.between(each(), each())).order(tenant_id)
        }
        Some(Lead::Outcome(v)) => select.filter(outcome.between(v, v)).order(outcome),
        Some(Lead::Status(v)) => select.filter(status.between(v, v)).order(status),
        Some(Lead::Type(v)) => select.filter(type_.between(v, v)).order(type_),
    };
    if let Some(trigger) = query.trigger {
        select = select.filter(sql::<Bool>("context ->> 'trigger' = ").bind::<Text, _>(trigger.as_str()));
    }
    if let Some(after) = &query.scheduled_after {
        select = select.filter(sql::<Bool>("context ->> 'scheduled_for' >= ").bind::<Text, _>(after.clone()));
    }
    if let Some(before) = &query.scheduled_before {
        select = select.filter(sql::<Bool>("context ->> 'scheduled_for' < ").bind::<Text, _>(before.clone()));
    }
    let (select, order) = if let Some(since) = query.updated_after {
        // Served by (workspace_id, updated_at, id), oldest change first.
        select = select.filter(updated_at.ge(since));
        if let Some(cursor) = query.after {
            select = select.filter(past_cursor("(updated_at, id) > (", cursor));
        }
        (select.then_order_by((updated_at.asc(), id.asc())), "updated_at ASC, id ASC")
    } else {
        if let Some(cursor) = query.after {
            select = select.filter(past_cursor("(created_at, id) < (", cursor));
        }
        (select.then_order_by((created_at.desc(), id.desc())), "created_at DESC, id DESC")
    };
    let select = select.limit(query.limit);
    match range.tenants {
        TenantFilter::EachOf(tenants) => {
            let tenants = tenants.iter().map(|tenant| tenant.get()).collect();
            RangeStatement::EachTenant(EachTenantPage { tenants, page: select, order, limit: query.limit })
        }
        _ => RangeStatement::One(select),
    }
}

/// A range's select of runs.
type RunSelect<'a> =
    diesel::dsl::IntoBoxed<'a, diesel::dsl::Select<operation_runs::table, AsSelect<OperationRunRow, Pg>>, Pg>;

/// One range's statement: its select, or the select once for each tenant.
enum RangeStatement<Q> {
    One(Q),
    EachTenant(EachTenantPage<Q>),
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for RangeStatement<Q> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self {
            RangeStatement::One(select) => select.walk_ast(out),
            RangeStatement::EachTenant(page) => page.walk_ast(out),
        }
    }
}

impl<Q: Query> Query for RangeStatement<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> QueryId for RangeStatement<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> RunQueryDsl<PgConnection> for RangeStatement<Q> {}

/// The tenant of an [`EachTenantPage`]'s current range, as its `page` names it.
const EACH_TENANT: &str = "each_tenant.tenant";

/// `page` (a range whose lead is [`EACH_TENANT`]) once for each tenant, in one
/// statement, then the newest `limit` of them all:
///
/// ```sql
/// SELECT page.* FROM unnest($tenants) AS each_tenant(tenant)
/// CROSS JOIN LATERAL (<page>) AS page ORDER BY <order> LIMIT $limit
/// ```
///
/// A caller with many tenants then reads at most `limit` rows of each tenant's index
/// range, however rare its tenants' runs are in the workspace; one query with
/// `tenant_id = ANY(…)` walks the workspace past every other tenant's run.
struct EachTenantPage<Q> {
    tenants: Vec<i64>,
    page: Q,
    /// The page's order, by the output's column names.
    order: &'static str,
    limit: i64,
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for EachTenantPage<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT page.* FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.tenants)?;
        out.push_sql(") AS each_tenant(tenant) CROSS JOIN LATERAL (");
        self.page.walk_ast(out.reborrow())?;
        out.push_sql(") AS page ORDER BY ");
        out.push_sql(self.order);
        out.push_sql(" LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)
    }
}

impl<Q: Query> Query for EachTenantPage<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> QueryId for EachTenantPage<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> RunQueryDsl<PgConnection> for EachTenantPage<Q> {}

/// The rows past a keyset cursor, `row_comparison` being `"(column, id) < ("` or `> (`:
/// a row comparison, so the (…, column, id) indexes bound the scan.
fn past_cursor(
    row_comparison: &'static str,
    (at, row_id): (DateTime<Utc>, i64),
) -> Box<dyn BoxableExpression<operation_runs::table, Pg, SqlType = Bool>> {
    Box::new(sql::<Bool>(row_comparison).bind::<Timestamptz, _>(at).sql(", ").bind::<BigInt, _>(row_id).sql(")"))
}
