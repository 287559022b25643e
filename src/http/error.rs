//! The service's one error type and its RFC 9457 `application/problem+json` rendering.
//!
//! Layers below HTTP return their own errors (`DbError` from `db/`, the use cases' and
//! the domain's refusals); they become an `ApiError` at the edge, and only this module
//! (through `ProblemCode`) decides status codes and bodies. 5xx answers log the cause
//! and tell the client nothing internal.

use crate::live::SubscribeError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::DbError;
use crate::domain::access::MissingCapability;
use crate::domain::catalog::RunType;
use crate::domain::identity::IdentityPolicy;
use crate::domain::ids::RunId;
use crate::domain::named_enum;
use crate::http::startup::MAX_BODY_BYTES;

/// How long a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "2";

named_enum! {
    /// Every stable problem code the service answers with; each comes with one status.
    // README's table of codes is checked against this list by a test.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum ProblemCode {
        MalformedJson = "malformed_json",
        UnreadableBody = "unreadable_body",
        BadRequest = "bad_request",
        InvalidQuery = "invalid_query",
        InvalidLimit = "invalid_limit",
        InvalidCursor = "invalid_cursor",
        CursorFilterMismatch = "cursor_filter_mismatch",
        InvalidIdempotencyKey = "invalid_idempotency_key",
        InvalidReadAfter = "invalid_read_after",
        Unauthenticated = "unauthenticated",
        Forbidden = "forbidden",
        NotFound = "not_found",
        TenantNotFound = "tenant_not_found",
        RouteNotFound = "route_not_found",
        MethodNotAllowed = "method_not_allowed",
        NotAcceptable = "not_acceptable",
        DuplicateRun = "duplicate_run",
        InvalidTransition = "invalid_transition",
        IdempotencyKeyInFlight = "idempotency_key_in_flight",
        PayloadTooLarge = "payload_too_large",
        UnsupportedMediaType = "unsupported_media_type",
        InvalidBody = "invalid_body",
        UnknownType = "unknown_type",
        LegacyType = "legacy_type",
        TenantRequired = "tenant_required",
        TenantNotAllowed = "tenant_not_allowed",
        InvalidTenant = "invalid_tenant",
        MissingInput = "missing_input",
        UnknownInput = "unknown_input",
        InvalidInput = "invalid_input",
        InvalidContext = "invalid_context",
        SecretInContext = "secret_in_context",
        ContextTooLarge = "context_too_large",
        ContextTooDeep = "context_too_deep",
        ContextConflictsWithInput = "context_conflicts_with_input",
        InvalidCounts = "invalid_counts",
        InvalidFailure = "invalid_failure",
        IdempotencyKeyReused = "idempotency_key_reused",
        InternalError = "internal_error",
        ServiceUnavailable = "service_unavailable",
        RequestTimeout = "request_timeout",
        StreamLimitReached = "stream_limit_reached",
    }
}

impl ProblemCode {
    /// The refusals of a request whose `Idempotency-Key` collides with another request's.
    pub const IDEMPOTENCY_KEY_CONFLICTS: [ProblemCode; 2] =
        [ProblemCode::IdempotencyKeyInFlight, ProblemCode::IdempotencyKeyReused];

