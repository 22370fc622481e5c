//! Dhow's formats for what this crate writes to disk or sends to a peer, versioned: the data
//! of a Raft entry (a proposal id and either client writes batched together or a schema), the
//! context of a membership change entry, the membership kept beside the log, the header and
//! the chunks of a snapshot, and a staged snapshot file.
//!
//! New data is written in format 2 ([`v2`]: explicit, field by field, independent of how
//! dhow-tuples declares its types). Format 1 ([`v1`]: bincode over serde derives, frozen in
//! private copies of the types as they were) stays readable, so that a data dir or a peer from
//! before format 2 is understood. Anything else is refused with a [`DecodeError`] naming the
//! version, the field and the byte.
//!
//! Where the version is: the first byte of an entry's data, a snapshot header and a chunk
//! (`1` or `2`), of a stored membership (`0xD1` or `0xD2`; anything else is the oldest form, a
//! bare protobuf conf state), of a staged snapshot file (`2`; format 1 had no version byte and
//! starts with `0` or `1`). A membership change entry carries its format in the raft-rs entry's
//! own `context` (empty in format 1, whose change context had no version byte; `[2]` now).

mod v1;
mod v2;
mod wire;

#[cfg(test)]
mod fuzz;

use std::collections::BTreeMap;

use dhow_tuples::{Relationship, WriteRequest};

use crate::log::Membership;
use crate::snapshot::StagedSnapshot;

pub use wire::{DecodeError, Payload, Problem};

/// The format new data is written in.
pub(crate) const FORMAT: u8 = v2::VERSION;
/// The formats this build reads.
const KNOWN: &[u8] = &[v1::VERSION, v2::VERSION];

/// The body of a normal Raft entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proposal {
    /// Unique per proposing node: `node id << 40 | counter`, the counter starting at a random
    /// value each time the node starts.
    pub id: u64,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// Client writes, each atomic on its own, applied in order at the entry's index.
    Writes(Vec<WriteRequest>),
    /// A new schema text.
    Schema(String),
}

/// One chunk of a snapshot's data: the schema first, then pages of relationships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chunk {
    Schema(Option<String>),
    Relationships(Vec<Relationship>),
}

fn unknown(what: Payload, found: u8) -> DecodeError {
    DecodeError::whole(
        what,
        None,
        Problem::UnknownVersion {
            found,
            known: KNOWN,
        },
    )
}

/// Reads the version byte of `bytes` and hands them to the reader of that version.
fn versioned<T>(
    bytes: &[u8],
    what: Payload,
    v1: impl FnOnce(&[u8]) -> wire::Result<T>,
    v2: impl FnOnce(&[u8]) -> wire::Result<T>,
) -> Result<T, DecodeError> {
    match bytes.first() {
        Some(&v1::VERSION) => v1(bytes),
        Some(&v2::VERSION) => v2(bytes),
        Some(&v) => Err(unknown(what, v)),
        None => Err(DecodeError::whole(what, None, Problem::Empty)),
    }
}

/// The data of a normal Raft entry.
pub(crate) fn encode(p: &Proposal) -> Vec<u8> {
    v2::proposal(p)
}

/// A client write encoded by whoever submits it, so that the Raft thread, which proposes
/// and applies every entry, only joins the parts ([`encode_writes`]).
#[derive(Debug, Clone)]
pub(crate) struct EncodedWrite(pub Vec<u8>);

impl EncodedWrite {
    pub(crate) fn new(req: &WriteRequest) -> Self {
        EncodedWrite(v2::write_part(req))
    }
}

/// The data of a normal Raft entry holding the writes `parts`: the same bytes as
/// [`encode`] of a proposal of those writes.
pub(crate) fn encode_writes(id: u64, parts: &[EncodedWrite]) -> Vec<u8> {
    let parts: Vec<&[u8]> = parts.iter().map(|p| p.0.as_slice()).collect();
    v2::writes_proposal(id, &parts)
}

/// Reads the data of a normal Raft entry, in either format.
pub(crate) fn decode(bytes: &[u8]) -> Result<Proposal, DecodeError> {
    versioned(bytes, Payload::Entry, v1::read_proposal, v2::read_proposal)
}

