//! `GET /v1/runs`, and the list plumbing the backup-schedule history shares: query
//! parsing, visibility, keyset pages and the `Link` header.

use actix_web::{get, http::header, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{RunPage, RunView};
use crate::db::runs::{self, RunQuery, StatusFilter};
use crate::db::Database;
use crate::domain::access::{Principal, TenantScope};
use crate::domain::catalog::RunType;
use crate::domain::status::{Outcome, RunStatus};
use crate::error::{ApiError, Problem};
use crate::pagination::{self, ListRequest};

/// Filters of `GET /v1/runs`. Time bounds are half-open: `*_after` inclusive, `*_before` exclusive.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRunsParams {
    /// Only these types (repeat the parameter for several).
    #[serde(default)]
    #[param(value_type = Option<Vec<RunType>>, style = Form, explode)]
    pub r#type: Vec<String>,
    /// `queued`, `running`, `completed`, or `active` (queued or running).
    #[param(value_type = Option<String>, pattern = "^(queued|running|completed|active)$", example = "active")]
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
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, with the same filters.
    pub cursor: Option<String>,
}

/// Parses the query string into `T`; any problem is a 400 naming it.
pub fn parse_query<T: DeserializeOwned>(request: &HttpRequest) -> Result<(T, Vec<(String, String)>), ApiError> {
    let invalid = |e: serde_html_form::de::Error| {
        ApiError::bad_request("invalid_query", format!("The query string is not valid: {e}."))
    };
    let params = serde_html_form::from_str(request.query_string()).map_err(invalid)?;
    let pairs: Vec<(String, String)> = serde_html_form::from_str(request.query_string()).map_err(invalid)?;
    // An empty value would otherwise read as "no filter": say so instead of ignoring it.
    if let Some((name, _)) = pairs.iter().find(|(_, value)| value.is_empty()) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`{name}` has no value; give one or leave it out."),
        ));
    }
    Ok((params, pairs))
}

pub fn parse_types(names: &[String]) -> Result<Vec<RunType>, ApiError> {
    names
        .iter()
        .map(|name| RunType::parse(name).map_err(|e| ApiError::bad_request("invalid_query", format!("`type`: {e}."))))
        .collect()
}

pub fn parse_outcomes(names: &[String]) -> Result<Vec<Outcome>, ApiError> {
    names
        .iter()
        .map(|name| {
            Outcome::parse(name).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("`outcome`: `{name}` is not one of pending, succeeded, partially_succeeded, failed, blocked, cancelled."))
            })
        })
        .collect()
}

pub fn parse_status(name: Option<&str>) -> Result<Option<StatusFilter>, ApiError> {
    match name {
        None => Ok(None),
        Some("active") => Ok(Some(StatusFilter::Active)),
        Some(name) => RunStatus::parse(name).map(|s| Some(StatusFilter::Is(s))).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("`status`: `{name}` is not one of queued, running, completed, active."),
            )
        }),
    }
}

/// Ids in filters are positive; anything else is a mistake worth saying so.
pub fn positive_id(parameter: &str, value: Option<i64>) -> Result<Option<i64>, ApiError> {
    match value {
        Some(id) if id < 1 => Err(ApiError::bad_request(
            "invalid_query",
            format!("`{parameter}`: {id} is not an id; ids are positive integers."),
        )),
        other => Ok(other),
    }
}

pub fn parse_time(parameter: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`{parameter}`: `{text}` is not an RFC 3339 timestamp such as 2026-01-31T10:00:00Z."),
                )
            })
        })
        .transpose()
}

/// The query over what the caller may see: their workspace, their tenants (and
/// workspace-scoped runs), and the types they may view, narrowed to `requested`.
pub fn visible_query(principal: &Principal, requested: &[RunType]) -> RunQuery {
    let types =
        principal.viewable_types().into_iter().filter(|t| requested.is_empty() || requested.contains(t)).collect();
    RunQuery {
        workspace_id: principal.workspace_id,
        types,
        visible_tenants: match &principal.tenants {
            TenantScope::All => None,
            TenantScope::Only(ids) => Some(ids.iter().copied().collect()),
        },
        ..RunQuery::default()
    }
}

/// Runs one page of `query` and answers with the page and its `Link` header.
pub async fn respond_with_page(
    db: &Database,
    mut query: RunQuery,
    list: ListRequest,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<HttpResponse, ApiError> {
    let limit = pagination::limit(limit)?;
    query.after = cursor.map(|c| list.decode_cursor(c)).transpose()?;
    query.limit = limit + 1;
    let mut rows =
        if query.types.is_empty() { Vec::new() } else { db.run(move |conn| Ok(runs::list(conn, &query)?)).await? };
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|last| list.encode_cursor(last.created_at, last.id))
    } else {
        None
    };
    let mut response = HttpResponse::Ok();
    if let Some(cursor) = &next_cursor {
        response.insert_header((header::LINK, list.next_link(cursor, limit)));
    }
    let items = rows.into_iter().map(RunView::from).collect();
    Ok(response.json(RunPage { items, next_cursor }))
}

/// List runs.
///
/// Newest first. Only runs the caller may view appear: their workspace, their tenants,
/// and types whose view capability the token carries. Follow `next_cursor` (or the
/// `Link: <…>; rel="next"` header) for the next page.
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    params(ListRunsParams),
    responses(
        (status = 200, body = RunPage, headers(("Link" = String, description = "`<…>; rel=\"next\"` while more pages remain"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_query`, `invalid_limit`, `invalid_cursor` or `cursor_filter_mismatch`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/runs")]
pub async fn list_runs(
    db: web::Data<Database>,
    principal: Principal,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (params, pairs): (ListRunsParams, _) = parse_query(&request)?;
    let mut query = visible_query(&principal, &parse_types(&params.r#type)?);
    query.status = parse_status(params.status.as_deref())?;
    query.outcomes = parse_outcomes(&params.outcome)?;
    query.tenant_id = positive_id("tenant_id", params.tenant_id)?;
    query.user_id = params.user_id;
    query.created_after = parse_time("created_after", params.created_after.as_deref())?;
    query.created_before = parse_time("created_before", params.created_before.as_deref())?;
    query.backup_schedule_id = positive_id("backup_schedule_id", params.backup_schedule_id)?;
    let list = ListRequest::new(request.path(), pairs);
    respond_with_page(&db, query, list, params.cursor.as_deref(), params.limit).await
}
