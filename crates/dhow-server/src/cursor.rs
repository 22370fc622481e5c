//! Cursors for Read, Export and LookupResources: opaque text that pins the revision of the
//! first call and the last result sent, so a continued call resumes at the same snapshot,
//! right after that result. Bytes `{version = 1, kind, cluster id, revision, request
//! fingerprint, position}` in URL-safe base64; the fingerprint refuses a cursor replayed
//! with a different request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dhow_proto::v1::Cursor;
use dhow_tuples::{ObjectRef, Relationship, Revision, Subject};
use tonic::Code;

use crate::error::{reason, ApiError};

const CURSOR_VERSION: u8 = 1;

/// Which call a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CursorKind {
    Read = 1,
    Export = 2,
    LookupResources = 3,
}

/// Where a cursor resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// After this relationship (key order; caveat and expiration are not part of the key).
    Relationship(Relationship),
    /// After this resource id.
    ResourceId(String),
}

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub kind: CursorKind,
    pub cluster_id: u64,
    pub revision: Revision,
    pub fingerprint: u64,
    pub position: Position,
}

/// FNV-1a over the parts of a request that a cursor must not change.
pub fn fingerprint(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.as_bytes().iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names and ids are at most 1024 bytes; longer strings cannot occur in stored data.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

impl ResumePoint {
    /// The cursor's text, as a proto message.
    pub fn encode(&self) -> Cursor {
        let mut b = Vec::with_capacity(64);
        b.push(CURSOR_VERSION);
        b.push(self.kind as u8);
        b.extend_from_slice(&self.cluster_id.to_be_bytes());
        b.extend_from_slice(&self.revision.0.to_be_bytes());
        b.extend_from_slice(&self.fingerprint.to_be_bytes());
        match &self.position {
            Position::Relationship(r) => {
                put_str(&mut b, &r.resource.object_type);
                put_str(&mut b, &r.resource.object_id);
                put_str(&mut b, &r.relation);
                put_str(&mut b, &r.subject.object.object_type);
                put_str(&mut b, &r.subject.object.object_id);
                put_str(&mut b, r.subject.relation.as_deref().unwrap_or(""));
            }
            Position::ResourceId(id) => put_str(&mut b, id),
        }
        Cursor {
            token: URL_SAFE_NO_PAD.encode(b),
        }
    }

    /// Decodes `cursor` and checks that it belongs to this cluster, this kind of call and
    /// this request; errors name `field`.
    pub fn decode(
        cursor: &Cursor,
        kind: CursorKind,
        cluster_id: u64,
        fingerprint: u64,
        field: &str,
    ) -> Result<ResumePoint, ApiError> {
        let bad = |m: &str| {
            ApiError::new(Code::InvalidArgument, reason::CURSOR_INVALID, m.to_string())
                .at(format!("{field}.token"))
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.token.trim_end_matches('='))
            .map_err(|e| bad(&format!("not a Dhow cursor (invalid base64: {e})")))?;
        let mut r = Reader { b: &bytes, pos: 0 };
        let version = r.u8().ok_or_else(|| bad("empty cursor"))?;
        if version != CURSOR_VERSION {
            return Err(bad(&format!("unsupported cursor version {version}")));
        }
        let k = r.u8().ok_or_else(|| bad("truncated cursor"))?;
        if k != kind as u8 {
            return Err(bad("the cursor was issued by another call"));
        }
        let (Some(cid), Some(rev), Some(fp)) = (r.u64(), r.u64(), r.u64()) else {
            return Err(bad("truncated cursor"));
        };
        if cid != cluster_id {
            return Err(bad(&format!(
                "the cursor was issued by cluster {cid:016x}, this is cluster {cluster_id:016x}"
            )));
        }
        if fp != fingerprint {
            return Err(bad("the cursor was issued for a different request"));
        }
        let position = match kind {
            CursorKind::Read | CursorKind::Export => {
                let mut s = Vec::with_capacity(6);
                for _ in 0..6 {
                    s.push(r.str().ok_or_else(|| bad("truncated cursor"))?);
                }
                let sr = std::mem::take(&mut s[5]);
                Position::Relationship(Relationship::new(
                    ObjectRef::new(std::mem::take(&mut s[0]), std::mem::take(&mut s[1])),
                    std::mem::take(&mut s[2]),
                    Subject {
                        object: ObjectRef::new(
                            std::mem::take(&mut s[3]),
                            std::mem::take(&mut s[4]),
                        ),
                        relation: (!sr.is_empty()).then_some(sr),
                    },
                ))
            }
            CursorKind::LookupResources => {
                Position::ResourceId(r.str().ok_or_else(|| bad("truncated cursor"))?)
            }
        };
        if r.pos != bytes.len() {
            return Err(bad("trailing bytes in cursor"));
        }
        Ok(ResumePoint {
            kind,
            cluster_id: cid,
            revision: Revision(rev),
            fingerprint: fp,
            position,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_be_bytes(a))
    }
    fn str(&mut self) -> Option<String> {
        let l = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([l[0], l[1]]));
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let rel = dhow_tuples::parse_relationship("document:1#viewer@group:eng#member").unwrap();
        let p = ResumePoint {
            kind: CursorKind::Read,
            cluster_id: 9,
            revision: Revision(12),
            fingerprint: fingerprint(&["a", "b"]),
            position: Position::Relationship(rel.clone()),
        };
        let c = p.encode();
        let back =
            ResumePoint::decode(&c, CursorKind::Read, 9, p.fingerprint, "optional_cursor").unwrap();
        assert_eq!(back, p);
        let e = ResumePoint::decode(&c, CursorKind::Export, 9, p.fingerprint, "optional_cursor")
            .unwrap_err();
        assert_eq!(e.reason, reason::CURSOR_INVALID);
        assert!(ResumePoint::decode(&c, CursorKind::Read, 8, p.fingerprint, "c").is_err());
        assert!(ResumePoint::decode(&c, CursorKind::Read, 9, 1, "c").is_err());
        let garbage = Cursor {
            token: "AQEAAA".into(),
        };
        assert!(ResumePoint::decode(&garbage, CursorKind::Read, 9, 1, "c").is_err());
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }
}
