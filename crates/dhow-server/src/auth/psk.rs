//! Preshared keys: bearer tokens compared, in constant time, by their SHA-256 digest with the
//! digests in the configuration (a key never sits in a file in clear).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::settings::{roles, AuthSettings};
use super::{reason, AuthError, Credential, Identity, Roles};

struct Key {
    name: String,
    digest: [u8; 32],
    roles: Roles,
}

/// The configured keys.
#[derive(Default)]
pub struct PresharedKeys {
    keys: Vec<Key>,
}

impl PresharedKeys {
    pub fn from_settings(s: &AuthSettings) -> Result<PresharedKeys, String> {
        let mut keys = Vec::new();
        for (i, k) in s.preshared_keys.iter().enumerate() {
            let what = format!("auth.preshared_keys[{i}] ({})", k.name);
            let bytes = hex::decode(k.sha256.trim())
                .map_err(|e| format!("{what}: sha256 is not hex: {e}"))?;
            let digest: [u8; 32] = bytes.try_into().map_err(|_| {
                format!("{what}: sha256 must be 64 hex digits (printf %s KEY | sha256sum)")
            })?;
            keys.push(Key {
                name: k.name.clone(),
                digest,
                roles: roles(&k.roles, &what)?,
            });
        }
        if let Some(clear) = &s.env_preshared_key {
            if clear.trim().is_empty() {
                return Err("DHOW_PRESHARED_KEY is empty".into());
            }
            keys.push(Key {
                name: "env".into(),
                digest: Sha256::digest(clear.trim().as_bytes()).into(),
                roles: Roles::ALL,
            });
        }
        Ok(PresharedKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The identity of the key `token` is, if any. Every digest is compared, in constant
    /// time, so the time taken says nothing about which key came close.
    pub fn identify(&self, token: &str) -> Result<Identity, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Key> = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        match found {
            Some(k) => Ok(Identity {
                name: format!("psk:{}", k.name),
                credential: Credential::PresharedKey,
                roles: k.roles,
            }),
            None => Err(AuthError::unauthenticated(
                reason::KEY_UNKNOWN,
                "the bearer token is not a configured preshared key (nor a JWT of a configured issuer)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::settings::PresharedKeySettings;
    use crate::auth::Role;

    fn settings(digest: &str) -> AuthSettings {
        AuthSettings {
            preshared_keys: vec![PresharedKeySettings {
                name: "ci".into(),
                sha256: digest.into(),
                roles: vec!["read".into()],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn keys_by_digest() {
        let digest = hex::encode(Sha256::digest(b"s3cret"));
        let keys = PresharedKeys::from_settings(&settings(&digest)).unwrap();
        let id = keys.identify("s3cret").unwrap();
        assert_eq!(id.name, "psk:ci");
        assert!(id.roles.contains(Role::Read) && !id.roles.contains(Role::Write));
        let e = keys.identify("s3cret ").unwrap_err();
        assert_eq!(e.reason, reason::KEY_UNKNOWN);
        assert!(!e.message.contains("s3cret"));
        assert!(PresharedKeys::from_settings(&settings("abcd"))
            .err()
            .unwrap()
            .contains("64 hex digits"));
        assert!(PresharedKeys::from_settings(&settings("zz"))
            .err()
            .unwrap()
            .contains("not hex"));
    }
}
