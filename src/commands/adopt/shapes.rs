//! The platform's JSON shapes and type names in opsrun's: what `adopt --check` expects
//! the database's conversion (convert.sql) to make of a row. The platform's PHP writes an
//! empty object as `[]`, its failures as a list, and its counters sometimes as strings or
//! under keys of its own; all of that is normal data, converted without a decision.

use serde_json::{json, Map, Value};

use crate::domain::catalog::{RunType, Trigger, LEGACY_SPELLINGS};
use crate::domain::counts::{COUNT_KEYS, MAX_COUNT};
use crate::domain::failures::{sanitize, MAX_MESSAGE_CHARS, MAX_STORED_FAILURES, REASON_CODES};

const MAX_CODE_CHARS: usize = 64;
const MAX_ITEM_CHARS: usize = 200;

/// The canonical type a platform type name stands for, and the trigger a backup-schedule
/// spelling implies: a canonical name, a listed legacy spelling, or a dotted spelling of
/// a canonical name (`policy.sync`).
pub fn canonical_type(name: &str) -> Option<(RunType, Option<Trigger>)> {
    if let Some(run_type) = RunType::parse(name) {
        return Some((run_type, None));
    }
    if let Some(legacy) = LEGACY_SPELLINGS.iter().find(|legacy| legacy.name == name) {
        return Some((legacy.canonical, legacy.trigger));
    }
    RunType::parse(&name.replace('.', "_")).map(|run_type| (run_type, None))
}

/// A JSON object column: null and the empty list become `{}`; `None` for anything else.
pub fn object(value: Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        Value::Array(list) if list.is_empty() => Ok(Map::new()),
        other => Err(format!("a JSON {}", json_kind(&other))),
    }
}

pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON value as text: a string as itself, null as "", anything else as its JSON.
fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// One failure entry of the platform's in opsrun's stored shape.
pub fn failure(entry: &Value) -> Value {
    let Value::Object(entry) = entry else {
        return json!({"code": "unknown", "reason_code": "unknown", "message": sanitize(&text(Some(entry)), MAX_MESSAGE_CHARS)});
    };
    let code = match entry.get("code") {
        Some(code @ (Value::String(_) | Value::Number(_))) => sanitize(&text(Some(code)), MAX_CODE_CHARS),
        _ => String::new(),
    };
    let mut platform_reason = entry.get("platform_reason_code").and_then(Value::as_str).map(str::to_owned);
    let reason = match entry.get("reason_code") {
        Some(Value::String(reason)) if REASON_CODES.contains(&reason.as_str()) => reason.clone(),
        other => {
            if platform_reason.is_none() && !matches!(other, None | Some(Value::Null)) {
                platform_reason = Some(sanitize(&text(other), MAX_CODE_CHARS));
            }
            "unknown".to_owned()
        }
    };
    let mut stored = Map::new();
    stored.insert("code".into(), Value::from(if code.is_empty() { "unknown".to_owned() } else { code }));
    stored.insert("reason_code".into(), Value::from(reason));
    stored.insert("message".into(), Value::from(sanitize(&text(entry.get("message")), MAX_MESSAGE_CHARS)));
    let item = sanitize(&text(entry.get("item")), MAX_ITEM_CHARS);
    if !item.is_empty() {
        stored.insert("item".into(), Value::from(item));
    }
    if let Some(platform_reason) = platform_reason.filter(|reason| !reason.is_empty()) {
        stored.insert("platform_reason_code".into(), Value::from(platform_reason));
    }
    Value::Object(stored)
}

fn whole_count(value: &Value) -> Option<i64> {
    let count = match value {
        Value::Number(_) => crate::domain::integer(value)?,
        Value::String(digits) if (1..=16).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().ok()?
        }
        _ => return None,
    };
    (0..=MAX_COUNT).contains(&count).then_some(count)
}

