//! JWTs from configured issuers, verified with `jsonwebtoken`: the issuer is chosen by `iss`,
//! the key by `kid` among that issuer's keys only, the algorithm must be on the issuer's
//! allow-list and of the key's family (never `none`; an RSA, EC or Ed25519 key is never used
//! as an HMAC secret), and `exp`, `nbf`, `iat` and `aud` are checked with a small leeway.
//! Keys come from PEM files or a JWKS file read again when it changes (rotation without a
//! restart). Verified tokens are remembered, bounded in number and never past their `exp`,
//! so that a token costs one hash and one lookup after its first use.
//!
//! An issuer with `delegation` settings also maps its tokens' `sub` and nested RFC 8693 `act`
//! claims to the principal and the actors of a delegated check (docs/agents.md), once, when
//! the token is verified: [`Verified::chain`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};

use dhow_tuples::validate::{check_id, check_type};
use dhow_tuples::{ObjectRef, Subject};

use super::settings::{roles, AuthSettings, DelegationSettings, IssuerSettings};
use super::{reason, AuthError, Credential, Identity, Role, Roles};

/// A verified token: who it says the caller is, and the claims the agents feature reads
/// (`act`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    pub roles: Roles,
    /// Seconds since the epoch.
    pub expires_at: u64,
    /// Every claim, as JSON.
    pub claims: serde_json::Value,
    /// The delegation chain the token carries, when its issuer maps claims to objects:
    /// `None` for an issuer without `delegation` settings, `Err` (why) for claims that do
    /// not map.
    pub chain: Option<Result<TokenChain, String>>,
}

/// Who a token says is acting for whom: `sub` mapped to the principal, the nested `act`
/// claims to the actors, outermost (the current actor) first, as `CheckRequest.actors`.
/// A token without `act` has no actors: its subject acts for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenChain {
    pub principal: Subject,
    pub actors: Vec<ObjectRef>,
}

/// How deeply `act` claims may nest before the token is refused for delegation (the
/// engine's chain limit, 8 by default, refuses long chains anyway; this only bounds the
/// parsing of a hostile token).
pub const MAX_ACT_NESTING: usize = 64;

impl DelegationSettings {
    /// The object a claim value names: by the type claim beside it, a `type:id` prefix, or
    /// the default type.
    fn object(
        &self,
        holder: &serde_json::Value,
        default: Option<&str>,
        what: &str,
    ) -> Result<ObjectRef, String> {
        let value = holder
            .get("sub")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{what} has no `sub` string"))?;
        let typed = self
            .type_claim
            .as_ref()
            .and_then(|c| holder.get(c))
            .and_then(|t| t.as_str());
        let (t, id) = if let Some(t) = typed {
            (t, value)
        } else if let Some((t, id)) = value.split_once(':') {
            if !self.prefix_types.is_empty() && !self.prefix_types.iter().any(|p| p == t) {
                return Err(format!(
                    "{what} `{}` names type `{}`, which the issuer may not name (prefix_types)",
                    clip(value),
                    clip(t)
                ));
            }
            (t, id)
        } else if let Some(t) = default {
            (t, value)
        } else {
            return Err(format!(
                "{what} `{}` has no type: no type claim, no `type:` prefix and no default type",
                clip(value)
            ));
        };
        check_type(t).map_err(|m| format!("{what}: {m}"))?;
        check_id(id).map_err(|m| format!("{what}: {m}"))?;
        Ok(ObjectRef::new(t, id))
    }

