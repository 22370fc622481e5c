//! Consistency tokens: the revision a response was evaluated at, or a write committed at, as
//! opaque text. Bytes `{version = 1, cluster id (u64 BE), revision (u64 BE)}` in URL-safe
//! base64 without padding. A token from another cluster is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dhow_proto::v1::ConsistencyToken;
use dhow_tuples::Revision;
use tonic::Code;

use crate::error::{reason, ApiError};

/// The only token format so far.
pub const TOKEN_VERSION: u8 = 1;
const TOKEN_LEN: usize = 17;

/// A decoded token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub cluster_id: u64,
    pub revision: Revision,
}

impl Token {
    /// The token's text.
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(TOKEN_LEN);
        b.push(TOKEN_VERSION);
        b.extend_from_slice(&self.cluster_id.to_be_bytes());
        b.extend_from_slice(&self.revision.0.to_be_bytes());
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Parses token text, saying what is wrong with it. Does not check the cluster.
    pub fn decode(text: &str) -> Result<Token, String> {
        let text = text.trim_end_matches('=');
        if text.is_empty() {
            return Err("empty token".into());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| format!("not a Dhow consistency token (invalid base64: {e})"))?;
        let Some(&version) = bytes.first() else {
            return Err("empty token".into());
        };
        if version != TOKEN_VERSION {
            return Err(format!(
                "unsupported token version {version} (this server reads version {TOKEN_VERSION})"
            ));
        }
        if bytes.len() != TOKEN_LEN {
            return Err(format!(
                "not a Dhow consistency token ({} bytes, expected {TOKEN_LEN})",
                bytes.len()
            ));
        }
        let mut cluster = [0u8; 8];
        cluster.copy_from_slice(&bytes[1..9]);
        let mut rev = [0u8; 8];
        rev.copy_from_slice(&bytes[9..17]);
        Ok(Token {
            cluster_id: u64::from_be_bytes(cluster),
            revision: Revision(u64::from_be_bytes(rev)),
        })
    }
}

/// The proto token for `rev` on cluster `cluster_id`.
pub fn to_proto(cluster_id: u64, rev: Revision) -> ConsistencyToken {
    ConsistencyToken {
        token: Token {
            cluster_id,
            revision: rev,
        }
        .encode(),
    }
}

/// Decodes a token of this cluster, naming `field` in any error.
pub fn decode_for(
    cluster_id: u64,
    token: &ConsistencyToken,
    field: &str,
) -> Result<Revision, ApiError> {
    let t = Token::decode(&token.token).map_err(|m| {
        ApiError::new(Code::InvalidArgument, reason::TOKEN_MALFORMED, m)
            .at(format!("{field}.token"))
    })?;
    if t.cluster_id != cluster_id {
        return Err(ApiError::new(
            Code::InvalidArgument,
            reason::TOKEN_WRONG_CLUSTER,
            format!(
                "token was issued by cluster {:016x}, this is cluster {cluster_id:016x}",
                t.cluster_id
            ),
        )
        .at(format!("{field}.token")));
    }
    Ok(t.revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Token {
            cluster_id: 0xdead_beef,
            revision: Revision(42),
        };
        let s = t.encode();
        assert!(!s.contains('=') && !s.contains('+') && !s.contains('/'));
        assert_eq!(Token::decode(&s).unwrap(), t);
        assert_eq!(
            decode_for(0xdead_beef, &ConsistencyToken { token: s.clone() }, "x").unwrap(),
            Revision(42)
        );
        let e = decode_for(
            7,
            &ConsistencyToken { token: s },
            "consistency.at_least_as_fresh",
        )
        .unwrap_err();
        assert_eq!(e.reason, reason::TOKEN_WRONG_CLUSTER);
        assert_eq!(
            e.field.as_deref(),
            Some("consistency.at_least_as_fresh.token")
        );
    }

    #[test]
    fn bad_tokens_say_why() {
        assert!(Token::decode("").unwrap_err().contains("empty"));
        assert!(Token::decode("!!!").unwrap_err().contains("base64"));
        assert!(Token::decode(&URL_SAFE_NO_PAD.encode([2u8; 17]))
            .unwrap_err()
            .contains("version 2"));
        assert!(Token::decode(&URL_SAFE_NO_PAD.encode([1u8; 5]))
            .unwrap_err()
            .contains("5 bytes"));
    }
}
