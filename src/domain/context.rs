//! A run's `context`: a bounded JSON object that must never carry credentials.

use serde_json::{Map, Value};

/// The largest serialized context, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 16 * 1024;
/// The deepest nesting allowed inside a context.
pub const MAX_CONTEXT_DEPTH: usize = 8;
/// Key fragments that mark a value as a secret, matched case-insensitively anywhere in a key.
const SECRET_KEY_FRAGMENTS: [&str; 5] = ["password", "secret", "token", "client_secret", "authorization"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context must be a JSON object")]
    NotAnObject,
    #[error("context is {0} bytes; the limit is 16384")]
    TooLarge(usize),
    #[error("context nests deeper than {MAX_CONTEXT_DEPTH} levels")]
    TooDeep,
    #[error("context key `{0}` looks like a secret; credentials do not belong in a run's context")]
    SecretKey(String),
    #[error("context holds a NUL character (\\u0000), which cannot be stored; remove it")]
    NulCharacter,
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(key, nested)| key.contains('\0') || has_nul(nested)),
        _ => false,
    }
}

/// Returns the first key (depth-first) that looks like a secret.
fn find_secret_key(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) => map.iter().find_map(|(key, nested)| {
            let lower = key.to_lowercase();
            if SECRET_KEY_FRAGMENTS.iter().any(|fragment| lower.contains(fragment)) {
                Some(key.as_str())
            } else {
                find_secret_key(nested)
            }
        }),
        Value::Array(items) => items.iter().find_map(find_secret_key),
        _ => None,
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks a client's context and hands back its object.
pub fn validate_context(value: Value) -> Result<Map<String, Value>, ContextError> {
    let Value::Object(map) = value else {
        return Err(ContextError::NotAnObject);
    };
    let map = Value::Object(map);
    if depth(&map) > MAX_CONTEXT_DEPTH {
        return Err(ContextError::TooDeep);
    }
    if let Some(key) = find_secret_key(&map) {
        return Err(ContextError::SecretKey(key.to_owned()));
    }
    if has_nul(&map) {
        return Err(ContextError::NulCharacter);
    }
    let size = map.to_string().len();
    if size > MAX_CONTEXT_BYTES {
        return Err(ContextError::TooLarge(size));
    }
    match map {
        Value::Object(map) => Ok(map),
        _ => unreachable!("constructed as an object above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_like_keys_are_refused_at_any_depth_and_case() {
        for bad in [
            json!({"password": "x"}),
            json!({"DB_Password": "x"}),
            json!({"target_scope": {"nested": [{"Client_Secret": 1}]}}),
            json!({"Authorization": "Bearer x"}),
            json!({"refresh_token": "x"}),
        ] {
            assert!(matches!(validate_context(bad), Err(ContextError::SecretKey(_))));
        }
    }

    #[test]
    fn ordinary_context_is_kept() {
        let value = json!({"provider_connection_id": 4, "target_scope": {"kind": "all"}});
        assert_eq!(Value::Object(validate_context(value.clone()).unwrap()), value);
    }

    #[test]
    fn size_depth_and_shape_are_bounded() {
        assert_eq!(validate_context(json!([1])), Err(ContextError::NotAnObject));
        let big = json!({"blob": "x".repeat(MAX_CONTEXT_BYTES)});
        assert!(matches!(validate_context(big), Err(ContextError::TooLarge(_))));
        let mut deep = json!(1);
        for _ in 0..=MAX_CONTEXT_DEPTH {
            deep = json!({"a": deep});
        }
        assert_eq!(validate_context(deep), Err(ContextError::TooDeep));
        assert_eq!(validate_context(json!({"a": ["x\u{0}y"]})), Err(ContextError::NulCharacter));
    }
}