    /// The HTTP status every answer with this code has.
    pub fn status(self) -> StatusCode {
        use ProblemCode::*;
        match self {
            MalformedJson
            | UnreadableBody
            | BadRequest
            | InvalidQuery
            | InvalidLimit
            | InvalidCursor
            | CursorFilterMismatch
            | InvalidIdempotencyKey
            | InvalidReadAfter => StatusCode::BAD_REQUEST,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound | TenantNotFound | RouteNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            DuplicateRun | InvalidTransition | IdempotencyKeyInFlight => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidBody
            | UnknownType
            | LegacyType
            | TenantRequired
            | TenantNotAllowed
            | InvalidTenant
            | MissingInput
            | UnknownInput
            | InvalidInput
            | InvalidContext
            | SecretInContext
            | ContextTooLarge
            | ContextTooDeep
            | ContextConflictsWithInput
            | InvalidCounts
            | InvalidFailure
            | IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ServiceUnavailable | RequestTimeout | StreamLimitReached => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    pub code: ProblemCode,
    /// For `duplicate_run`: the run that holds the identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = 42)]
    pub existing_run_id: Option<i64>,
    /// The request's id, as in the `X-Request-Id` response header; quote it when asking
    /// about a failed request.
    // Always sent: the request-id middleware writes it into every problem body.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = true, example = "8f14e45fceea167a5a36dedd4bea2543")]
    pub request_id: Option<String>,
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
    #[error(transparent)]
    Forbidden(MissingCapability),
    /// A client mistake in the request (400), its meaning (422) or its timing (409); the
    /// code says which.
    #[error("{detail}")]
    Refused { code: ProblemCode, detail: String },
    #[error("the request body is larger than {} KiB", MAX_BODY_BYTES / 1024)]
    PayloadTooLarge,
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("no content coding the client accepts")]
    NotAcceptable,
    #[error("{detail}")]
    DuplicateRun { existing_run_id: RunId, detail: String },
    #[error("{0}")]
    InvalidTransition(String),
    #[error("the database is unavailable")]
    Unavailable,
    #[error("the request took too long")]
    RequestTimeout,
    /// This instance holds as many live streams and waits as it may.
    #[error("this instance holds its {max} live streams already")]
    StreamLimitReached { max: usize },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400: the request itself is wrong (query, cursor, JSON syntax).
    pub fn bad_request(code: ProblemCode, detail: impl Into<String>) -> ApiError {
        debug_assert_eq!(code.status(), StatusCode::BAD_REQUEST, "{code}");
        ApiError::Refused { code, detail: detail.into() }
    }

    /// A 422: the request is well formed but asks for something the rules refuse.
    pub fn unprocessable(code: ProblemCode, detail: impl Into<String>) -> ApiError {
        debug_assert_eq!(code.status(), StatusCode::UNPROCESSABLE_ENTITY, "{code}");
        ApiError::Refused { code, detail: detail.into() }
    }

    /// A 409 that is not about a run: the request collides with another one.
    pub fn conflict(code: ProblemCode, detail: impl Into<String>) -> ApiError {
        debug_assert_eq!(code.status(), StatusCode::CONFLICT, "{code}");
        ApiError::Refused { code, detail: detail.into() }
    }

    /// A query string that does not parse into the route's filters.
    pub fn invalid_query(cause: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request(ProblemCode::InvalidQuery, format!("The query string is not valid: {cause}."))
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(cause.into())
    }

    /// A start refused because `existing_run_id` holds the identity.
    pub fn duplicate_run(run_type: RunType, policy: IdentityPolicy, existing_run_id: RunId) -> ApiError {
        let held = match policy {
            IdentityPolicy::StrictOnce => "has already run (this identity runs at most once)",
            _ => "is already queued or running",
        };
        ApiError::DuplicateRun {
            existing_run_id,
            detail: format!("Another {run_type} run with this identity {held}: run {existing_run_id}."),
        }
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> ProblemCode {
        match self {
            ApiError::Unauthenticated(_) => ProblemCode::Unauthenticated,
            ApiError::NotFound => ProblemCode::NotFound,
            ApiError::RouteNotFound => ProblemCode::RouteNotFound,
            ApiError::TenantNotFound => ProblemCode::TenantNotFound,
            ApiError::MethodNotAllowed { .. } => ProblemCode::MethodNotAllowed,
            ApiError::Forbidden(_) => ProblemCode::Forbidden,
            ApiError::Refused { code, .. } => *code,
            ApiError::PayloadTooLarge => ProblemCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ProblemCode::UnsupportedMediaType,
            ApiError::NotAcceptable => ProblemCode::NotAcceptable,
            ApiError::DuplicateRun { .. } => ProblemCode::DuplicateRun,
            ApiError::InvalidTransition(_) => ProblemCode::InvalidTransition,
            ApiError::Unavailable => ProblemCode::ServiceUnavailable,
            ApiError::RequestTimeout => ProblemCode::RequestTimeout,
            ApiError::StreamLimitReached { .. } => ProblemCode::StreamLimitReached,
            ApiError::Internal(_) => ProblemCode::InternalError,
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
            ApiError::Forbidden(MissingCapability { needs }) => {
                format!("Your token lacks the capability `{needs}` that this action needs.")
            }
            ApiError::PayloadTooLarge => {
                format!("The request body is larger than {} KiB; send less.", MAX_BODY_BYTES / 1024)
            }
            ApiError::UnsupportedMediaType => {
                "The request body must be JSON: send `Content-Type: application/json`.".into()
            }
            ApiError::NotAcceptable => {
                "Answers are sent as-is, with gzip or with brotli; accept one of them in `Accept-Encoding`.".into()
            }
            ApiError::Unavailable => "The database is unavailable right now; retry after the Retry-After delay.".into(),
            ApiError::RequestTimeout => {
                "The request took longer than this service allows; retry after the Retry-After delay.".into()
            }
            ApiError::StreamLimitReached { max } => format!(
                "This instance already holds its {max} live streams and waits; retry after the Retry-After delay \
                 (another instance may have room)."
            ),
            ApiError::Internal(_) => "Something went wrong on our side; it has been logged.".into(),
            other => capitalize_sentence(&other.to_string()),
        }
    }

    pub(crate) fn problem(&self) -> Problem {
        let status = self.status_code();
        Problem {
            r#type: format!("urn:opsrun:problem:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code(),
            existing_run_id: match self {
                ApiError::DuplicateRun { existing_run_id, .. } => Some(existing_run_id.get()),
                _ => None,
            },
            // The request-id middleware fills it in: it knows the id, this does not.
            request_id: None,
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
        self.code().status()
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
                response.insert_header((header::LOCATION, crate::http::routes::links::run(existing_run_id)));
            }
            ApiError::Unavailable
            | ApiError::RequestTimeout
            | ApiError::StreamLimitReached { .. }
            | ApiError::Refused { code: ProblemCode::IdempotencyKeyInFlight, .. } => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        let body = serde_json::to_string(&self.problem())
            .expect("a Problem always serializes: it holds only strings and integers");
        response.body(body)
    }
}

impl From<SubscribeError> for ApiError {
    fn from(refusal: SubscribeError) -> ApiError {
        match refusal {
            SubscribeError::Full { max } => ApiError::StreamLimitReached { max },
            // The client retries, here once the listener connects, or on another instance.
            SubscribeError::Stopping | SubscribeError::NotCaughtUp => ApiError::Unavailable,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> ApiError {
        match error {
            DbError::Unavailable => ApiError::Unavailable,
            DbError::Timeout => ApiError::RequestTimeout,
            DbError::Query(cause) => ApiError::Internal(cause.into()),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> ApiError {
        DbError::from(error).into()
    }
}

/// Refusals of the domain and use-case layers, each with its own code.
mod refusals {
    use actix_web::error::JsonPayloadError;

    use super::{ApiError, ProblemCode};
    use crate::domain::catalog::TypeNameError;
    use crate::domain::context::ContextError;
    use crate::domain::inputs::InputError;
    use crate::use_cases::idempotency::{KeyConflict, KeyRefusal, KeyedError};
    use crate::use_cases::moves::ReportRefusal;
    use crate::use_cases::start::StartRefusal;
    use crate::use_cases::RunError;

    impl From<TypeNameError> for ApiError {
        fn from(error: TypeNameError) -> ApiError {
            let code = match error {
                TypeNameError::Legacy { .. } => ProblemCode::LegacyType,
                TypeNameError::Unknown(_) => ProblemCode::UnknownType,
            };
            ApiError::unprocessable(code, error.to_string())
        }
    }

    impl From<InputError> for ApiError {
        fn from(error: InputError) -> ApiError {
            let code = match error {
                InputError::Missing { .. } => ProblemCode::MissingInput,
                InputError::Unknown { .. } => ProblemCode::UnknownInput,
                InputError::Invalid { .. } | InputError::ScheduledForWithoutSchedule => ProblemCode::InvalidInput,
            };
            ApiError::unprocessable(code, error.to_string())
        }
    }

    impl From<ContextError> for ApiError {
        fn from(error: ContextError) -> ApiError {
            let code = match error {
                ContextError::NotAnObject | ContextError::NulCharacter => ProblemCode::InvalidContext,
                ContextError::TooLarge(_) => ProblemCode::ContextTooLarge,
                ContextError::TooDeep => ProblemCode::ContextTooDeep,
                ContextError::SecretKey(_) => ProblemCode::SecretInContext,
            };
            ApiError::unprocessable(code, error.to_string())
        }
    }

    impl From<StartRefusal> for ApiError {
        fn from(refusal: StartRefusal) -> ApiError {
            let code = match refusal {
                StartRefusal::Type(error) => return error.into(),
                StartRefusal::Input(error) => return error.into(),
                StartRefusal::Context(error) => return error.into(),
                StartRefusal::TenantNotFound => return ApiError::TenantNotFound,
                StartRefusal::Forbidden(missing) => return ApiError::Forbidden(missing),
                StartRefusal::NoRandomness(_) => return ApiError::internal(refusal),
                StartRefusal::TenantRequired(_) => ProblemCode::TenantRequired,
                StartRefusal::TenantNotAllowed(_) => ProblemCode::TenantNotAllowed,
                StartRefusal::InvalidTenant => ProblemCode::InvalidTenant,
                StartRefusal::ContextConflictsWithInput(_) => ProblemCode::ContextConflictsWithInput,
            };
            ApiError::unprocessable(code, refusal.to_string())
        }
    }

    impl From<ReportRefusal> for ApiError {
        fn from(refusal: ReportRefusal) -> ApiError {
            let code = match refusal {
                ReportRefusal::Counts(_) => ProblemCode::InvalidCounts,
                ReportRefusal::Failure(_) | ReportRefusal::TooManyFailures(_) => ProblemCode::InvalidFailure,
            };
            ApiError::unprocessable(code, refusal.to_string())
        }
    }

    /// A JSON body actix-web could not hand to the handler.
    impl From<JsonPayloadError> for ApiError {
        fn from(error: JsonPayloadError) -> ApiError {
            match error {
                JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
                JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                    ApiError::PayloadTooLarge
                }
                JsonPayloadError::Deserialize(cause) if cause.is_data() => ApiError::unprocessable(
                    ProblemCode::InvalidBody,
                    format!("The request body does not have the expected shape: {cause}."),
                ),
                JsonPayloadError::Deserialize(cause) => ApiError::bad_request(
                    ProblemCode::MalformedJson,
                    format!("The request body is not valid JSON: {cause}."),
                ),
                other => ApiError::bad_request(
                    ProblemCode::UnreadableBody,
                    format!("The request body could not be read: {other}."),
                ),
            }
        }
    }

    impl From<KeyRefusal> for ApiError {
        fn from(refusal: KeyRefusal) -> ApiError {
            ApiError::bad_request(ProblemCode::InvalidIdempotencyKey, refusal.to_string())
        }
    }

    impl From<KeyedError> for ApiError {
        fn from(error: KeyedError) -> ApiError {
            match error {
                KeyedError::Key(conflict) => conflict.into(),
                KeyedError::Db(error) => error.into(),
            }
        }
    }

    impl From<KeyConflict> for ApiError {
        fn from(conflict: KeyConflict) -> ApiError {
            match conflict {
                KeyConflict::InFlight => ApiError::conflict(ProblemCode::IdempotencyKeyInFlight, conflict.to_string()),
                KeyConflict::Reused => ApiError::unprocessable(ProblemCode::IdempotencyKeyReused, conflict.to_string()),
            }
        }
    }

    impl From<RunError> for ApiError {
        fn from(error: RunError) -> ApiError {
            match error {
                RunError::NotFound => ApiError::NotFound,
                RunError::Forbidden(missing) => ApiError::Forbidden(missing),
                RunError::Refused { run_id, reason, reaped: true } => ApiError::InvalidTransition(format!(
                    "run {run_id} was reaped as stale (no worker completed it in time) and can no longer change; {reason}"
                )),
                RunError::Refused { .. } | RunError::Contended { .. } => ApiError::InvalidTransition(error.to_string()),
                RunError::Db(error) => error.into(),
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
            ApiError::Forbidden(MissingCapability { needs: "inventory.sync" }),
            ApiError::DuplicateRun { existing_run_id: RunId(4), detail: "dup".into() },
            ApiError::Unavailable,
            ApiError::internal(anyhow::anyhow!("secret internals")),
        ];
        for error in errors {
            let response = error.error_response();
            assert_eq!(response.headers().get(header::CONTENT_TYPE).unwrap(), "application/problem+json");
            let body = response.into_body().try_into_bytes().unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["code"], error.code().as_str());
            assert!(!String::from_utf8_lossy(&body).contains("secret internals"));
        }
    }

    #[test]
    fn problem_codes_serialize_as_their_names() {
        for code in ProblemCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    /// README's table of refusals lists exactly the codes the service can answer with,
    /// each beside its status.
    #[test]
    fn readme_lists_every_problem_code_with_its_status() {
        let readme = include_str!("../../README.md");
        let table = readme.split("| status | codes |").nth(1).expect("README has the table of codes");
        let mut listed = Vec::new();
        for line in table.lines().skip(2).take_while(|line| line.starts_with('|')) {
            let mut cells = line.split('|').skip(1);
            let status: u16 = cells.next().unwrap().trim().parse().expect("a status");
            // Notes in parentheses may quote headers and settings; codes stand outside them.
            let mut codes = String::new();
            let mut depth = 0;
            for c in cells.next().unwrap().chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    c if depth == 0 => codes.push(c),
                    _ => {}
                }
            }
            for code in codes.split('`').skip(1).step_by(2) {
                listed.push((code.to_owned(), status));
            }
        }
        let mut expected: Vec<(String, u16)> =
            ProblemCode::ALL.iter().map(|c| (c.as_str().to_owned(), c.status().as_u16())).collect();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected);
    }
}
