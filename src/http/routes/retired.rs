//! The retired per-feature run URLs. They answer 404 (never a redirect), whatever the
//! id, so old bookmarks and scripts fail loudly and reveal nothing.

use actix_web::web;

use crate::http::error::ApiError;

/// Legacy URL prefixes; each also matches everything below it.
const LEGACY_PREFIXES: [&str; 5] = [
    "/admin/t/{tenant}/inventory-sync-runs",
    "/admin/entra-group-sync-runs",
    "/v1/inventory-sync-runs",
    "/v1/entra-group-sync-runs",
    "/v1/backup-schedule-runs",
];

async fn retired() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

pub fn configure(config: &mut web::ServiceConfig) {
    for prefix in LEGACY_PREFIXES {
        config.route(prefix, web::to(retired)).route(&format!("{prefix}/{{rest:.*}}"), web::to(retired));
    }
}
