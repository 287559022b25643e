//! The HTTP side of read routing ([`Reader`], in `db::replica`): which database a read
//! request reads from, and the read-your-writes token.
//!
//! Every successful write answer carries `Opsrun-Read-After`, the time its write had
//! committed by. A client that sends it back on a read is answered from the replica only
//! once the replica is known to hold everything committed before then; otherwise from
//! the primary. A read of one run that the replica does not have is asked of the primary
//! as well, so following a `201`'s `Location` never answers 404, token or not.

use std::future::{ready, Ready};
use std::time::SystemTime;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};
use chrono::{DateTime, SecondsFormat, Utc};

pub use crate::db::replica::Reader;
use crate::db::replica::Reads;
use crate::http::error::{ApiError, ProblemCode};

/// The token's header, on write answers and on reads that must see those writes.
pub const READ_AFTER: HeaderName = HeaderName::from_static("opsrun-read-after");

/// The read-your-writes header of reads, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ReadAfterHeader {
    /// The `Opsrun-Read-After` of a write answer, sent back unchanged: the answer then
    /// includes that write even when a read replica serves it. Without it, a read may
    /// lag the primary by up to `OPSRUN_MAX_REPLICA_LAG` (never a run you just created).
    #[param(rename = "Opsrun-Read-After", format = DateTime, nullable = false, example = "2026-01-31T10:00:00.123456Z")]
    #[allow(dead_code)] // documents the header; `Reader` reads it
    opsrun_read_after: Option<String>,
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Ready<Result<Reader, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(reader(request))
    }
}

fn reader(request: &HttpRequest) -> Result<Reader, ApiError> {
    let reads = request
        .app_data::<web::Data<Reads>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no read routing configured")))?;
    let must_include = request.headers().get(READ_AFTER).map(read_after).transpose()?;
    Ok(Reader::new(reads, must_include))
}

fn read_after(value: &HeaderValue) -> Result<SystemTime, ApiError> {
    value
        .to_str()
        .ok()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| SystemTime::from(at.with_timezone(&Utc)))
        .ok_or_else(refuse_read_after)
}

pub fn refuse_read_after() -> ApiError {
    ApiError::bad_request(
        ProblemCode::InvalidReadAfter,
        "`Opsrun-Read-After` is not a token from a write answer (an RFC 3339 time such as \
         2026-01-31T10:00:00.123456Z); send it back unchanged, or leave it out.",
    )
}

/// Stamps successful write answers with the read-your-writes token: the time at which
/// the write had committed, since the answer is built after the commit.
pub async fn stamp_writes(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let writes = request.method() == Method::POST;
    let mut response = next.call(request).await?;
    if writes && response.status().is_success() {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        if let Ok(value) = HeaderValue::from_str(&now) {
            response.headers_mut().insert(READ_AFTER, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_the_time_it_was_made() {
        let made = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let at = read_after(&HeaderValue::from_str(&made).unwrap()).unwrap();
        let back: DateTime<Utc> = at.into();
        assert_eq!(back.to_rfc3339_opts(SecondsFormat::Micros, true), made);
    }

    #[test]
    fn anything_else_is_refused_with_its_code() {
        for bad in ["yesterday", "", "2026-13-01T00:00:00Z", "1733130000"] {
            let error = read_after(&HeaderValue::from_str(bad).unwrap()).unwrap_err();
            assert_eq!(error.code(), ProblemCode::InvalidReadAfter, "{bad}");
        }
    }
}
