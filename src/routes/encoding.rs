//! Which content coding an answer gets, when the client accepts several.
//!
//! actix-web's `Compress` picks brotli whenever a client accepts it, and browsers do
//! (`gzip, deflate, br, zstd`). Its brotli encoder (quality 3, a 4 MiB window, set up per
//! answer) gives 2.8× less throughput than gzip on a 26 KB list page for 19 % fewer bytes
//! (bench/RESULTS.md), so API answers get gzip whenever the client takes it. Swagger UI's
//! files and the OpenAPI document, fetched once and cached, keep brotli's better ratio.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, AcceptEncoding, Encoding, HeaderValue, Preference, Quality};
use actix_web::middleware::Next;
use actix_web::HttpMessage;

/// Narrows `Accept-Encoding` to gzip for API answers of clients that accept gzip. Wraps
/// `Compress`, which reads the header.
pub async fn prefer_gzip_for_api_answers(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !is_fetched_once(request.path()) && request.get_header::<AcceptEncoding>().is_some_and(|a| accepts_gzip(&a)) {
        request.headers_mut().insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    }
    next.call(request).await
}

fn accepts_gzip(accepted: &AcceptEncoding) -> bool {
    accepted.iter().any(|item| item.item == Preference::Specific(Encoding::gzip()) && item.quality > Quality::ZERO)
}

/// Answers a browser fetches once per version and caches: Swagger UI and the document.
fn is_fetched_once(path: &str) -> bool {
    path.starts_with("/docs/") || path == "/openapi.json"
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::Header;

    fn parsed(value: &str) -> AcceptEncoding {
        let request = actix_web::test::TestRequest::default().insert_header((header::ACCEPT_ENCODING, value));
        AcceptEncoding::parse(&request.to_http_request()).unwrap()
    }

    #[test]
    fn only_a_client_that_takes_gzip_is_narrowed_to_it() {
        assert!(accepts_gzip(&parsed("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(&parsed("br;q=1, gzip;q=0.2")));
        assert!(!accepts_gzip(&parsed("br")));
        assert!(!accepts_gzip(&parsed("br, gzip;q=0")));
    }

    #[test]
    fn swagger_ui_and_the_document_keep_brotli() {
        assert!(is_fetched_once("/docs/swagger-ui-bundle.js"));
        assert!(is_fetched_once("/openapi.json"));
        assert!(!is_fetched_once("/v1/runs"));
    }
}
