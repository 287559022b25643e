//! `GET /v1/runs/{id}/events`: the run's audit timeline.

use std::sync::Arc;

use actix_web::http::header::{ETag, IfNoneMatch};
use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::db::models::RunEventRow;
use crate::domain::access::Principal;
use crate::domain::ids::RunId;
use crate::domain::status::{EventKind, Outcome, RunStatus};
use crate::http::error::{ApiError, Problem};
use crate::http::routes::caching::{self, Representation};
use crate::http::routes::listing::event_cursor;
use crate::http::routes::reads::{ReadAfterHeader, Reader};
use crate::http::routes::timestamps;
use crate::use_cases::read_timeline;

/// One entry of a run's timeline.
#[derive(Serialize, ToSchema)]
pub struct RunEventView {
    pub id: i64,
    pub kind: EventKind,
    #[serde(serialize_with = "timestamps::serialize")]
    pub at: DateTime<Utc>,
    /// Who made the change: the token's `name`, else its `sub`.
    #[schema(example = "inventory-worker")]
    pub actor: String,
    /// `null` for the `created` entry.
    #[schema(required = true)]
    pub from_status: Option<RunStatus>,
    pub to_status: RunStatus,
    pub outcome: Outcome,
    /// What the move carried (counts, failures, the reaper's reason); an open object.
    #[schema(schema_with = crate::http::routes::schemas::open_object_schema)]
    pub detail: Value,
}

impl From<RunEventRow> for RunEventView {
    fn from(event: RunEventRow) -> RunEventView {
        RunEventView {
            id: event.id,
            kind: event.kind,
            at: event.at,
            actor: event.actor,
            from_status: event.from_status,
            to_status: event.to_status,
            outcome: event.outcome,
            detail: event.detail,
        }
    }
}

/// What a timeline read takes.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// Only events after this event id: pass the last `id` you hold to read what is new.
    #[param(minimum = 0, example = 17)]
    pub after: Option<i64>,
}

/// A run's timeline.
#[derive(Serialize, ToSchema)]
pub struct RunEventList {
    pub items: Vec<RunEventView>,
}

/// Show a run's timeline, oldest first.
///
/// With `after`, only the events after that one: a client that holds the timeline up to
/// event 17 asks `?after=17` for what is new.
///
/// **Needs** the type's `view_capability`. With `If-None-Match` holding the current `ETag`:
/// `304`, no body, and the timeline is not read.
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id"), TimelineParams, caching::IfNoneMatchHeader, ReadAfterHeader),
    responses(
        (status = 200, body = RunEventList, headers(
            ("ETag" = String, description = "Changes exactly when the representation does, e.g. `\"events-42.3\"`")
        )),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current; no body", headers(
            ("ETag" = String, description = "The current tag")
        )),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_query` or `invalid_read_after`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/runs/{id}/events")]
pub async fn list_run_events(
    db: Reader,
    principal: Principal,
    id: web::Path<i64>,
    params: web::Query<TimelineParams>,
    if_none_match: Option<web::Header<IfNoneMatch>>,
) -> Result<HttpResponse, ApiError> {
    let id = RunId(id.into_inner());
    let after = event_cursor(params.after)?.unwrap_or(0);
    let representation = Representation::Timeline { after };
    let held = move |run: &_| caching::client_has(if_none_match.as_ref(), &caching::etag(representation, run));
    let principal = Arc::new(principal);
    let (run, events) = read_timeline(&db, principal, id, after, move |run| !held(run)).await?;
    let etag = caching::etag(representation, &run);
    let Some(events) = events else {
        return Ok(caching::not_modified(etag));
    };
    let items = events.into_iter().map(RunEventView::from).collect();
    Ok(HttpResponse::Ok().insert_header(ETag(etag)).json(RunEventList { items }))
}
