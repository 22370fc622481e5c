//! Format 2: Dhow's explicit layouts, written field by field in a fixed order with the
//! primitives of [`super::wire`] (`varint`: LEB128; `signed`: zigzag then LEB128; `str`:
//! varint byte length then UTF-8; `opt X`: `0`, or `1` then X; `n ×`: a varint count then the
//! items). Nothing here depends on how dhow-tuples declares its types: renaming or reordering
//! a field there cannot change these bytes.
//!
//! ```text
//! entry        := 2, varint id, body
//! body         := 1 (writes), n × write  |  2 (schema), str text
//! write        := n × precondition, n × op
//! precondition := kind (1 must match, 2 must not match), filter
//! filter       := opt str resource type, opt str resource id, opt str relation,
//!                 opt str subject type, opt str subject id,
//!                 subject relation (0 any, 1 plain objects only, 2 then str: subject sets)
//! op           := kind (1 create, 2 touch, 3 delete), relationship
//! relationship := str resource type, str resource id, str relation, str subject type,
//!                 str subject id, opt str subject relation,
//!                 opt (str caveat name, opt str caveat context),
//!                 opt signed expiration (microseconds since the Unix epoch)
//! change context (of a conf change entry whose entry context is [2]) := 2, varint id, str address
//! membership   := 0xD2, n × varint voter, n × varint learner, n × varint outgoing voter,
//!                 n × varint next learner, auto leave (0 or 1), peers
//! peers        := n × (varint id, str address), ids strictly increasing
//! snapshot header := 2, peers
//! snapshot chunk  := 2, 1 (schema), opt str text  |  2, 2 (relationships), n × relationship
//! staged snapshot := 2, opt str schema, n × relationship
//! ```

use std::collections::BTreeMap;

use dhow_tuples::{
    CaveatRef, ObjectRef, Precondition, Relationship, RelationshipFilter, Subject, Timestamp,
    WriteOp, WriteRequest,
};
use raft::eraftpb::ConfState;

use super::wire::{Payload, Problem, Reader, Result, Writer};
use super::{Body, Chunk, Proposal};
use crate::log::Membership;
use crate::snapshot::StagedSnapshot;

/// The format version byte.
pub(crate) const VERSION: u8 = 2;
/// The first byte of a stored membership in format 2 (format 1 has `0xD1`; a bare protobuf
/// conf state, the oldest form, never starts with either).
pub(crate) const MEMBERSHIP: u8 = 0xD2;

const BODY_WRITES: u8 = 1;
const BODY_SCHEMA: u8 = 2;
const MUST_MATCH: u8 = 1;
const MUST_NOT_MATCH: u8 = 2;
const SUBJECT_ANY: u8 = 0;
const SUBJECT_PLAIN: u8 = 1;
const SUBJECT_SET: u8 = 2;
const OP_CREATE: u8 = 1;
const OP_TOUCH: u8 = 2;
const OP_DELETE: u8 = 3;
const CHUNK_SCHEMA: u8 = 1;
const CHUNK_RELATIONSHIPS: u8 = 2;

/// The fewest bytes an encoded item takes, so that a count can be checked against the input.
const MIN_RELATIONSHIP: usize = 8;
const MIN_OP: usize = 1 + MIN_RELATIONSHIP;
const MIN_PRECONDITION: usize = 7;
const MIN_WRITE: usize = 2;
const MIN_PEER: usize = 2;

// ---------------------------------------------------------------------------------------------
// Encoding

pub(crate) fn proposal(p: &Proposal) -> Vec<u8> {
    let mut w = Writer::new(VERSION);
    w.varint(p.id);
    match &p.body {
        Body::Writes(writes) => {
            w.u8(BODY_WRITES);
            w.len(writes.len());
            for req in writes {
                write_request(&mut w, req);
            }
        }
        Body::Schema(text) => {
            w.u8(BODY_SCHEMA);
            w.str(text);
        }
    }
    w.finish()
}

/// One client write, encoded as it sits in a proposal's list of writes.
pub(crate) fn write_part(req: &WriteRequest) -> Vec<u8> {
    let mut w = Writer::part();
    write_request(&mut w, req);
    w.finish()
}

