//! `GET /v1/backup-schedules/{schedule_id}/runs`: a schedule's run history, which is a
//! query over `operation_runs` served by the schedule index, not a table of its own.

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::listing::{
    parse_outcomes, parse_query, parse_status, parse_time, parse_types, respond_with_page, visible_query, ListPages,
};
use super::runs::RunPage;
use crate::domain::access::Principal;
use crate::domain::catalog::{RunType, BACKUP_SCHEDULE_TYPES};
use crate::domain::inputs::{format_minute, Trigger};
use crate::domain::one_of;
use crate::domain::status::Outcome;
use crate::http::error::{ApiError, Problem, ProblemCode};
use crate::http::routes::pagination::ListRequest;
use crate::http::routes::reads::{ReadAfterHeader, Reader};

/// Filters of a schedule's history. Time bounds are half-open: `scheduled_after`
/// inclusive, `scheduled_before` exclusive, compared at minute precision in UTC.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScheduleHistoryParams {
    /// `backup_schedule_run`, `backup_schedule_retention` or `backup_schedule_purge` (repeatable).
    #[serde(default)]
    #[param(schema_with = schedule_run_types, style = Form, explode)]
    pub r#type: Vec<String>,
    /// A status, or `active` (queued or running).
    #[param(schema_with = crate::http::routes::schemas::status_filter_schema)]
    pub status: Option<String>,
    /// Only these outcomes (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<Outcome>>, style = Form, explode)]
    pub outcome: Vec<String>,
    /// What fired the run.
    #[param(schema_with = crate::http::routes::schemas::trigger_schema)]
    pub trigger: Option<String>,
    /// RFC 3339; runs scheduled for this minute or later.
    #[param(value_type = Option<String>, format = DateTime)]
    pub scheduled_after: Option<String>,
    /// RFC 3339; runs scheduled before this minute.
    #[param(value_type = Option<String>, format = DateTime)]
    pub scheduled_before: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The `type` filter's schema: an array of the history's three types.
fn schedule_run_types() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let names = BACKUP_SCHEDULE_TYPES.map(RunType::as_str);
    ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names))).build()
}

/// List a backup schedule's runs.
///
/// Runs of type `backup_schedule_run`, `backup_schedule_retention` and
/// `backup_schedule_purge` whose `context.backup_schedule_id` is this schedule, newest
/// first, paginated like `/v1/runs`. The retention job's "last N successful runs" is
/// `?type=backup_schedule_run&outcome=succeeded&limit=N`.
///
/// **Needs** a token; runs appear only where `GET /v1/runs` would show them (your
/// tenants, and each type's `view_capability`: `backup_schedules.run` or `backup_schedules.manage`).
#[utoipa::path(
    tag = "backup schedules",
    security(("bearer" = [])),
    params(("schedule_id" = i64, Path, description = "Backup schedule id"), ScheduleHistoryParams, ReadAfterHeader),
    responses(
        (status = 200, body = RunPage, headers(("Link" = String, description = "`<…>; rel=\"next\"` while more pages remain"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_query`, `invalid_limit`, `invalid_cursor`, `cursor_filter_mismatch` or `invalid_read_after`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "`not_found`: the schedule id is not an integer"),
    )
)]
#[get("/v1/backup-schedules/{schedule_id}/runs")]
pub async fn list_backup_schedule_runs(
    db: Reader,
    pages: web::Data<ListPages>,
    principal: Principal,
    schedule_id: web::Path<i64>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (params, pairs): (ScheduleHistoryParams, _) = parse_query(&request)?;
    let requested = parse_types(&params.r#type)?;
    if let Some(other) = requested.iter().find(|t| !t.is_backup_schedule_type()) {
        return Err(ApiError::bad_request(
            ProblemCode::InvalidQuery,
            format!(
                "`type`: {other} runs are not part of a schedule's history; use one of {}.",
                one_of(BACKUP_SCHEDULE_TYPES.map(RunType::as_str))
            ),
        ));
    }
    let requested = if requested.is_empty() { BACKUP_SCHEDULE_TYPES.to_vec() } else { requested };
    let mut query = visible_query(&principal, &requested);
    query.backup_schedule_id = Some(schedule_id.into_inner());
    query.status = parse_status(params.status.as_deref())?;
    query.outcomes = parse_outcomes(&params.outcome)?;
    query.trigger = params
        .trigger
        .as_deref()
        .map(|name| {
            Trigger::parse(name).ok_or_else(|| {
                ApiError::bad_request(
                    ProblemCode::InvalidQuery,
                    format!("`trigger`: `{name}` is not one of {}.", one_of(Trigger::ALL.map(Trigger::as_str))),
                )
            })
        })
        .transpose()?;
    // scheduled_for is stored as a normalized minute, so bounds compare as text.
    query.scheduled_after = parse_time("scheduled_after", params.scheduled_after.as_deref())?
        .map(|at| format_minute(crate::domain::inputs::ceil_minute(at)));
    query.scheduled_before = parse_time("scheduled_before", params.scheduled_before.as_deref())?
        .map(|at| format_minute(crate::domain::inputs::ceil_minute(at)));
    let list = ListRequest::new(request.path(), pairs);
    respond_with_page(&request, &db, &pages, query, list, params.cursor.as_deref(), params.limit).await
}
