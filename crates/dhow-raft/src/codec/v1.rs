//! Format 1, read only: what Dhow wrote before format 2 (bincode 1 with its default options:
//! fixed-width little-endian integers, `u64` lengths, enum variants as `u32` indexes). The
//! layout is that of serde derives over the dhow-tuples types *as they were then*; the private
//! structs below mirror those types field for field and variant for variant, frozen, so that
//! later changes to dhow-tuples cannot change how format 1 decodes. Each is converted to the
//! domain type after decoding. Never add to, reorder or rename anything here.

use std::collections::BTreeMap;

use bincode::Options as _;
use serde::Deserialize;

use super::wire::{DecodeError, Payload, Problem, Reader, Result};
use super::{Body as DomainBody, Chunk, Proposal as DomainProposal};
use crate::snapshot::StagedSnapshot as DomainStaged;

/// The format version byte of entries, snapshot headers and chunks.
pub(crate) const VERSION: u8 = 1;
/// The first byte of a stored membership in format 1.
pub(crate) const MEMBERSHIP: u8 = 0xD1;

#[derive(Deserialize)]
struct Proposal {
    id: u64,
    body: Body,
}

#[derive(Deserialize)]
enum Body {
    Writes(Vec<WriteRequest>),
    Schema(String),
}

#[derive(Deserialize)]
struct WriteRequest {
    preconditions: Vec<Precondition>,
    ops: Vec<WriteOp>,
}

#[derive(Deserialize)]
enum Precondition {
    MustMatch(RelationshipFilter),
    MustNotMatch(RelationshipFilter),
}

#[derive(Deserialize)]
struct RelationshipFilter {
    resource_type: Option<String>,
    resource_id: Option<String>,
    relation: Option<String>,
    subject_type: Option<String>,
    subject_id: Option<String>,
    subject_relation: Option<Option<String>>,
}

#[derive(Deserialize)]
enum WriteOp {
    Create(Relationship),
    Touch(Relationship),
    Delete(Relationship),
}

#[derive(Deserialize)]
struct ObjectRef {
    object_type: String,
    object_id: String,
}

#[derive(Deserialize)]
struct Subject {
    object: ObjectRef,
    relation: Option<String>,
}

#[derive(Deserialize)]
struct CaveatRef {
    name: String,
    context: Option<String>,
}

#[derive(Deserialize)]
struct Timestamp(i64);

#[derive(Deserialize)]
struct Relationship {
    resource: ObjectRef,
    relation: String,
    subject: Subject,
    caveat: Option<CaveatRef>,
    expiration: Option<Timestamp>,
}

/// A snapshot chunk.
#[derive(Deserialize)]
enum Part {
    Schema(Option<String>),
    Relationships(Vec<Relationship>),
}

/// A staged snapshot file (written with no version byte).
#[derive(Deserialize)]
struct StagedSnapshot {
    schema: Option<String>,
    relationships: Vec<Relationship>,
}

// Conversions into the domain types.

impl From<ObjectRef> for dhow_tuples::ObjectRef {
    fn from(o: ObjectRef) -> Self {
        dhow_tuples::ObjectRef {
            object_type: o.object_type,
            object_id: o.object_id,
        }
    }
}

impl From<Relationship> for dhow_tuples::Relationship {
    fn from(r: Relationship) -> Self {
        dhow_tuples::Relationship {
            resource: r.resource.into(),
            relation: r.relation,
            subject: dhow_tuples::Subject {
                object: r.subject.object.into(),
                relation: r.subject.relation,
            },
            caveat: r.caveat.map(|c| dhow_tuples::CaveatRef {
                name: c.name,
                context: c.context,
            }),
            expiration: r.expiration.map(|t| dhow_tuples::Timestamp(t.0)),
        }
    }
}

impl From<RelationshipFilter> for dhow_tuples::RelationshipFilter {
    fn from(f: RelationshipFilter) -> Self {
        dhow_tuples::RelationshipFilter {
            resource_type: f.resource_type,
            resource_id: f.resource_id,
            relation: f.relation,
            subject_type: f.subject_type,
            subject_id: f.subject_id,
            subject_relation: f.subject_relation,
        }
    }
}

impl From<WriteRequest> for dhow_tuples::WriteRequest {
    fn from(w: WriteRequest) -> Self {
        dhow_tuples::WriteRequest {
            preconditions: w
                .preconditions
                .into_iter()
                .map(|p| match p {
                    Precondition::MustMatch(f) => dhow_tuples::Precondition::MustMatch(f.into()),
                    Precondition::MustNotMatch(f) => {
                        dhow_tuples::Precondition::MustNotMatch(f.into())
                    }
                })
                .collect(),
            ops: w
                .ops
                .into_iter()
                .map(|op| match op {
                    WriteOp::Create(r) => dhow_tuples::WriteOp::Create(r.into()),
                    WriteOp::Touch(r) => dhow_tuples::WriteOp::Touch(r.into()),
                    WriteOp::Delete(r) => dhow_tuples::WriteOp::Delete(r.into()),
                })
                .collect(),
        }
    }
}