/// failure_summary in opsrun's stored shape, `{"items": [at most 100], "dropped": n}`.
pub fn failures(summary: Value) -> Result<Value, String> {
    let (items, dropped) = match summary {
        Value::Null => (Vec::new(), 0),
        Value::Array(items) => (items, 0),
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => {
                let dropped = map.get("dropped").and_then(whole_count_number).unwrap_or(0);
                (items, dropped)
            }
            Some(other) => {
                map.insert("items".into(), other);
                one_failure(map)?
            }
            None => one_failure(map)?,
        },
        other => return Err(format!("a JSON {}", json_kind(&other))),
    };
    let overflow = items.len().saturating_sub(MAX_STORED_FAILURES) as i64;
    let kept: Vec<Value> = items.iter().take(MAX_STORED_FAILURES).map(failure).collect();
    Ok(json!({"items": kept, "dropped": dropped + overflow}))
}

fn whole_count_number(value: &Value) -> Option<i64> {
    value.is_number().then(|| whole_count(value)).flatten()
}

fn one_failure(map: Map<String, Value>) -> Result<(Vec<Value>, i64), String> {
    if map.is_empty() {
        Ok((Vec::new(), 0))
    } else if ["code", "reason_code", "message"].iter().any(|key| map.contains_key(*key)) {
        Ok((vec![Value::Object(map)], 0))
    } else {
        Err("an object that is neither a list of failures nor one failure".into())
    }
}

/// opsrun's counters, and what was set aside.
pub type SplitCounts = (Map<String, Value>, Map<String, Value>);

/// summary_counts split into opsrun's counters and what is set aside: another key, or a
/// value that is not a count (a count is a non-negative integer, or a string of digits).
pub fn counts(value: Value) -> Result<SplitCounts, String> {
    let mut kept = Map::new();
    let mut aside = Map::new();
    for (key, value) in object(value)? {
        match whole_count(&value) {
            Some(count) if COUNT_KEYS.contains(&key.as_str()) => {
                kept.insert(key, Value::from(count));
            }
            _ => {
                aside.insert(key, value);
            }
        }
    }
    Ok((kept, aside))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platforms_failure_list_becomes_opsruns_shape() {
        let platform = json!([
            {"code": "graph.403", "reason_code": "provider_permission_denied", "message": "Graph answered 403"},
            {"code": "x", "reason_code": "graph_forbidden", "message": "token=abc\u{1} leaked"},
            {"message": "no code"},
            "a bare string",
        ]);
        let stored = failures(platform).unwrap();
        assert_eq!(
            stored,
            json!({"items": [
                {"code": "graph.403", "reason_code": "provider_permission_denied", "message": "Graph answered 403"},
                {"code": "x", "reason_code": "unknown", "platform_reason_code": "graph_forbidden", "message": "token=[redacted] leaked"},
                {"code": "unknown", "reason_code": "unknown", "message": "no code"},
                {"code": "unknown", "reason_code": "unknown", "message": "a bare string"},
            ], "dropped": 0})
        );
        assert_eq!(failures(stored.clone()).unwrap(), stored, "converting again changes nothing");
    }

    #[test]
    fn more_than_a_hundred_failures_are_counted_as_dropped() {
        let many: Vec<Value> = (0..130).map(|i| json!({"code": "c", "message": format!("m{i}")})).collect();
        let stored = failures(Value::Array(many)).unwrap();
        assert_eq!(stored["items"].as_array().unwrap().len(), 100);
        assert_eq!(stored["dropped"], 30);
    }

    #[test]
    fn counts_written_as_strings_are_converted_and_other_keys_set_aside() {
        let (kept, aside) =
            counts(json!({"processed": "3", "failed": 1.0, "pages": 4, "total": -1, "skipped": "x"})).unwrap();
        assert_eq!(Value::Object(kept), json!({"processed": 3, "failed": 1}));
        assert_eq!(Value::Object(aside), json!({"pages": 4, "total": -1, "skipped": "x"}));
        assert_eq!(counts(json!([])).unwrap().0, Map::new());
        assert!(counts(json!([1, 2])).is_err());
    }

    #[test]
    fn dotted_spellings_of_canonical_types_are_that_type() {
        assert_eq!(canonical_type("policy.sync"), Some((RunType::PolicySync, None)));
        assert_eq!(
            canonical_type("backup_schedule.run_now"),
            Some((RunType::BackupScheduleRun, Some(Trigger::RunNow)))
        );
        assert_eq!(canonical_type("inventory.sync_v2"), None);
    }
}