    /// The chain of `claims`.
    pub fn chain(&self, claims: &serde_json::Value) -> Result<TokenChain, String> {
        let principal = self.object(claims, self.subject_type.as_deref(), "the token's `sub`")?;
        let mut actors = Vec::new();
        let mut act = claims.get("act");
        while let Some(a) = act {
            if actors.len() >= MAX_ACT_NESTING {
                return Err(format!("`act` claims nest deeper than {MAX_ACT_NESTING}"));
            }
            if !a.is_object() {
                return Err("an `act` claim is not an object".into());
            }
            let what = format!("`act` claim {} (outermost first)", actors.len());
            actors.push(self.object(a, self.actor_type.as_deref(), &what)?);
            act = a.get("act");
        }
        Ok(TokenChain {
            principal: Subject {
                object: principal,
                relation: None,
            },
            actors,
        })
    }
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

struct Issuer {
    name: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    roles_claim: Option<String>,
    role_map: Vec<(String, Role)>,
    default_roles: Roles,
    delegation: Option<DelegationSettings>,
    /// Keys from PEM files and the HMAC secret (fixed), and from the JWKS file (swapped when
    /// the file changes).
    fixed: Vec<Key>,
    jwks: Option<Jwks>,
}

struct Jwks {
    file: PathBuf,
    refresh: Duration,
    keys: ArcSwap<Vec<Key>>,
    /// When the file was last looked at (ms since the epoch), and its (mtime, len) then.
    checked_ms: AtomicU64,
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

/// The configured issuers and the cache of verified tokens.
#[derive(Default)]
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    cache: Option<quick_cache::sync::Cache<[u8; 32], Arc<Verified>>>,
}

/// `leeway`, `jwks_refresh`: the one duration syntax of every setting
/// ([`crate::config::parse_duration`]).
fn parse_duration(s: &Option<String>, default: Duration, what: &str) -> Result<Duration, String> {
    match s {
        None => Ok(default),
        Some(t) => crate::config::parse_duration(t).map_err(|e| format!("{what}: {e}")),
    }
}

fn read(file: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("{what}: cannot read {}: {e}", file.display()))
}

fn pem_key(file: &Path, what: &str) -> Result<Key, String> {
    let pem = read(file, what)?;
    let key = DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map_err(|_| {
            format!(
                "{what}: {} is not an RSA, EC or Ed25519 public key in PEM",
                file.display()
            )
        })?;
    Ok(Key {
        kid: file.file_stem().map(|s| s.to_string_lossy().into_owned()),
        key,
    })
}

