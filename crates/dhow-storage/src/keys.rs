//! The on-disk encoding of keys and values: order-preserving, prefix-exact and versioned.
//!
//! Every key of the `tuples`, `by_subject`, `changes`, `schemas` and `raft_log` column
//! families starts with [`KEY_FORMAT`], so a later layout can live beside this one.
//!
//! A string component is its UTF-8 bytes with every `0x00` written `0x00 0xFF`, followed by
//! the terminator `0x00 0x01`. Byte-wise comparison of encoded components then equals
//! `str` comparison, and no encoded component is a prefix of another, so "all keys starting
//! with the encoding of (a, b)" is exactly "all tuples whose first two fields are a and b"
//! (`document:a` never matches `document:ab`). An optional component (the subject relation)
//! is `0x00` for `None` (a plain subject, `...`) or `0x01` followed by the string, so `None`
//! sorts first, as `Option` does. Revisions, sequence numbers and log indexes are big-endian.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `tuples` | F, resource type, resource id, relation, subject type, subject id, subject relation?, created revision (u64) | V, deleted revision (u64, `u64::MAX` while alive), payload |
//! | `by_subject` | F, subject type, subject id, subject relation?, resource type, resource id, relation | empty (a pointer to the `tuples` versions) |
//! | `changes` | F, revision (u64), sequence in the revision (u32) | V, deleted flag (u8), relationship key length (u32), relationship key, payload |
//! | `schemas` | F, revision (u64) | schema text (UTF-8) |
//! | `raft_log` | F, index (u64) | term (u64), entry bytes |
//!
//! F is [`KEY_FORMAT`], V is [`VALUE_FORMAT`]. The payload is a flags byte (bit 0: caveat,
//! bit 1: caveat context, bit 2: expiration), then the expiration (i64 microseconds), the
//! caveat name and context (each a u32 length and UTF-8 bytes), each only if flagged.

use dhow_tuples::{CaveatRef, ObjectRef, Relationship, Subject, Timestamp};

/// The first byte of every versioned key.
pub(crate) const KEY_FORMAT: u8 = 1;
/// The first byte of every structured value.
pub(crate) const VALUE_FORMAT: u8 = 1;
/// The deleted revision of a version that is still alive.
pub(crate) const ALIVE: u64 = u64::MAX;

const FLAG_CAVEAT: u8 = 1;
const FLAG_CONTEXT: u8 = 2;
const FLAG_EXPIRATION: u8 = 4;

fn push_str(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b == 0 {
            out.extend_from_slice(&[0, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

fn push_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            push_str(out, s);
        }
    }
}

/// The identity fields of a relationship, in forward key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFields {
    pub resource_type: String,
    pub resource_id: String,
    pub relation: String,
    pub subject_type: String,
    pub subject_id: String,
    pub subject_relation: Option<String>,
}

impl KeyFields {
    /// The forward (`tuples`) key without the revision.
    pub fn forward(&self) -> Vec<u8> {
        forward_key_parts(
            &self.resource_type,
            &self.resource_id,
            &self.relation,
            &self.subject_type,
            &self.subject_id,
            self.subject_relation.as_deref(),
        )
    }

    /// The reverse-index (`by_subject`) key.
    pub fn reverse(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(64);
        k.push(KEY_FORMAT);
        push_str(&mut k, &self.subject_type);
        push_str(&mut k, &self.subject_id);
        push_opt(&mut k, self.subject_relation.as_deref());
        push_str(&mut k, &self.resource_type);
        push_str(&mut k, &self.resource_id);
        push_str(&mut k, &self.relation);
        k
    }

    /// The relationship these fields name, with `payload`'s caveat and expiration.
    pub fn into_relationship(self, payload: Payload) -> Relationship {
        Relationship {
            resource: ObjectRef::new(self.resource_type, self.resource_id),
            relation: self.relation,
            subject: Subject {
                object: ObjectRef::new(self.subject_type, self.subject_id),
                relation: self.subject_relation,
            },
            caveat: payload.caveat,
            expiration: payload.expiration,
        }
    }

