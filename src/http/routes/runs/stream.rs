//! `GET /v1/runs/stream`: the timeline events of every run the caller may view, as
//! server-sent events, live, from whichever instance wrote them (`crate::live`).
//!
//! A stream first catches up from the table (after `Last-Event-ID` or `after`), then
//! follows the hub; the hub's watermark, read after subscribing, is where one ends and
//! the other begins, and ids at or below the last one sent are skipped, so a resumed
//! stream has no gap and no duplicate.

use crate::http::routes::links;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{get, web, HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::RunEventView;
use crate::db::announced::{AnnouncedEvent, CatchUp};
use crate::db::replica::Reads;
use crate::db::JsonText;
use crate::domain::access::Principal;
use crate::domain::catalog::RunType;
use crate::domain::ids::{RunId, TenantId};
use crate::domain::status::{Outcome, RunStatus};
use crate::http::auth::principal_from_header_or_query;
use crate::http::error::{ApiError, Problem, ProblemCode};
use crate::http::routes::listing::{event_cursor, parse_query, parse_types, positive_id};
use crate::live::{self, Hub, StreamFilter, Subscription};
use crate::metrics::Metrics;

/// Events read from the table per catch-up query.
const CATCH_UP_PAGE: i64 = 500;
/// What `EventSource` waits before reconnecting after the stream ends.
const RECONNECT_MS: u32 = 2000;

/// Filters of the stream, as on the list; `after` or `Last-Event-ID` resumes it.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Only these types (repeatable).
    #[serde(default)]
    #[param(value_type = Option<Vec<RunType>>, style = Form, explode)]
    pub r#type: Vec<String>,
    #[param(minimum = 1)]
    pub tenant_id: Option<i64>,
    #[param(minimum = 1)]
    pub backup_schedule_id: Option<i64>,
    /// Only this run's events.
    #[param(minimum = 1)]
    pub run_id: Option<i64>,
    /// Send the events after this event id first (as `Last-Event-ID` does, which wins
    /// when both are given); without either, the stream starts with the next event.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// The token, for a browser's `EventSource`, which cannot send `Authorization`.
    /// Prefer the header wherever you can: a URL is easier to leak than a header.
    pub access_token: Option<String>,
}

/// `Last-Event-ID`, for the OpenAPI document.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct LastEventIdHeader {
    /// The `id` of the last event received; `EventSource` sends it when it reconnects.
    #[param(rename = "Last-Event-ID", nullable = false)]
    #[allow(dead_code)] // documents the header; the handler reads it from the request
    last_event_id: Option<String>,
}

/// The run an event belongs to, as it stood when the event was sent (at least as new
/// as the event: its status may already be past the event's `to_status`).
#[derive(Serialize, ToSchema)]
pub struct StreamedRun {
    #[schema(value_type = i64, example = 42)]
    pub id: RunId,
    pub r#type: RunType,
    #[schema(value_type = Option<i64>, required = true, example = 7)]
    pub tenant_id: Option<TenantId>,
    pub status: RunStatus,
    pub outcome: Outcome,
    #[schema(schema_with = crate::http::routes::schemas::counts_schema)]
    pub summary_counts: JsonText,
    #[schema(example = "/v1/runs/42")]
    pub url: String,
}

/// The `data` of one server-sent event: `id:` is `event.id`, `event:` is `event.kind`.
#[derive(Serialize, ToSchema)]
pub struct RunStreamEvent {
    pub event: RunEventView,
    pub run: StreamedRun,
}

/// The `data` of the `closing` event sent before the server ends a stream.
#[derive(Serialize, ToSchema)]
pub struct StreamClosing {
    /// `token_expired`: reconnect with a fresh token and `after` set to the last id;
    /// `shutdown`: the instance is stopping; reconnect (`EventSource` does) to another.
    #[schema(example = "token_expired")]
    pub reason: &'static str,
    #[schema(example = 1234)]
    pub last_event_id: i64,
}

