//! The primitives of Dhow's explicit formats: a [`Writer`] (bytes, LEB128 varints, zigzag
//! signed varints, length-prefixed UTF-8 strings, options) and a [`Reader`] that reads them
//! back checking every length against the remaining input (a length field can never make it
//! allocate more than the input could hold), and the typed [`DecodeError`] naming what was
//! being decoded, the field, the byte offset and the problem.

use std::fmt;

/// What was being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The data of a normal Raft entry: a proposal of client writes or of a schema.
    Entry,
    /// The context of a membership change entry: proposal id and peer address.
    ChangeContext,
    /// The membership kept beside the Raft log (conf state and peer addresses).
    Membership,
    /// The header of a snapshot message (peer addresses).
    SnapshotHeader,
    /// One chunk of a snapshot's data.
    SnapshotChunk,
    /// A staged snapshot file.
    StagedSnapshot,
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Payload::Entry => "raft entry",
            Payload::ChangeContext => "membership change context",
            Payload::Membership => "membership",
            Payload::SnapshotHeader => "snapshot header",
            Payload::SnapshotChunk => "snapshot chunk",
            Payload::StagedSnapshot => "staged snapshot",
        })
    }
}

/// What was wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No bytes at all.
    Empty,
    /// A format version this build does not know.
    UnknownVersion {
        found: u8,
        /// The versions this build reads.
        known: &'static [u8],
    },
    /// The input ends before the field does.
    Truncated { needed: u64, remaining: usize },
    /// A tag (option, kind, variant) with no meaning here.
    BadTag(u8),
    /// A string that is not UTF-8.
    BadUtf8,
    /// A varint longer than 10 bytes or past `u64::MAX`.
    BadVarint,
    /// Bytes left after the value ended.
    Trailing(usize),
    /// The same peer id twice.
    Duplicate(u64),
    /// Peer ids out of order (they are written increasing).
    Unordered { id: u64, after: u64 },
    /// Format 1 (bincode) or a raft-rs protobuf refused the bytes.
    Legacy(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("no bytes"),
            Problem::UnknownVersion { found, known } => {
                let known: Vec<String> = known.iter().map(|v| v.to_string()).collect();
                write!(
                    f,
                    "unknown format version {found} (this build reads {})",
                    known.join(" and ")
                )
            }
            Problem::Truncated { needed, remaining } => {
                write!(f, "truncated: {needed} bytes needed, {remaining} left")
            }
            Problem::BadTag(t) => write!(f, "unknown tag {t}"),
            Problem::BadUtf8 => f.write_str("a string that is not UTF-8"),
            Problem::BadVarint => f.write_str("a malformed varint"),
            Problem::Trailing(n) => write!(f, "{n} bytes after the end"),
            Problem::Duplicate(id) => write!(f, "peer {id} appears twice"),
            Problem::Unordered { id, after } => {
                write!(
                    f,
                    "peer {id} after peer {after} (ids are written increasing)"
                )
            }
            Problem::Legacy(m) => f.write_str(m),
        }
    }
}

/// Bytes that could not be decoded: what they were meant to be, in which format, which
/// field, at which byte, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    pub what: Payload,
    /// The format version read from the bytes, once known.
    pub version: Option<u8>,
    /// The field being read, as a path (`writes[0].ops[1].subject.id`); empty for the whole.
    pub field: String,
    /// The byte offset where the field (or the problem) starts, when known.
    pub offset: Option<usize>,
    pub problem: Problem,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode a {}", self.what)?;
        if let Some(v) = self.version {
            write!(f, " (format {v})")?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.field.is_empty() {
            write!(f, " in field `{}`", self.field)?;
        }
        if let Some(o) = self.offset {
            write!(f, " at byte {o}")?;
        }
        Ok(())
    }
}

