//! The refusals in the OpenAPI document: every problem response gets a description and
//! one real example per code it can carry, rendered by the same code that renders the
//! service's answers; every `/v1` operation documents `503` with `Retry-After`; every
//! path says that other methods answer `405`.

use std::collections::BTreeMap;

use actix_web::error::{JsonPayloadError, PayloadError};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, PartialSchema};

use crate::domain::access::MissingCapability;
use crate::domain::catalog::{RunType, TypeNameError};
use crate::domain::context::ContextError;
use crate::domain::counts::CountsError;
use crate::domain::failures::FailureError;
use crate::domain::identity::IdentityPolicy;
use crate::domain::ids::RunId;
use crate::domain::inputs::InputError;
use crate::domain::status::TransitionError;
use crate::http::error::{ApiError, Problem, ProblemCode};
use crate::http::routes::pagination::{self, ListRequest};
use crate::http::routes::runs::start::StartRunRequest;
use crate::live::SubscribeError;
use crate::use_cases::idempotency::{KeyConflict, KeyRefusal};
use crate::use_cases::moves::ReportRefusal;
use crate::use_cases::start::StartRefusal;
use crate::use_cases::RunError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A refusal with this code, built as the service builds it. Exhaustive, so a new code
/// cannot reach the document without an example.
pub fn example(code: ProblemCode) -> ApiError {
    use ProblemCode::*;
    let run_type = RunType::InventorySync;
    let list = ListRequest::new("/v1/runs", Vec::new());
    match code {
        MalformedJson => body_refusal(r#"{"type": "inventory_sync",}"#),
        UnreadableBody => JsonPayloadError::Payload(PayloadError::Incomplete(None)).into(),
        BadRequest => ApiError::bad_request(code, "The request could not be processed; check it against /docs/."),
        InvalidQuery => ApiError::invalid_query("invalid digit found in string"),
        InvalidLimit => pagination::limit(Some(500)).expect_err("500 is over the limit"),
        InvalidCursor => list.decode_cursor("not-a-cursor").expect_err("not a cursor"),
        CursorFilterMismatch => ListRequest::new("/v1/runs", vec![("status".into(), "queued".into())])
            .decode_cursor(&list.encode_cursor(chrono::Utc::now(), 42))
            .expect_err("a cursor of other filters"),
        InvalidIdempotencyKey => KeyRefusal::Empty.into(),
        InvalidReadAfter => crate::http::routes::reads::refuse_read_after(),
        Unauthenticated => ApiError::Unauthenticated("no Authorization header".into()),
        Forbidden => ApiError::Forbidden(MissingCapability { needs: "inventory.sync" }),
        NotFound => ApiError::NotFound,
        TenantNotFound => ApiError::TenantNotFound,
        RouteNotFound => ApiError::RouteNotFound,
        MethodNotAllowed => ApiError::MethodNotAllowed { allow: "GET, HEAD".into() },
        DuplicateRun => ApiError::duplicate_run(run_type, IdentityPolicy::DedupeActive, RunId(42)),
        InvalidTransition => RunError::Refused {
            run_id: RunId(42),
            reason: TransitionError::AlreadyCompleted { outcome: "succeeded" },
            reaped: false,
        }
        .into(),
        IdempotencyKeyInFlight => KeyConflict::InFlight.into(),
        PayloadTooLarge => ApiError::PayloadTooLarge,
        NotAcceptable => ApiError::NotAcceptable,
        UnsupportedMediaType => ApiError::UnsupportedMediaType,
        InvalidBody => body_refusal(r#"{"tenant_id": 7}"#),
        UnknownType => TypeNameError::Unknown("inventory".into()).into(),
        LegacyType => TypeNameError::Legacy { given: "inventory.sync".into(), canonical: run_type }.into(),
        TenantRequired => StartRefusal::TenantRequired(run_type).into(),
        TenantNotAllowed => StartRefusal::TenantNotAllowed(RunType::WorkspaceAuditExport).into(),
        InvalidTenant => StartRefusal::InvalidTenant.into(),
        MissingInput => InputError::Missing { name: "selection_hash", run_type: run_type.as_str() }.into(),
        UnknownInput => InputError::Unknown {
            name: "selection".into(),
            run_type: run_type.as_str(),
            accepted: "`selection_hash`".into(),
        }
        .into(),
        InvalidInput => InputError::Invalid { name: "selection_hash", expected: "a non-blank string" }.into(),
        InvalidContext => StartRefusal::Context(ContextError::NotAnObject).into(),
        SecretInContext => StartRefusal::Context(ContextError::SecretKey("api_token".into())).into(),
        ContextTooLarge => StartRefusal::Context(ContextError::TooLarge(20_480)).into(),
        ContextTooDeep => StartRefusal::Context(ContextError::TooDeep).into(),
        ContextConflictsWithInput => StartRefusal::ContextConflictsWithInput("selection_hash").into(),
        InvalidCounts => ReportRefusal::Counts(CountsError::UnknownKey("files".into())).into(),
        InvalidFailure => ReportRefusal::Failure(FailureError::InvalidCode).into(),
        IdempotencyKeyReused => KeyConflict::Reused.into(),
        InternalError => ApiError::internal(anyhow::anyhow!("an example")),
        ServiceUnavailable => ApiError::Unavailable,
        RequestTimeout => ApiError::RequestTimeout,
        StreamLimitReached => SubscribeError::Full { max: 1000 }.into(),
    }
}

/// How the service refuses this start-request body.
fn body_refusal(body: &str) -> ApiError {
    match serde_json::from_str::<StartRunRequest>(body) {
        Ok(_) => ApiError::internal(anyhow::anyhow!("an example body was accepted")),
        Err(cause) => JsonPayloadError::Deserialize(cause).into(),
    }
}

/// The problem document of [`example`], as a client receives it.
pub fn example_body(code: ProblemCode) -> serde_json::Value {
    let mut problem: Problem = example(code).problem();
    problem.request_id = Some("8f14e45fceea167a5a36dedd4bea2543".into());
    serde_json::to_value(problem).expect("a problem serializes")
}

/// What a status means when an operation does not say more.
fn default_description(status: &str) -> Option<&'static str> {
    Some(match status {
        "400" => "The request is malformed: `malformed_json`",
        "401" => "`unauthenticated`: no bearer token, or one that is malformed, expired or not signed by the configured key",
        "403" => "`forbidden`: the run is visible to you, but your token lacks the capability",
        "404" => "`not_found`: no such run, or one outside your workspace or tenants (the same answer either way)",
        "413" => "`payload_too_large`: the body is larger than 64 KiB",
        "415" => "`unsupported_media_type`: send `Content-Type: application/json`",
        "503" => "`service_unavailable`: the database is unreachable; or `request_timeout`: the request ran past its budget. Retry after `Retry-After` seconds",
        _ => return None,
    })
}

/// The codes a response's description names (in backticks) that answer with `status`;
/// when it names none, every code of that status.
fn codes_named(description: &str, status: u16) -> Vec<ProblemCode> {
    let of_status = |code: &ProblemCode| code.status().as_u16() == status;
    let named: Vec<ProblemCode> =
        description.split('`').skip(1).step_by(2).filter_map(ProblemCode::parse).filter(of_status).fold(
            Vec::new(),
            |mut codes, code| {
                if !codes.contains(&code) {
                    codes.push(code);
                }
                codes
            },
        );
    if named.is_empty() {
        ProblemCode::ALL.into_iter().filter(of_status).filter(|code| !routing_only(*code)).collect()
    } else {
        named
    }
}

/// Codes the router answers before any operation runs; not an operation's refusals.
fn routing_only(code: ProblemCode) -> bool {
    matches!(
        code,
        ProblemCode::RouteNotFound
            | ProblemCode::MethodNotAllowed
            | ProblemCode::NotAcceptable
            | ProblemCode::TenantNotFound
    )
}

fn retry_after_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some("Seconds to wait before retrying"))
        .build()
}

