//! Parsing a start request's `inputs` object against its type's declared inputs.
//! What comes out can only hold well-formed values: ids are positive, keys are
//! bounded, triggers are known and `scheduled_for` is normalized to the minute in UTC.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::catalog::{InputKind, Requirement, TypeSpec};

/// The longest string a `Key` input may hold.
pub const MAX_KEY_CHARS: usize = 200;

pub use super::catalog::Trigger;

/// One validated input value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputValue {
    Id(i64),
    Key(String),
    Trigger(Trigger),
    /// Already truncated to the minute, in UTC.
    Timestamp(DateTime<Utc>),
}

impl InputValue {
    /// The text this value contributes to the identity hash.
    pub fn identity_text(&self) -> String {
        match self {
            InputValue::Id(id) => id.to_string(),
            InputValue::Key(key) => key.clone(),
            InputValue::Trigger(trigger) => trigger.as_str().to_owned(),
            InputValue::Timestamp(at) => format_minute(*at),
        }
    }

    /// The value as stored in the run's `context`.
    pub fn to_json(&self) -> Value {
        match self {
            InputValue::Id(id) => Value::from(*id),
            other => Value::from(other.identity_text()),
        }
    }
}

/// A start request's inputs, in the catalog's fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInputs {
    values: Vec<(&'static str, InputValue)>,
}

impl RunInputs {
    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, InputValue)> {
        self.values.iter()
    }

    pub fn trigger(&self) -> Option<Trigger> {
        self.values.iter().find_map(|(_, value)| match value {
            InputValue::Trigger(trigger) => Some(*trigger),
            _ => None,
        })
    }
}

/// Why a start request's inputs were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("input `{name}` is required for {run_type}")]
    Missing { name: &'static str, run_type: &'static str },
    #[error("input `{name}` is not taken by {run_type}; it takes: {accepted}")]
    Unknown { name: String, run_type: &'static str, accepted: String },
    #[error("input `{name}` must be {expected}")]
    Invalid { name: &'static str, expected: &'static str },
    #[error("input `scheduled_for` goes only with trigger `scheduled`")]
    ScheduledForWithoutSchedule,
}

/// Formats a minute as `YYYY-MM-DDTHH:MM:00Z`, the one spelling stored and hashed.
pub fn format_minute(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:00Z").to_string()
}

/// Parses an RFC 3339 timestamp and truncates it to the minute in UTC.
pub fn parse_minute(text: &str) -> Option<DateTime<Utc>> {
    let at = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    at.duration_trunc(TimeDelta::minutes(1)).ok()
}

/// The first whole minute at or after `at`: whole-minute values `m` satisfy
/// `m >= at` exactly when `m >= ceil_minute(at)`, and likewise for `<`.
pub fn ceil_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    match at.duration_trunc(TimeDelta::minutes(1)) {
        Ok(floor) if floor == at => at,
        Ok(floor) => floor + TimeDelta::minutes(1),
        Err(_) => at,
    }
}

fn parse_value(name: &'static str, kind: InputKind, raw: &Value) -> Result<InputValue, InputError> {
    let invalid = |expected| InputError::Invalid { name, expected };
    match kind {
        InputKind::Id => match super::integer(raw) {
            Some(id) if id > 0 => Ok(InputValue::Id(id)),
            _ => Err(invalid("a positive integer")),
        },
        InputKind::Key => match raw.as_str() {
            Some(key)
                if !key.trim().is_empty()
                    && key.chars().count() <= MAX_KEY_CHARS
                    && !key.chars().any(char::is_control) =>
            {
                Ok(InputValue::Key(key.to_owned()))
            }
            _ => Err(invalid("a non-empty string of at most 200 characters, without control characters")),
        },
        InputKind::Trigger => raw
            .as_str()
            .and_then(Trigger::parse)
            .map(InputValue::Trigger)
            .ok_or_else(|| invalid("one of `scheduled`, `run_now`, `retry`")),
        InputKind::Timestamp => raw
            .as_str()
            .and_then(parse_minute)
            .map(InputValue::Timestamp)
            .ok_or_else(|| invalid("an RFC 3339 timestamp such as 2026-01-31T10:00:00Z")),
    }
}

