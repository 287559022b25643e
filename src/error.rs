//! The service's one error type and its RFC 9457 `application/problem+json` rendering.
//!
//! Layers below HTTP return their own errors (`diesel::result::Error`, domain errors);
//! they become an `ApiError` at the edge, and only this module decides status codes and
//! bodies. 5xx answers log the cause and tell the client nothing internal.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// How long a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "2";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type; its last segment is `code`.
    #[schema(example = "urn:opsrun:problem:duplicate_run")]
    pub r#type: String,
    #[schema(example = "Conflict")]
    pub title: &'static str,
    #[schema(example = 409)]
    pub status: u16,
    /// What went wrong and what to do about it, in a sentence.
    #[schema(example = "An inventory_sync run with this identity is already active: run 42.")]
    pub detail: String,
    /// Stable, machine-readable problem code.
    #[schema(example = "duplicate_run")]
    pub code: &'static str,
    /// For `duplicate_run`: the run that holds the identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 42)]
    pub existing_run_id: Option<i64>,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("no run with this id is visible to you")]
    NotFound,
    #[error("route not found")]
    RouteNotFound,
    #[error("the tenant is not visible to you")]
    TenantNotFound,
    #[error("this route does not take that method")]
    MethodNotAllowed {
        /// The methods it does take, for the `Allow` header.
        allow: String,
    },
    #[error("your token lacks the capability `{needs}`")]
    Forbidden { needs: &'static str },
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("the request body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{detail}")]
    DuplicateRun { existing_run_id: i64, detail: String },
    #[error("{0}")]
    InvalidTransition(String),
    #[error("the database is unavailable")]
    Unavailable,
    #[error("the request took too long")]
    RequestTimeout,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code, detail: detail.into() }
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::Unprocessable { code, detail: detail.into() }
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(cause.into())
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::NotFound => "not_found",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::TenantNotFound => "tenant_not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::BadRequest { code, .. } | ApiError::Unprocessable { code, .. } => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::DuplicateRun { .. } => "duplicate_run",
            ApiError::InvalidTransition(_) => "invalid_transition",
            ApiError::Unavailable => "service_unavailable",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Unauthenticated(reason) => {
                format!("Authentication failed: {reason}. Send `Authorization: Bearer <token>` with a valid token.")
            }
            ApiError::NotFound => "No run with this id is visible to you.".into(),
            ApiError::RouteNotFound => "No such route. The API lives under /v1; see /docs/ for every route.".into(),
            ApiError::TenantNotFound => {
                "No tenant with this id is visible to you; check `tenant_id` and your token's `tenants`.".into()
            }
            ApiError::MethodNotAllowed { allow } => format!("This route accepts only {allow}; see /docs/."),
            ApiError::Forbidden { needs } => {
                format!("Your token lacks the capability `{needs}` that this action needs.")
            }
            ApiError::PayloadTooLarge => "The request body is larger than 64 KiB; send less.".into(),
            ApiError::UnsupportedMediaType => {
                "The request body must be JSON: send `Content-Type: application/json`.".into()
            }
            ApiError::Unavailable => "The database is unavailable right now; retry after the Retry-After delay.".into(),
            ApiError::RequestTimeout => {
                "The request took longer than this service allows; retry after the Retry-After delay.".into()
            }
            ApiError::Internal(_) => "Something went wrong on our side; it has been logged.".into(),
            other => capitalize_sentence(&other.to_string()),
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status_code();
        Problem {
            r#type: format!("urn:opsrun:problem:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code(),
            existing_run_id: match self {
                ApiError::DuplicateRun { existing_run_id, .. } => Some(*existing_run_id),
                _ => None,
            },
        }
    }
}

