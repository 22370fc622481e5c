//! What a Raft entry carries: a proposal id (to answer the proposer) and either client writes
//! batched together or a schema. Encoded with bincode; the first byte is a format version.

use dhow_tuples::WriteRequest;
use serde::{Deserialize, Serialize};

const FORMAT: u8 = 1;

/// The body of a normal Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proposal {
    /// Unique per proposing node: `node id << 40 | counter`, the counter starting at a random
    /// value each time the node starts.
    pub id: u64,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Body {
    /// Client writes, each atomic on its own, applied in order at the entry's index.
    Writes(Vec<WriteRequest>),
    /// A new schema text.
    Schema(String),
}

pub(crate) fn encode(p: &Proposal) -> Result<Vec<u8>, String> {
    let mut out = vec![FORMAT];
    bincode::serialize_into(&mut out, p).map_err(|e| format!("encode proposal: {e}"))?;
    Ok(out)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Proposal, String> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => {
            bincode::deserialize(rest).map_err(|e| format!("decode proposal: {e}"))
        }
        Some((v, _)) => Err(format!(
            "unknown proposal format {v} (this node understands {FORMAT})"
        )),
        None => Err("empty proposal".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{parse_relationship, WriteOp};

    #[test]
    fn round_trip_and_refuse_unknown_format() {
        let p = Proposal {
            id: 7,
            body: Body::Writes(vec![WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Touch(
                    parse_relationship("document:a#viewer@user:b[expiration:2030-01-01T00:00:00Z]")
                        .unwrap(),
                )],
            }]),
        };
        let bytes = encode(&p).unwrap();
        assert_eq!(decode(&bytes).unwrap(), p);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode(&bad)
            .unwrap_err()
            .contains("unknown proposal format 9"));
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
    }
}
