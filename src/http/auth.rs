//! Bearer-token authentication: JWT verification with a pinned algorithm, the claims
//! opsrun reads, and the `Principal` extractor handlers declare to get the caller.

use std::collections::{BTreeSet, HashMap};
use std::future::{ready, Ready};
use std::sync::Mutex;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::access::{Principal, TenantScope};
use crate::domain::catalog::{CATALOG, EXECUTE_CAPABILITY};
use crate::domain::ids::{TenantId, WorkspaceId};
use crate::http::error::ApiError;

/// The key tokens are verified with; each pins exactly one algorithm.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with a shared secret (at least 32 bytes).
    Hs256(SecretSlice<u8>),
    /// RS256 with an RSA public key in PEM.
    Rs256(Vec<u8>),
    /// ES256 with an EC P-256 public key in PEM.
    Es256(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtKey::Hs256(_) => "Hs256([redacted])",
            JwtKey::Rs256(_) => "Rs256(public key)",
            JwtKey::Es256(_) => "Es256(public key)",
        })
    }
}

impl JwtKey {
    /// Reads a PEM public key, telling RSA from EC by trying each.
    pub fn from_public_pem(pem: Vec<u8>) -> Result<JwtKey, String> {
        if DecodingKey::from_rsa_pem(&pem).is_ok() {
            Ok(JwtKey::Rs256(pem))
        } else if DecodingKey::from_ec_pem(&pem).is_ok() {
            Ok(JwtKey::Es256(pem))
        } else {
            Err("is not an RSA or EC public key in PEM format".into())
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            JwtKey::Hs256(_) => Algorithm::HS256,
            JwtKey::Rs256(_) => Algorithm::RS256,
            JwtKey::Es256(_) => Algorithm::ES256,
        }
    }

    fn decoding_key(&self) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
        match self {
            JwtKey::Hs256(secret) => Ok(DecodingKey::from_secret(secret.expose_secret())),
            JwtKey::Rs256(pem) => DecodingKey::from_rsa_pem(pem),
            JwtKey::Es256(pem) => DecodingKey::from_ec_pem(pem),
        }
    }
}

/// What verification checks besides the signature.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew accepted on `exp` and `nbf`.
    pub leeway: std::time::Duration,
}

/// The longest initiator name kept from a token.
const MAX_INITIATOR_CHARS: usize = 200;

/// The claims opsrun reads from a token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub workspace_id: i64,
    /// `"*"` or an array of tenant ids; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Value>,
    #[serde(default)]
    pub caps: Vec<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    fn into_principal(self) -> Result<Principal, String> {
        let tenants = match self.tenants {
            None => TenantScope::Only(BTreeSet::new()),
            Some(Value::String(star)) if star == "*" => TenantScope::All,
            Some(Value::Array(ids)) => TenantScope::Only(
                ids.iter()
                    .map(|id| id.as_i64().map(TenantId))
                    .collect::<Option<BTreeSet<TenantId>>>()
                    .ok_or("the `tenants` claim must hold integer tenant ids")?,
            ),
            Some(_) => return Err("the `tenants` claim must be \"*\" or an array of tenant ids".into()),
        };
        let printable = |text: &str| -> String {
            text.chars().filter(|c| !c.is_control()).take(MAX_INITIATOR_CHARS).collect::<String>().trim().to_owned()
        };
        let initiator_name =
            self.name.as_deref().map(printable).filter(|name| !name.is_empty()).unwrap_or_else(|| printable(&self.sub));
        if initiator_name.is_empty() {
            return Err("the token's `sub` is empty".into());
        }
        Ok(Principal {
            user_id: self.sub.parse().ok(),
            subject: self.sub.clone(),
            initiator_name,
            workspace_id: WorkspaceId(self.workspace_id),
            tenants,
            capabilities: self.caps.into_iter().collect(),
            valid_until: self.exp,
        })
    }
}

/// Verifies bearer tokens against one key and one algorithm.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    verified: VerifiedTokens,
}

/// Tokens verified lately, by the SHA-256 of the token, each until it expires: a client
/// sends the same token with every request, and an RS256 or ES256 signature check costs
/// tens of microseconds. Bounded; the tokens themselves are not kept.
struct VerifiedTokens {
    principals: Mutex<HashMap<[u8; 32], Principal>>,
}

/// The most tokens remembered at once.
const VERIFIED_TOKENS: usize = 4096;

impl VerifiedTokens {
    fn get(&self, digest: &[u8; 32], now: i64) -> Option<Principal> {
        let mut principals = self.principals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match principals.get(digest) {
            Some(principal) if principal.valid_until >= now => Some(principal.clone()),
            Some(_) => {
                principals.remove(digest);
                None
            }
            None => None,
        }
    }

    fn insert(&self, digest: [u8; 32], principal: &Principal, now: i64) {
        let mut principals = self.principals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if principals.len() >= VERIFIED_TOKENS {
            principals.retain(|_, known| known.valid_until >= now);
        }
        if principals.len() >= VERIFIED_TOKENS {
            principals.clear();
        }
        principals.insert(digest, principal.clone());
    }
}

