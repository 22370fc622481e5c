//! Who is asking, and may they: every public RPC (health and reflection excepted) carries a
//! credential, which becomes an [`Identity`] with [`Roles`]; the RPC needs one role. Three
//! kinds of credential, any mix at once: preshared keys as bearer tokens (`psk`), JWTs from
//! configured issuers (`jwt`), and client certificates over TLS (`cert`). With none
//! configured the server is open (every caller has every role), which `dhow serve` allows on
//! loopback only unless told otherwise.
//!
//! The check runs in a tower layer around the services (`layer`), before any handler; a
//! refusal is UNAUTHENTICATED (no or bad credential) or PERMISSION_DENIED (a valid identity
//! without the role), with a reason, and never says whether anything exists.

pub mod cert;
pub mod jwt;
mod layer;
pub mod psk;
pub mod settings;

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tonic::Code;

pub use layer::AuthLayer;
pub use settings::AuthSettings;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Check, CheckBulk, Expand, the lookups, Read, Watch, Export, ReadSchema.
    Read,
    /// Write, Delete, Import, WriteSchema.
    Write,
    /// ClusterService: membership and leadership.
    Admin,
    /// The decision audit log (AuditService; `admin` may read it too).
    Audit,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Read, Role::Write, Role::Admin, Role::Audit];

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
            Role::Audit => "audit",
        }
    }

    /// `read`, `write`, `admin` or `audit`.
    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s.trim())
            .ok_or_else(|| format!("`{s}` is not a role (read, write, admin or audit)"))
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    pub const NONE: Roles = Roles(0);
    pub const ALL: Roles = Roles(0b1111);

    pub fn contains(self, r: Role) -> bool {
        self.0 & r.bit() != 0
    }

    pub fn with(self, r: Role) -> Roles {
        Roles(self.0 | r.bit())
    }

    pub fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        iter.into_iter().fold(Roles::NONE, Roles::with)
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(Role::name)
            .collect();
        if names.is_empty() {
            write!(f, "(none)")
        } else {
            write!(f, "{}", names.join(","))
        }
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing: the server has no authentication configured.
    Anonymous,
    /// A preshared key, by its configured name.
    PresharedKey,
    /// A JWT of a configured issuer.
    Jwt(Arc<jwt::Verified>),
    /// A client certificate.
    Certificate,
}

/// The authenticated caller of a request, in the request's extensions for the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// A stable name for logs and audit records: `psk:NAME`, `jwt:ISSUER#SUBJECT`,
    /// `cert:CN=...`, or `anonymous`.
    pub name: String,
    pub credential: Credential,
    pub roles: Roles,
}

impl Identity {
    /// The caller of an open server.
    pub fn anonymous() -> Identity {
        Identity {
            name: "anonymous".into(),
            credential: Credential::Anonymous,
            roles: Roles::ALL,
        }
    }
}