/// The proposal `id` of the writes `parts` (each from [`write_part`]): the same bytes as
/// [`proposal`] of those writes.
pub(crate) fn writes_proposal(id: u64, parts: &[&[u8]]) -> Vec<u8> {
    let mut w = Writer::new(VERSION);
    w.varint(id);
    w.u8(BODY_WRITES);
    w.len(parts.len());
    for p in parts {
        w.bytes(p);
    }
    w.finish()
}

fn write_request(w: &mut Writer, req: &WriteRequest) {
    w.len(req.preconditions.len());
    for p in &req.preconditions {
        let (kind, f) = match p {
            Precondition::MustMatch(f) => (MUST_MATCH, f),
            Precondition::MustNotMatch(f) => (MUST_NOT_MATCH, f),
        };
        w.u8(kind);
        filter(w, f);
    }
    w.len(req.ops.len());
    for op in &req.ops {
        let (kind, r) = match op {
            WriteOp::Create(r) => (OP_CREATE, r),
            WriteOp::Touch(r) => (OP_TOUCH, r),
            WriteOp::Delete(r) => (OP_DELETE, r),
        };
        w.u8(kind);
        relationship(w, r);
    }
}

fn filter(w: &mut Writer, f: &RelationshipFilter) {
    w.opt_str(f.resource_type.as_deref());
    w.opt_str(f.resource_id.as_deref());
    w.opt_str(f.relation.as_deref());
    w.opt_str(f.subject_type.as_deref());
    w.opt_str(f.subject_id.as_deref());
    match &f.subject_relation {
        None => w.u8(SUBJECT_ANY),
        Some(None) => w.u8(SUBJECT_PLAIN),
        Some(Some(r)) => {
            w.u8(SUBJECT_SET);
            w.str(r);
        }
    }
}

fn relationship(w: &mut Writer, r: &Relationship) {
    w.str(&r.resource.object_type);
    w.str(&r.resource.object_id);
    w.str(&r.relation);
    w.str(&r.subject.object.object_type);
    w.str(&r.subject.object.object_id);
    w.opt_str(r.subject.relation.as_deref());
    w.opt(r.caveat.as_ref(), |w, c| {
        w.str(&c.name);
        w.opt_str(c.context.as_deref());
    });
    w.opt(r.expiration, |w, t| w.signed(t.0));
}

fn relationships(w: &mut Writer, rs: &[Relationship]) {
    w.len(rs.len());
    for r in rs {
        relationship(w, r);
    }
}

pub(crate) fn change_context(id: u64, addr: &str) -> Vec<u8> {
    let mut w = Writer::new(VERSION);
    w.varint(id);
    w.str(addr);
    w.finish()
}

fn ids(w: &mut Writer, ids: &[u64]) {
    w.len(ids.len());
    for &id in ids {
        w.varint(id);
    }
}

fn peers(w: &mut Writer, peers: &BTreeMap<u64, String>) {
    w.len(peers.len());
    for (id, addr) in peers {
        w.varint(*id);
        w.str(addr);
    }
}

pub(crate) fn membership(m: &Membership) -> Vec<u8> {
    let mut w = Writer::new(MEMBERSHIP);
    ids(&mut w, &m.conf.voters);
    ids(&mut w, &m.conf.learners);
    ids(&mut w, &m.conf.voters_outgoing);
    ids(&mut w, &m.conf.learners_next);
    w.u8(u8::from(m.conf.auto_leave));
    peers(&mut w, &m.peers);
    w.finish()
}

pub(crate) fn snapshot_header(p: &BTreeMap<u64, String>) -> Vec<u8> {
    let mut w = Writer::new(VERSION);
    peers(&mut w, p);
    w.finish()
}

pub(crate) fn chunk(c: &Chunk) -> Vec<u8> {
    let mut w = Writer::new(VERSION);
    match c {
        Chunk::Schema(s) => {
            w.u8(CHUNK_SCHEMA);
            w.opt_str(s.as_deref());
        }
        Chunk::Relationships(rs) => {
            w.u8(CHUNK_RELATIONSHIPS);
            relationships(&mut w, rs);
        }
    }
    w.finish()
}