fn jwks_keys(file: &Path, what: &str) -> Result<Vec<Key>, String> {
    let text = read(file, what)?;
    let set: JwkSet = serde_json::from_slice(&text)
        .map_err(|e| format!("{what}: {} is not a JWKS: {e}", file.display()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            format!(
                "{what}: key {:?} of {}: {e}",
                jwk.common.key_id,
                file.display()
            )
        })?;
        if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            return Err(format!(
                "{what}: {} holds a symmetric (oct) key; HMAC secrets go in hmac_secret_file",
                file.display()
            ));
        }
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    Ok(keys)
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Issuer {
    fn from_settings(i: usize, s: &IssuerSettings) -> Result<Issuer, String> {
        let what = format!("auth.jwt_issuers[{i}] ({})", s.issuer);
        if s.issuer.trim().is_empty() {
            return Err(format!("{what}: issuer is empty"));
        }
        if s.audiences.is_empty() {
            return Err(format!(
                "{what}: audiences is empty (name the `aud` values Dhow accepts)"
            ));
        }
        let mut algorithms = Vec::new();
        for a in &s.algorithms {
            if a.trim().eq_ignore_ascii_case("none") {
                return Err(format!("{what}: algorithm `none` is never allowed"));
            }
            algorithms.push(
                a.trim()
                    .parse::<Algorithm>()
                    .map_err(|_| format!("{what}: unknown algorithm `{a}`"))?,
            );
        }
        if algorithms.is_empty() {
            return Err(format!("{what}: algorithms is empty"));
        }
        let hmac = algorithms
            .iter()
            .any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac);
        let mut fixed = Vec::new();
        for f in &s.pem_files {
            fixed.push(pem_key(f, &what)?);
        }
        match (&s.hmac_secret_file, hmac) {
            (Some(f), true) => {
                let secret = read(f, &what)?;
                if secret.len() < 32 {
                    return Err(format!(
                        "{what}: the HMAC secret in {} has {} bytes; use at least 32",
                        f.display(),
                        secret.len()
                    ));
                }
                fixed.push(Key {
                    kid: None,
                    key: DecodingKey::from_secret(&secret),
                });
            }
            (Some(_), false) => {
                return Err(format!(
                    "{what}: hmac_secret_file is set but no HS256/HS384/HS512 algorithm is allowed"
                ))
            }
            (None, true) => {
                return Err(format!(
                    "{what}: an HMAC algorithm is allowed but no hmac_secret_file is set"
                ))
            }
            (None, false) => {}
        }
        let jwks = match &s.jwks_file {
            Some(f) => Some(Jwks {
                file: f.clone(),
                refresh: parse_duration(&s.jwks_refresh, Duration::from_secs(2), &what)?,
                keys: ArcSwap::from_pointee(jwks_keys(f, &what)?),
                checked_ms: AtomicU64::new(now_ms()),
                stamp: Mutex::new(stamp(f)),
            }),
            None => None,
        };
        if fixed.is_empty() && jwks.is_none() {
            return Err(format!(
                "{what}: no key: set jwks_file, pem_files or hmac_secret_file"
            ));
        }
        let mut role_map = Vec::new();
        for (claim, role) in &s.roles {
            role_map.push((
                claim.clone(),
                Role::parse(role).map_err(|e| format!("{what}: roles.{claim}: {e}"))?,
            ));
        }
        Ok(Issuer {
            name: s.issuer.clone(),
            audiences: s.audiences.clone(),
            algorithms,
            leeway: parse_duration(&s.leeway, Duration::from_secs(30), &what)?.as_secs(),
            roles_claim: s.roles_claim.clone(),
            role_map,
            default_roles: roles(&s.default_roles, &what)?,
            delegation: match &s.delegation {
                Some(d) => {
                    for t in d
                        .subject_type
                        .iter()
                        .chain(&d.actor_type)
                        .chain(&d.prefix_types)
                    {
                        check_type(t).map_err(|m| format!("{what}: delegation: {m}"))?;
                    }
                    Some(d.clone())
                }
                None => None,
            },
            fixed,
            jwks,
        })
    }

    /// Looks at the JWKS file again if its refresh period has passed; returns true when its
    /// keys changed.
    fn refresh(&self) -> bool {
        let Some(j) = &self.jwks else {
            return false;
        };
        let now = now_ms();
        let last = j.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < j.refresh.as_millis() as u64
            || j.checked_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        let current = stamp(&j.file);
        let mut seen = j.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if current == *seen {
            return false;
        }
        match jwks_keys(&j.file, &self.name) {
            Ok(keys) => {
                tracing::info!(issuer = %self.name, file = %j.file.display(), keys = keys.len(), "JWKS file changed: keys loaded again");
                j.keys.store(Arc::new(keys));
                *seen = current;
                true
            }
            Err(e) => {
                tracing::error!(issuer = %self.name, error = %e, "JWKS file changed but does not load: keeping the previous keys");
                false
            }
        }
    }

    fn roles_of(&self, claims: &serde_json::Value) -> Roles {
        let mut out = self.default_roles;
        let Some(claim) = &self.roles_claim else {
            return out;
        };
        let values: Vec<&str> = match claims.get(claim) {
            Some(serde_json::Value::String(s)) => s.split_whitespace().collect(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        for v in values {
            if self.role_map.is_empty() {
                if let Ok(r) = Role::parse(v) {
                    out = out.with(r);
                }
            } else {
                for (c, r) in &self.role_map {
                    if c == v {
                        out = out.with(*r);
                    }
                }
            }
        }
        out
    }
}

fn fail(reason: &'static str, message: impl Into<String>) -> AuthError {
    AuthError::unauthenticated(reason, message)
}

/// The JSON of one base64url part of a token.
fn part(token_part: &str, which: &str) -> Result<serde_json::Value, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token_part.trim_end_matches('='))
        .map_err(|_| {
            fail(
                reason::JWT_MALFORMED,
                format!("the JWT {which} is not base64url"),
            )
        })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        fail(
            reason::JWT_MALFORMED,
            format!("the JWT {which} is not JSON"),
        )
    })
}

