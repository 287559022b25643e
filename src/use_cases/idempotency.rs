//! Retrying safely (docs/CONTRACT.md, "Retrying safely"): a write that carries an
//! `Idempotency-Key` takes effect at most once per caller and key. The first request's
//! answer is stored in the same transaction as its effect and replayed to every retry of
//! the same request for 24 hours. A retry that arrives while the first is still running
//! is told so at once (an advisory lock, held by the first request's transaction, on any
//! instance); the same key on a different request is refused.

use std::collections::HashSet;
use std::time::Duration;

use diesel::{Connection, PgConnection, QueryResult};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::idempotency::{self, Claimed, KeyClaim, StoredAnswer};
use crate::db::DbError;
use crate::domain::access::Principal;
use crate::domain::ids::WorkspaceId;

/// How long an answer is kept and replayed.
pub const KEPT: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest key accepted, in characters.
pub const MAX_KEY_CHARS: usize = 255;
/// Expired answers deleted per statement by the purge.
const PURGE_BATCH: i64 = 1000;

/// The header's grammar, as the OpenAPI document states it: a bare key of visible ASCII
/// other than `"` (spaces only inside), or the same as one structured-field string.
/// [`IdempotencyKey::parse`] accepts exactly this; a test holds the two together.
pub const KEY_PATTERN: &str = r#"^(?:[!#-~](?:[ !#-~]*[!#-~])?|"[ !#-~]+")$"#;

/// Why an `Idempotency-Key` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("the Idempotency-Key header is empty; send 1 to {MAX_KEY_CHARS} characters, e.g. a UUID")]
    Empty,
    #[error("the Idempotency-Key header has {0} characters; send at most {MAX_KEY_CHARS}, e.g. a UUID")]
    TooLong(usize),
    #[error(
        "the Idempotency-Key header may hold only visible ASCII characters other than `\"` (spaces only inside), \
         bare or as one quoted string, e.g. a UUID"
    )]
    Malformed,
}

/// A client's key: a header value of at most 255 characters, bare (`8e03978e-…`) or as a
/// structured-field string (`"8e03978e-…"`, as the IETF draft writes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(header: &str) -> Result<IdempotencyKey, KeyRefusal> {
        let inner = |c: char| c == ' ' || (c.is_ascii_graphic() && c != '"');
        let length = header.chars().count();
        if length > MAX_KEY_CHARS {
            return Err(KeyRefusal::TooLong(length));
        }
        let key = match header.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"').ok_or(KeyRefusal::Malformed)?,
            None if header.starts_with(' ') || header.ends_with(' ') => return Err(KeyRefusal::Malformed),
            None => header,
        };
        if key.is_empty() {
            Err(KeyRefusal::Empty)
        } else if !key.chars().all(inner) {
            Err(KeyRefusal::Malformed)
        } else {
            Ok(IdempotencyKey(key.to_owned()))
        }
    }
}

/// A request that carries a key: whose key it is, and which request it names.
#[derive(Clone, Debug)]
pub struct KeyedRequest {
    workspace_id: WorkspaceId,
    subject: String,
    key: IdempotencyKey,
    /// sha256 of the method, the path and the parsed body.
    request_hash: String,
}

impl KeyedRequest {
    /// `body` is the parsed request (defaults filled in): two bodies that differ only in
    /// spacing or key order are the same request.
    pub fn new(principal: &Principal, key: IdempotencyKey, method: &str, path: &str, body: &impl Serialize) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(format!("{method} {path}\n"));
        hasher.update(serde_json::to_vec(body).expect("a parsed request serializes"));
        KeyedRequest {
            workspace_id: principal.workspace_id,
            subject: principal.subject.clone(),
            key,
            request_hash: hex::encode(hasher.finalize()),
        }
    }

    /// Whose key this is, and the key: requests with one name share a stored answer.
    fn name(&self) -> (WorkspaceId, &str, &str) {
        (self.workspace_id, &self.subject, &self.key.0)
    }

    /// `answer` as stored for this request.
    fn storing(&self, answer: &Answer) -> StoredAnswer {
        StoredAnswer {
            workspace_id: self.workspace_id,
            subject: self.subject.clone(),
            key: self.key.0.clone(),
            request_hash: self.request_hash.clone(),
            response_status: i16::try_from(answer.status).unwrap_or(i16::MAX),
            response_type: answer.content_type.clone(),
            response_location: answer.location.clone(),
            response_body: answer.body.clone(),
        }
    }

    /// The advisory lock that marks this key's request as in flight.
    fn lock(&self) -> i64 {
        let mut hasher = Sha256::new();
        hasher.update(format!("opsrun idempotency|{}|{}|", self.workspace_id, self.subject));
        hasher.update(&self.key.0);
        let digest = hasher.finalize();
        i64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
    }
}

