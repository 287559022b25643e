//! `GET /v1/runs/{id}`, and its long-poll: with `wait` and a current `If-None-Match`, the
//! answer waits for the run to change, woken by the live updates (`crate::live`), never by
//! polling the database.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{ETag, IfNoneMatch};
use actix_web::{get, web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{json, RunView};
use crate::domain::access::Principal;
use crate::domain::ids::RunId;
use crate::http::error::{ApiError, Problem, ProblemCode};
use crate::http::routes::caching::{self, Representation};
use crate::http::routes::reads::{ReadAfterHeader, Reader};
use crate::live::{Hub, StreamFilter, Subscription};
use crate::use_cases::read_run;

/// The longest a long-poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// What a view takes.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ViewParams {
    /// Long-poll: with `If-None-Match` holding the current `ETag`, wait up to this long
    /// (`30s`, `1m`; at most 60s) for the run to change: `200` as soon as it does, `304`
    /// if it does not. Without `If-None-Match` it answers at once.
    #[param(example = "30s")]
    pub wait: Option<String>,
}

fn parse_wait(text: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let refuse = |why: String| ApiError::bad_request(ProblemCode::InvalidQuery, format!("`wait`: {why}."));
    let wait =
        humantime::parse_duration(text).map_err(|_| refuse(format!("`{text}` is not a duration such as 30s")))?;
    if wait > MAX_WAIT {
        return Err(refuse(format!("{text} is longer than the 60s a long-poll may wait")));
    }
    Ok(Some(wait))
}

/// Waits until an event of the subscribed run is published, or `wait` passes, or the
/// instance stops. Whether something happened to the run.
async fn changed(subscription: &mut Subscription, until: tokio::time::Instant) -> bool {
    let received = tokio::select! {
        () = tokio::time::sleep_until(until) => return false,
        _ = subscription.stopping.wait_for(|stopping| *stopping) => return false,
        received = subscription.events.recv() => received,
    };
    // Only this run's events come; a queue dropped for lagging says "read again".
    received.is_some() || subscription.lagged()
}

/// Show a run.
///
/// 404 for a run that does not exist, is in another workspace or belongs to a tenant
/// outside the token (all three answer the same bytes); 403 for a member lacking the
/// type's view capability.
///
/// With `If-None-Match` holding the current `ETag`: `304`, no body; add `wait=30s` to
/// long-poll: the answer comes as soon as the run changes (within milliseconds of the
/// change's commit, on any instance), or `304` when the wait is over.
///
/// **Needs** the type's `view_capability`.
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id"), ViewParams, caching::IfNoneMatchHeader, ReadAfterHeader),
    responses(
        (status = 200, body = RunView, headers(
            ("ETag" = String, description = "Changes exactly when the representation does, e.g. `\"run-42.3\"`")
        )),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current (at the end of `wait`, if given); no body", headers(
            ("ETag" = String, description = "The current tag")
        )),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_query` or `invalid_read_after`"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "`stream_limit_reached` (a long-poll holds a live slot), `service_unavailable` or `request_timeout`"),
    )
)]
#[get("/v1/runs/{id}")]
pub async fn view_run(
    db: Reader,
    hub: web::Data<Arc<Hub>>,
    principal: Principal,
    id: web::Path<i64>,
    params: web::Query<ViewParams>,
    if_none_match: Option<web::Header<IfNoneMatch>>,
) -> Result<HttpResponse, ApiError> {
    let id = RunId(id.into_inner());
    let wait = parse_wait(params.wait.as_deref())?;
    let until = wait.map(|wait| tokio::time::Instant::now() + wait);
    // Subscribed before the first read: a change committed after it cannot be missed.
    let mut subscription = match (until, &if_none_match) {
        (Some(_), Some(_)) => {
            let this_run = StreamFilter { run_id: Some(id), ..StreamFilter::default() };
            Some(hub.subscribe(&principal, &this_run).await?)
        }
        _ => None,
    };
    let mut woken = false;
    loop {
        // Woken by a change: the replica may not hold it yet, the primary does.
        let run = read_run(&db, &principal, id, woken).await?;
        let etag = caching::etag(Representation::Run, &run);
        if !caching::client_has(if_none_match.as_ref(), &etag) {
            let mut response = HttpResponse::Ok();
            response.insert_header(ETag(etag));
            return Ok(json::respond(response, json::run(&run)));
        }
        let (Some(subscription), Some(until)) = (subscription.as_mut(), until) else {
            return Ok(caching::not_modified(etag));
        };
        // A queue the hub dropped wakes no one again.
        if subscription.lagged() {
            return Ok(caching::not_modified(etag));
        }
        // An event of this run may name a change the read above already saw: read again
        // and keep waiting while the client's copy is still current.
        if !changed(subscription, until).await {
            return Ok(caching::not_modified(etag));
        }
        woken = true;
    }
}