/// The stable reasons of refused credentials (in `ErrorInfo.reason`).
pub mod reason {
    /// UNAUTHENTICATED: no credential (no `authorization` header, no client certificate).
    pub const CREDENTIALS_MISSING: &str = "CREDENTIALS_MISSING";
    /// UNAUTHENTICATED: the `authorization` header is not `Bearer <token>`, or too large.
    pub const CREDENTIALS_MALFORMED: &str = "CREDENTIALS_MALFORMED";
    /// UNAUTHENTICATED: a bearer token that is no configured preshared key.
    pub const KEY_UNKNOWN: &str = "KEY_UNKNOWN";
    /// UNAUTHENTICATED: a JWT that is not one (bad base64, JSON or shape, truncated).
    pub const JWT_MALFORMED: &str = "JWT_MALFORMED";
    /// UNAUTHENTICATED: a JWT larger than the server accepts.
    pub const JWT_TOO_LARGE: &str = "JWT_TOO_LARGE";
    /// UNAUTHENTICATED: `alg` is `none`, unknown, not allowed for the issuer, or of another
    /// family than the key.
    pub const JWT_ALGORITHM_NOT_ALLOWED: &str = "JWT_ALGORITHM_NOT_ALLOWED";
    /// UNAUTHENTICATED: `iss` names no configured issuer.
    pub const JWT_ISSUER_UNKNOWN: &str = "JWT_ISSUER_UNKNOWN";
    /// UNAUTHENTICATED: `kid` names no key of the issuer (or no `kid` among several keys).
    pub const JWT_KEY_UNKNOWN: &str = "JWT_KEY_UNKNOWN";
    /// UNAUTHENTICATED: the signature does not verify with the issuer's key.
    pub const JWT_SIGNATURE_INVALID: &str = "JWT_SIGNATURE_INVALID";
    /// UNAUTHENTICATED: `exp` has passed (beyond the leeway).
    pub const JWT_EXPIRED: &str = "JWT_EXPIRED";
    /// UNAUTHENTICATED: `nbf` is still to come (beyond the leeway).
    pub const JWT_NOT_YET_VALID: &str = "JWT_NOT_YET_VALID";
    /// UNAUTHENTICATED: `iat` is in the future (beyond the leeway).
    pub const JWT_ISSUED_IN_FUTURE: &str = "JWT_ISSUED_IN_FUTURE";
    /// UNAUTHENTICATED: `aud` names none of the issuer's audiences.
    pub const JWT_AUDIENCE_INVALID: &str = "JWT_AUDIENCE_INVALID";
    /// UNAUTHENTICATED: a required claim (`exp`, `iss`, `sub`, `aud`) is missing.
    pub const JWT_CLAIM_MISSING: &str = "JWT_CLAIM_MISSING";
    /// UNAUTHENTICATED: a client certificate whose identity is not configured.
    pub const CERTIFICATE_UNKNOWN: &str = "CERTIFICATE_UNKNOWN";
    /// PERMISSION_DENIED: a valid identity without the role the call needs (metadata
    /// `required_role`).
    pub const ROLE_MISSING: &str = "ROLE_MISSING";
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub code: Code,
    pub reason: &'static str,
    /// Says why, never echoing the credential.
    pub message: String,
    /// The role the call needed (for PERMISSION_DENIED).
    pub required_role: Option<Role>,
}

impl AuthError {
    /// UNAUTHENTICATED with `reason`.
    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        AuthError {
            code: Code::Unauthenticated,
            reason,
            message: message.into(),
            required_role: None,
        }
    }
}

/// The role each public method needs: `None` for a path that needs none (health,
/// reflection); an unknown `dhow.v1` method needs `admin` (refused unless the caller could do
/// anything anyway, and then tonic answers UNIMPLEMENTED).
pub fn required_role(path: &str) -> Option<Role> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    match service {
        "dhow.v1.PermissionService" => Some(Role::Read),
        "dhow.v1.RelationshipService" => Some(match method {
            "Read" | "Watch" | "Export" => Role::Read,
            _ => Role::Write,
        }),
        "dhow.v1.SchemaService" => Some(match method {
            "ReadSchema" => Role::Read,
            _ => Role::Write,
        }),
        "dhow.v1.AuditService" => Some(Role::Audit),
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => None,
        _ => Some(Role::Admin),
    }
}

/// The configured credentials, checked for every call.
pub struct Authenticator {
    keys: psk::PresharedKeys,
    jwt: jwt::JwtVerifier,
    certs: cert::CertificateIdentities,
}

impl Authenticator {
    /// No authentication: every caller is [`Identity::anonymous`].
    pub fn open() -> Authenticator {
        Authenticator {
            keys: psk::PresharedKeys::default(),
            jwt: jwt::JwtVerifier::default(),
            certs: cert::CertificateIdentities::default(),
        }
    }