/// An answer as stored and replayed: what a client must get again byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub location: Option<String>,
    pub body: String,
}

impl Answer {
    /// A success (2xx): the write took effect. A refusal, stored to be replayed, did not.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A keyed write's answer that took effect now: a success, not a replay.
pub fn fresh_success(answered: &Result<Answered, KeyedError>) -> bool {
    matches!(answered, Ok(answered) if !answered.replayed && answered.answer.is_success())
}

/// An answer, and whether it is a replay of an earlier request's.
#[derive(Clone, Debug)]
pub struct Answered {
    pub answer: Answer,
    pub replayed: bool,
}

/// Why a keyed request was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConflict {
    #[error("a request with this Idempotency-Key is still being processed; retry after the Retry-After delay")]
    InFlight,
    #[error("this Idempotency-Key was already used for a different request; use a new key for a new request")]
    Reused,
}

/// Why a keyed write that was not refused for its content got no answer: its key, or
/// the database.
#[derive(Debug, thiserror::Error)]
pub enum KeyedError {
    #[error(transparent)]
    Key(#[from] KeyConflict),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for KeyedError {
    fn from(error: diesel::result::Error) -> KeyedError {
        KeyedError::Db(error.into())
    }
}

/// Runs `effect` at most once for `keyed`: the first time, in one transaction with the
/// storing of its answer; after that, the stored answer. An `Err` from `effect` is not
/// stored (nothing took effect, or it is rolled back): the request may be retried with
/// the same key.
pub fn once<E>(
    conn: &mut PgConnection,
    keyed: &KeyedRequest,
    effect: impl FnOnce(&mut PgConnection) -> Result<Answer, E>,
) -> Result<Answered, E>
where
    E: From<diesel::result::Error> + From<KeyConflict>,
{
    conn.transaction(|conn| {
        let claimed = idempotency::claim(conn, keyed.lock(), keyed.workspace_id, &keyed.subject, &keyed.key.0, KEPT)?;
        if let Some(stored) = stored_answer(keyed, claimed)? {
            return Ok(stored);
        }
        let answer = effect(conn)?;
        idempotency::save_each(conn, std::slice::from_ref(&keyed.storing(&answer)))?;
        Ok(Answered { answer, replayed: false })
    })
}

/// [`once`] for a batch of keyed requests in one transaction, as if made one after the
/// other: one statement claims every key, `effect` makes the effects of those whose key
/// is fresh (one answer each, in their order), and one statement stores their answers.
/// A key sent twice in the batch is claimed by its first request; the second arrived
/// while the first was in flight, and is told so. An `Err` from `effect` rolls back the
/// batch: nothing took effect, and nothing is stored.
pub fn once_each<J, E>(
    conn: &mut PgConnection,
    batch: &[(KeyedRequest, J)],
    effect: impl FnOnce(&mut PgConnection, Vec<&J>) -> Result<Vec<Answer>, E>,
) -> Result<Vec<Result<Answered, KeyConflict>>, E>
where
    E: From<diesel::result::Error>,
{
    conn.transaction(|conn| {
        let mut seen = HashSet::new();
        let first: Vec<bool> = batch.iter().map(|(keyed, _)| seen.insert(keyed.name())).collect();
        let claims: Vec<KeyClaim> = batch
            .iter()
            .zip(&first)
            .filter(|(_, first)| **first)
            .map(|((keyed, _), _)| KeyClaim {
                lock: keyed.lock(),
                workspace: keyed.workspace_id,
                caller: &keyed.subject,
                given: &keyed.key.0,
            })
            .collect();
        let mut claimed = idempotency::claim_each(conn, &claims, KEPT)?.into_iter();
        // Per request: decided (a replay or a conflict), or `None` while its effect is due.
        let mut outcomes: Vec<Option<Result<Answered, KeyConflict>>> = Vec::with_capacity(batch.len());
        for ((keyed, _), first) in batch.iter().zip(&first) {
            let outcome = match first {
                false => Some(Err(KeyConflict::InFlight)),
                true => {
                    let claim = claimed.next().ok_or(diesel::result::Error::NotFound)?;
                    stored_answer(keyed, claim).transpose()
                }
            };
            outcomes.push(outcome);
        }
        let due: Vec<usize> = (0..batch.len()).filter(|i| outcomes[*i].is_none()).collect();
        let answers = effect(conn, due.iter().map(|i| &batch[*i].1).collect())?;
        if answers.len() != due.len() {
            return Err(diesel::result::Error::QueryBuilderError("an effect lost answers".into()).into());
        }
        let storing: Vec<StoredAnswer> = due.iter().zip(&answers).map(|(i, a)| batch[*i].0.storing(a)).collect();
        idempotency::save_each(conn, &storing)?;
        for (i, answer) in due.into_iter().zip(answers) {
            outcomes[i] = Some(Ok(Answered { answer, replayed: false }));
        }
        Ok(outcomes.into_iter().map(|outcome| outcome.expect("every request is decided or answered")).collect())
    })
}

/// What a claim found: the stored answer to replay (`None`: the key is fresh), or why
/// the request may not go on.
fn stored_answer(keyed: &KeyedRequest, claimed: Claimed) -> Result<Option<Answered>, KeyConflict> {
    if !claimed.locked {
        return Err(KeyConflict::InFlight);
    }
    let Some(stored_hash) = claimed.request_hash else { return Ok(None) };
    if stored_hash != keyed.request_hash {
        return Err(KeyConflict::Reused);
    }
    let answer = Answer {
        status: claimed.response_status.and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
        content_type: claimed.response_type.unwrap_or_default(),
        location: claimed.response_location,
        body: claimed.response_body.unwrap_or_default(),
    };
    Ok(Some(Answered { answer, replayed: true }))
}

/// Deletes every answer past its 24 hours, a batch per statement; returns how many.
pub fn purge_expired(conn: &mut PgConnection) -> QueryResult<usize> {
    let mut purged = 0;
    loop {
        let deleted = idempotency::purge_expired(conn, KEPT, PURGE_BATCH)?;
        purged += deleted;
        if (deleted as i64) < PURGE_BATCH {
            return Ok(purged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_are_1_to_255_visible_ascii_characters_bare_or_quoted() {
        assert_eq!(IdempotencyKey::parse("8e03978e-40d5-43e8"), Ok(IdempotencyKey("8e03978e-40d5-43e8".into())));
        assert_eq!(IdempotencyKey::parse("\"8e03978e\""), Ok(IdempotencyKey("8e03978e".into())));
        assert_eq!(IdempotencyKey::parse(""), Err(KeyRefusal::Empty));
        assert_eq!(IdempotencyKey::parse("\"\""), Err(KeyRefusal::Empty));
        assert_eq!(IdempotencyKey::parse(&"k".repeat(255)).map(|k| k.0.len()), Ok(255));
        assert_eq!(IdempotencyKey::parse(&"k".repeat(256)), Err(KeyRefusal::TooLong(256)));
        assert_eq!(IdempotencyKey::parse("tab\there"), Err(KeyRefusal::Malformed));
        assert_eq!(IdempotencyKey::parse("schlüssel"), Err(KeyRefusal::Malformed));
        assert_eq!(IdempotencyKey::parse("a\"b"), Err(KeyRefusal::Malformed));
        assert_eq!(IdempotencyKey::parse(" padded"), Err(KeyRefusal::Malformed));
    }

    proptest! {
        /// The parser accepts exactly what the documented pattern and length allow.
        #[test]
        fn the_parser_and_the_documented_pattern_agree(header in "[ -~\u{80}-\u{ff}]{0,8}|\"[ -~]{0,6}\"?") {
            let pattern = regex::Regex::new(KEY_PATTERN).unwrap();
            let documented = pattern.is_match(&header) && header.chars().count() <= MAX_KEY_CHARS;
            prop_assert_eq!(IdempotencyKey::parse(&header).is_ok(), documented, "{:?}", header);
        }
    }

    fn principal(subject: &str, workspace: i64) -> Principal {
        Principal {
            subject: subject.into(),
            user_id: None,
            initiator_name: subject.into(),
            workspace_id: WorkspaceId(workspace),
            tenants: crate::domain::access::TenantScope::All,
            capabilities: Default::default(),
            valid_until: i64::MAX,
        }
    }

    proptest! {
        /// The request hash tells requests apart by method, path and body, and nothing else;
        /// the lock is the caller's and the key's alone.
        #[test]
        fn a_keyed_request_is_named_by_method_path_and_body(a in 0i64..5, b in 0i64..5, path_b in any::<bool>()) {
            let key = IdempotencyKey::parse("k").unwrap();
            let first = KeyedRequest::new(&principal("ada", 1), key.clone(), "POST", "/v1/runs", &serde_json::json!({"n": a}));
            let path = if path_b { "/v1/runs/1/progress" } else { "/v1/runs" };
            let second = KeyedRequest::new(&principal("ada", 1), key.clone(), "POST", path, &serde_json::json!({"n": b}));
            prop_assert_eq!(first.request_hash == second.request_hash, a == b && !path_b);
            prop_assert_eq!(first.lock(), second.lock());
            let other_caller = KeyedRequest::new(&principal("bob", 1), key.clone(), "POST", "/v1/runs", &serde_json::json!({"n": a}));
            let other_workspace = KeyedRequest::new(&principal("ada", 2), key, "POST", "/v1/runs", &serde_json::json!({"n": a}));
            prop_assert_ne!(first.lock(), other_caller.lock());
            prop_assert_ne!(first.lock(), other_workspace.lock());
        }
    }
}