impl TokenVerifier {
    pub fn new(config: &AuthConfig) -> Result<TokenVerifier, jsonwebtoken::errors::Error> {
        // Validation::new pins the accepted algorithms to exactly this one.
        let mut validation = Validation::new(config.key.algorithm());
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp"];
        required.extend(config.issuer.as_ref().map(|_| "iss"));
        required.extend(config.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        match &config.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let verified = VerifiedTokens { principals: Mutex::default() };
        Ok(TokenVerifier { key: config.key.decoding_key()?, validation, verified })
    }

    /// The principal a token speaks for, or a reason fit to show the client. A token
    /// verified before is taken from memory until it expires.
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        if let Some(principal) = self.verified.get(&digest, now) {
            return Ok(principal);
        }
        let principal = self.verify_signature(token)?;
        self.verified.insert(digest, &principal, now);
        Ok(principal)
    }

    fn verify_signature(&self, token: &str) -> Result<Principal, String> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
                ErrorKind::InvalidAlgorithm => {
                    "the token is signed with an algorithm this service does not accept".to_owned()
                }
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
                ErrorKind::InvalidAudience => "the token's audience is not accepted".to_owned(),
                ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks the `{claim}` claim"),
                ErrorKind::Json(cause) => format!("the token's claims are malformed ({cause})"),
                _ => "the token is malformed".to_owned(),
            })?;
        let mut principal = data.claims.into_principal()?;
        principal.valid_until = principal.valid_until.saturating_add(self.validation.leeway as i64);
        Ok(principal)
    }
}

/// Signs claims with an HS256 secret: the dev token and `opsrun token`.
pub fn mint_token(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
}

/// Mints a token with the service's own key, which must be an HS256 secret.
pub fn mint(key: &JwtKey, claims: Claims) -> anyhow::Result<String> {
    match key {
        JwtKey::Hs256(secret) => Ok(mint_token(secret.expose_secret(), &claims)?),
        _ => anyhow::bail!(
            "tokens can only be minted with an HS256 secret; with a public key, your identity provider mints them"
        ),
    }
}

/// Every capability the catalog names, plus the worker's: what `--caps '*'` grants.
pub fn all_capabilities() -> Vec<String> {
    let mut caps: Vec<String> = CATALOG
        .iter()
        .flat_map(|spec| [spec.start_capability, spec.view_capability])
        .chain([EXECUTE_CAPABILITY])
        .map(str::to_owned)
        .collect();
    caps.sort();
    caps.dedup();
    caps
}

fn bearer_token(request: &HttpRequest) -> Result<&str, ApiError> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthenticated("no Authorization header".into()))?;
    let value =
        value.to_str().map_err(|_| ApiError::Unauthenticated("the Authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(ApiError::Unauthenticated("the Authorization header is not `Bearer <token>`".into())),
    }
}

fn verify_with_service_verifier(request: &HttpRequest, token: &str) -> Result<Principal, ApiError> {
    let verifier = request
        .app_data::<web::Data<TokenVerifier>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("TokenVerifier is not registered")))?;
    verifier.verify(token).map_err(ApiError::Unauthenticated)
}

/// The caller of a request whose token may come in the query instead of the header,
/// because a browser's `EventSource` cannot set headers (RFC 6750 §2.3). Only the live
/// stream takes it: a token in a URL can end up in browser history and proxy logs, so
/// opsrun's own access log records routes, never query strings.
pub fn principal_from_header_or_query(request: &HttpRequest, query_token: Option<&str>) -> Result<Principal, ApiError> {
    match (request.headers().contains_key(header::AUTHORIZATION), query_token) {
        (false, Some(token)) if !token.trim().is_empty() => verify_with_service_verifier(request, token.trim()),
        _ => verify_with_service_verifier(request, bearer_token(request)?),
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Principal, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(bearer_token(request).and_then(|token| verify_with_service_verifier(request, token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(valid_until: i64) -> Principal {
        Claims {
            sub: "7".into(),
            name: None,
            workspace_id: 1,
            tenants: Some(serde_json::json!("*")),
            caps: vec![],
            exp: valid_until,
            nbf: None,
            iss: None,
            aud: None,
        }
        .into_principal()
        .unwrap()
    }

    #[test]
    fn remembered_tokens_expire_with_the_token_and_stay_bounded() {
        let verified = VerifiedTokens { principals: Mutex::default() };
        verified.insert([1; 32], &principal(100), 50);
        assert!(verified.get(&[1; 32], 100).is_some(), "valid through its last second");
        assert!(verified.get(&[1; 32], 101).is_none(), "gone once expired");
        assert!(verified.principals.lock().unwrap().is_empty(), "and forgotten");

        for i in 0..(VERIFIED_TOKENS + 10) {
            let mut digest = [0; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            verified.insert(digest, &principal(1_000), 0);
        }
        assert!(verified.principals.lock().unwrap().len() <= VERIFIED_TOKENS);
    }
}
