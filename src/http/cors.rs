//! CORS: which browser origins may call the API, what they may send, and which response
//! headers their scripts may read. Configured by `OPSRUN_CORS_ORIGINS`; with no origins
//! the service sends no CORS headers at all. Bearer tokens, not cookies, authenticate,
//! so credentials mode is never enabled.

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{Condition, Next};

use crate::config::CorsOrigins;

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE_SECONDS: usize = 3600;

/// Request headers a page may send besides the CORS-safelisted ones.
const ALLOWED_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "if-none-match",
    "idempotency-key",
    "x-request-id",
    "last-event-id",
    "opsrun-read-after",
];

/// Response headers a page's script may read.
const EXPOSED_HEADERS: [&str; 7] =
    ["link", "location", "x-request-id", "etag", "retry-after", "idempotent-replayed", "opsrun-read-after"];

/// The CORS middleware for these origins; a no-op when there are none.
pub fn middleware(origins: &CorsOrigins) -> Condition<Cors> {
    let cors = match origins {
        CorsOrigins::None => Cors::default(),
        CorsOrigins::Any => Cors::default().allow_any_origin().send_wildcard(),
        CorsOrigins::Exact(list) => list.iter().fold(Cors::default(), |cors, origin| cors.allowed_origin(origin)),
    }
    .allowed_methods([Method::GET, Method::POST])
    .allowed_headers(ALLOWED_HEADERS)
    .expose_headers(EXPOSED_HEADERS)
    .max_age(PREFLIGHT_MAX_AGE_SECONDS)
    // Clients that are not browsers send an Origin too, or none: serve them as usual,
    // without CORS headers; the browser is what enforces the policy.
    .block_on_origin_mismatch(false);
    Condition::new(*origins != CorsOrigins::None, cors)
}

/// A granted preflight answers `204 No Content`: it has no body to speak of (actix-cors
/// answers 200).
pub async fn preflight_without_content(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = next.call(request).await?;
    if preflight
        && response.status() == StatusCode::OK
        && response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        *response.response_mut().status_mut() = StatusCode::NO_CONTENT;
    }
    Ok(response)
}
