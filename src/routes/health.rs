//! Liveness and readiness probes; neither needs a token.

use actix_web::{get, web, HttpResponse};
use diesel::sql_types::Bool;
use diesel::{sql_query, QueryableByName, RunQueryDsl};
use serde_json::json;

use crate::db::replica::Reads;
use crate::db::DbError;
use crate::error::ApiError;

/// Liveness: the process serves HTTP.
#[utoipa::path(tag = "operations", responses((status = 200, description = "The process is alive", example = json!({"status": "ok"}))))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

#[derive(QueryableByName)]
struct Recovery {
    #[diesel(sql_type = Bool)]
    in_recovery: bool,
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
        (status = 503, description = "`service_unavailable`: the primary is unavailable or is not taking writes", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(reads: web::Data<Reads>) -> Result<HttpResponse, ApiError> {
    reads
        .primary()
        .run(|conn| {
            let server: Recovery = sql_query("SELECT pg_is_in_recovery() AS in_recovery").get_result(conn)?;
            if server.in_recovery {
                // Read-only: the same answer, and the same retiring, as a write refused there.
                return Err(DbError::from(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ReadOnlyTransaction,
                    Box::new("the server is a standby".to_owned()),
                )));
            }
            Ok(())
        })
        .await?;
    let mut ready = json!({ "status": "ready" });
    if let Some(replica) = reads.replica() {
        ready["replica"] = json!({
            "used": replica.fresh().is_some(),
            "lag_ms": replica.lag().map(|lag| lag.as_millis() as u64),
        });
    }
    Ok(HttpResponse::Ok().json(ready))
}
