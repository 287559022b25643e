//! Which content coding an answer gets, when the client accepts several.
//!
//! actix-web's `Compress` picks brotli whenever a client accepts it, and browsers do
//! (`gzip, deflate, br, zstd`). Its brotli encoder (quality 3, a 4 MiB window, set up per
//! answer) gives 2.8× less throughput than gzip on a 26 KB list page for 19 % fewer bytes
//! (bench/RESULTS.md), so API answers get gzip whenever the client takes it. Swagger UI's
//! files and the OpenAPI document, fetched once and cached, keep brotli's better ratio.
//!
//! `Compress` encodes every answer anew, with a fresh encoder on the blocking pool. A body
//! many answers share (a list page read once for every request that asked for it) is
//! encoded once per coding instead: [`SharedBody`].

use std::io::Write;
use std::sync::OnceLock;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, AcceptEncoding, Encoding, HeaderValue, Preference, Quality};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;

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

/// A body shared by many answers, encoded at most once in each coding it is asked for.
pub struct SharedBody {
    identity: Bytes,
    gzip: OnceLock<Bytes>,
    brotli: OnceLock<Bytes>,
}

/// The codings `Compress` chooses among, so a shared body gets the coding it would.
const CODINGS: [Encoding; 4] = [Encoding::identity(), Encoding::brotli(), Encoding::gzip(), Encoding::deflate()];

impl SharedBody {
    pub fn new(identity: Bytes) -> Self {
        SharedBody { identity, gzip: OnceLock::new(), brotli: OnceLock::new() }
    }

    /// `response` with this body in the coding `Compress` would pick for `request`,
    /// encoded already; a coding not kept here (deflate) is left to `Compress`.
    pub fn respond(&self, request: &HttpRequest, mut response: HttpResponseBuilder) -> HttpResponse {
        let chosen = request.get_header::<AcceptEncoding>().and_then(|accepted| accepted.negotiate(CODINGS.iter()));
        let (coding, body) = match chosen {
            Some(coding) if coding == Encoding::gzip() => ("gzip", self.gzip.get_or_init(|| gzipped(&self.identity))),
            Some(coding) if coding == Encoding::brotli() => {
                ("br", self.brotli.get_or_init(|| brotli_encoded(&self.identity)))
            }
            _ => return response.body(self.identity.clone()),
        };
        response
            .insert_header((header::CONTENT_ENCODING, coding))
            .insert_header((header::VARY, "accept-encoding"))
            .body(body.clone())
    }
}

/// gzip as `Compress` writes it (flate2's fast level).
fn gzipped(plain: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(plain.len() / 4), flate2::Compression::fast());
    encoder.write_all(plain).and_then(|()| encoder.finish()).map(Bytes::from).expect("writing to a Vec cannot fail")
}

/// brotli at `Compress`'s quality (3), in a window just large enough for the body rather
/// than `Compress`'s 4 MiB: the encoder's setup grows with its window, and on a 26 KB list
/// page a 4 MiB window cost 390 µs where a 32 KiB one costs 60, for the same bytes out.
fn brotli_encoded(plain: &[u8]) -> Bytes {
    let mut encoded = Vec::with_capacity(plain.len() / 4);
    let mut encoder = brotli::CompressorWriter::new(&mut encoded, 32 * 1024, 3, window_bits(plain.len()));
    encoder.write_all(plain).expect("writing to a Vec cannot fail");
    drop(encoder); // flushes the end of the stream
    Bytes::from(encoded)
}

/// The smallest brotli window (2^bits − 16 bytes) that holds `len` bytes, within
/// brotli's 10 to `Compress`'s 22 bits.
fn window_bits(len: usize) -> u32 {
    len.saturating_add(16).next_power_of_two().trailing_zeros().clamp(10, 22)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::Header;
    use futures_util::FutureExt;

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

    /// What a shared body answers a client sending `accept_encoding`: the coding and the
    /// body, decoded.
    fn answered(accept_encoding: &str) -> (Option<String>, Vec<u8>) {
        use std::io::Read;
        let shared =
            SharedBody::new(Bytes::from(r#"{"items":[{"id":1,"status":"queued"}],"next_cursor":null}"#.repeat(20)));
        let request = actix_web::test::TestRequest::default()
            .insert_header((header::ACCEPT_ENCODING, accept_encoding))
            .to_http_request();
        let response = shared.respond(&request, HttpResponse::Ok());
        let coding = response.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap().to_owned());
        if coding.is_some() {
            assert_eq!(response.headers().get(header::VARY).unwrap(), "accept-encoding");
        }
        let body = actix_web::body::to_bytes(response.into_body()).now_or_never().unwrap().unwrap();
        let mut plain = Vec::new();
        match coding.as_deref() {
            Some("gzip") => flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain).map(drop).unwrap(),
            Some("br") => brotli::Decompressor::new(&body[..], 4096).read_to_end(&mut plain).map(drop).unwrap(),
            _ => plain = body.to_vec(),
        }
        (coding, plain)
    }

    #[test]
    fn a_shared_body_gets_the_coding_compress_would_choose_and_decodes_to_itself() {
        let identity = answered("identity").1;
        for (accepted, coding) in
            [("gzip", Some("gzip")), ("br", Some("br")), ("gzip;q=0.5, br", Some("br")), ("br;q=0, gzip", Some("gzip"))]
        {
            let (chosen, plain) = answered(accepted);
            assert_eq!(chosen.as_deref(), coding, "{accepted}");
            assert_eq!(plain, identity, "{accepted}");
        }
        // Deflate is not kept: the identity body goes out, for `Compress` to encode.
        assert_eq!(answered("deflate"), (None, identity));
    }

    #[test]
    fn the_brotli_window_is_the_smallest_that_holds_the_body() {
        for len in [0, 1, 1008, 1009, 26_000, 4_194_288, 4_194_289, 50_000_000] {
            let bits = window_bits(len);
            assert!((10..=22).contains(&bits), "{len}");
            let holds = |bits: u32| (1usize << bits) - 16 >= len;
            assert!(holds(bits) || bits == 22, "{len}: {bits} bits is too small");
            assert!(bits == 10 || !holds(bits - 1), "{len}: {bits} bits is larger than needed");
        }
    }

    #[test]
    fn brotli_in_a_window_sized_to_the_body_decodes_to_it_whatever_its_size() {
        use std::io::Read;
        let mut seed = 7u64;
        for len in [0, 1, 1009, 40_000, 300_000] {
            // A JSON page's alphabet at random: matches at any distance, up to the whole body.
            let plain: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    b"{}\":,0123456789abcdef"[(seed >> 59) as usize % 20]
                })
                .collect();
            let encoded = brotli_encoded(&plain);
            let mut decoded = Vec::new();
            brotli::Decompressor::new(&encoded[..], 4096).read_to_end(&mut decoded).unwrap();
            assert_eq!(decoded, plain, "{len} bytes");
        }
    }

    #[test]
    fn swagger_ui_and_the_document_keep_brotli() {
        assert!(is_fetched_once("/docs/swagger-ui-bundle.js"));
        assert!(is_fetched_once("/openapi.json"));
        assert!(!is_fetched_once("/v1/runs"));
    }
}
