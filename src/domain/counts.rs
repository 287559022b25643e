//! Run counters: a closed set of keys with non-negative integer values.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The only keys `summary_counts` may hold.
pub const COUNT_KEYS: [&str; 9] =
    ["total", "processed", "succeeded", "failed", "skipped", "created", "updated", "deleted", "items"];

/// The largest value one report may carry: JavaScript's largest safe integer, so every
/// client reads counters exactly.
pub const MAX_COUNT: i64 = 9_007_199_254_740_991;

/// Validated counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts(BTreeMap<&'static str, i64>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountsError {
    #[error("`{0}` is not a counter; counters are: {keys}", keys = super::one_of(COUNT_KEYS))]
    UnknownKey(String),
    #[error("counter `{0}` must be a non-negative integer of at most {MAX_COUNT}")]
    InvalidValue(String),
}

impl Counts {
    pub fn parse(raw: &Map<String, Value>) -> Result<Counts, CountsError> {
        let mut counts = BTreeMap::new();
        for (key, value) in raw {
            let key = COUNT_KEYS
                .into_iter()
                .find(|known| known == key)
                .ok_or_else(|| CountsError::UnknownKey(key.clone()))?;
            match super::integer(value) {
                Some(n) if (0..=MAX_COUNT).contains(&n) => counts.insert(key, n),
                _ => return Err(CountsError::InvalidValue(key.to_owned())),
            };
        }
        Ok(Counts(counts))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Counts, CountsError> {
        Counts::parse(v.as_object().unwrap())
    }

    #[test]
    fn known_keys_with_non_negative_integers_are_accepted() {
        let counts = parse(json!({"processed": 3, "failed": 0.0, "items": MAX_COUNT})).unwrap();
        assert_eq!(counts.to_json(), json!({"processed": 3, "failed": 0, "items": MAX_COUNT}));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert_eq!(parse(json!({"errors": 1})), Err(CountsError::UnknownKey("errors".into())));
        for bad in [json!(-1), json!(1.5), json!("2"), json!(MAX_COUNT + 1), json!(null), json!(1e20)] {
            assert_eq!(parse(json!({"total": bad})), Err(CountsError::InvalidValue("total".into())));
        }
    }
}
