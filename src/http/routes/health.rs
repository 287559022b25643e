//! Liveness and readiness probes; neither needs a token.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::db::replica::Reads;
use crate::http::error::ApiError;
use crate::use_cases::health::primary_ready;

/// Liveness: the process serves HTTP.
#[utoipa::path(tag = "operations", responses((status = 200, description = "The process is alive", example = json!({"status": "ok"}))))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the primary answers and takes writes.
///
/// A server in recovery is a standby (during a failover, a connection may still reach
/// the old primary): not ready, and that connection is retired. With a read replica,
/// `replica` tells whether reads use it now and how far behind it is known to be; a
/// lagging or missing replica does not make the instance unready, since reads then go
/// to the primary.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", example = json!({"status": "ready", "replica": {"used": true, "lag_ms": 40}})),
        (status = 503, description = "`service_unavailable`: the primary is unavailable or is not taking writes", body = crate::http::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(reads: web::Data<Reads>) -> Result<HttpResponse, ApiError> {
    primary_ready(&reads).await?;
    let mut ready = json!({ "status": "ready" });
    if let Some(replica) = reads.replica() {
        ready["replica"] = json!({
            "used": replica.fresh().is_some(),
            "lag_ms": replica.lag().map(|lag| lag.as_millis() as u64),
        });
    }
    Ok(HttpResponse::Ok().json(ready))
}
