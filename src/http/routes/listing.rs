//! What the run lists share (`GET /v1/runs` and a backup schedule's history): query
//! parsing with a 400 for every mistake, the caller's visibility, keyset pages and the
//! `Link` header.

use std::sync::Arc;

use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::QueryResult;
use serde::de::DeserializeOwned;

use super::runs::json::PageWriter;
use crate::db::runs::RunQuery;
use crate::db::shared_reads::SharedReads;
use crate::domain::access::{Principal, TenantScope};
use crate::domain::catalog::RunType;
use crate::domain::one_of;
use crate::domain::status::Outcome;
use crate::domain::status::StatusFilter;
use crate::http::error::{ApiError, ProblemCode};
use crate::http::routes::encoding::SharedBody;
use crate::http::routes::pagination::{self, ListRequest};
use crate::http::routes::reads::Reader;
use crate::use_cases::lists::{self, ReadRuns};

/// Parses the query string into `T`; any problem is a 400 naming it.
pub fn parse_query<T: DeserializeOwned>(request: &HttpRequest) -> Result<(T, Vec<(String, String)>), ApiError> {
    let params = serde_html_form::from_str(request.query_string()).map_err(ApiError::invalid_query)?;
    let pairs: Vec<(String, String)> =
        serde_html_form::from_str(request.query_string()).map_err(ApiError::invalid_query)?;
    // An empty value would otherwise read as "no filter": say so instead of ignoring it.
    if let Some((name, _)) = pairs.iter().find(|(_, value)| value.is_empty()) {
        return Err(ApiError::bad_request(
            ProblemCode::InvalidQuery,
            format!("`{name}` has no value; give one or leave it out."),
        ));
    }
    Ok((params, pairs))
}

pub fn parse_types(names: &[String]) -> Result<Vec<RunType>, ApiError> {
    names
        .iter()
        .map(|name| {
            RunType::resolve(name)
                .map_err(|e| ApiError::bad_request(ProblemCode::InvalidQuery, format!("`type`: {e}.")))
        })
        .collect()
}

pub fn parse_outcomes(names: &[String]) -> Result<Vec<Outcome>, ApiError> {
    names
        .iter()
        .map(|name| {
            Outcome::parse(name).ok_or_else(|| {
                ApiError::bad_request(
                    ProblemCode::InvalidQuery,
                    format!("`outcome`: `{name}` is not one of {}.", one_of(Outcome::ALL.map(Outcome::as_str))),
                )
            })
        })
        .collect()
}

pub fn parse_status(name: Option<&str>) -> Result<Option<StatusFilter>, ApiError> {
    name.map(|name| {
        StatusFilter::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                ProblemCode::InvalidQuery,
                format!("`status`: `{name}` is not one of {}.", one_of(StatusFilter::names())),
            )
        })
    })
    .transpose()
}

/// Ids in filters are positive; anything else is a mistake worth saying so.
pub fn positive_id(parameter: &str, value: Option<i64>) -> Result<Option<i64>, ApiError> {
    match value {
        Some(id) if id < 1 => Err(ApiError::bad_request(
            ProblemCode::InvalidQuery,
            format!("`{parameter}`: {id} is not an id; ids are positive integers."),
        )),
        other => Ok(other),
    }
}

/// `after`, an event id to read past: the timeline's and the stream's cursor.
pub fn event_cursor(after: Option<i64>) -> Result<Option<i64>, ApiError> {
    match after {
        Some(after) if after < 0 => Err(ApiError::bad_request(
            ProblemCode::InvalidQuery,
            format!(
                "`after`: {after} is not an event id; pass the `id` of the last event you hold (0 for all of them)."
            ),
        )),
        after => Ok(after),
    }
}

pub fn parse_time(parameter: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                ApiError::bad_request(
                    ProblemCode::InvalidQuery,
                    format!("`{parameter}`: `{text}` is not an RFC 3339 timestamp such as 2026-01-31T10:00:00Z."),
                )
            })
        })
        .transpose()
}

/// The query over what the caller may see: their workspace, their tenants (and
/// workspace-scoped runs), and the types they may view, narrowed to `requested`.
pub fn visible_query(principal: &Principal, requested: &[RunType]) -> RunQuery {
    let mut query = RunQuery::new(principal.workspace_id, principal.viewable_types(requested));
    query.visible_tenants = match &principal.tenants {
        TenantScope::All => None,
        TenantScope::Only(ids) => Some(ids.iter().copied().collect()),
    };
    query
}

/// One page as a list request asks for it: the rows it reads and how its cursor and
/// `Link` are spelled. Equal keys are answered with one rendered page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageKey {
    query: RunQuery,
    list: ListRequest,
}

/// A page rendered once, served to every request that asked for it at the same moment.
pub struct Page {
    body: SharedBody,
    link: Option<String>,
}

/// The pages of `GET /v1/runs` and the schedules' histories: concurrent identical
/// requests share one statement and one rendering ([`SharedReads`]).
pub type ListPages = SharedReads<PageKey, Page>;

pub fn list_pages() -> ListPages {
    lists::shared_pages(|key: &PageKey| &key.query, render_page)
}

/// Runs one page of `query` and answers with the page, in the coding `request` takes,
/// and its `Link` header.
pub async fn respond_with_page(
    request: &HttpRequest,
    db: &Reader,
    pages: &ListPages,
    mut query: RunQuery,
    list: ListRequest,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<HttpResponse, ApiError> {
    let limit = pagination::limit(limit)?;
    query.after = cursor.map(|c| list.decode_cursor(c)).transpose()?;
    query.limit = limit + 1;
    let key = PageKey { query, list };
    let page = if key.query.types.is_empty() {
        Arc::new(render_page(&key, &mut |_| Ok(()))?)
    } else {
        lists::page(db, pages, key).await?
    };
    let mut response = HttpResponse::Ok();
    response.content_type(ContentType::json());
    if let Some(link) = &page.link {
        response.insert_header((header::LINK, link.as_str()));
    }
    Ok(page.body.respond(request, response))
}

/// The page of the runs `read` hands over: the query's runs, read one past the page size
/// to know whether more follow.
fn render_page(key: &PageKey, read: ReadRuns<'_>) -> QueryResult<Page> {
    let limit = usize::try_from(key.query.limit - 1).unwrap_or(0);
    let mut page = PageWriter::new(limit);
    let mut read_runs = 0;
    let mut last = None;
    read(&mut |run| {
        read_runs += 1;
        if read_runs <= limit {
            page.push(&run);
            last = Some(key.query.position(&run));
        }
    })?;
    let next_cursor = match last {
        Some((at, id)) if read_runs > limit => Some(key.list.encode_cursor(at, id)),
        _ => None,
    };
    let link = next_cursor.as_ref().map(|cursor| key.list.next_link(cursor, limit as i64));
    let body = page.finish(next_cursor.as_deref());
    Ok(Page { body: SharedBody::new(body.into()), link })
}
