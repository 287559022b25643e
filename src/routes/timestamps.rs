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
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut at_byte = 0;
    let mut put = |value: u32, digits: u32, then: Option<u8>| {
        for place in (0..digits).rev() {
            buffer[at_byte] = b'0' + (value / 10u32.pow(place) % 10) as u8;
            at_byte += 1;
        }
        if let Some(byte) = then {
            buffer[at_byte] = byte;
            at_byte += 1;
        }
    };
    put(at.year() as u32, 4, Some(b'-'));
    put(at.month(), 2, Some(b'-'));
    put(at.day(), 2, Some(b'T'));
    put(at.hour(), 2, Some(b':'));
    put(at.minute(), 2, Some(b':'));
    let fraction = match nanos {
        0 => None,
        n if n % 1_000_000 == 0 => Some((n / 1_000_000, 3)),
        n if n % 1_000 == 0 => Some((n / 1_000, 6)),
        n => Some((n, 9)),
    };
    match fraction {
        None => put(at.second(), 2, Some(b'Z')),
        Some((value, digits)) => {
            put(at.second(), 2, Some(b'.'));
            put(value, digits, Some(b'Z'));
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
