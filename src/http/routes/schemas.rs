//! OpenAPI schemas written by hand rather than derived: the start request (one shape
//! per catalog type, derived from the catalog) and the counters (the closed set of
//! keys). Request and response types refer to them; `openapi/mod.rs` collects them.

use serde_json::json;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};

use crate::domain::catalog::{InputKind, Requirement, Scope, TypeSpec, CATALOG};
use crate::domain::counts::{COUNT_KEYS, MAX_COUNT};
use crate::domain::inputs::{Trigger, MAX_KEY_CHARS};
use crate::domain::status::StatusFilter;
use crate::use_cases::start::OnConflict;

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
        .property("context", context_schema())
        .property(
            "on_conflict",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(OnConflict::ALL.map(OnConflict::as_str)))
                // No `default`: generators (openapi-typescript) make a defaulted field required.
                .description(Some(
                    "When a run already holds the identity: `reject` (the default) answers 409 naming it; `use_existing` answers 200 with it",
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

/// Any JSON object.
pub fn open_object_schema() -> Schema {
    open_object().into()
}

fn open_object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object).additional_properties(Some(AdditionalProperties::FreeForm(true)))
}

/// A run's `context`: any JSON object, within limits.
pub fn context_schema() -> Schema {
    open_object()
        .description(Some(
            "Provenance, inputs and target scope: any JSON object, at most 16 KiB and 8 levels deep; keys containing password, secret, token or authorization are refused",
        ))
        .examples([json!({"backup_set_id": 3301, "target_scope": {"kind": "all"}})])
        .into()
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

/// The list's `status` filter: a status, or `active`.
pub fn status_filter_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(StatusFilter::names())).into()
}

/// A backup-schedule run's trigger.
pub fn trigger_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(Trigger::ALL.map(Trigger::as_str))).into()
}