/// Decodes `bytes[from..]` as bincode did in format 1, reading at most what is there (a
/// length field can never make it allocate past the input).
fn bincode_decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    from: usize,
    what: Payload,
    version: Option<u8>,
) -> Result<T> {
    let rest = bytes.get(from..).unwrap_or_default();
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(rest.len() as u64)
        .deserialize(rest)
        .map_err(|e| DecodeError::whole(what, version, Problem::Legacy(e.to_string())))
}

/// An entry's data after its version byte `1`.
pub(crate) fn read_proposal(bytes: &[u8]) -> Result<DomainProposal> {
    let p: Proposal = bincode_decode(bytes, 1, Payload::Entry, Some(VERSION))?;
    Ok(DomainProposal {
        id: p.id,
        body: match p.body {
            Body::Writes(w) => DomainBody::Writes(w.into_iter().map(Into::into).collect()),
            Body::Schema(s) => DomainBody::Schema(s),
        },
    })
}

/// A conf change context of format 1 (no version byte): `(id, address)`.
pub(crate) fn read_change_context(bytes: &[u8]) -> Result<(u64, String)> {
    bincode_decode(bytes, 0, Payload::ChangeContext, Some(VERSION))
}

/// A membership after its first byte `0xD1`: the protobuf conf state and the peers.
pub(crate) fn read_membership(bytes: &[u8]) -> Result<crate::log::Membership> {
    let (conf, peers): (Vec<u8>, BTreeMap<u64, String>) =
        bincode_decode(bytes, 1, Payload::Membership, Some(VERSION))?;
    Ok(crate::log::Membership {
        conf: bare_conf_state(&conf).map_err(|mut e| {
            e.version = Some(VERSION);
            e
        })?,
        peers,
    })
}

/// The oldest stored membership: a bare protobuf conf state, no peers.
pub(crate) fn bare_conf_state(bytes: &[u8]) -> Result<raft::eraftpb::ConfState> {
    use protobuf::Message as _;
    check_protobuf_lengths(bytes)?;
    raft::eraftpb::ConfState::parse_from_bytes(bytes).map_err(|e| {
        DecodeError::whole(
            Payload::Membership,
            None,
            Problem::Legacy(format!("conf state: {e}")),
        )
    })
}

/// Walks the protobuf wire format of `bytes` and refuses a length-delimited field longer
/// than the rest of the input: the protobuf crate reserves up to 10 MB for such a length
/// before finding out that the bytes are not there.
fn check_protobuf_lengths(bytes: &[u8]) -> Result<()> {
    let mut r = Reader::new(bytes, 0, Payload::Membership, None);
    while r.pos() < bytes.len() {
        let at = r.pos();
        let tag = r.varint("conf state")?;
        match tag & 7 {
            0 => {
                r.varint("conf state")?;
            }
            1 => r.skip("conf state", 8)?,
            2 => {
                let n = r.count("conf state", 1)?;
                r.skip("conf state", n)?;
            }
            5 => r.skip("conf state", 4)?,
            w => {
                return Err(r.error(
                    "conf state",
                    at,
                    Problem::Legacy(format!(
                        "protobuf wire type {w}, which a conf state never has"
                    )),
                ))
            }
        }
    }
    Ok(())
}

/// A snapshot header after its version byte `1`.
pub(crate) fn read_snapshot_header(bytes: &[u8]) -> Result<BTreeMap<u64, String>> {
    bincode_decode(bytes, 1, Payload::SnapshotHeader, Some(VERSION))
}

/// A snapshot chunk after its version byte `1`.
pub(crate) fn read_chunk(bytes: &[u8]) -> Result<Chunk> {
    let part: Part = bincode_decode(bytes, 1, Payload::SnapshotChunk, Some(VERSION))?;
    Ok(match part {
        Part::Schema(s) => Chunk::Schema(s),
        Part::Relationships(rs) => Chunk::Relationships(rs.into_iter().map(Into::into).collect()),
    })
}

/// A staged snapshot file of format 1 (no version byte: it starts with the schema's option
/// tag, 0 or 1).
pub(crate) fn read_staged(bytes: &[u8]) -> Result<DomainStaged> {
    let s: StagedSnapshot = bincode_decode(bytes, 0, Payload::StagedSnapshot, Some(VERSION))?;
    Ok(DomainStaged {
        schema: s.schema,
        relationships: s.relationships.into_iter().map(Into::into).collect(),
    })
}