pub(crate) fn staged(s: &StagedSnapshot) -> Vec<u8> {
    let mut w = Writer::new(VERSION);
    w.opt_str(s.schema.as_deref());
    relationships(&mut w, &s.relationships);
    w.finish()
}

// ---------------------------------------------------------------------------------------------
// Decoding. Each reader starts after the version byte, which the caller checked.

fn reader(bytes: &[u8], what: Payload) -> Reader<'_> {
    Reader::new(bytes, 1, what, Some(VERSION))
}

pub(crate) fn read_proposal(bytes: &[u8]) -> Result<Proposal> {
    let mut r = reader(bytes, Payload::Entry);
    let id = r.varint("id")?;
    let at = r.pos();
    let body = match r.u8("body")? {
        BODY_WRITES => {
            let n = r.count("writes", MIN_WRITE)?;
            let mut writes = Vec::with_capacity(n);
            for i in 0..n {
                writes.push(read_write(&mut r).map_err(|e| e.within(format!("writes[{i}]")))?);
            }
            Body::Writes(writes)
        }
        BODY_SCHEMA => Body::Schema(r.str("schema")?),
        t => return Err(r.error("body", at, Problem::BadTag(t))),
    };
    r.finish()?;
    Ok(Proposal { id, body })
}

fn read_write(r: &mut Reader<'_>) -> Result<WriteRequest> {
    let n = r.count("preconditions", MIN_PRECONDITION)?;
    let mut preconditions = Vec::with_capacity(n);
    for i in 0..n {
        preconditions
            .push(read_precondition(r).map_err(|e| e.within(format!("preconditions[{i}]")))?);
    }
    let n = r.count("ops", MIN_OP)?;
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        ops.push(read_op(r).map_err(|e| e.within(format!("ops[{i}]")))?);
    }
    Ok(WriteRequest { preconditions, ops })
}

fn read_precondition(r: &mut Reader<'_>) -> Result<Precondition> {
    let at = r.pos();
    match r.u8("kind")? {
        MUST_MATCH => Ok(Precondition::MustMatch(read_filter(r)?)),
        MUST_NOT_MATCH => Ok(Precondition::MustNotMatch(read_filter(r)?)),
        t => Err(r.error("kind", at, Problem::BadTag(t))),
    }
}

fn read_filter(r: &mut Reader<'_>) -> Result<RelationshipFilter> {
    let resource_type = r.opt_str("filter.resource.type")?;
    let resource_id = r.opt_str("filter.resource.id")?;
    let relation = r.opt_str("filter.relation")?;
    let subject_type = r.opt_str("filter.subject.type")?;
    let subject_id = r.opt_str("filter.subject.id")?;
    let at = r.pos();
    let subject_relation = match r.u8("filter.subject.relation")? {
        SUBJECT_ANY => None,
        SUBJECT_PLAIN => Some(None),
        SUBJECT_SET => Some(Some(r.str("filter.subject.relation")?)),
        t => return Err(r.error("filter.subject.relation", at, Problem::BadTag(t))),
    };
    Ok(RelationshipFilter {
        resource_type,
        resource_id,
        relation,
        subject_type,
        subject_id,
        subject_relation,
    })
}

fn read_op(r: &mut Reader<'_>) -> Result<WriteOp> {
    let at = r.pos();
    let kind = r.u8("kind")?;
    let make = match kind {
        OP_CREATE => WriteOp::Create,
        OP_TOUCH => WriteOp::Touch,
        OP_DELETE => WriteOp::Delete,
        t => return Err(r.error("kind", at, Problem::BadTag(t))),
    };
    Ok(make(read_relationship(r)?))
}

