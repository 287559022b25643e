//! HTTP caching: API answers are revalidated on every use, Swagger UI's static assets
//! are kept for a day, and a run's representations carry a strong `ETag` named by the run's
//! id and revision, and `If-None-Match` with a current tag answers `304` with no body.
//!
//! The revision grows on every update of the run (a database trigger counts them), and
//! every timeline entry is written in the same transaction as its run's update, so one
//! revision names one state of both the run and its timeline.
//!
//! A compressed body is a different representation from the identity one, so
//! [`tag_encoded_variants`] gives it its own strong tag (`"run-42.3-br"`, as Apache
//! does); a validator of either variant is current.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, EntityTag, HeaderValue, IfNoneMatch};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use crate::db::models::OperationRunRow;

/// The conditional-GET header of a run and its timeline, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfNoneMatchHeader {
    /// The `ETag` of the copy you hold, e.g. `"run-42.3"`; `304` with no body while it is
    /// current. A cheap poll: an unchanged run costs one index look-up and no body.
    #[param(rename = "If-None-Match", nullable = false)]
    #[allow(dead_code)] // documents the header; handlers read it with `web::Header`
    if_none_match: Option<String>,
}

/// Which representation of a run a tag names.
#[derive(Clone, Copy)]
pub enum Representation {
    Run,
    /// The timeline after an event id (`0`: all of it).
    Timeline {
        after: i64,
    },
}

/// The strong validator of one representation of `run` as it stands now.
pub fn etag(representation: Representation, run: &OperationRunRow) -> EntityTag {
    let (id, revision) = (run.id, run.revision);
    EntityTag::new_strong(match representation {
        Representation::Run => format!("run-{id}.{revision}"),
        Representation::Timeline { after: 0 } => format!("events-{id}.{revision}"),
        Representation::Timeline { after } => format!("events-{id}.{revision}.after-{after}"),
    })
}

/// Whether the client's copy, named in `If-None-Match`, is still `current`.
/// If-None-Match compares weakly (RFC 9110 §13.1.2), and an encoded variant's tag names
/// the same state as its identity tag.
pub fn client_has(if_none_match: Option<&web::Header<IfNoneMatch>>, current: &EntityTag) -> bool {
    match if_none_match.map(|header| &header.0) {
        None => false,
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => {
            tags.iter().any(|held| held.tag() == current.tag() || identity_tag_of(held.tag()) == Some(current.tag()))
        }
    }
}

/// `304 Not Modified`, carrying the tag the client holds.
pub fn not_modified(current: EntityTag) -> HttpResponse {
    HttpResponse::NotModified().insert_header(header::ETag(current)).finish()
}

/// API answers: a browser may keep them but must ask again before each use (with the
/// ETag where there is one); shared caches must not keep them at all.
const REVALIDATE: HeaderValue = HeaderValue::from_static("private, no-cache");

/// Swagger UI's vendored files. Their names carry no version, so a day (not a year)
/// bounds how long an upgraded service may still see old assets in a browser.
const STATIC_ASSET: HeaderValue = HeaderValue::from_static("public, max-age=86400");

/// Sets `Cache-Control` on every answer that does not set its own. Wraps `Compress`.
pub async fn cache_policy(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let asset = is_swagger_asset(request.path());
    let mut response = next.call(request).await?;
    let asset = asset && response.status().is_success();
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, if asset { STATIC_ASSET } else { REVALIDATE });
    }
    // A shared cache must keep one copy per coding; `Compress` says so only when it encodes.
    if asset && !headers.contains_key(header::CONTENT_ENCODING) {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    Ok(response)
}

/// A Swagger UI file other than the page and its initializer, which name this service's
/// document and so change with it.
fn is_swagger_asset(path: &str) -> bool {
    path.strip_prefix("/docs/").is_some_and(|file| !matches!(file, "" | "index.html" | "swagger-initializer.js"))
}

/// The content codings `Compress` may apply, as they appear in a tag's suffix.
const ENCODINGS: [&str; 2] = ["br", "gzip"];

fn identity_tag_of(tag: &str) -> Option<&str> {
    ENCODINGS.iter().find_map(|encoding| tag.strip_suffix(encoding)?.strip_suffix('-'))
}

/// Gives a compressed response's strong ETag the coding as a suffix. Wraps `Compress`.
pub async fn tag_encoded_variants(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(request).await?;
    let headers = response.headers();
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|value| value.to_str().ok());
    let tag = headers.get(header::ETAG).and_then(|value| value.to_str().ok()?.parse::<EntityTag>().ok());
    if let (Some(encoding), Some(tag)) = (encoding, tag) {
        if !tag.weak && ENCODINGS.contains(&encoding) {
            let variant = EntityTag::new_strong(format!("{}-{encoding}", tag.tag()));
            if let Ok(value) = HeaderValue::from_str(&variant.to_string()) {
                response.headers_mut().insert(header::ETAG, value);
            }
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_swagger_uis_static_files_are_long_lived() {
        assert!(is_swagger_asset("/docs/swagger-ui-bundle.js"));
        assert!(is_swagger_asset("/docs/swagger-ui.css"));
        for revalidated in ["/docs/", "/docs/index.html", "/docs/swagger-initializer.js", "/openapi.json", "/v1/runs"] {
            assert!(!is_swagger_asset(revalidated), "{revalidated}");
        }
    }

    #[test]
    fn an_encoded_variants_tag_names_its_identity_state() {
        assert_eq!(identity_tag_of("run-42.3-br"), Some("run-42.3"));
        assert_eq!(identity_tag_of("run-42.3-gzip"), Some("run-42.3"));
        assert_eq!(identity_tag_of("run-42.3"), None);
        assert_eq!(identity_tag_of("run-42.3br"), None);
    }
}