/// One event as a stream sends it.
fn render(event: &AnnouncedEvent) -> Bytes {
    let (event, run) = event.clone();
    let data = RunStreamEvent {
        run: StreamedRun {
            url: links::run(run.id),
            id: run.id,
            r#type: run.run_type,
            tenant_id: run.tenant_id,
            status: run.status,
            outcome: run.outcome,
            summary_counts: run.summary_counts,
        },
        event: RunEventView::from(event),
    };
    let json = serde_json::to_string(&data).expect("a stream event serializes");
    Bytes::from(format!("id: {}\nevent: {}\ndata: {json}\n\n", data.event.id, data.event.kind.as_str()))
}

fn closing(reason: &'static str, last_event_id: i64) -> Bytes {
    let json = serde_json::to_string(&StreamClosing { reason, last_event_id }).expect("serializes");
    Bytes::from(format!("event: closing\ndata: {json}\n\n"))
}

/// Where a stream resumes: `Last-Event-ID` (what `EventSource` sends on reconnect), else
/// `after`, else nowhere (live only).
fn resume_point(request: &HttpRequest, after: Option<i64>) -> Result<Option<i64>, ApiError> {
    let header = request.headers().get("last-event-id").map(|value| {
        value.to_str().ok().and_then(|text| text.trim().parse::<i64>().ok()).filter(|id| *id >= 0).ok_or_else(|| {
            ApiError::bad_request(
                ProblemCode::BadRequest,
                "`Last-Event-ID` must be the `id` of an event this stream sent (a non-negative integer).",
            )
        })
    });
    match header.transpose()? {
        Some(id) => Ok(Some(id)),
        None => event_cursor(after),
    }
}

/// A stream in progress.
struct Streaming {
    reads: web::Data<Reads>,
    metrics: web::Data<Metrics>,
    principal: Principal,
    filter: StreamFilter,
    catch_up: CatchUp,
    subscription: Subscription,
    /// The highest event id this stream has passed (sent, or skipped by its filter).
    cursor: i64,
    /// Still catching up from the table, through this id.
    catching_up_through: Option<i64>,
    ready: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    token_expires: tokio::time::Instant,
    finished: bool,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // Dropped by the server with events still queued for it: its client stopped
        // reading and the kernel gave up on the connection
        // (`LiveConfig::stalled_client_timeout`). The hub counts the ones it drops itself.
        if !self.finished && !self.subscription.lagged() && !self.subscription.events.is_empty() {
            self.metrics.streams_dropped_slow.inc();
        }
    }
}

impl Streaming {
    /// The next bytes to send, or `None` when the stream is over.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Streaming)> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some((Ok(frame), self));
            }
            if self.finished {
                return None;
            }
            match self.catching_up_through {
                Some(through) => self.catch_up_page(through).await,
                None => self.follow().await,
            }
        }
    }

    async fn catch_up_page(&mut self, through: i64) {
        // The replica serves the events it is known to hold, the primary the rest.
        let target = self.reads.target(None);
        let (db, upto) = match target.replica_holds {
            Some(holds) if holds.watermark > self.cursor => (target.db, through.min(holds.watermark)),
            _ => (self.reads.primary().clone(), through),
        };
        let (workspace, after, wanted) = (self.principal.workspace_id, self.cursor, self.catch_up.clone());
        let page = live::catch_up(&db, workspace, after, upto, wanted, CATCH_UP_PAGE).await;
        let Ok(page) = page else {
            // The client resumes from the last event it received.
            self.finished = true;
            return;
        };
        let read_through_upto = (page.len() as i64) < CATCH_UP_PAGE;
        for event in &page {
            self.cursor = event.0.id;
            if self.filter.admits(&self.principal, event) {
                self.ready.push_back(render(event));
                self.metrics.stream_events_delivered.inc();
            }
        }
        if read_through_upto {
            self.cursor = self.cursor.max(upto);
            if upto == through {
                self.catching_up_through = None;
            }
        }
    }

    async fn follow(&mut self) {
        tokio::select! {
            biased;
            _ = self.subscription.stopping.wait_for(|stopping| *stopping) => {
                self.ready.push_back(closing("shutdown", self.cursor));
                self.finished = true;
            }
            () = tokio::time::sleep_until(self.token_expires) => {
                self.ready.push_back(closing("token_expired", self.cursor));
                self.finished = true;
            }
            // The hub sends only what this stream's filter admits.
            received = self.subscription.events.recv() => match received {
                Some(event) if event.id() > self.cursor => {
                    self.cursor = event.id();
                    self.ready.push_back(event.frame(render));
                    self.metrics.stream_events_delivered.inc();
                }
                Some(_already_sent) => {}
                // Dropped by the hub for falling behind (counted there), or stopping.
                None => self.finished = true,
            },
            _ = self.heartbeat.tick() => self.ready.push_back(Bytes::from_static(b": heartbeat\n\n")),
        }
    }
}

