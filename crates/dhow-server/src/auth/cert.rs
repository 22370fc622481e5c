//! Client certificates: the identities a verified certificate names (`CN=...`, `DNS:...`,
//! `URI:...`) mapped to roles. The TLS layer has already checked the certificate against the
//! client CA; this only says who it is.

use dhow_tls::certificate_identities;
use rustls_pki_types::CertificateDer;

use super::settings::{roles, CertificateSettings};
use super::{reason, AuthError, Credential, Identity, Roles};

/// The configured certificate identities.
#[derive(Default)]
pub struct CertificateIdentities {
    known: Vec<(String, Roles)>,
}

impl CertificateIdentities {
    pub fn from_settings(s: &[CertificateSettings]) -> Result<CertificateIdentities, String> {
        let mut known = Vec::new();
        for (i, c) in s.iter().enumerate() {
            let what = format!("auth.client_certificates[{i}] ({})", c.identity);
            let id = c.identity.trim();
            if !(id.starts_with("CN=") || id.starts_with("DNS:") || id.starts_with("URI:")) {
                return Err(format!(
                    "{what}: identity must start with CN=, DNS: or URI:"
                ));
            }
            known.push((id.to_string(), roles(&c.roles, &what)?));
        }
        Ok(CertificateIdentities { known })
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The identity of a client certificate: the union of the roles of every configured
    /// identity it names, named after the first.
    pub fn identify(&self, cert: &CertificateDer<'static>) -> Result<Identity, AuthError> {
        let names = certificate_identities(cert);
        let mut roles = Roles::NONE;
        let mut first: Option<&str> = None;
        for (id, r) in &self.known {
            if names.iter().any(|n| n == id) {
                roles = roles.union(*r);
                first.get_or_insert(id);
            }
        }
        match first {
            Some(id) => Ok(Identity {
                name: format!("cert:{id}"),
                credential: Credential::Certificate,
                roles,
            }),
            None => Err(AuthError::unauthenticated(
                reason::CERTIFICATE_UNKNOWN,
                format!(
                    "the client certificate names no configured identity (it names: {})",
                    if names.is_empty() {
                        "nothing readable".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )),
        }
    }
}
