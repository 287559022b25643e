//! The routes as the OpenAPI document describes them, so the document is the one list
//! of what each route takes: the methods of each path (a `405` names them in `Allow`)
//! and the query parameters of each operation (any other one is a `400`, on every
//! route alike, instead of being silently ignored).

use std::collections::BTreeMap;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::OpenApi;

use crate::http::error::{ApiError, ProblemCode};

/// One documented path: its template's segments and what each method takes.
struct DocumentedPath {
    segments: Vec<String>,
    /// Method → the names of its query parameters.
    operations: BTreeMap<&'static str, Vec<String>>,
}

impl DocumentedPath {
    fn matches(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self.segments.iter().zip(segments).all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
    }

    /// How many segments match literally: `/v1/runs/stream` is a better match for
    /// "stream" than `/v1/runs/{id}`.
    fn literal_segments(&self) -> usize {
        self.segments.iter().filter(|t| !t.starts_with('{')).count()
    }

    fn allow(&self) -> String {
        self.operations.keys().copied().collect::<Vec<_>>().join(", ")
    }
}

/// Every documented path, read once from the OpenAPI document.
pub struct DocumentedRoutes(Vec<DocumentedPath>);

fn query_parameters(operation: &Operation) -> Vec<String> {
    operation
        .parameters
        .iter()
        .flatten()
        .filter(|parameter| matches!(parameter.parameter_in, ParameterIn::Query))
        .map(|parameter| parameter.name.clone())
        .collect()
}

impl DocumentedRoutes {
    pub fn from_document(openapi: &OpenApi) -> DocumentedRoutes {
        let paths = openapi
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let operations = [
                    ("GET", &item.get),
                    // Every GET route answers HEAD (`routes::head_as_get`).
                    ("HEAD", &item.get),
                    ("POST", &item.post),
                    ("PUT", &item.put),
                    ("DELETE", &item.delete),
                ]
                .into_iter()
                .filter_map(|(method, operation)| Some((method, query_parameters(operation.as_ref()?))))
                .collect();
                DocumentedPath { segments: path.split('/').map(str::to_owned).collect(), operations }
            })
            .collect();
        DocumentedRoutes(paths)
    }

    fn find(&self, path: &str) -> Option<&DocumentedPath> {
        let segments: Vec<&str> = path.split('/').collect();
        self.0.iter().filter(|documented| documented.matches(&segments)).max_by_key(|d| d.literal_segments())
    }

    /// The `Allow` header of a documented path.
    pub fn allow(&self, path: &str) -> Option<String> {
        self.find(path).map(DocumentedPath::allow)
    }

    /// Refuses a query parameter the operation does not document. Undocumented routes
    /// (Swagger UI's files) and methods (answered `405` later) pass.
    fn check_query(&self, method: &Method, path: &str, query: &str) -> Result<(), ApiError> {
        // Most requests carry no query: nothing to look up.
        if query.is_empty() {
            return Ok(());
        }
        let Some(taken) = self.find(path).and_then(|documented| documented.operations.get(method.as_str())) else {
            return Ok(());
        };
        let pairs: Vec<(String, String)> = serde_html_form::from_str(query).map_err(ApiError::invalid_query)?;
        let Some((unknown, _)) = pairs.iter().find(|(name, _)| !taken.contains(name)) else {
            return Ok(());
        };
        let takes = if taken.is_empty() {
            "it takes no query parameters".to_owned()
        } else {
            let names: Vec<String> = taken.iter().map(|name| format!("`{name}`")).collect();
            format!("it takes {}", names.join(", "))
        };
        Err(ApiError::bad_request(
            ProblemCode::InvalidQuery,
            format!("`{unknown}` is not a query parameter of {method} {path}; {takes}."),
        ))
    }
}

/// Answers `400 invalid_query` for a query parameter the route does not document.
pub async fn refuse_undocumented_query<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let checked = match request.app_data::<web::Data<DocumentedRoutes>>() {
        Some(routes) => routes.check_query(request.method(), request.path(), request.query_string()),
        None => Ok(()),
    };
    match checked {
        Ok(()) => Ok(next.call(request).await?.map_into_left_body()),
        Err(refusal) => Ok(request.into_response(refusal.error_response()).map_into_right_body()),
    }
}