/// The raft-rs entry context that marks a membership change entry of the current format.
pub(crate) fn change_entry_context() -> Vec<u8> {
    vec![FORMAT]
}

/// The context of a conf change: the proposal id and the new member's peer address.
pub(crate) fn encode_change_context(id: u64, addr: &str) -> Vec<u8> {
    v2::change_context(id, addr)
}

/// Reads a conf change's context, in the format named by the raft-rs entry's own context
/// (`entry_context`: empty in format 1).
pub(crate) fn decode_change_context(
    entry_context: &[u8],
    bytes: &[u8],
) -> Result<(u64, String), DecodeError> {
    match entry_context {
        [] => v1::read_change_context(bytes),
        [v2::VERSION] => versioned(
            bytes,
            Payload::ChangeContext,
            |_| Err(unknown(Payload::ChangeContext, v1::VERSION)),
            v2::read_change_context,
        ),
        [v, ..] => Err(unknown(Payload::ChangeContext, *v)),
    }
}

/// The membership kept beside the log.
pub(crate) fn encode_membership(m: &Membership) -> Vec<u8> {
    v2::membership(m)
}

/// Reads a stored membership in any of its forms.
pub(crate) fn decode_membership(bytes: &[u8]) -> Result<Membership, DecodeError> {
    match bytes.first() {
        Some(&v2::MEMBERSHIP) => v2::read_membership(bytes),
        Some(&v1::MEMBERSHIP) => v1::read_membership(bytes),
        // Written before peer addresses were kept: a bare conf state.
        _ => Ok(Membership {
            conf: v1::bare_conf_state(bytes)?,
            peers: BTreeMap::new(),
        }),
    }
}

/// The header of a snapshot message: the peer addresses.
pub(crate) fn encode_snapshot_header(peers: &BTreeMap<u64, String>) -> Vec<u8> {
    v2::snapshot_header(peers)
}

pub(crate) fn decode_snapshot_header(bytes: &[u8]) -> Result<BTreeMap<u64, String>, DecodeError> {
    versioned(
        bytes,
        Payload::SnapshotHeader,
        v1::read_snapshot_header,
        v2::read_snapshot_header,
    )
}

/// One chunk of a snapshot's data.
pub(crate) fn encode_chunk(c: &Chunk) -> Vec<u8> {
    v2::chunk(c)
}

pub(crate) fn decode_chunk(bytes: &[u8]) -> Result<Chunk, DecodeError> {
    versioned(
        bytes,
        Payload::SnapshotChunk,
        v1::read_chunk,
        v2::read_chunk,
    )
}

/// A staged snapshot file.
pub(crate) fn encode_staged(s: &StagedSnapshot) -> Vec<u8> {
    v2::staged(s)
}

