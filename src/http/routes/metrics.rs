//! `GET /metrics`: Prometheus text exposition; needs no token.

use std::sync::Arc;

use crate::live::Hub;
use actix_web::{get, web, HttpResponse};

use crate::db::Database;
use crate::http::routes::listing::ListPages;
use crate::metrics::Metrics;
use crate::use_cases::moves::ProgressBatches;
use crate::use_cases::start::KeyedStarts;
use crate::use_cases::start::StartBatches;

/// Prometheus metrics.
///
/// Request counts and latency by route template and status, runs started, duplicate
/// refusals, transitions, reaped runs, the database pool and its batches.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
#[get("/metrics")]
pub async fn export_metrics(
    metrics: web::Data<Metrics>,
    db: web::Data<Database>,
    starts: web::Data<StartBatches>,
    reports: web::Data<ProgressBatches>,
    keyed_starts: web::Data<KeyedStarts>,
    pages: web::Data<ListPages>,
    hub: web::Data<Arc<Hub>>,
) -> HttpResponse {
    let batches = [
        ("view", db.view_batches()),
        ("start", starts.stats()),
        ("keyed_start", keyed_starts.stats()),
        ("progress", reports.stats()),
        ("list", pages.stats()),
    ];
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render(&db, &batches, &hub))
}