impl JwtVerifier {
    pub fn from_settings(s: &AuthSettings) -> Result<JwtVerifier, String> {
        let issuers = s
            .jwt_issuers
            .iter()
            .enumerate()
            .map(|(i, s)| Issuer::from_settings(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        let cache = (!issuers.is_empty() && s.jwt_cache_entries > 0)
            .then(|| quick_cache::sync::Cache::new(s.jwt_cache_entries));
        Ok(JwtVerifier { issuers, cache })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The identity a JWT proves.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let v = self.verified(token)?;
        Ok(Identity {
            name: format!("jwt:{}#{}", v.issuer, v.subject),
            roles: v.roles,
            credential: Credential::Jwt(v),
        })
    }

    fn verified(&self, token: &str) -> Result<Arc<Verified>, AuthError> {
        let now = now_ms() / 1000;
        // Refresh key sets first: a changed set forgets every remembered token, so that a key
        // removed from a JWKS is refused at once.
        if self
            .issuers
            .iter()
            .map(Issuer::refresh)
            .fold(false, |a, b| a | b)
        {
            if let Some(c) = &self.cache {
                c.clear();
            }
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&digest)) {
            if hit.expires_at > now {
                return Ok(hit);
            }
        }
        let v = Arc::new(self.verify_uncached(token, now)?);
        if let Some(c) = &self.cache {
            c.insert(digest, v.clone());
        }
        Ok(v)
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail(reason::JWT_MALFORMED, "a JWT has three parts"));
        };
        let header = part(h, "header")?;
        let alg_name = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
        let alg: Algorithm = alg_name.parse().map_err(|_| {
            fail(
                reason::JWT_ALGORITHM_NOT_ALLOWED,
                format!("JWT algorithm `{alg_name}` is not allowed"),
            )
        })?;
        let kid = header.get("kid").and_then(|k| k.as_str());
        let payload = part(p, "payload")?;
        let iss = payload
            .get("iss")
            .and_then(|i| i.as_str())
            .ok_or_else(|| fail(reason::JWT_CLAIM_MISSING, "the JWT has no `iss` claim"))?;
        let issuer = self.issuers.iter().find(|i| i.name == iss).ok_or_else(|| {
            fail(
                reason::JWT_ISSUER_UNKNOWN,
                format!("JWT issuer `{}` is not configured", clip(iss)),
            )
        })?;
        if !issuer.algorithms.contains(&alg) {
            return Err(fail(
                reason::JWT_ALGORITHM_NOT_ALLOWED,
                format!("JWT algorithm {alg:?} is not allowed for issuer `{iss}`"),
            ));
        }
        let jwks = issuer.jwks.as_ref().map(|j| j.keys.load_full());
        let candidates: Vec<&Key> = issuer
            .fixed
            .iter()
            .chain(jwks.iter().flat_map(|k| k.iter()))
            .filter(|k| k.key.family() == alg.family())
            .collect();
        let key = match kid {
            Some(kid) => candidates
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| {
                    fail(
                        reason::JWT_KEY_UNKNOWN,
                        format!("no {alg:?} key `{}` for issuer `{iss}`", clip(kid)),
                    )
                })?,
            None if candidates.len() == 1 => &candidates[0],
            None => {
                return Err(fail(
                    reason::JWT_KEY_UNKNOWN,
                    format!(
                        "the JWT has no `kid` and issuer `{iss}` has {} {alg:?} keys",
                        candidates.len()
                    ),
                ))
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = issuer.leeway;
        v.validate_nbf = true;
        v.set_issuer(&[iss]);
        v.set_audience(&issuer.audiences);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &v).map_err(|e| match e
                .kind()
            {
                ErrorKind::ExpiredSignature => fail(reason::JWT_EXPIRED, "the JWT has expired"),
                ErrorKind::ImmatureSignature => {
                    fail(reason::JWT_NOT_YET_VALID, "the JWT is not valid yet (nbf)")
                }
                ErrorKind::InvalidAudience => fail(
                    reason::JWT_AUDIENCE_INVALID,
                    format!("the JWT's audience is none of {:?}", issuer.audiences),
                ),
                ErrorKind::InvalidSignature => fail(
                    reason::JWT_SIGNATURE_INVALID,
                    "the JWT's signature does not verify",
                ),
                ErrorKind::MissingRequiredClaim(c) => fail(
                    reason::JWT_CLAIM_MISSING,
                    format!("the JWT has no `{c}` claim"),
                ),
                ErrorKind::InvalidAlgorithm => fail(
                    reason::JWT_ALGORITHM_NOT_ALLOWED,
                    "the JWT's algorithm does not fit its key",
                ),
                ErrorKind::InvalidIssuer => fail(
                    reason::JWT_ISSUER_UNKNOWN,
                    "the JWT's issuer does not match",
                ),
                _ => fail(reason::JWT_MALFORMED, "the JWT cannot be read"),
            })?;
        let claims = data.claims;
        if let Some(iat) = claims.get("iat").and_then(|i| i.as_u64()) {
            if iat > now + issuer.leeway {
                return Err(fail(
                    reason::JWT_ISSUED_IN_FUTURE,
                    "the JWT was issued in the future (iat)",
                ));
            }
        }
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string();
        Ok(Verified {
            issuer: issuer.name.clone(),
            roles: issuer.roles_of(&claims),
            chain: issuer.delegation.as_ref().map(|d| d.chain(&claims)),
            expires_at: claims.get("exp").and_then(|e| e.as_u64()).unwrap_or(0),
            subject,
            claims,
        })
    }
}