/// Checks `raw` against the inputs `spec` declares and returns them in catalog order.
pub fn parse_inputs(spec: &TypeSpec, raw: &Map<String, Value>) -> Result<RunInputs, InputError> {
    let run_type = spec.run_type.as_str();
    if let Some(unknown) = raw.keys().find(|key| !spec.inputs.iter().any(|i| i.name == *key)) {
        let accepted = if spec.inputs.is_empty() {
            "no inputs".to_owned()
        } else {
            spec.inputs.iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
        };
        return Err(InputError::Unknown { name: unknown.clone(), run_type, accepted });
    }

    let mut values = Vec::with_capacity(spec.inputs.len());
    for input in spec.inputs {
        match (raw.get(input.name), input.required) {
            (Some(value), _) => values.push((input.name, parse_value(input.name, input.kind, value)?)),
            (None, Requirement::Always) => return Err(InputError::Missing { name: input.name, run_type }),
            (None, Requirement::WhenScheduled) => {}
        }
    }
    let inputs = RunInputs { values };

    let has_scheduled_for =
        spec.inputs.iter().any(|i| i.required == Requirement::WhenScheduled && raw.contains_key(i.name));
    match (inputs.trigger(), has_scheduled_for) {
        (Some(Trigger::Scheduled), false) => Err(InputError::Missing { name: "scheduled_for", run_type }),
        (Some(Trigger::RunNow | Trigger::Retry), true) => Err(InputError::ScheduledForWithoutSchedule),
        _ => Ok(inputs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::RunType;
    use serde_json::json;

    fn parse(run_type: RunType, raw: Value) -> Result<RunInputs, InputError> {
        parse_inputs(run_type.spec(), raw.as_object().unwrap())
    }

    #[test]
    fn scheduled_for_spellings_of_one_minute_collapse() {
        let spellings = ["2026-03-01T10:00:00Z", "2026-03-01T10:00:30Z", "2026-03-01T12:00:00+02:00"];
        let minutes: Vec<_> = spellings.iter().map(|s| parse_minute(s).unwrap()).collect();
        assert!(minutes.iter().all(|m| *m == minutes[0]));
        assert_eq!(format_minute(minutes[0]), "2026-03-01T10:00:00Z");
        assert_ne!(parse_minute("2026-03-01T10:01:00Z"), Some(minutes[0]));
    }

    #[test]
    fn non_rfc3339_scheduled_for_is_invalid() {
        for bad in ["2026-03-01 10:00", "yesterday", "2026-03-01", ""] {
            let err = parse(
                RunType::BackupScheduleRun,
                json!({"backup_schedule_id": 1, "trigger": "scheduled", "scheduled_for": bad}),
            )
            .unwrap_err();
            assert!(matches!(err, InputError::Invalid { name: "scheduled_for", .. }), "{bad}");
        }
    }

    #[test]
    fn scheduled_trigger_needs_scheduled_for_and_others_refuse_it() {
        let missing = parse(RunType::BackupScheduleRun, json!({"backup_schedule_id": 1, "trigger": "scheduled"}));
        assert_eq!(
            missing.unwrap_err(),
            InputError::Missing { name: "scheduled_for", run_type: "backup_schedule_run" }
        );
        let extra = parse(
            RunType::BackupScheduleRun,
            json!({"backup_schedule_id": 1, "trigger": "run_now", "scheduled_for": "2026-03-01T10:00:00Z"}),
        );
        assert_eq!(extra.unwrap_err(), InputError::ScheduledForWithoutSchedule);
        assert!(parse(RunType::BackupScheduleRun, json!({"backup_schedule_id": 1, "trigger": "retry"})).is_ok());
    }

    #[test]
    fn ids_must_be_positive_integers() {
        for bad in [json!(0), json!(-3), json!("7"), json!(1.5), json!(null), json!(1e300)] {
            let err = parse(RunType::RestoreExecute, json!({ "restore_run_id": bad })).unwrap_err();
            assert!(matches!(err, InputError::Invalid { name: "restore_run_id", .. }));
        }
    }

    #[test]
    fn integral_floats_are_integers() {
        let inputs = parse(RunType::RestoreExecute, json!({ "restore_run_id": 7.0 })).unwrap();
        assert_eq!(inputs.iter().next().unwrap().1, InputValue::Id(7));
    }

    #[test]
    fn unknown_inputs_are_refused_naming_the_accepted_ones() {
        let err = parse(RunType::InventorySync, json!({"selection_hsh": "x"})).unwrap_err();
        assert!(err.to_string().contains("selection_hash"), "{err}");
    }

    #[test]
    fn inputs_come_back_in_catalog_order() {
        let inputs = parse(
            RunType::BackupScheduleRun,
            json!({"scheduled_for": "2026-03-01T10:00:00Z", "trigger": "scheduled", "backup_schedule_id": 9}),
        )
        .unwrap();
        let names: Vec<_> = inputs.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["backup_schedule_id", "trigger", "scheduled_for"]);
    }
}