fn capitalize_sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut sentence: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound | ApiError::RouteNotFound | ApiError::TenantNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::DuplicateRun { .. } | ApiError::InvalidTransition(_) => StatusCode::CONFLICT,
            ApiError::Unavailable | ApiError::RequestTimeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            ApiError::Unavailable => tracing::warn!("database unavailable"),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json")));
        match self {
            ApiError::Unauthenticated(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="opsrun", error="invalid_token""#));
            }
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, allow.clone()));
            }
            ApiError::DuplicateRun { existing_run_id, .. } => {
                response.insert_header((header::LOCATION, format!("/v1/runs/{existing_run_id}")));
            }
            ApiError::Unavailable | ApiError::RequestTimeout => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        let body = serde_json::to_string(&self.problem())
            .expect("a Problem always serializes: it holds only strings and integers");
        response.body(body)
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> ApiError {
        use diesel::result::{DatabaseErrorKind, Error};
        match error {
            Error::NotFound => ApiError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _) => {
                ApiError::Unavailable
            }
            Error::DatabaseError(_, ref info) if is_connection_loss(info.message()) => ApiError::Unavailable,
            // A connection lost mid-transaction leaves diesel's transaction state unknown.
            Error::BrokenTransactionManager => ApiError::Unavailable,
            other => ApiError::Internal(other.into()),
        }
    }
}

/// PostgreSQL going away mid-query surfaces as these messages rather than a distinct kind.
fn is_connection_loss(message: &str) -> bool {
    [
        "terminating connection",
        "server closed the connection",
        "connection to server",
        "the database system is",
        "could not receive data from server",
        "no connection to the server",
        "canceling statement due to statement timeout",
    ]
    .iter()
    .any(|fragment| message.contains(fragment))
}

impl From<diesel::r2d2::PoolError> for ApiError {
    fn from(_: diesel::r2d2::PoolError) -> ApiError {
        ApiError::Unavailable
    }
}

/// Domain refusals become 422s (or 409 for an illegal move), each with its own code.
mod domain_refusals {
    use super::ApiError;
    use crate::domain::catalog::TypeNameError;
    use crate::domain::context::ContextError;
    use crate::domain::counts::CountsError;
    use crate::domain::failures::FailureError;
    use crate::domain::inputs::InputError;
    use crate::domain::status::TransitionError;

    impl From<TypeNameError> for ApiError {
        fn from(error: TypeNameError) -> ApiError {
            let code = match error {
                TypeNameError::Legacy { .. } => "legacy_type",
                TypeNameError::Unknown(_) => "unknown_type",
            };
            ApiError::unprocessable(code, error.to_string())
        }
    }

    impl From<InputError> for ApiError {
        fn from(error: InputError) -> ApiError {
            let code = match error {
                InputError::Missing { .. } => "missing_input",
                InputError::Unknown { .. } => "unknown_input",
                InputError::Invalid { .. } | InputError::ScheduledForWithoutSchedule => "invalid_input",
            };
            ApiError::unprocessable(code, error.to_string())
        }
    }

    impl From<ContextError> for ApiError {
        fn from(error: ContextError) -> ApiError {
            let code = match error {
                ContextError::NotAnObject | ContextError::NulCharacter => "invalid_context",
                ContextError::TooLarge(_) => "context_too_large",
                ContextError::TooDeep => "context_too_deep",
                ContextError::SecretKey(_) => "secret_in_context",
            };
            ApiError::unprocessable(code, error.to_string())
        }
    }

    impl From<CountsError> for ApiError {
        fn from(error: CountsError) -> ApiError {
            ApiError::unprocessable("invalid_counts", error.to_string())
        }
    }

    impl From<FailureError> for ApiError {
        fn from(error: FailureError) -> ApiError {
            ApiError::unprocessable("invalid_failure", error.to_string())
        }
    }

    impl From<TransitionError> for ApiError {
        fn from(error: TransitionError) -> ApiError {
            match error {
                TransitionError::NotAFinalOutcome => ApiError::unprocessable("invalid_outcome", error.to_string()),
                other => ApiError::InvalidTransition(other.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn every_problem_is_problem_json_with_its_code() {
        let errors = [
            ApiError::NotFound,
            ApiError::Forbidden { needs: "inventory.sync" },
            ApiError::DuplicateRun { existing_run_id: 4, detail: "dup".into() },
            ApiError::Unavailable,
            ApiError::internal(anyhow::anyhow!("secret internals")),
        ];
        for error in errors {
            let response = error.error_response();
            assert_eq!(response.headers().get(header::CONTENT_TYPE).unwrap(), "application/problem+json");
            let body = response.into_body().try_into_bytes().unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["code"], error.code());
            assert!(!String::from_utf8_lossy(&body).contains("secret internals"));
        }
    }
}
