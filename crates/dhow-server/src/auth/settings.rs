//! The `[auth]` section of the configuration file, as written:
//!
//! ```toml
//! [auth]
//! # Keys as SHA-256 digests (hex) of the bearer token: the key itself never sits in a file.
//! [[auth.preshared_keys]]
//! name = "billing"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! roles = ["read", "write"]
//!
//! [[auth.jwt_issuers]]
//! issuer = "https://idp.example.com"
//! audiences = ["dhow"]
//! algorithms = ["RS256", "ES256"]
//! jwks_file = "/etc/dhow/idp-jwks.json"   # re-read when it changes
//! pem_files = []                          # public keys in PEM (their `kid` is the file stem)
//! roles_claim = "scope"                   # a space-separated string or an array of strings
//! roles = { "dhow.read" = "read", "dhow.write" = "write", "dhow.admin" = "admin" }
//! leeway = "30s"
//!
//! # Delegated checks (docs/agents.md): `sub` names the principal, the nested RFC 8693 `act`
//! # claims the actors, outermost first. How a claim value becomes an object:
//! [auth.jwt_issuers.delegation]
//! subject_type = "user"                   # `sub` = "alice"   → user:alice
//! actor_type = "agent"                    # `act.sub` = "summariser" → agent:summariser
//! type_claim = "dhow_type"                # or a claim beside each `sub` naming its type
//! prefix_types = ["user", "agent"]        # `sub` = "agent:x" → agent:x (only these types)
//!
//! [[auth.client_certificates]]
//! identity = "CN=billing"                 # or "DNS:billing.svc", "URI:spiffe://prod/billing"
//! roles = ["read"]
//! ```
//!
//! `DHOW_PRESHARED_KEY` (the environment) adds one key in clear with every role, as SpiceDB's
//! `--grpc-preshared-key` does; prefer digests in the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Everything about who may call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub preshared_keys: Vec<PresharedKeySettings>,
    #[serde(default)]
    pub jwt_issuers: Vec<IssuerSettings>,
    #[serde(default)]
    pub client_certificates: Vec<CertificateSettings>,
    /// How many verified JWTs are remembered (each until its `exp`), so that a token costs
    /// one lookup after its first use.
    #[serde(default = "default_cache")]
    pub jwt_cache_entries: usize,
    /// A key in clear (from `DHOW_PRESHARED_KEY`), with every role. Not a file key.
    #[serde(skip)]
    pub env_preshared_key: Option<String>,
}

fn default_cache() -> usize {
    10_000
}

/// One preshared key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresharedKeySettings {
    /// Names the key in logs and audit records.
    pub name: String,
    /// The SHA-256 digest of the key, 64 hex digits (`printf %s KEY | sha256sum`).
    pub sha256: String,
    pub roles: Vec<String>,
}

/// One JWT issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The `iss` claim of its tokens.
    pub issuer: String,
    /// Accepted `aud` values; a token must name one of them. Required.
    pub audiences: Vec<String>,
    /// The algorithms its tokens may use (`RS256`, `ES256`, `EdDSA`, `HS256`, ...); never
    /// `none`.
    pub algorithms: Vec<String>,
    /// A JWKS file of its public keys, read again when it changes.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Public keys in PEM (RSA, EC or Ed25519); each key's `kid` is its file stem.
    #[serde(default)]
    pub pem_files: Vec<PathBuf>,
    /// A file holding the HMAC secret of its HS256/384/512 tokens (only with those
    /// algorithms; an asymmetric key is never used as an HMAC secret).
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// The claim that carries roles: a space-separated string (`scope`) or an array.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Claim values to roles; without it, values that are role names are those roles.
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// Roles every token of this issuer has, whatever its claims say.
    #[serde(default)]
    pub default_roles: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (default 30s).
    #[serde(default)]
    pub leeway: Option<String>,
    /// How often the JWKS file is looked at for changes (default 2s).
    #[serde(default)]
    pub jwks_refresh: Option<String>,
    /// How its tokens' `sub` and nested `act` claims map to the principal and the actors of a
    /// delegated check; without it, its tokens carry no delegation chain.
    #[serde(default)]
    pub delegation: Option<DelegationSettings>,
}

/// How the claim values of an issuer's tokens become objects (docs/agents.md). A value is
/// mapped by the first rule that applies: the type claim beside it (`type_claim`), a
/// `type:id` prefix (of a type in `prefix_types`, when that list is not empty), the default
/// type (`subject_type` for `sub`, `actor_type` for each `act.sub`). A value no rule maps
/// makes a delegated request with that token fail with PERMISSION_DENIED
/// `DELEGATION_CLAIMS_INVALID`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationSettings {
    /// The object type of a `sub` without a prefix or type claim (`user`).
    #[serde(default)]
    pub subject_type: Option<String>,
    /// The object type of an actor's `sub` without a prefix or type claim (`agent`).
    #[serde(default)]
    pub actor_type: Option<String>,
    /// A claim naming the object type, beside `sub` at the top of the token and beside
    /// `sub` in each `act` object.
    #[serde(default)]
    pub type_claim: Option<String>,
    /// The types a `type:id` value may name; empty: any (the schema must still define it).
    #[serde(default)]
    pub prefix_types: Vec<String>,
}

/// One client-certificate identity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSettings {
    /// `CN=<common name>`, `DNS:<name>` or `URI:<uri>` of the certificate.
    pub identity: String,
    pub roles: Vec<String>,
}

/// Parses role names, naming the setting at fault.
pub(crate) fn roles(names: &[String], what: &str) -> Result<super::Roles, String> {
    names
        .iter()
        .map(|n| super::Role::parse(n).map_err(|e| format!("{what}: {e}")))
        .collect()
}