    /// Decodes a forward key (without revision), which must be consumed exactly.
    pub fn decode_forward(key: &[u8]) -> Result<KeyFields, String> {
        let mut c = Cursor::new(key)?;
        let f = KeyFields {
            resource_type: c.string("resource type")?,
            resource_id: c.string("resource id")?,
            relation: c.string("relation")?,
            subject_type: c.string("subject type")?,
            subject_id: c.string("subject id")?,
            subject_relation: c.opt_string("subject relation")?,
        };
        c.finish()?;
        Ok(f)
    }

    /// Decodes a reverse-index key, which must be consumed exactly.
    pub fn decode_reverse(key: &[u8]) -> Result<KeyFields, String> {
        let mut c = Cursor::new(key)?;
        let subject_type = c.string("subject type")?;
        let subject_id = c.string("subject id")?;
        let subject_relation = c.opt_string("subject relation")?;
        let f = KeyFields {
            resource_type: c.string("resource type")?,
            resource_id: c.string("resource id")?,
            relation: c.string("relation")?,
            subject_type,
            subject_id,
            subject_relation,
        };
        c.finish()?;
        Ok(f)
    }

    /// The fields as a relationship without caveat or expiration (for filtering by key).
    pub fn to_bare_relationship(&self) -> Relationship {
        self.clone().into_relationship(Payload::default())
    }
}

fn forward_key_parts(
    rt: &str,
    rid: &str,
    rel: &str,
    st: &str,
    sid: &str,
    srel: Option<&str>,
) -> Vec<u8> {
    let mut k = Vec::with_capacity(
        rt.len() + rid.len() + rel.len() + st.len() + sid.len() + 24 + srel.map_or(0, str::len),
    );
    k.push(KEY_FORMAT);
    push_str(&mut k, rt);
    push_str(&mut k, rid);
    push_str(&mut k, rel);
    push_str(&mut k, st);
    push_str(&mut k, sid);
    push_opt(&mut k, srel);
    k
}

/// The forward key of `r`'s identity (no revision).
pub(crate) fn forward_key(r: &Relationship) -> Vec<u8> {
    let (rt, rid, rel, st, sid, srel) = r.key();
    forward_key_parts(rt, rid, rel, st, sid, srel)
}

/// The forward key of `resource#relation@subject` (no revision).
pub(crate) fn forward_key_of(resource: &ObjectRef, relation: &str, subject: &Subject) -> Vec<u8> {
    forward_key_parts(
        &resource.object_type,
        &resource.object_id,
        relation,
        &subject.object.object_type,
        &subject.object.object_id,
        subject.relation.as_deref(),
    )
}

/// The reverse-index key of `r`.
pub(crate) fn reverse_key(r: &Relationship) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.push(KEY_FORMAT);
    push_str(&mut k, &r.subject.object.object_type);
    push_str(&mut k, &r.subject.object.object_id);
    push_opt(&mut k, r.subject.relation.as_deref());
    push_str(&mut k, &r.resource.object_type);
    push_str(&mut k, &r.resource.object_id);
    push_str(&mut k, &r.relation);
    k
}

/// The forward prefix of all relationships of `resource#relation`.
pub(crate) fn resource_prefix(resource: &ObjectRef, relation: &str) -> Vec<u8> {
    let mut k = vec![KEY_FORMAT];
    push_str(&mut k, &resource.object_type);
    push_str(&mut k, &resource.object_id);
    push_str(&mut k, relation);
    k
}

/// The reverse-index prefix of all relationships whose subject object is `subject`.
pub(crate) fn subject_prefix(subject: &ObjectRef) -> Vec<u8> {
    let mut k = vec![KEY_FORMAT];
    push_str(&mut k, &subject.object_type);
    push_str(&mut k, &subject.object_id);
    k
}