/// Follow run events live (server-sent events).
///
/// A `text/event-stream` of the timeline events of every run the caller may view (the
/// same rules as everywhere: no run outside the token's workspace and tenants, none of a
/// type whose `view_capability` it lacks), filtered as below. Each event has `id:` (the
/// event id), `event:` (its kind: `created`, `started`, `progressed`, `completed`,
/// `cancelled`, `reaped`) and `data:` (a `RunStreamEvent`). Events arrive in id order,
/// from whichever instance wrote them. A comment line every 15 s keeps proxies from
/// closing an idle stream.
///
/// Resume with `Last-Event-ID` (as `EventSource` does) or `after`: the missed events
/// come first, then live ones, with no gap and no duplicate. Before ending a stream the
/// server sends a `closing` event (`token_expired`, `shutdown`). A client too slow to
/// read is disconnected and resumes like any other.
///
/// **Needs** a token (the `Authorization` header, or `access_token` for `EventSource`);
/// each type's runs appear only with its `view_capability`.
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    params(StreamParams, LastEventIdHeader),
    responses(
        (status = 200, description = "The stream: `id:`, `event:` and `data:` lines per event", content_type = "text/event-stream", body = RunStreamEvent),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_query` or `bad_request` (a `Last-Event-ID` that is not an event id)"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "`stream_limit_reached`: this instance holds `OPSRUN_MAX_STREAMS` streams and waits; or `service_unavailable`"),
    )
)]
#[get("/v1/runs/stream")]
pub async fn stream_runs(
    reads: web::Data<Reads>,
    hub: web::Data<std::sync::Arc<Hub>>,
    metrics: web::Data<Metrics>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (params, _): (StreamParams, _) = parse_query(&request)?;
    let principal = principal_from_header_or_query(&request, params.access_token.as_deref())?;
    let filter = StreamFilter {
        types: parse_types(&params.r#type)?,
        tenant_id: positive_id("tenant_id", params.tenant_id)?.map(TenantId),
        backup_schedule_id: positive_id("backup_schedule_id", params.backup_schedule_id)?,
        run_id: positive_id("run_id", params.run_id)?.map(RunId),
    };
    let resume = resume_point(&request, params.after)?;
    // HEAD: the headers only. A stream body is never polled then, so it would hold its
    // slot for as long as the connection stays open.
    if request.extensions().get::<crate::http::routes::HeadRequest>().is_some() {
        return Ok(event_stream_response().finish());
    }
    let subscription = hub.subscribe(&principal, &filter).await?;
    // Everything through `released` is in the table; everything after it will come
    // through the subscription, which already exists.
    let released = subscription.released();
    let (cursor, catching_up_through) = match resume {
        Some(after) if after < released => (after, Some(released)),
        Some(after) => (after, None),
        None => (released, None),
    };
    let token_left = principal.valid_until.saturating_sub(Utc::now().timestamp()).max(0) as u64;
    // A year stands for "never", and keeps the sum from overflowing.
    let token_expires = tokio::time::Instant::now() + Duration::from_secs(token_left.min(86_400 * 365));
    let heartbeat = {
        let period = hub.config.heartbeat;
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    };
    let streaming = Streaming {
        reads,
        catch_up: filter.catch_up(&principal),
        metrics,
        principal,
        filter,
        subscription,
        cursor,
        catching_up_through,
        ready: VecDeque::from([Bytes::from(format!("retry: {RECONNECT_MS}\n\n"))]),
        heartbeat,
        token_expires,
        finished: false,
    };
    Ok(event_stream_response().streaming(futures_util::stream::unfold(streaming, Streaming::next)))
}

fn event_stream_response() -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        // Nothing to cache, and the URL may hold a token.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Compression would hold events back until a block fills.
        .insert_header((header::CONTENT_ENCODING, "identity"))
        // nginx and similar proxies: pass events on as they come.
        .insert_header(("X-Accel-Buffering", "no"));
    response
}
