//! Timestamps in answers, exactly as chrono's `Serialize` spells them (RFC 3339 in UTC:
//! `2026-06-09T07:14:35.697328Z`, with 0, 3, 6 or 9 fractional digits as the value needs),
//! but written straight into a buffer. chrono's goes through `fmt` one character at a
//! time, and took half of the time spent rendering a page of runs.
//!
//! Use as `#[serde(serialize_with = "timestamps::serialize")]` (or `timestamps::optional`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; RFC3339_MAX];
    match write(at, &mut buffer).map(std::str::from_utf8) {
        Some(Ok(text)) => serializer.serialize_str(text),
        // Years outside 0000-9999 and leap seconds: chrono knows how to spell them.
        _ => serde::Serialize::serialize(at, serializer),
    }
}

/// `at` as a JSON string, appended to `out`: the same text as [`serialize`].
pub fn push(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    let mut buffer = [0u8; RFC3339_MAX];
    match write(at, &mut buffer) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text);
            out.push(b'"');
        }
        // Writing into a `Vec` cannot fail, and chrono always spells an instant.
        None => serde_json::to_writer(out, at).expect("a timestamp serializes"),
    }
}

pub fn optional<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`
const RFC3339_MAX: usize = 30;

/// `at` in `buffer`, in ASCII; `None` for what only chrono spells (a year outside
/// 0000-9999, a leap second). A page holds four timestamps a run: digits go two at a time.
fn write<'b>(at: &DateTime<Utc>, buffer: &'b mut [u8; RFC3339_MAX]) -> Option<&'b [u8]> {
    // Each field of a `DateTime` converts to local time first; UTC's is the naive one.
    let at = at.naive_utc();
    let nanos = at.nanosecond();
    let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
    if nanos >= 1_000_000_000 {
        return None;
    }
    let seconds = at.num_seconds_from_midnight();
    put_pair(buffer, 0, year / 100);
    put_pair(buffer, 2, year % 100);
    buffer[4] = b'-';
    put_pair(buffer, 5, at.month());
    buffer[7] = b'-';
    put_pair(buffer, 8, at.day());
    buffer[10] = b'T';
    put_pair(buffer, 11, seconds / 3600);
    buffer[13] = b':';
    put_pair(buffer, 14, seconds / 60 % 60);
    buffer[16] = b':';
    put_pair(buffer, 17, seconds % 60);
    // chrono's choice of 0, 3, 6 or 9 fractional digits: the fewest that hold the value.
    let (fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    let mut end = 19;
    if digits > 0 {
        buffer[19] = b'.';
        end = 20 + digits;
        put_digits(&mut buffer[20..end], fraction);
    }
    buffer[end] = b'Z';
    Some(&buffer[..=end])
}

/// "00", "01", … "99".
const PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

/// `value`, below 100, as two digits at `at`.
fn put_pair(buffer: &mut [u8], at: usize, value: u32) {
    let pair = value as usize * 2;
    buffer[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
}

/// `value` in exactly `digits.len()` digits, zero-padded.
fn put_digits(digits: &mut [u8], mut value: u32) {
    let mut end = digits.len();
    while end >= 2 {
        put_pair(digits, end - 2, value % 100);
        value /= 100;
        end -= 2;
    }
    if end == 1 {
        digits[0] = b'0' + (value % 10) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn ours(at: DateTime<Utc>) -> String {
        #[derive(serde::Serialize)]
        struct At(#[serde(serialize_with = "serialize")] DateTime<Utc>);
        serde_json::to_string(&At(at)).unwrap()
    }

    proptest! {
        #[test]
        fn spells_every_instant_as_chrono_does(
            seconds in -100_000_000_000i64..300_000_000_000,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000), (0u32..1_000_000).prop_map(|u| u * 1000), 0u32..1_000_000_000],
        ) {
            let at = Utc.timestamp_opt(seconds, nanos).unwrap();
            prop_assert_eq!(ours(at), serde_json::to_string(&at).unwrap());
        }
    }

    #[test]
    fn a_database_timestamp_has_microseconds() {
        let at = Utc.with_ymd_and_hms(2026, 6, 9, 7, 14, 35).unwrap() + chrono::Duration::microseconds(697_328);
        assert_eq!(ours(at), "\"2026-06-09T07:14:35.697328Z\"");
        assert_eq!(ours(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()), "\"2026-01-02T03:04:05Z\"");
    }
}