    /// From the settings; an error names the setting and what is wrong with it.
    pub fn from_settings(s: &AuthSettings) -> Result<Authenticator, String> {
        Ok(Authenticator {
            keys: psk::PresharedKeys::from_settings(s)?,
            jwt: jwt::JwtVerifier::from_settings(s)?,
            certs: cert::CertificateIdentities::from_settings(&s.client_certificates)?,
        })
    }

    /// True when no credential is configured: every caller may do everything.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty() && self.jwt.is_empty() && self.certs.is_empty()
    }

    /// Who the caller is: from its `authorization` header (a bearer JWT or preshared key),
    /// else from its client certificate.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Identity, AuthError> {
        if self.is_open() {
            return Ok(Identity::anonymous());
        }
        if let Some(header) = authorization {
            let token = bearer(header)?;
            // A JWT has three dot-separated parts; a preshared key is anything else.
            if token.bytes().filter(|b| *b == b'.').count() == 2 && !self.jwt.is_empty() {
                return self.jwt.verify(token);
            }
            return self.keys.identify(token);
        }
        if let Some(cert) = peer_certs.and_then(|c| c.first()) {
            return self.certs.identify(cert);
        }
        Err(AuthError::unauthenticated(
            reason::CREDENTIALS_MISSING,
            "no credential: send `authorization: Bearer <token>` (a preshared key or a JWT) or a client certificate",
        ))
    }
}

/// Largest `authorization` header read: a JWT with many claims fits. (HTTP/2 itself refuses a
/// header list past 16 KiB before it gets here.)
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// The token of `Bearer <token>`.
pub fn bearer(header: &[u8]) -> Result<&str, AuthError> {
    let malformed = |m: &str| AuthError::unauthenticated(reason::CREDENTIALS_MALFORMED, m);
    if header.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthError::unauthenticated(
            reason::JWT_TOO_LARGE,
            format!(
                "the authorization header has {} bytes; at most {MAX_AUTHORIZATION_BYTES} are read",
                header.len()
            ),
        ));
    }
    let text = std::str::from_utf8(header)
        .map_err(|_| malformed("the authorization header is not text"))?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| malformed("the authorization header is not `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed(
            "the authorization scheme is not `Bearer` (use `authorization: Bearer <token>`)",
        ));
    }
    let token = token.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(malformed("the bearer token is empty or has spaces"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_methods() {
        assert_eq!(
            required_role("/dhow.v1.PermissionService/Check"),
            Some(Role::Read)
        );
        assert_eq!(
            required_role("/dhow.v1.RelationshipService/Write"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role("/dhow.v1.RelationshipService/Import"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role("/dhow.v1.RelationshipService/Watch"),
            Some(Role::Read)
        );
        assert_eq!(
            required_role("/dhow.v1.SchemaService/WriteSchema"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role("/dhow.v1.ClusterService/RemoveMember"),
            Some(Role::Admin)
        );
        assert_eq!(required_role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(required_role("/something.Else/X"), Some(Role::Admin));
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(b"Bearer abc").unwrap(), "abc");
        assert_eq!(bearer(b"bearer  abc ").unwrap(), "abc");
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"abc",
            b"Bearer a b",
            b"\xff\xfe",
        ] {
            assert_eq!(
                bearer(bad).unwrap_err().reason,
                reason::CREDENTIALS_MALFORMED,
                "{bad:?}"
            );
        }
        let huge = format!("Bearer {}", "a".repeat(1 << 20));
        assert_eq!(
            bearer(huge.as_bytes()).unwrap_err().reason,
            reason::JWT_TOO_LARGE
        );
    }

    #[test]
    fn role_sets() {
        let r: Roles = [Role::Read, Role::Admin].into_iter().collect();
        assert!(r.contains(Role::Read) && r.contains(Role::Admin) && !r.contains(Role::Write));
        assert_eq!(r.to_string(), "read,admin");
        assert_eq!(Roles::NONE.to_string(), "(none)");
        assert!(Role::parse("owner").unwrap_err().contains("not a role"));
    }
}