fn read_relationship(r: &mut Reader<'_>) -> Result<Relationship> {
    let resource = ObjectRef {
        object_type: r.str("resource.type")?,
        object_id: r.str("resource.id")?,
    };
    let relation = r.str("relation")?;
    let object = ObjectRef {
        object_type: r.str("subject.type")?,
        object_id: r.str("subject.id")?,
    };
    let subject = Subject {
        object,
        relation: r.opt_str("subject.relation")?,
    };
    let caveat = r.opt("caveat", |r| {
        Ok(CaveatRef {
            name: r.str("caveat.name")?,
            context: r.opt_str("caveat.context")?,
        })
    })?;
    let expiration = r.opt("expiration", |r| r.signed("expiration").map(Timestamp))?;
    Ok(Relationship {
        resource,
        relation,
        subject,
        caveat,
        expiration,
    })
}

fn read_relationships(r: &mut Reader<'_>) -> Result<Vec<Relationship>> {
    let n = r.count("relationships", MIN_RELATIONSHIP)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(read_relationship(r).map_err(|e| e.within(format!("relationships[{i}]")))?);
    }
    Ok(out)
}

pub(crate) fn read_change_context(bytes: &[u8]) -> Result<(u64, String)> {
    let mut r = reader(bytes, Payload::ChangeContext);
    let id = r.varint("id")?;
    let addr = r.str("address")?;
    r.finish()?;
    Ok((id, addr))
}

fn read_ids(r: &mut Reader<'_>, field: &str) -> Result<Vec<u64>> {
    let n = r.count(field, 1)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.varint(field)?);
    }
    Ok(out)
}

fn read_peers(r: &mut Reader<'_>) -> Result<BTreeMap<u64, String>> {
    let n = r.count("peers", MIN_PEER)?;
    let mut out = BTreeMap::new();
    let mut last = None;
    for i in 0..n {
        let at = r.pos();
        let id = r
            .varint("id")
            .map_err(|e| e.within(format!("peers[{i}]")))?;
        if last.is_some_and(|l| l >= id) {
            let problem = match last {
                Some(l) if l == id => Problem::Duplicate(id),
                _ => Problem::Unordered {
                    id,
                    after: last.unwrap_or(0),
                },
            };
            return Err(r.error(&format!("peers[{i}].id"), at, problem));
        }
        last = Some(id);
        let addr = r
            .str("address")
            .map_err(|e| e.within(format!("peers[{i}]")))?;
        out.insert(id, addr);
    }
    Ok(out)
}

pub(crate) fn read_membership(bytes: &[u8]) -> Result<Membership> {
    let mut r = reader(bytes, Payload::Membership);
    let mut conf = ConfState {
        voters: read_ids(&mut r, "voters")?,
        learners: read_ids(&mut r, "learners")?,
        voters_outgoing: read_ids(&mut r, "voters_outgoing")?,
        learners_next: read_ids(&mut r, "learners_next")?,
        ..Default::default()
    };
    let at = r.pos();
    conf.auto_leave = match r.u8("auto_leave")? {
        0 => false,
        1 => true,
        t => return Err(r.error("auto_leave", at, Problem::BadTag(t))),
    };
    let peers = read_peers(&mut r)?;
    r.finish()?;
    Ok(Membership { conf, peers })
}

pub(crate) fn read_snapshot_header(bytes: &[u8]) -> Result<BTreeMap<u64, String>> {
    let mut r = reader(bytes, Payload::SnapshotHeader);
    let peers = read_peers(&mut r)?;
    r.finish()?;
    Ok(peers)
}

pub(crate) fn read_chunk(bytes: &[u8]) -> Result<Chunk> {
    let mut r = reader(bytes, Payload::SnapshotChunk);
    let at = r.pos();
    let chunk = match r.u8("kind")? {
        CHUNK_SCHEMA => Chunk::Schema(r.opt_str("schema")?),
        CHUNK_RELATIONSHIPS => Chunk::Relationships(read_relationships(&mut r)?),
        t => return Err(r.error("kind", at, Problem::BadTag(t))),
    };
    r.finish()?;
    Ok(chunk)
}

pub(crate) fn read_staged(bytes: &[u8]) -> Result<StagedSnapshot> {
    let mut r = reader(bytes, Payload::StagedSnapshot);
    let schema = r.opt_str("schema")?;
    let relationships = read_relationships(&mut r)?;
    r.finish()?;
    Ok(StagedSnapshot {
        schema,
        relationships,
    })
}
