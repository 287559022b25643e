//! The HTTP side of idempotent writes (`POST /v1/runs` and the worker moves): reading the
//! `Idempotency-Key` header, turning a response into the answer a use case stores with
//! its effect, and answering a stored answer again (marked `Idempotent-Replayed: true`).

use actix_web::body::MessageBody;
use actix_web::http::header::{self, HeaderName};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use crate::domain::access::Principal;
use crate::domain::status::EventKind;
use crate::http::error::{ApiError, ProblemCode};
use crate::metrics::Metrics;
use crate::use_cases::idempotency::{Answer, Answered, IdempotencyKey, KeyRefusal, KeyedRequest};

/// The `Idempotency-Key` request header, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// Makes the write safe to retry: 1 to 255 visible ASCII characters (a UUID such as
    /// `5f0c1a52-8d4e-4f0b-9a5e-3c1f6f2d7e90` is a good key), unique per request. Retries of the same request with the same key within 24
    /// hours get the first answer again instead of a second effect; the same key on
    /// another request is `422 idempotency_key_reused`; a retry while the first request
    /// is still being processed is `409 idempotency_key_in_flight`.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = r#"^(?:[!#-~](?:[ !#-~]*[!#-~])?|"[ !#-~]+")$"#
    )]
    // No `example`: Swagger UI would pre-fill it, and every "Try it out" would share one key.
    #[allow(dead_code)] // documents the header; handlers read it with `keyed_request`
    idempotency_key: Option<String>,
}

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The keyed request this is, when it carries an `Idempotency-Key`; a malformed key is
/// a 400. `body` is the parsed request body.
pub fn keyed_request(
    request: &HttpRequest,
    principal: &Principal,
    body: &impl Serialize,
) -> Result<Option<KeyedRequest>, ApiError> {
    let Some(value) = request.headers().get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = IdempotencyKey::parse(value.to_str().map_err(|_| KeyRefusal::Malformed)?)?;
    Ok(Some(KeyedRequest::new(principal, key, request.method().as_str(), request.path(), body)))
}

/// What a response carries that a replay must carry again.
pub fn answer(response: HttpResponse) -> Answer {
    let text = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = text(header::CONTENT_TYPE).unwrap_or_else(|| "application/json".into());
    let location = text(header::LOCATION);
    let status = response.status().as_u16();
    let body = response.into_body().try_into_bytes().map(|b| String::from_utf8_lossy(&b).into_owned());
    Answer { status, content_type, location, body: body.unwrap_or_default() }
}

fn respond(answered: Answered) -> HttpResponse {
    let Answered { answer, replayed } = answered;
    let mut response = HttpResponse::build(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK));
    response.insert_header((header::CONTENT_TYPE, answer.content_type));
    if let Some(location) = answer.location {
        response.insert_header((header::LOCATION, location));
    }
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    response.body(answer.body)
}

/// Counts a keyed write's replay or key conflict, and answers it.
pub fn counted(
    metrics: &Metrics,
    kind: EventKind,
    answered: Result<Answered, ApiError>,
) -> Result<HttpResponse, ApiError> {
    match answered {
        Ok(answered) => {
            if answered.replayed {
                metrics.idempotent_replays.with_label_values(&[kind.as_str()]).inc();
            }
            Ok(respond(answered))
        }
        Err(error) => {
            if ProblemCode::IDEMPOTENCY_KEY_CONFLICTS.contains(&error.code()) {
                metrics.idempotency_key_conflicts.with_label_values(&[error.code().as_str()]).inc();
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use crate::use_cases::idempotency::KEY_PATTERN;

    /// The attribute above needs a literal; this keeps it equal to the parser's pattern.
    #[test]
    fn every_write_documents_the_parsers_key_pattern() {
        let document = serde_json::to_value(crate::http::openapi::ApiDoc::openapi()).unwrap();
        let mut writes = 0;
        for (path, item) in document["paths"].as_object().unwrap() {
            let Some(parameters) = item["post"]["parameters"].as_array() else { continue };
            let key = parameters.iter().find(|p| p["name"] == "Idempotency-Key").unwrap_or_else(|| panic!("{path}"));
            assert_eq!(key["schema"]["pattern"], KEY_PATTERN, "{path}");
            writes += 1;
        }
        assert_eq!(writes, 5, "POST /v1/runs and the four worker moves");
    }
}
