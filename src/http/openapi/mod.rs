//! The OpenAPI document: every route and schema, and the bearer security scheme that
//! makes Swagger UI's "Authorize" button work.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use crate::http::routes;
use problems::Refusals;

pub mod problems;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256, RS256 or ES256 JWT with `sub`, `workspace_id`, `tenants` and `caps` claims. \
                         `opsrun token` mints one for development.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Links from a started run to the operations that take its id, so clients (and
/// Schemathesis' stateful phase) can follow a run from `POST /v1/runs` to a worker's moves.
struct RunLinks;

impl RunLinks {
    const FOLLOW_UPS: [(&'static str, &'static str); 6] = [
        ("view", "view_run"),
        ("events", "list_run_events"),
        ("start_work", "start_run_work"),
        ("report_progress", "report_progress"),
        ("complete", "complete_run"),
        ("cancel", "cancel_run"),
    ];

    /// Each follow-up with its `id` parameter taken from `id_expression`.
    fn follow_ups(id_expression: &str) -> impl Iterator<Item = (String, RefOr<Link>)> + '_ {
        Self::FOLLOW_UPS.into_iter().map(move |(name, operation_id)| {
            // utoipa 5.5 writes `Link::operation_id` as `operation_id`; OpenAPI says `operationId`.
            let operation = Extensions::from_iter([("operationId", operation_id)]);
            let link = LinkBuilder::new().parameter("id", id_expression).extensions(Some(operation)).build();
            (name.to_string(), RefOr::T(link))
        })
    }
}

impl Modify for RunLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(start) = openapi.paths.paths.get_mut("/v1/runs").and_then(|item| item.post.as_mut()) else {
            return;
        };
        // 201 carries the new run, 200 the one that held the identity (`use_existing`);
        // 409 names the run that holds it.
        for (status, id_expression) in
            [("201", "$response.body#/id"), ("200", "$response.body#/id"), ("409", "$response.body#/existing_run_id")]
        {
            if let Some(RefOr::T(response)) = start.responses.responses.get_mut(status) {
                response.links.extend(Self::follow_ups(id_expression));
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "opsrun",
        description = "The canonical store of operation runs. Errors are RFC 9457 `application/problem+json` documents with a stable `code`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::metrics::export_metrics,
        routes::operation_types::list_operation_types,
        routes::runs::start::start_run,
        routes::runs::list::list_runs,
        routes::runs::stream::stream_runs,
        routes::runs::view::view_run,
        routes::runs::events::list_run_events,
        routes::runs::transition::start_run_work,
        routes::runs::transition::report_progress,
        routes::runs::transition::complete_run,
        routes::runs::transition::cancel_run,
        routes::backup_schedules::list_backup_schedule_runs,
    ),
    components(schemas(routes::runs::stream::StreamClosing)),
    modifiers(&BearerScheme, &RunLinks, &Refusals),
    tags(
        (name = "runs", description = "Start, list and view operation runs"),
        (name = "worker", description = "Moves that workers make: start, progress, complete, cancel"),
        (name = "backup schedules", description = "A backup schedule's run history"),
        (name = "catalog", description = "The operation types"),
        (name = "operations", description = "Probes for orchestrators"),
    )
)]
pub struct ApiDoc;

/// The document as committed in `openapi/openapi.json`.
pub fn document_json() -> String {
    let mut json = ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes");
    json.push('\n');
    json
}
