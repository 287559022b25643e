//! Liveness and readiness probes; neither needs a token.

use actix_web::{get, web, HttpResponse};
use diesel::{sql_query, RunQueryDsl};
use serde_json::json;

use crate::db::{Database, DbError};
use crate::error::ApiError;

/// Liveness: the process serves HTTP.
#[utoipa::path(tag = "operations", responses((status = 200, description = "The process is alive", example = json!({"status": "ok"}))))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the database answers.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", example = json!({"status": "ready"})),
        (status = 503, description = "The database is unavailable", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(db: web::Data<Database>) -> Result<HttpResponse, ApiError> {
    db.run(|conn| sql_query("SELECT 1").execute(conn).map_err(DbError::from)).await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