/// The forward-key prefix made of the leading fields that are given, in key order
/// (resource type, resource id, relation, subject type, subject id, subject relation).
pub(crate) fn forward_prefix_of(
    strings: [Option<&str>; 5],
    subject_relation: Option<Option<&str>>,
) -> Vec<u8> {
    let mut k = vec![KEY_FORMAT];
    for s in strings {
        match s {
            Some(s) => push_str(&mut k, s),
            None => return k,
        }
    }
    if let Some(sr) = subject_relation {
        push_opt(&mut k, sr);
    }
    k
}

/// A reverse-index prefix: subject type, id, relation, resource type, id, relation, using
/// the leading fields that are given.
pub(crate) fn reverse_prefix_of(
    subject_type: Option<&str>,
    subject_id: Option<&str>,
    subject_relation: Option<Option<&str>>,
    resource: [Option<&str>; 3],
) -> Vec<u8> {
    let mut k = vec![KEY_FORMAT];
    let (Some(st), Some(sid), Some(srel)) = (subject_type, subject_id, subject_relation) else {
        if let Some(st) = subject_type {
            push_str(&mut k, st);
            if let Some(sid) = subject_id {
                push_str(&mut k, sid);
            }
        }
        return k;
    };
    push_str(&mut k, st);
    push_str(&mut k, sid);
    push_opt(&mut k, srel);
    for s in resource {
        match s {
            Some(s) => push_str(&mut k, s),
            None => break,
        }
    }
    k
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A `tuples` key: the forward key plus the created revision.
pub(crate) fn version_key(forward: &[u8], created: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(forward.len() + 8);
    k.extend_from_slice(forward);
    k.extend_from_slice(&created.to_be_bytes());
    k
}

/// Splits a `tuples` key into the forward key and the created revision.
pub(crate) fn split_version_key(key: &[u8]) -> Result<(&[u8], u64), String> {
    if key.len() < 9 {
        return Err(format!("version key of {} bytes is too short", key.len()));
    }
    let (fwd, rev) = key.split_at(key.len() - 8);
    Ok((fwd, be_u64(rev)?))
}

/// A key made of the format byte and a big-endian u64 (schemas, raft log).
pub(crate) fn u64_key(n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = KEY_FORMAT;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// Decodes a key made by [`u64_key`].
pub(crate) fn decode_u64_key(key: &[u8]) -> Result<u64, String> {
    match key {
        [KEY_FORMAT, rest @ ..] if rest.len() == 8 => be_u64(rest),
        _ => Err(format!("malformed key {key:02x?}")),
    }
}

/// A `changes` key.
pub(crate) fn change_key(rev: u64, seq: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = KEY_FORMAT;
    k[1..9].copy_from_slice(&rev.to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The revision of a `changes` key.
pub(crate) fn change_key_revision(key: &[u8]) -> Result<u64, String> {
    match key {
        [KEY_FORMAT, rest @ ..] if rest.len() == 12 => be_u64(&rest[..8]),
        _ => Err(format!("malformed change key {key:02x?}")),
    }
}

/// The first `changes` key of revision `rev` (the start of a scan).
pub(crate) fn changes_from(rev: u64) -> Vec<u8> {
    change_key(rev, 0).to_vec()
}

pub(crate) fn be_u64(b: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(b)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("expected 8 bytes, found {}", b.len()))
}

fn be_u32(b: &[u8]) -> Result<u32, String> {
    <[u8; 4]>::try_from(b)
        .map(u32::from_be_bytes)
        .map_err(|_| format!("expected 4 bytes, found {}", b.len()))
}

/// The non-identity part of a relationship.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Payload {
    pub caveat: Option<CaveatRef>,
    pub expiration: Option<Timestamp>,
}

fn push_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), String> {
    let len = u32::try_from(b.len()).map_err(|_| format!("{} bytes is too long", b.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

fn encode_payload(r: &Relationship, out: &mut Vec<u8>) -> Result<(), String> {
    let mut flags = 0u8;
    if let Some(c) = &r.caveat {
        flags |= FLAG_CAVEAT;
        if c.context.is_some() {
            flags |= FLAG_CONTEXT;
        }
    }
    if r.expiration.is_some() {
        flags |= FLAG_EXPIRATION;
    }
    out.push(flags);
    if let Some(e) = r.expiration {
        out.extend_from_slice(&e.0.to_be_bytes());
    }
    if let Some(c) = &r.caveat {
        push_bytes(out, c.name.as_bytes())?;
        if let Some(ctx) = &c.context {
            push_bytes(out, ctx.as_bytes())?;
        }
    }
    Ok(())
}

fn decode_payload(b: &[u8]) -> Result<Payload, String> {
    let mut r = Reader { b, pos: 0 };
    let flags = r.take(1)?[0];
    if flags & !(FLAG_CAVEAT | FLAG_CONTEXT | FLAG_EXPIRATION) != 0 {
        return Err(format!("unknown payload flags {flags:#04x}"));
    }
    let expiration = if flags & FLAG_EXPIRATION != 0 {
        Some(Timestamp(i64::from_be_bytes(
            r.take(8)?
                .try_into()
                .map_err(|_| "truncated expiration".to_string())?,
        )))
    } else {
        None
    };
    let caveat = if flags & FLAG_CAVEAT != 0 {
        let name = r.string()?;
        let context = if flags & FLAG_CONTEXT != 0 {
            Some(r.string()?)
        } else {
            None
        };
        Some(CaveatRef { name, context })
    } else {
        if flags & FLAG_CONTEXT != 0 {
            return Err("caveat context without a caveat".into());
        }
        None
    };
    if r.pos != b.len() {
        return Err(format!(
            "{} trailing bytes after the payload",
            b.len() - r.pos
        ));
    }
    Ok(Payload { caveat, expiration })
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| format!("value truncated at byte {}", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, String> {
        let len = be_u32(self.take(4)?)? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))
    }
}

/// A `tuples` value.
pub(crate) fn encode_version(deleted: u64, r: &Relationship) -> Result<Vec<u8>, String> {
    let mut v = Vec::with_capacity(16);
    encode_version_into(deleted, r, &mut v)?;
    Ok(v)
}

/// [`encode_version`] appended to `out` (a buffer the caller reuses).
pub(crate) fn encode_version_into(
    deleted: u64,
    r: &Relationship,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&deleted.to_be_bytes());
    encode_payload(r, out)
}

/// [`version_key`] written into `out` (cleared first; a buffer the caller reuses).
pub(crate) fn version_key_into(forward: &[u8], created: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(forward);
    out.extend_from_slice(&created.to_be_bytes());
}

/// The deleted revision of a `tuples` value.
pub(crate) fn version_deleted(v: &[u8]) -> Result<u64, String> {
    match v {
        [VALUE_FORMAT, rest @ ..] if rest.len() >= 9 => be_u64(&rest[..8]),
        [f, ..] if *f != VALUE_FORMAT => Err(format!("unknown value format {f}")),
        _ => Err(format!("version value of {} bytes is too short", v.len())),
    }
}

/// The same `tuples` value with a new deleted revision.
pub(crate) fn with_deleted(v: &[u8], deleted: u64) -> Result<Vec<u8>, String> {
    version_deleted(v)?;
    let mut out = v.to_vec();
    out[1..9].copy_from_slice(&deleted.to_be_bytes());
    Ok(out)
}

/// Decodes a `tuples` version (key with revision, value) into its relationship.
pub(crate) fn decode_version(forward: &[u8], v: &[u8]) -> Result<Relationship, String> {
    version_deleted(v)?;
    let payload = decode_payload(&v[9..])?;
    Ok(KeyFields::decode_forward(forward)?.into_relationship(payload))
}

/// A `changes` value: the change of `r`, whose forward key `key` the caller has at hand.
pub(crate) fn encode_change_keyed(
    deleted: bool,
    key: &[u8],
    r: &Relationship,
) -> Result<Vec<u8>, String> {
    debug_assert_eq!(key, forward_key(r).as_slice());
    let mut v = Vec::with_capacity(key.len() + 16);
    v.push(VALUE_FORMAT);
    v.push(u8::from(deleted));
    push_bytes(&mut v, key)?;
    encode_payload(r, &mut v)?;
    Ok(v)
}

/// Decodes a `changes` value into (deleted, forward key, relationship).
pub(crate) fn decode_change(v: &[u8]) -> Result<(bool, Vec<u8>, Relationship), String> {
    let mut r = Reader { b: v, pos: 0 };
    let head = r.take(2)?;
    if head[0] != VALUE_FORMAT {
        return Err(format!("unknown value format {}", head[0]));
    }
    let deleted = match head[1] {
        0 => false,
        1 => true,
        x => return Err(format!("invalid deleted flag {x}")),
    };
    let len = be_u32(r.take(4)?)? as usize;
    let key = r.take(len)?.to_vec();
    let payload = decode_payload(&v[r.pos..])?;
    let rel = KeyFields::decode_forward(&key)?.into_relationship(payload);
    Ok((deleted, key, rel))
}

/// A `raft_log` value.
pub(crate) fn encode_log_entry(term: u64, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + bytes.len());
    v.extend_from_slice(&term.to_be_bytes());
    v.extend_from_slice(bytes);
    v
}

/// Decodes a `raft_log` value into (term, bytes).
pub(crate) fn decode_log_entry(v: &[u8]) -> Result<(u64, Vec<u8>), String> {
    if v.len() < 8 {
        return Err(format!("log entry of {} bytes is too short", v.len()));
    }
    Ok((be_u64(&v[..8])?, v[8..].to_vec()))
}

/// Reads escaped components back.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Result<Self, String> {
        match b.first() {
            Some(&KEY_FORMAT) => Ok(Cursor { b, pos: 1 }),
            Some(f) => Err(format!("unknown key format {f}")),
            None => Err("empty key".into()),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.b.get(self.pos) else {
                return Err(format!("key ends inside the {what}"));
            };
            self.pos += 1;
            if b != 0 {
                out.push(b);
                continue;
            }
            match self.b.get(self.pos) {
                Some(1) => {
                    self.pos += 1;
                    break;
                }
                Some(0xFF) => {
                    self.pos += 1;
                    out.push(0);
                }
                Some(x) => return Err(format!("bad escape 0x00 {x:#04x} in the {what}")),
                None => return Err(format!("key ends inside the {what}")),
            }
        }
        String::from_utf8(out).map_err(|e| format!("the {what} is not UTF-8: {e}"))
    }

    fn opt_string(&mut self, what: &str) -> Result<Option<String>, String> {
        let tag = self.b.get(self.pos).copied();
        self.pos += 1;
        match tag {
            Some(0) => Ok(None),
            Some(1) => self.string(what).map(Some),
            Some(x) => Err(format!("bad tag {x:#04x} for the {what}")),
            None => Err(format!("key ends before the {what}")),
        }
    }

    fn finish(&self) -> Result<(), String> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes at the end of the key",
                self.b.len() - self.pos
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::parse_relationship;

    fn fields(rt: &str, rid: &str, srel: Option<&str>) -> KeyFields {
        KeyFields {
            resource_type: rt.into(),
            resource_id: rid.into(),
            relation: "viewer".into(),
            subject_type: "user".into(),
            subject_id: "x".into(),
            subject_relation: srel.map(str::to_string),
        }
    }

    #[test]
    fn encoding_preserves_order_and_round_trips() {
        let mut all = vec![
            fields("doc", "a", None),
            fields("doc", "a", Some("")),
            fields("doc", "a", Some("member")),
            fields("doc", "a\0", None),
            fields("doc", "a\u{1}", None),
            fields("doc", "ab", None),
            fields("doc", "", None),
            fields("do", "zzz", None),
            fields("doc\0x", "a", None),
            fields("doc\u{ff}", "a", None),
        ];
        let key = |f: &KeyFields| {
            (
                f.resource_type.clone(),
                f.resource_id.clone(),
                f.relation.clone(),
                f.subject_type.clone(),
                f.subject_id.clone(),
                f.subject_relation.clone(),
            )
        };
        all.sort_by_key(key);
        let encoded: Vec<Vec<u8>> = all.iter().map(KeyFields::forward).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted, "byte order must equal field order");
        for (f, e) in all.iter().zip(&encoded) {
            assert_eq!(&KeyFields::decode_forward(e).unwrap(), f);
            assert_eq!(&KeyFields::decode_reverse(&f.reverse()).unwrap(), f);
        }
    }

    #[test]
    fn prefixes_are_exact() {
        let a = resource_prefix(&ObjectRef::new("doc", "a"), "viewer");
        let ab = fields("doc", "ab", None).forward();
        assert!(!ab.starts_with(&a));
        assert!(fields("doc", "a", None).forward().starts_with(&a));
    }

    #[test]
    fn values_round_trip_and_reject_garbage() {
        let r = parse_relationship(
            "document:a#viewer@group:g#member[cav:{\"x\": 1}][expiration:2030-01-01T00:00:00Z]",
        )
        .unwrap();
        let fwd = forward_key(&r);
        let v = encode_version(ALIVE, &r).unwrap();
        assert_eq!(decode_version(&fwd, &v).unwrap(), r);
        assert_eq!(version_deleted(&with_deleted(&v, 7).unwrap()).unwrap(), 7);
        let c = encode_change_keyed(true, &forward_key(&r), &r).unwrap();
        assert_eq!(decode_change(&c).unwrap(), (true, fwd.clone(), r));
        for bad in [
            &[][..],
            &[1],
            &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &v[..v.len() - 1],
        ] {
            assert!(decode_version(&fwd, bad).is_err());
            assert!(decode_change(bad).is_err());
        }
        for bad in [&[][..], &[1], &[1, b'a', 0], &[1, b'a', 0, 7], &[2, 0, 1]] {
            assert!(KeyFields::decode_forward(bad).is_err());
        }
        assert!(split_version_key(&[1, 2, 3]).is_err());
        assert!(decode_log_entry(&[1, 2]).is_err());
    }

    fn arb_fields() -> impl proptest::strategy::Strategy<Value = KeyFields> {
        use proptest::prelude::*;
        let s = || "[a\\x00\\x01\\xff\\u{100}b]{0,4}";
        (s(), s(), s(), s(), s(), proptest::option::of(s())).prop_map(
            |(rt, rid, rel, st, sid, srel)| KeyFields {
                resource_type: rt,
                resource_id: rid,
                relation: rel,
                subject_type: st,
                subject_id: sid,
                subject_relation: srel,
            },
        )
    }

    fn tuple(f: &KeyFields) -> (&str, &str, &str, &str, &str, Option<&str>) {
        (
            &f.resource_type,
            &f.resource_id,
            &f.relation,
            &f.subject_type,
            &f.subject_id,
            f.subject_relation.as_deref(),
        )
    }

    proptest::proptest! {
        #[test]
        fn random_keys_keep_order_and_round_trip(a in arb_fields(), b in arb_fields()) {
            let (ka, kb) = (a.forward(), b.forward());
            proptest::prop_assert_eq!(ka.cmp(&kb), tuple(&a).cmp(&tuple(&b)));
            proptest::prop_assert_eq!(KeyFields::decode_forward(&ka).unwrap(), a.clone());
            proptest::prop_assert_eq!(KeyFields::decode_reverse(&a.reverse()).unwrap(), a.clone());
            // A prefix of leading fields matches exactly the keys that share those fields.
            let p = forward_prefix_of(
                [Some(a.resource_type.as_str()), Some(a.resource_id.as_str()), None, None, None],
                None,
            );
            let same = a.resource_type == b.resource_type && a.resource_id == b.resource_id;
            proptest::prop_assert_eq!(kb.starts_with(&p), same);
        }
    }

    #[test]
    fn prefix_end_is_the_successor() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}
