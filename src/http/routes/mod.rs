//! HTTP routes: each handler parses its request, calls one use case and renders the
//! answer. Rules live in `domain` and `use_cases`, SQL in `db`.

pub mod backup_schedules;
pub mod caching;
pub mod documented;
pub mod encoding;
pub mod health;
pub mod idempotent;
pub mod links;
pub mod listing;
pub mod metrics;
pub mod operation_types;
pub mod pagination;
pub mod reads;
pub mod retired;
pub mod runs;
pub mod schemas;
pub mod timestamps;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

/// Registers every route of the service.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(health::healthz)
        .service(health::readyz)
        .service(metrics::export_metrics)
        .service(operation_types::list_operation_types)
        .service(runs::start::start_run)
        .service(runs::list::list_runs)
        // Before `/v1/runs/{id}`, which would take `stream` for an id.
        .service(runs::stream::stream_runs)
        .service(runs::view::view_run)
        .service(runs::events::list_run_events)
        .service(runs::transition::start_run_work)
        .service(runs::transition::report_progress)
        .service(runs::transition::complete_run)
        .service(runs::transition::cancel_run)
        .service(backup_schedules::list_backup_schedule_runs);
    retired::configure(config);
    config.route("/docs", web::get().to(docs_without_slash));
}

/// Swagger UI lives at `/docs/`; its relative asset links need the trailing slash.
async fn docs_without_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/docs/")).finish()
}

/// Marks a HEAD request routed as GET, for handlers whose body never ends.
#[derive(Clone, Copy, Debug)]
pub struct HeadRequest;

/// Every GET route answers HEAD: routed as GET, and actix-web's HTTP codec, which saw the
/// request's real method, sends the headers without the body.
pub async fn head_as_get(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if request.method() == Method::HEAD {
        request.head_mut().method = Method::GET;
        request.extensions_mut().insert(HeadRequest);
    }
    next.call(request).await
}
