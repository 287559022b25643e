//! `GET /v1/operation-types`: the catalog, so clients never hard-code labels.

use std::collections::BTreeMap;

use actix_web::{get, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::access::Principal;
use crate::domain::catalog::{IdentityRule, InputKind, InputSpec, RunType, Scope, Trigger, CATALOG};
use crate::domain::identity::IdentityPolicy;
use crate::http::error::Problem;

/// One operation type as the catalog describes it.
#[derive(Serialize, ToSchema)]
pub struct OperationTypeView {
    pub r#type: RunType,
    #[schema(example = "Inventory sync")]
    pub label: &'static str,
    pub scope: Scope,
    #[schema(example = "inventory.sync")]
    pub start_capability: &'static str,
    #[schema(example = "inventory.sync")]
    pub view_capability: &'static str,
    pub identity: IdentityRule,
    /// For types whose runs have a `trigger` input: the identity policy a start gets for
    /// each trigger, e.g. `{"scheduled": "strict_once", "run_now": "unique_per_click", …}`;
    /// `null` for the others, whose `identity` is their one policy.
    #[schema(value_type = Option<BTreeMap<String, IdentityPolicy>>, required = true)]
    pub identity_by_trigger: Option<BTreeMap<&'static str, IdentityPolicy>>,
    pub inputs: &'static [InputSpec],
    /// How long a run usually takes.
    #[schema(example = 900)]
    pub expected_duration_seconds: u64,
}

/// The catalog response.
#[derive(Serialize, ToSchema)]
pub struct OperationTypeList {
    pub items: Vec<OperationTypeView>,
}

/// List the operation types.
///
/// Every type with its label, scope, capabilities, identity policy, inputs and expected duration.
///
/// **Needs** a valid token; no capability.
#[utoipa::path(
    tag = "catalog",
    security(("bearer" = [])),
    responses(
        (status = 200, body = OperationTypeList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/operation-types")]
pub async fn list_operation_types(_caller: Principal) -> HttpResponse {
    let items = CATALOG
        .iter()
        .map(|spec| OperationTypeView {
            r#type: spec.run_type,
            label: spec.label,
            scope: spec.scope,
            start_capability: spec.start_capability,
            view_capability: spec.view_capability,
            identity: spec.identity,
            identity_by_trigger: spec.inputs.iter().any(|input| input.kind == InputKind::Trigger).then(|| {
                Trigger::ALL
                    .into_iter()
                    .map(|trigger| (trigger.as_str(), IdentityPolicy::for_trigger(spec.identity, Some(trigger))))
                    .collect()
            }),
            inputs: spec.inputs,
            expected_duration_seconds: spec.expected.as_secs(),
        })
        .collect();
    HttpResponse::Ok().json(OperationTypeList { items })
}
