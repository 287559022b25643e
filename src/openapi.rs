//! The OpenAPI document: every route and schema, and the bearer security scheme that
//! makes Swagger UI's "Authorize" button work.

use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{Modify, OpenApi};

use crate::domain::catalog::{InputKind, Requirement, Scope, TypeSpec, CATALOG};
use crate::domain::counts::{COUNT_KEYS, MAX_COUNT};
use crate::domain::inputs::{Trigger, MAX_KEY_CHARS};
use crate::routes;

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
        // 201 carries the new run; 409 names the run that holds the identity.
        for (status, id_expression) in [("201", "$response.body#/id"), ("409", "$response.body#/existing_run_id")] {
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
        routes::runs::view::view_run,
        routes::runs::events::list_run_events,
        routes::runs::transition::start_run_work,
        routes::runs::transition::report_progress,
        routes::runs::transition::complete_run,
        routes::runs::transition::cancel_run,
        routes::backup_schedules::list_backup_schedule_runs,
    ),
    modifiers(&BearerScheme, &RunLinks),
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

fn input_schema(kind: InputKind, triggers: &[Trigger]) -> Schema {
    let builder = ObjectBuilder::new();
    let builder = match kind {
        InputKind::Id => builder
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1)),
        InputKind::Key => {
            builder.schema_type(Type::String).min_length(Some(1)).max_length(Some(MAX_KEY_CHARS)).pattern(Some(r"\S"))
        }
        InputKind::Trigger => builder.schema_type(Type::String).enum_values(Some(triggers.iter().map(|t| t.as_str()))),
        InputKind::Timestamp => builder
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339; normalized to the minute in UTC")),
    };
    builder.into()
}

/// One start-request shape: a type, and for `trigger`-driven types one trigger family.
fn start_variant(spec: &TypeSpec, scheduled: Option<bool>) -> Schema {
    let triggers: &[Trigger] = match scheduled {
        Some(true) => &[Trigger::Scheduled],
        _ => &[Trigger::RunNow, Trigger::Retry],
    };
    let mut inputs = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for input in spec.inputs {
        let wanted = match input.required {
            Requirement::Always => true,
            Requirement::WhenScheduled => scheduled == Some(true),
        };
        if wanted {
            inputs = inputs.property(input.name, input_schema(input.kind, triggers)).required(input.name);
        }
    }
    let title = match scheduled {
        Some(true) => format!("{} (scheduled)", spec.label),
        Some(false) => format!("{} (run now or retry)", spec.label),
        None => spec.label.to_owned(),
    };
    let mut variant = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(title))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .property("type", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([spec.run_type.as_str()])))
        .required("type")
        .property("inputs", inputs)
        .property(
            "context",
            ObjectBuilder::new().schema_type(Type::Object).description(Some(
                "Provenance and target scope: at most 16 KiB and 8 levels deep; keys containing password, secret, token or authorization are refused",
            )),
        );
    if spec.inputs.iter().any(|i| i.required == Requirement::Always) || scheduled == Some(true) {
        variant = variant.required("inputs");
    }
    if spec.scope == Scope::Tenant {
        variant = variant
            .property(
                "tenant_id",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(1)),
            )
            .required("tenant_id");
    }
    variant.into()
}

/// The start request, one shape per catalog type, derived from the catalog itself.
pub fn start_run_request_schema() -> RefOr<Schema> {
    let mut one_of = OneOfBuilder::new().description(Some("What to start: a catalog type, its tenant and its inputs."));
    for spec in &CATALOG {
        let has_trigger = spec.inputs.iter().any(|i| i.kind == InputKind::Trigger);
        if has_trigger {
            one_of = one_of.item(start_variant(spec, Some(true))).item(start_variant(spec, Some(false)));
        } else {
            one_of = one_of.item(start_variant(spec, None));
        }
    }
    one_of = one_of.examples([json!({
        "type": "inventory_sync",
        "tenant_id": 7,
        "inputs": {"selection_hash": "9f2c4e"},
        "context": {"target_scope": {"kind": "all"}}
    })]);
    RefOr::T(Schema::OneOf(one_of.build()))
}

/// Counters: the closed set of keys, each a non-negative integer.
pub fn counts_schema() -> Schema {
    let mut counts = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for key in COUNT_KEYS {
        counts = counts.property(
            key,
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
                .maximum(Some(MAX_COUNT)),
        );
    }
    counts.into()
}
