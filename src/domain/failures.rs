//! Failures that workers report: validated against the reason-code taxonomy and
//! sanitized so that no credential or control character reaches storage, and each
//! message stays short enough to show in a list.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest message kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 120;
/// The most failure entries a run keeps; the rest are counted in `dropped`.
pub const MAX_STORED_FAILURES: usize = 100;
/// The longest `code` or `item`, in characters.
const MAX_CODE_CHARS: usize = 64;
const MAX_ITEM_CHARS: usize = 200;

/// Why something failed, from a fixed taxonomy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    ProviderPermissionDenied,
    ProviderThrottled,
    ProviderUnavailable,
    ValidationFailed,
    NotFound,
    Conflict,
    Timeout,
    StaleTimeout,
    InternalError,
    Unknown,
}

/// Every reason code's name, as stored.
pub const REASON_CODES: [&str; 10] = [
    "provider_permission_denied",
    "provider_throttled",
    "provider_unavailable",
    "validation_failed",
    "not_found",
    "conflict",
    "timeout",
    "stale_timeout",
    "internal_error",
    "unknown",
];

/// A failure as a worker reports it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedFailure {
    /// The worker's own error code, e.g. `graph.403`.
    #[schema(example = "graph_forbidden", pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub code: String,
    pub reason_code: ReasonCode,
    /// Free text; credentials are redacted and it is cut to 120 characters.
    #[schema(example = "Graph answered 403 for /deviceManagement/configurationPolicies")]
    pub message: String,
    /// What the failure is about, e.g. a policy id.
    pub item: Option<String>,
}

/// A failure as stored: sanitized and bounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    pub code: String,
    pub reason_code: ReasonCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub item: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureError {
    #[error("failure `code` must be 1 to 64 characters of letters, digits, `_`, `.`, `-` or `:`")]
    InvalidCode,
}

impl Failure {
    /// Validates the code and sanitizes the free text of a reported failure.
    pub fn from_report(report: ReportedFailure) -> Result<Failure, FailureError> {
        let code_ok = !report.code.is_empty()
            && report.code.chars().count() <= MAX_CODE_CHARS
            && report.code.chars().all(|c| c.is_ascii_alphanumeric() || "_.-:".contains(c));
        if !code_ok {
            return Err(FailureError::InvalidCode);
        }
        Ok(Failure {
            code: report.code,
            reason_code: report.reason_code,
            message: sanitize(&report.message, MAX_MESSAGE_CHARS),
            item: report.item.map(|item| sanitize(&item, MAX_ITEM_CHARS)).filter(|i| !i.is_empty()),
        })
    }

    /// The stored JSON entry.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a failure is strings and an enum: it always serializes")
    }

    /// The failure the reaper records on a run that outlived its stale limit.
    pub fn stale_timeout(limit_minutes: u64) -> Failure {
        Failure {
            code: "opsrun.stale".into(),
            reason_code: ReasonCode::StaleTimeout,
            message: format!("No worker completed the run within its stale limit of {limit_minutes} minutes."),
            item: None,
        }
    }
}

// Word boundaries, whitespace and case are ASCII's, so that PostgreSQL's regular
// expressions (src/commands/adopt/convert.sql) redact exactly the same whatever the database's locale.
static BEARER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u:\b)(?i-u:bearer)[\t\n\x0B\x0C\r ]+[A-Za-z0-9\-._~+/]+=*").expect("valid regex"));
static JWT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u:\b)eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*").expect("valid regex"));
/// `password=…`, `client_secret: …`, `api_key=…` and the like, up to the next separator.
static SECRET_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?-u:\b)((?i-u:[a-z0-9_\-]*(?:password|passwd|secret|token|api[_-]?key)[a-z0-9_\-]*))([\t\n\x0B\x0C\r ]*[=:][\t\n\x0B\x0C\r ]*)("[^"]*"|'[^']*'|[^\t\n\x0B\x0C\r &;,"']+)"#)
        .expect("valid regex")
});

/// Redacts credentials, replaces control characters and cuts to `max_chars` characters.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let text = BEARER.replace_all(text, "Bearer [redacted]");
    let text = JWT.replace_all(&text, "[redacted-jwt]");
    let text = SECRET_ASSIGNMENT.replace_all(&text, "$1$2[redacted]");
    let cleaned: String = text
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    cleaned.trim_matches(' ').chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const JWT_SAMPLE: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl";

    #[test]
    fn bearer_tokens_jwts_and_secret_values_are_redacted() {
        let message = format!(
            "call failed: Authorization: Bearer abc.def-123 token {JWT_SAMPLE} password=hunter2&db_password=\"x y\" secret: s3cr3t"
        );
        let clean = sanitize(&message, 1000);
        for leaked in ["abc.def-123", JWT_SAMPLE, "hunter2", "x y", "s3cr3t"] {
            assert!(!clean.contains(leaked), "{leaked} leaked in {clean}");
        }
        assert!(clean.contains("password=[redacted]"), "{clean}");
    }

    #[test]
    fn control_characters_are_stripped_and_whitespace_flattened() {
        assert_eq!(sanitize("a\u{0}b\nc\u{1b}[31md", 100), "ab c[31md");
    }

    proptest! {
        #[test]
        fn messages_never_exceed_the_limit_or_carry_control_characters(s in any::<String>()) {
            let clean = sanitize(&s, MAX_MESSAGE_CHARS);
            prop_assert!(clean.chars().count() <= MAX_MESSAGE_CHARS);
            prop_assert!(!clean.chars().any(char::is_control));
        }

        #[test]
        fn a_password_value_never_survives(prefix in "[ a-z:]{0,20}", secret in "[A-Za-z0-9]{6,30}") {
            let clean = sanitize(&format!("{prefix} password={secret}"), 1000);
            prop_assert!(!clean.contains(&secret));
        }
    }

    #[test]
    fn reason_code_names_are_the_taxonomy() {
        for name in REASON_CODES {
            let code: ReasonCode = serde_json::from_value(serde_json::json!(name)).expect(name);
            assert_eq!(serde_json::to_value(code).unwrap(), name);
        }
        assert!(serde_json::from_value::<ReasonCode>(serde_json::json!("graph_forbidden")).is_err());
    }

    #[test]
    fn codes_are_checked() {
        let report = |code: &str| ReportedFailure {
            code: code.into(),
            reason_code: ReasonCode::Unknown,
            message: "m".into(),
            item: None,
        };
        assert!(Failure::from_report(report("graph.403")).is_ok());
        assert_eq!(Failure::from_report(report("")), Err(FailureError::InvalidCode));
        assert_eq!(Failure::from_report(report("has space")), Err(FailureError::InvalidCode));
    }
}