fn unavailable_response() -> Response {
    ResponseBuilder::new()
        .description(default_description("503").unwrap_or_default())
        .content(PROBLEM_JSON, Content::new(Some(Problem::schema())))
        .build()
}

/// Every operation under /v1 can answer 503 when the database is away, and every 503
/// says when to come back, whether an operation wrote its own or not.
fn document_unavailable(operation: &mut Operation) {
    let unavailable =
        operation.responses.responses.entry("503".into()).or_insert_with(|| RefOr::T(unavailable_response()));
    if let RefOr::T(unavailable) = unavailable {
        unavailable.headers.entry("Retry-After".into()).or_insert_with(retry_after_header);
    }
}

/// Each problem response gets a true example of every code its description names (or,
/// naming none, of every code its status has).
fn document_refusals(operation: &mut Operation) {
    for (status, response) in &mut operation.responses.responses {
        let (RefOr::T(response), Ok(number)) = (response, status.parse::<u16>()) else {
            continue;
        };
        let Some(content) = response.content.get_mut(PROBLEM_JSON) else {
            continue;
        };
        if response.description.is_empty() {
            response.description = default_description(status).unwrap_or_default().to_owned();
        }
        let examples: BTreeMap<_, _> = codes_named(&response.description, number)
            .into_iter()
            .map(|code| {
                let example = ExampleBuilder::new().summary(code.as_str()).value(Some(example_body(code))).build();
                (code.as_str().to_owned(), RefOr::T(example))
            })
            .collect();
        content.examples = examples;
    }
}

/// Puts the refusals into the document; see the module's comment.
pub struct Refusals;

impl Modify for Refusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let methods: Vec<&str> = [("GET, HEAD", item.get.is_some()), ("POST", item.post.is_some())]
                .into_iter()
                .filter_map(|(name, present)| present.then_some(name))
                .collect();
            item.description = Some(format!(
                "Answers {}; any other method is `405 method_not_allowed` with an `Allow` header.",
                methods.join(", ")
            ));
            let under_v1 = path.starts_with("/v1/");
            for operation in [item.get.as_mut(), item.post.as_mut()].into_iter().flatten() {
                if under_v1 {
                    document_unavailable(operation);
                }
                document_refusals(operation);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_body_limit_is_the_one_enforced() {
        let limit = format!("{} KiB", crate::http::startup::MAX_BODY_BYTES / 1024);
        assert!(default_description("413").is_some_and(|d| d.ends_with(&limit)));
    }

    #[test]
    fn every_example_carries_its_own_code_and_status() {
        for code in ProblemCode::ALL {
            let body = example_body(code);
            assert_eq!(body["code"], code.as_str());
            assert_eq!(body["status"], code.status().as_u16());
            assert!(body["detail"].as_str().is_some_and(|d| d.ends_with('.')), "{body}");
        }
    }

    #[test]
    fn a_description_names_the_codes_it_documents() {
        let named = codes_named("`duplicate_run`: held; or `idempotency_key_in_flight`; not `not_found`", 409);
        assert_eq!(named, [ProblemCode::DuplicateRun, ProblemCode::IdempotencyKeyInFlight]);
        assert_eq!(codes_named("Missing the capability", 403), [ProblemCode::Forbidden]);
    }
}