impl DecodeError {
    /// A problem with the whole value, before any field.
    pub(crate) fn whole(what: Payload, version: Option<u8>, problem: Problem) -> Self {
        DecodeError {
            what,
            version,
            field: String::new(),
            offset: None,
            problem,
        }
    }

    /// Puts the field path under `outer` (`ops[1]` + `subject.id` = `ops[1].subject.id`).
    pub(crate) fn within(mut self, outer: impl fmt::Display) -> Self {
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

/// Builds an encoding.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(first: u8) -> Self {
        Writer { out: vec![first] }
    }

    /// A writer of a part of a payload (no version byte).
    pub(crate) fn part() -> Self {
        Writer { out: Vec::new() }
    }

    /// Appends a part written by a [`Writer::part`].
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }

    pub(crate) fn u8(&mut self, b: u8) {
        self.out.push(b);
    }

    /// LEB128: seven bits a byte, low bits first, the high bit set on every byte but the last.
    pub(crate) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    /// Zigzag, then LEB128: small magnitudes of either sign stay short.
    pub(crate) fn signed(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    pub(crate) fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.len(s.len());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// `0` for none, `1` then the value for some.
    pub(crate) fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }

    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        self.opt(s, |w, s| w.str(s));
    }
}

/// Reads an encoding, never past its end and never allocating more than it could hold.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: Payload,
    version: Option<u8>,
}

pub(crate) type Result<T> = std::result::Result<T, DecodeError>;

impl<'a> Reader<'a> {
    /// A reader of `bytes` (a `what` in format `version`) from offset `pos`.
    pub(crate) fn new(bytes: &'a [u8], pos: usize, what: Payload, version: Option<u8>) -> Self {
        Reader {
            bytes,
            pos,
            what,
            version,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// An error about `field` at offset `at`.
    pub(crate) fn error(&self, field: &str, at: usize, problem: Problem) -> DecodeError {
        DecodeError {
            what: self.what,
            version: self.version,
            field: field.to_string(),
            offset: Some(at),
            problem,
        }
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8> {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.error(
                field,
                self.pos,
                Problem::Truncated {
                    needed: 1,
                    remaining: 0,
                },
            )),
        }
    }

    pub(crate) fn varint(&mut self, field: &str) -> Result<u64> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(field).map_err(|mut e| {
                e.offset = Some(start);
                e
            })?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may carry only the top bit of a u64.
            if shift == 63 && b > 1 {
                return Err(self.error(field, start, Problem::BadVarint));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error(field, start, Problem::BadVarint))
    }

    pub(crate) fn signed(&mut self, field: &str) -> Result<i64> {
        let z = self.varint(field)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A count of items each at least `min_size` bytes long: refused if the rest of the input
    /// cannot hold them, so that a caller may reserve room for that many.
    pub(crate) fn count(&mut self, field: &str, min_size: usize) -> Result<usize> {
        let start = self.pos;
        let n = self.varint(field)?;
        let needed = n.saturating_mul(min_size.max(1) as u64);
        if needed > self.remaining() as u64 {
            return Err(self.error(
                field,
                start,
                Problem::Truncated {
                    needed,
                    remaining: self.remaining(),
                },
            ));
        }
        Ok(n as usize)
    }

    pub(crate) fn str(&mut self, field: &str) -> Result<String> {
        let start = self.pos;
        let n = self.count(field, 1)?;
        let end = self.pos + n;
        let text = std::str::from_utf8(&self.bytes[self.pos..end])
            .map_err(|_| self.error(field, start, Problem::BadUtf8))?;
        self.pos = end;
        Ok(text.to_string())
    }

    /// `0` for none, `1` then the value for some.
    pub(crate) fn opt<T>(
        &mut self,
        field: &str,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        let at = self.pos;
        match self.u8(field)? {
            0 => Ok(None),
            1 => f(self).map(Some),
            t => Err(self.error(field, at, Problem::BadTag(t))),
        }
    }

    pub(crate) fn opt_str(&mut self, field: &str) -> Result<Option<String>> {
        self.opt(field, |r| r.str(field))
    }

    /// Skips `n` bytes.
    pub(crate) fn skip(&mut self, field: &str, n: usize) -> Result<()> {
        if n > self.remaining() {
            return Err(self.error(
                field,
                self.pos,
                Problem::Truncated {
                    needed: n as u64,
                    remaining: self.remaining(),
                },
            ));
        }
        self.pos += n;
        Ok(())
    }

    /// The offset of the next byte.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The value ended: nothing may follow.
    pub(crate) fn finish(self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.error("", self.pos, Problem::Trailing(n))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(b: &[u8]) -> Reader<'_> {
        Reader::new(b, 0, Payload::Entry, Some(2))
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut w = Writer::default();
            w.varint(v);
            let b = w.finish();
            let mut r = reader(&b);
            assert_eq!(r.varint("v").unwrap(), v);
            r.finish().unwrap();
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX, -1_500_000] {
            let mut w = Writer::default();
            w.signed(v);
            let b = w.finish();
            assert_eq!(reader(&b).signed("v").unwrap(), v);
        }
        let mut w = Writer::default();
        w.signed(-1);
        assert_eq!(w.finish(), vec![1], "zigzag keeps -1 to one byte");
    }