/// Reads a staged snapshot file: format 2, or format 1 (no version byte; its first byte is
/// the schema's option tag, 0 or 1).
pub(crate) fn decode_staged(bytes: &[u8]) -> Result<StagedSnapshot, DecodeError> {
    match bytes.first() {
        Some(0 | 1) => v1::read_staged(bytes),
        Some(&v2::VERSION) => v2::read_staged(bytes),
        Some(&v) => Err(unknown(Payload::StagedSnapshot, v)),
        None => Err(DecodeError::whole(
            Payload::StagedSnapshot,
            None,
            Problem::Empty,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{parse_relationship, WriteOp};

    /// Writes encoded one by one by their submitters and joined by the Raft thread make the
    /// same entry as the proposal encoded whole: every golden sample of a proposal of
    /// writes (the format's reference), and none of them, one and two at a time.
    #[test]
    fn writes_joined_from_parts_are_the_proposal_encoded_whole() {
        let mut seen = 0;
        for (name, v) in crate::golden::samples() {
            let crate::golden::Value::Entry(p) = v else {
                continue;
            };
            let Body::Writes(reqs) = &p.body else {
                continue;
            };
            let parts: Vec<EncodedWrite> = reqs.iter().map(EncodedWrite::new).collect();
            assert_eq!(encode_writes(p.id, &parts), encode(&p), "{name}");
            for n in 0..reqs.len().min(2) {
                let some = Proposal {
                    id: p.id,
                    body: Body::Writes(reqs[..n].to_vec()),
                };
                assert_eq!(
                    encode_writes(p.id, &parts[..n]),
                    encode(&some),
                    "{name}, {n}"
                );
            }
            seen += 1;
        }
        assert!(seen >= 2, "the golden samples hold proposals of writes");
    }

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
        let bytes = encode(&p);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode(&bytes).unwrap(), p);
        let mut bad = bytes.clone();
        bad[0] = 9;
        let e = decode(&bad).unwrap_err();
        assert_eq!(
            e.problem,
            Problem::UnknownVersion {
                found: 9,
                known: &[1, 2]
            }
        );
        assert_eq!(
            e.to_string(),
            "cannot decode a raft entry: unknown format version 9 (this build reads 1 and 2)"
        );
        let e = decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert_eq!(e.version, Some(2));
        assert!(e.field.starts_with("writes[0].ops[0]."), "{e}");
        assert_eq!(decode(&[]).unwrap_err().problem, Problem::Empty);
    }

    #[test]
    fn errors_name_the_field_and_the_byte() {
        let p = Proposal {
            id: 1,
            body: Body::Writes(vec![
                WriteRequest::default(),
                WriteRequest {
                    preconditions: vec![],
                    ops: vec![
                        WriteOp::Create(parse_relationship("doc:a#viewer@user:b").unwrap()),
                        WriteOp::Delete(parse_relationship("doc:a#viewer@user:c").unwrap()),
                    ],
                },
            ]),
        };
        let mut bytes = encode(&p);
        // The kind of the second op: version, id, body, 2 writes, (0, 0), (0, 2 ops), op 1.
        let op1 = 1 + 1 + 1 + 1 + 2 + 2 + 1 + (1 + 3) + (1 + 1) + (1 + 6) + (1 + 4) + (1 + 1) + 3;
        assert_eq!(bytes[op1], 3, "delete");
        bytes[op1] = 7;
        let e = decode(&bytes).unwrap_err();
        assert_eq!(e.field, "writes[1].ops[1].kind");
        assert_eq!(e.offset, Some(op1));
        assert_eq!(e.problem, Problem::BadTag(7));
        assert_eq!(
            e.to_string(),
            format!("cannot decode a raft entry (format 2): unknown tag 7 in field `writes[1].ops[1].kind` at byte {op1}")
        );
        // Trailing bytes are refused.
        let mut long = encode(&p);
        long.push(0);
        assert_eq!(decode(&long).unwrap_err().problem, Problem::Trailing(1));
    }

    #[test]
    fn a_change_context_is_read_in_the_format_its_entry_names() {
        let ctx = encode_change_context(5, "h:1");
        assert_eq!(
            decode_change_context(&change_entry_context(), &ctx).unwrap(),
            (5, "h:1".into())
        );
        // Format 1's context has no version byte: an empty entry context says so.
        let mut v1 = 5u64.to_le_bytes().to_vec();
        v1.extend(3u64.to_le_bytes());
        v1.extend(b"h:1");
        assert_eq!(decode_change_context(&[], &v1).unwrap(), (5, "h:1".into()));
        let e = decode_change_context(&[7], &ctx).unwrap_err();
        assert!(e.to_string().contains("unknown format version 7"), "{e}");
    }

    #[test]
    fn peers_are_strictly_increasing() {
        let header = encode_snapshot_header(&BTreeMap::from([(1, "a".into()), (2, "b".into())]));
        assert_eq!(decode_snapshot_header(&header).unwrap().len(), 2);
        let mut dup = header.clone();
        // version, count, (1, "a"), (2 -> 1, "b")
        assert_eq!(dup[5], 2);
        dup[5] = 1;
        let e = decode_snapshot_header(&dup).unwrap_err();
        assert_eq!(e.problem, Problem::Duplicate(1));
        assert_eq!(e.field, "peers[1].id");
    }
}
