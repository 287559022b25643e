//! A run borrowed where it lies: in an [`OperationRunRow`], or in the driver's buffer as
//! a page's statement returns it. A page is written from these without owning each run's
//! strings first: on a page of 50 runs nobody shares, allocating, checking and copying
//! them cost about as much as writing the page.

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::row::{Field, Row};
use diesel::sql_types::{BigInt, Text};

use super::models::OperationRunRow;
use crate::domain::catalog::RunType;
use crate::domain::ids::{RunId, TenantId, WorkspaceId};
use crate::domain::status::{Outcome, RunStatus};

/// A run as a page is written from it. The jsonb columns are their JSON text.
#[derive(Clone, Copy, Debug)]
pub struct RunFields<'a> {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub tenant_id: Option<TenantId>,
    pub user_id: Option<i64>,
    pub initiator_name: &'a str,
    pub run_type: RunType,
    pub status: RunStatus,
    pub outcome: Outcome,
    pub summary_counts: &'a [u8],
    pub failure_summary: &'a [u8],
    pub context: &'a [u8],
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub backup_schedule_id: Option<i64>,
}

impl OperationRunRow {
    pub fn fields(&self) -> RunFields<'_> {
        RunFields {
            id: self.id,
            workspace_id: self.workspace_id,
            tenant_id: self.tenant_id,
            user_id: self.user_id,
            initiator_name: &self.initiator_name,
            run_type: self.run_type,
            status: self.status,
            outcome: self.outcome,
            summary_counts: self.summary_counts.as_str().as_bytes(),
            failure_summary: self.failure_summary.as_str().as_bytes(),
            context: self.context.as_str().as_bytes(),
            started_at: self.started_at,
            completed_at: self.completed_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            backup_schedule_id: self.backup_schedule_id,
        }
    }
}

/// The columns of `OperationRunRow::as_select()`, in its order (`revision` last, unread).
const COLUMNS: usize = 17;

/// Hands `visit` the run in `row`, a row of `OperationRunRow::as_select()`, borrowed from
/// the driver's buffer.
pub(super) fn visit_row<'a, R: Row<'a, Pg>>(row: &R, visit: &mut dyn FnMut(RunFields<'_>)) -> deserialize::Result<()> {
    if row.field_count() != COLUMNS {
        return Err(format!("a run row has {} columns, not {COLUMNS}", row.field_count()).into());
    }
    let fields: [Option<R::Field<'_>>; COLUMNS] = std::array::from_fn(|index| row.get(index));
    let values: [Option<PgValue<'_>>; COLUMNS] =
        std::array::from_fn(|index| fields[index].as_ref().and_then(|field| field.value()));
    let [id, workspace_id, tenant_id, user_id, initiator_name, run_type, status, outcome, summary_counts, failure_summary, context, started_at, completed_at, created_at, updated_at, backup_schedule_id, _revision] =
        values;
    visit(RunFields {
        id: RunId(big_int(required(id)?)?),
        workspace_id: WorkspaceId(big_int(required(workspace_id)?)?),
        tenant_id: tenant_id.map(big_int).transpose()?.map(TenantId),
        user_id: user_id.map(big_int).transpose()?,
        initiator_name: std::str::from_utf8(required(initiator_name)?.as_bytes())?,
        run_type: <RunType as FromSql<Text, Pg>>::from_sql(required(run_type)?)?,
        status: <RunStatus as FromSql<Text, Pg>>::from_sql(required(status)?)?,
        outcome: <Outcome as FromSql<Text, Pg>>::from_sql(required(outcome)?)?,
        summary_counts: json_text(required(summary_counts)?)?,
        failure_summary: json_text(required(failure_summary)?)?,
        context: json_text(required(context)?)?,
        started_at: started_at.map(timestamp).transpose()?,
        completed_at: completed_at.map(timestamp).transpose()?,
        created_at: timestamp(required(created_at)?)?,
        updated_at: timestamp(required(updated_at)?)?,
        backup_schedule_id: backup_schedule_id.map(big_int).transpose()?,
    });
    Ok(())
}

fn required(value: Option<PgValue<'_>>) -> deserialize::Result<PgValue<'_>> {
    value.ok_or_else(|| "unexpected null in a run row".into())
}

fn big_int(value: PgValue<'_>) -> deserialize::Result<i64> {
    <i64 as FromSql<BigInt, Pg>>::from_sql(value)
}

/// A `timestamptz`: microseconds since 2000-01-01 UTC, PostgreSQL's epoch. The same value
/// diesel's `FromSql` reads, in one step from the Unix epoch: diesel's builds 2000-01-01
/// and adds a duration for every value, and a page holds about 200 of them.
fn timestamp(value: PgValue<'_>) -> deserialize::Result<DateTime<Utc>> {
    /// 2000-01-01T00:00:00Z in microseconds since the Unix epoch.
    const POSTGRES_EPOCH: i64 = 946_684_800_000_000;
    let micros = <i64 as FromSql<BigInt, Pg>>::from_sql(value)?;
    micros
        .checked_add(POSTGRES_EPOCH)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| format!("the timestamp {micros} µs past 2000-01-01 is out of range").into())
}

/// jsonb's binary form: a version byte (1), then the JSON text PostgreSQL spelled, which
/// goes into the page as it is ([`super::JsonText`] says why it is not checked again).
fn json_text<'a>(value: PgValue<'a>) -> deserialize::Result<&'a [u8]> {
    match value.as_bytes().split_first() {
        Some((1, text)) => Ok(text),
        _ => Err("unsupported jsonb binary format".into()),
    }
}