    #[test]
    fn malformed_varints_are_refused() {
        // Eleven continuation bytes; a tenth byte carrying more than the top bit.
        let e = reader(&[0xff; 11]).varint("id").unwrap_err();
        assert_eq!(e.problem, Problem::BadVarint);
        let mut b = vec![0xff; 9];
        b.push(0x02);
        assert_eq!(
            reader(&b).varint("id").unwrap_err().problem,
            Problem::BadVarint
        );
        let e = reader(&[0x80, 0x80]).varint("id").unwrap_err();
        assert!(matches!(e.problem, Problem::Truncated { .. }));
        assert_eq!(e.offset, Some(0));
    }

    #[test]
    fn a_length_past_the_input_is_refused_before_any_allocation() {
        let mut w = Writer::default();
        w.varint(u64::MAX);
        let b = w.finish();
        let e = reader(&b).str("schema").unwrap_err();
        assert!(
            matches!(
                e.problem,
                Problem::Truncated {
                    needed: u64::MAX,
                    remaining: 0
                }
            ),
            "{e}"
        );
        let e = reader(&[5, b'a']).str("relation").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode a raft entry (format 2): truncated: 5 bytes needed, 1 left in field `relation` at byte 0"
        );
        // A count of items of 8 bytes at least, with 15 bytes left: refused.
        let mut b = vec![2];
        b.extend([0; 15]);
        assert!(reader(&b).count("ops", 8).is_err());
    }

    #[test]
    fn strings_options_and_trailing_bytes() {
        let mut w = Writer::default();
        w.str("héllo");
        w.opt_str(None);
        w.opt_str(Some(""));
        let b = w.finish();
        let mut r = reader(&b);
        assert_eq!(r.str("a").unwrap(), "héllo");
        assert_eq!(r.opt_str("b").unwrap(), None);
        assert_eq!(r.opt_str("c").unwrap(), Some(String::new()));
        r.finish().unwrap();
        let e = reader(&[1, 0xff]).str("name").unwrap_err();
        assert_eq!(e.problem, Problem::BadUtf8);
        let e = reader(&[7]).opt_str("caveat").unwrap_err();
        assert_eq!(e.problem, Problem::BadTag(7));
        let e = reader(&[0, 9, 9]);
        let mut e = e;
        e.u8("x").unwrap();
        assert_eq!(e.finish().unwrap_err().problem, Problem::Trailing(2));
        let e = DecodeError::whole(Payload::Entry, None, Problem::Empty)
            .within("subject")
            .within("ops[1]");
        assert_eq!(e.field, "ops[1].subject");
    }
}
