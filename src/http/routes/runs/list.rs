//! `GET /v1/runs`: every run the caller may view, filtered and paginated.

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::RunPage;
use crate::domain::access::Principal;
use crate::domain::catalog::RunType;
use crate::domain::ids::TenantId;
use crate::domain::status::Outcome;
use crate::http::error::{ApiError, Problem};
use crate::http::routes::listing::{
    parse_outcomes, parse_query, parse_status, parse_time, parse_types, positive_id, respond_with_page, visible_query,
    ListPages,
};
use crate::http::routes::pagination::ListRequest;
use crate::http::routes::reads::{ReadAfterHeader, Reader};

/// Filters of `GET /v1/runs`. Time bounds are half-open: `*_after` inclusive, `*_before` exclusive.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRunsParams {
    /// Only these types (repeat the parameter for several).
    #[serde(default)]
    #[param(value_type = Option<Vec<RunType>>, style = Form, explode)]
    pub r#type: Vec<String>,
    /// A status, or `active` (queued or running).
    #[param(schema_with = crate::http::routes::schemas::status_filter_schema)]
    pub status: Option<String>,
    /// Only these outcomes (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<Outcome>>, style = Form, explode)]
    pub outcome: Vec<String>,
    #[param(minimum = 1)]
    pub tenant_id: Option<i64>,
    pub user_id: Option<i64>,
    /// RFC 3339; runs created at or after this instant.
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_after: Option<String>,
    /// RFC 3339; runs created before this instant.
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_before: Option<String>,
    #[param(minimum = 1)]
    pub backup_schedule_id: Option<i64>,
    /// RFC 3339; "what changed since": runs last changed at or after this instant, in the
    /// order they last changed, **oldest change first**. A change is stamped when it is
    /// made and becomes visible when it commits (within the request timeout), so ask again
    /// with the last `updated_at` you saw minus a few seconds and skip the `(id, updated_at)`
    /// pairs you hold; `GET /v1/runs/stream` is the exact feed.
    #[param(value_type = Option<String>, format = DateTime)]
    pub updated_after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, with the same filters.
    pub cursor: Option<String>,
}

/// List runs.
///
/// Newest first (with `updated_after`, oldest change first). Only runs the caller may view appear: their workspace, their tenants,
/// and types whose view capability the token carries. Follow `next_cursor` (or the
/// `Link: <…>; rel="next"` header) for the next page.
///
/// **Needs** a token; each type's runs appear only with its `view_capability`.
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    params(ListRunsParams, ReadAfterHeader),
    responses(
        (status = 200, body = RunPage, headers(("Link" = String, description = "`<…>; rel=\"next\"` while more pages remain"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_query`, `invalid_limit`, `invalid_cursor`, `cursor_filter_mismatch` or `invalid_read_after`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/runs")]
pub async fn list_runs(
    db: Reader,
    pages: web::Data<ListPages>,
    principal: Principal,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (params, pairs): (ListRunsParams, _) = parse_query(&request)?;
    let mut query = visible_query(&principal, &parse_types(&params.r#type)?);
    query.status = parse_status(params.status.as_deref())?;
    query.outcomes = parse_outcomes(&params.outcome)?;
    query.tenant_id = positive_id("tenant_id", params.tenant_id)?.map(TenantId);
    query.user_id = params.user_id;
    query.created_after = parse_time("created_after", params.created_after.as_deref())?;
    query.created_before = parse_time("created_before", params.created_before.as_deref())?;
    query.backup_schedule_id = positive_id("backup_schedule_id", params.backup_schedule_id)?;
    query.updated_after = parse_time("updated_after", params.updated_after.as_deref())?;
    let list = ListRequest::new(request.path(), pairs);
    respond_with_page(&request, &db, &pages, query, list, params.cursor.as_deref(), params.limit).await
}
