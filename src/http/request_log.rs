//! What happens around every request: a request id (accepted from `X-Request-Id` or
//! made here, and echoed), one log line, request metrics, and the request id written
//! into every problem+json body.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::{self, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use serde_json::Value;

use crate::metrics::Metrics;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// This request's id.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A fresh request id: 16 random bytes in hex.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    // An id is for correlation, not security: without randomness from the OS, the wall
    // clock and a per-process counter still tell requests apart.
    if !RANDOM_BYTES.with_borrow_mut(|store| store.take(&mut bytes)) {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    hex::encode(bytes)
}

thread_local! {
    static RANDOM_BYTES: RefCell<RandomBytes> = const { RefCell::new(RandomBytes { bytes: [0; 4096], used: 4096 }) };
}

/// Randomness from the OS, fetched 4 KiB at a time: one system call per 256 request ids
/// rather than one per request.
struct RandomBytes {
    bytes: [u8; 4096],
    used: usize,
}

impl RandomBytes {
    /// Fills `out` with bytes never handed out before; false if the OS has none to give.
    fn take(&mut self, out: &mut [u8]) -> bool {
        if self.used + out.len() > self.bytes.len() {
            if getrandom::fill(&mut self.bytes).is_err() {
                return false;
            }
            self.used = 0;
        }
        out.copy_from_slice(&self.bytes[self.used..self.used + out.len()]);
        self.used += out.len();
        true
    }
}

/// Marks an answer whose problem body (if any) already carries the request id.
struct Stamped;

/// Rewrites a problem+json body to carry the request id. Only an uncompressed body can
/// be rewritten: [`stamp_problem_bodies`] runs inside `Compress` for that reason, and
/// `observe`, outside, stamps what never reached it (`Compress`'s own 406).
async fn with_request_id(mut response: HttpResponse<BoxBody>, request_id: &str) -> HttpResponse<BoxBody> {
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == b"application/problem+json");
    let encoded = response.headers().contains_key(header::CONTENT_ENCODING);
    if !is_problem || encoded || response.extensions().get::<Stamped>().is_some() {
        return response;
    }
    response.extensions_mut().insert(Stamped);
    let (response, payload) = response.into_parts();
    let Ok(bytes) = body::to_bytes(payload).await else {
        return response.set_body(BoxBody::new(()));
    };
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut problem)) => {
            problem.insert("request_id".into(), Value::from(request_id));
            serde_json::to_vec(&problem).unwrap_or_else(|_| bytes.to_vec())
        }
        _ => bytes.to_vec(),
    };
    response.set_body(BoxBody::new(body))
}

/// Writes the request id (given by `observe`) into problem bodies before `Compress`
/// encodes them.
pub async fn stamp_problem_bodies(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone());
    let (request, response) = next.call(request).await?.map_into_boxed_body().into_parts();
    let response = match request_id {
        Some(id) => with_request_id(response, &id).await,
        None => response,
    };
    Ok(ServiceResponse::new(request, response))
}

/// The middleware itself; see the module header.
pub async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(new_request_id, str::to_owned);
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();

    // Handlers turn their errors into responses; an error here is actix-web's own.
    let (request, response) = next.call(request).await?.map_into_boxed_body().into_parts();
    let mut response = with_request_id(response, &request_id).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }

    let route = request.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status();
    let elapsed = started.elapsed();
    if let Some(metrics) = metrics {
        let labels = [method.as_str(), route.as_str(), status.as_str()];
        metrics.http_requests.with_label_values(&labels).inc();
        metrics.http_request_duration.with_label_values(&labels).observe(elapsed.as_secs_f64());
    }
    tracing::info!(
        target: "opsrun::request",
        method = %method,
        route = %route,
        status = status.as_u16(),
        // Microseconds are plenty, and keep lines short: 0.195, not 0.19495400000000002.
        latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        request_id = %request_id,
        "request"
    );
    Ok(ServiceResponse::new(request, response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn request_ids_are_hex_and_never_repeat_across_refills() {
        // 1,000 ids draw on the per-thread store four times over.
        let ids: Vec<String> = (0..1000).map(|_| new_request_id()).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && acceptable(id)));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    }
}