/// A value from a token, cut for a message (a hostile token may carry megabytes).
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> DelegationSettings {
        DelegationSettings {
            subject_type: Some("user".into()),
            actor_type: Some("agent".into()),
            type_claim: Some("dhow_type".into()),
            prefix_types: vec!["user".into(), "agent".into()],
        }
    }

    #[test]
    fn act_claims_become_actors_outermost_first() {
        let c = json!({"sub": "alice", "act": {"sub": "sub-agent", "act": {"sub": "assistant"}}});
        let chain = settings().chain(&c).unwrap();
        assert_eq!(chain.principal, Subject::object("user", "alice"));
        assert_eq!(
            chain.actors,
            [
                ObjectRef::new("agent", "sub-agent"),
                ObjectRef::new("agent", "assistant")
            ]
        );
        // No `act`: the subject acts for itself.
        assert!(settings()
            .chain(&json!({"sub": "alice"}))
            .unwrap()
            .actors
            .is_empty());
    }

    #[test]
    fn types_from_a_claim_or_a_prefix() {
        let c = json!({"sub": "svc", "dhow_type": "agent", "act": {"sub": "user:bob"}});
        let chain = settings().chain(&c).unwrap();
        assert_eq!(chain.principal, Subject::object("agent", "svc"));
        assert_eq!(chain.actors, [ObjectRef::new("user", "bob")]);
    }

    #[test]
    fn claims_that_do_not_map() {
        let s = settings();
        for (c, needle) in [
            (json!({"sub": "robot:x"}), "may not name"),
            (json!({"sub": "alice", "act": "agent"}), "not an object"),
            (json!({"sub": "alice", "act": {"name": "x"}}), "no `sub`"),
            (json!({"sub": "a b"}), "sub"),
        ] {
            let e = s.chain(&c).unwrap_err();
            assert!(e.contains(needle), "{c}: {e}");
        }
        let none = DelegationSettings::default();
        assert!(none
            .chain(&json!({"sub": "alice"}))
            .unwrap_err()
            .contains("no type"));
        let mut deep = json!({"sub": "a0"});
        for i in 0..=MAX_ACT_NESTING {
            deep = json!({"sub": format!("a{i}"), "act": deep});
        }
        let deep = json!({"sub": "alice", "act": deep});
        assert!(s.chain(&deep).unwrap_err().contains("nest deeper"));
    }
}
