//! Keyset pagination: opaque cursors bound to the filters they were issued for
//! (a cursor replayed with other filters is refused, as in Google AIP-158), and the
//! `Link: <…>; rel="next"` header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::error::{ApiError, ProblemCode};

/// The default and largest page sizes.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The query parameters that choose a page rather than the result set.
const PAGE_PARAMETERS: [&str; 2] = ["cursor", "limit"];

#[derive(Serialize, Deserialize)]
struct CursorBody {
    /// `created_at` of the last row served, in microseconds since the epoch.
    t: i64,
    /// `id` of the last row served.
    i: i64,
    /// Fingerprint of the filters the cursor belongs to.
    f: String,
}

/// The filters of one list request, as sent, for fingerprinting and next links.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListRequest {
    path: String,
    filter_pairs: Vec<(String, String)>,
    fingerprint: String,
}

impl ListRequest {
    /// `pairs` is the whole decoded query string; page parameters are set aside.
    pub fn new(path: &str, pairs: Vec<(String, String)>) -> ListRequest {
        let mut filter_pairs: Vec<_> =
            pairs.into_iter().filter(|(key, _)| !PAGE_PARAMETERS.contains(&key.as_str())).collect();
        filter_pairs.sort();
        let mut hasher = Sha256::new();
        hasher.update(path.as_bytes());
        for (key, value) in &filter_pairs {
            hasher.update([0]);
            hasher.update(key.as_bytes());
            hasher.update([1]);
            hasher.update(value.as_bytes());
        }
        let fingerprint = hex::encode(&hasher.finalize()[..8]);
        ListRequest { path: path.to_owned(), filter_pairs, fingerprint }
    }

    /// The keyset position a cursor names, if it was issued for these filters.
    pub fn decode_cursor(&self, cursor: &str) -> Result<(DateTime<Utc>, i64), ApiError> {
        let invalid = || {
            ApiError::bad_request(
                ProblemCode::InvalidCursor,
                "The cursor is not one this service issued; start again without `cursor`.",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let body: CursorBody = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if body.f != self.fingerprint {
            return Err(ApiError::bad_request(
                ProblemCode::CursorFilterMismatch,
                "The cursor belongs to a list with other filters; send the same filters it was issued with, or start again without `cursor`.",
            ));
        }
        let at = DateTime::from_timestamp_micros(body.t).ok_or_else(invalid)?;
        Ok((at, body.i))
    }

    pub fn encode_cursor(&self, created_at: DateTime<Utc>, id: i64) -> String {
        let body = CursorBody { t: created_at.timestamp_micros(), i: id, f: self.fingerprint.clone() };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).expect("a cursor always serializes"))
    }

    /// The `Link` header value for the next page.
    pub fn next_link(&self, cursor: &str, limit: i64) -> String {
        let link = format!("<{}?", self.path);
        let start = link.len();
        let mut query = form_urlencoded::Serializer::for_suffix(link, start);
        query.extend_pairs(&self.filter_pairs);
        query.append_pair("limit", itoa::Buffer::new().format(limit));
        query.append_pair("cursor", cursor);
        let mut link = query.finish();
        link.push_str(">; rel=\"next\"");
        link
    }
}

/// Checks a requested page size.
pub fn limit(requested: Option<i64>) -> Result<i64, ApiError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            ProblemCode::InvalidLimit,
            format!("`limit` is {n}; it must be from 1 to {MAX_LIMIT}."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> ListRequest {
        ListRequest::new("/v1/runs", pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn a_cursor_round_trips_for_the_same_filters_in_any_order() {
        let at = DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
        let cursor = request(&[("type", "a"), ("status", "queued")]).encode_cursor(at, 77);
        let same = request(&[("status", "queued"), ("limit", "5"), ("type", "a")]);
        assert_eq!(same.decode_cursor(&cursor).unwrap(), (at, 77));
    }

    #[test]
    fn a_cursor_replayed_with_other_filters_is_refused() {
        let cursor = request(&[("type", "a")]).encode_cursor(Utc::now(), 1);
        let error = request(&[("type", "b")]).decode_cursor(&cursor).unwrap_err();
        assert_eq!(error.code(), ProblemCode::CursorFilterMismatch);
    }

    proptest::proptest! {
        #[test]
        fn the_next_link_carries_the_filters_the_limit_and_the_cursor(
            pairs in proptest::collection::vec(("[a-z_]{1,12}", ".*"), 0..5),
            cursor in "[A-Za-z0-9_-]{0,40}",
            limit in 1i64..=MAX_LIMIT,
        ) {
            let list = ListRequest::new("/v1/backup-schedules/7/runs", pairs.clone());
            let link = list.next_link(&cursor, limit);
            let target = link.strip_prefix('<').and_then(|l| l.strip_suffix(">; rel=\"next\"")).unwrap();
            let (path, query) = target.split_once('?').unwrap();
            proptest::prop_assert_eq!(path, "/v1/backup-schedules/7/runs");
            let read: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            let mut expected: Vec<(String, String)> =
                pairs.into_iter().filter(|(key, _)| !PAGE_PARAMETERS.contains(&key.as_str())).collect();
            expected.sort();
            expected.push(("limit".into(), limit.to_string()));
            expected.push(("cursor".into(), cursor));
            proptest::prop_assert_eq!(read, expected);
        }
    }

    #[test]
    fn garbage_cursors_are_invalid() {
        for garbage in ["", "!!!", "bm90IGpzb24", &URL_SAFE_NO_PAD.encode(b"{\"t\":1}")] {
            assert_eq!(request(&[]).decode_cursor(garbage).unwrap_err().code(), ProblemCode::InvalidCursor);
        }
    }
}
