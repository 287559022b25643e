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
    match write(at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        // Years outside 0000-9999 and leap seconds: chrono knows how to spell them.
        None => serde::Serialize::serialize(at, serializer),
    }
}

/// `at` as a JSON string, appended to `out`: the same text as [`serialize`].
pub fn push(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    let mut buffer = [0u8; RFC3339_MAX];
    match write(at, &mut buffer) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
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

/// `at` in `buffer`; `None` for what only chrono spells (a year outside 0000-9999, a leap second).
fn write<'b>(at: &DateTime<Utc>, buffer: &'b mut [u8; RFC3339_MAX]) -> Option<&'b str> {
    // Each field of a `DateTime` converts to local time first; UTC's is the naive one.
    let at = at.naive_utc();
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut at_byte = 0;
    // `value` in `digits` decimal digits, then `then`.
    let mut put = |mut value: u32, digits: usize, then: u8| {
        for slot in buffer[at_byte..at_byte + digits].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
        buffer[at_byte + digits] = then;
        at_byte += digits + 1;
    };
    put(at.year() as u32, 4, b'-');
    put(at.month(), 2, b'-');
    put(at.day(), 2, b'T');
    put(at.hour(), 2, b':');
    put(at.minute(), 2, b':');
    match nanos {
        0 => put(at.second(), 2, b'Z'),
        n => {
            put(at.second(), 2, b'.');
            match n {
                n if n % 1_000_000 == 0 => put(n / 1_000_000, 3, b'Z'),
                n if n % 1_000 == 0 => put(n / 1_000, 6, b'Z'),
                n => put(n, 9, b'Z'),
            }
        }
    }
    // Only ASCII digits and separators were written.
    std::str::from_utf8(&buffer[..at_byte]).ok()
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
