//! Parser for the text forms `type:id`, `type:id#relation` and
//! `resource:id#relation@subject:id[#relation][caveat[:{json}]][expiration:RFC3339]`.

use crate::error::ParseError;
use crate::model::{CaveatRef, ObjectRef, Relationship, Subject, Timestamp, ELLIPSIS, WILDCARD};
use crate::validate;

struct Cursor<'a> {
    chars: Vec<(usize, char)>,
    pos: usize,
    src: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a str) -> Self {
        Cursor {
            chars: src.char_indices().collect(),
            pos: 0,
            src,
        }
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|c| c.1)
    }
    fn column(&self) -> usize {
        self.pos + 1
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            column: self.column(),
            message: message.into(),
        })
    }
    fn err_at<T>(&self, column: usize, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            column,
            message: message.into(),
        })
    }
    fn byte_pos(&self) -> usize {
        self.chars
            .get(self.pos)
            .map(|c| c.0)
            .unwrap_or(self.src.len())
    }
    /// Takes characters while `f` holds.
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.byte_pos();
        while let Some(c) = self.peek() {
            if !f(c) {
                break;
            }
            self.pos += 1;
        }
        &self.src[start..self.byte_pos()]
    }
    fn expect(&mut self, c: char, what: &str) -> Result<(), ParseError> {
        match self.peek() {
            Some(x) if x == c => {
                self.pos += 1;
                Ok(())
            }
            Some(x) => self.err(format!("expected `{c}` {what}, found {x:?}")),
            None => self.err(format!("expected `{c}` {what}, found end of input")),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '/'
}

fn parse_type(cur: &mut Cursor<'_>, what: &str) -> Result<String, ParseError> {
    let col = cur.column();
    let t = cur.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/');
    if t.is_empty() {
        return match cur.peek() {
            Some(c) => cur.err(format!("expected {what} type name, found {c:?}")),
            None => cur.err(format!("expected {what} type name, found end of input")),
        };
    }
    if let Err(e) = validate::check_type(t) {
        return cur.err_at(col, e);
    }
    Ok(t.to_string())
}

fn parse_id(cur: &mut Cursor<'_>, what: &str, allow_wildcard: bool) -> Result<String, ParseError> {
    let col = cur.column();
    if allow_wildcard && cur.peek() == Some('*') {
        cur.pos += 1;
        return Ok(WILDCARD.to_string());
    }
    let id = cur.take_while(validate::is_id_char);
    if id.is_empty() {
        return match cur.peek() {
            Some('*') => cur.err(format!("a wildcard `*` is not allowed as {what} id")),
            Some(c) => cur.err(format!("expected {what} id, found {c:?}")),
            None => cur.err(format!("expected {what} id, found end of input")),
        };
    }
    if let Err(e) = validate::check_id(id) {
        return cur.err_at(col, e);
    }
    Ok(id.to_string())
}

fn parse_relation(cur: &mut Cursor<'_>, what: &str) -> Result<String, ParseError> {
    let col = cur.column();
    let r = cur.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
    if r.is_empty() {
        return match cur.peek() {
            Some(c) => cur.err(format!("expected {what} name, found {c:?}")),
            None => cur.err(format!("expected {what} name, found end of input")),
        };
    }
    if let Err(e) = validate::check_relation(r) {
        return cur.err_at(col, e);
    }
    Ok(r.to_string())
}

fn parse_object_at(
    cur: &mut Cursor<'_>,
    what: &str,
    wildcard: bool,
) -> Result<ObjectRef, ParseError> {
    let t = parse_type(cur, what)?;
    cur.expect(':', &format!("between {what} type and id"))?;
    let id = parse_id(cur, what, wildcard)?;
    Ok(ObjectRef {
        object_type: t,
        object_id: id,
    })
}

fn parse_subject_at(cur: &mut Cursor<'_>) -> Result<Subject, ParseError> {
    let object = parse_object_at(cur, "subject", true)?;
    let rel_col = cur.column();
    let relation = if cur.peek() == Some('#') {
        cur.pos += 1;
        if cur.src[cur.byte_pos()..].starts_with(ELLIPSIS) {
            cur.pos += 3;
            None
        } else {
            Some(parse_relation(cur, "subject relation")?)
        }
    } else {
        None
    };
    if object.is_wildcard() && relation.is_some() {
        return cur.err_at(
            rel_col,
            "a wildcard subject `type:*` cannot have a relation",
        );
    }
    Ok(Subject { object, relation })
}

fn end<T>(cur: &Cursor<'_>, v: T) -> Result<T, ParseError> {
    match cur.peek() {
        None => Ok(v),
        Some(c) => cur.err(format!("unexpected {c:?} after the end")),
    }
}

/// Parses `type:id` (no wildcard).
pub fn parse_object(s: &str) -> Result<ObjectRef, ParseError> {
    let mut cur = Cursor::new(s);
    let o = parse_object_at(&mut cur, "object", false)?;
    end(&cur, o)
}

/// Parses a subject: `type:id`, `type:id#relation`, `type:id#...` or `type:*`.
pub fn parse_subject(s: &str) -> Result<Subject, ParseError> {
    let mut cur = Cursor::new(s);
    let subj = parse_subject_at(&mut cur)?;
    end(&cur, subj)
}

/// Scans a JSON object starting at `{`, respecting strings; returns its text.
fn scan_json_object<'a>(cur: &mut Cursor<'a>) -> Result<&'a str, ParseError> {
    let start_col = cur.column();
    let start = cur.byte_pos();
    let mut stack: Vec<char> = Vec::new();
    let mut in_str = false;
    let mut escaped = false;
    while let Some(c) = cur.peek() {
        cur.pos += 1;
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' => {
                if stack.pop() != Some(c) {
                    cur.pos -= 1;
                    return cur.err(format!("unbalanced {c:?} in caveat context"));
                }
                if stack.is_empty() {
                    return Ok(&cur.src[start..cur.byte_pos()]);
                }
            }
            _ => {}
        }
    }
    cur.err_at(
        start_col,
        "unterminated caveat context: expected a JSON object closed by `}`",
    )
}

/// Parses a relationship in text form, with optional `[caveat]`, `[caveat:{json}]` and
/// `[expiration:RFC3339]` suffixes.
pub fn parse_relationship(s: &str) -> Result<Relationship, ParseError> {
    let mut cur = Cursor::new(s);
    let resource = parse_object_at(&mut cur, "resource", false)?;
    cur.expect('#', "after the resource")?;
    let relation = parse_relation(&mut cur, "relation")?;
    cur.expect('@', "between relation and subject")?;
    let subject = parse_subject_at(&mut cur)?;
    let mut rel = Relationship {
        resource,
        relation,
        subject,
        caveat: None,
        expiration: None,
    };
    while cur.peek() == Some('[') {
        cur.pos += 1;
        let col = cur.column();
        let name = cur.take_while(is_name_char);
        if name.is_empty() {
            return cur.err("expected a caveat name or `expiration` after `[`");
        }
        if name == "expiration" {
            if rel.expiration.is_some() {
                return cur.err_at(col, "expiration given twice");
            }
            cur.expect(':', "after `expiration`")?;
            let tcol = cur.column();
            let ts = cur.take_while(|c| c != ']');
            match Timestamp::parse_rfc3339(ts) {
                Ok(t) => rel.expiration = Some(t),
                Err(e) => return cur.err_at(tcol, e),
            }
        } else {
            if rel.caveat.is_some() {
                return cur.err_at(col, "a relationship has at most one caveat");
            }
            if let Err(e) = validate::check_type(name) {
                return cur.err_at(col, e.replace("type name", "caveat name"));
            }
            let name = name.to_string();
            let context = if cur.peek() == Some(':') {
                cur.pos += 1;
                if cur.peek() != Some('{') {
                    return cur.err("expected a JSON object `{...}` as caveat context");
                }
                Some(scan_json_object(&mut cur)?.to_string())
            } else {
                None
            };
            rel.caveat = Some(CaveatRef { name, context });
        }
        cur.expect(']', "to close the bracket")?;
    }
    end(&cur, rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in [
            "document:readme#viewer@user:alice",
            "document:readme#viewer@group:eng#member",
            "document:readme#viewer@user:*",
            "document:readme#viewer@user:alice[expiration:2026-12-31T00:00:00Z]",
            "document:readme#viewer@user:alice[somecaveat:{\"a\": [1, 2]}][expiration:2300-12-01T00:00:00Z]",
            "org/team/document:a|b=c+d-e/f#viewer@org/team/user:x",
        ] {
            let r = parse_relationship(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn ellipsis_is_plain_object() {
        let r = parse_relationship("document:a#viewer@user:tom#...").unwrap();
        assert_eq!(r.subject.relation, None);
        assert_eq!(r.to_string(), "document:a#viewer@user:tom");
    }

    #[test]
    fn errors_name_the_column() {
        let cases = [
            ("document:readme", 16, "expected `#`"),
            ("document:readme#viewer", 23, "expected `@`"),
            ("Document:readme#viewer@user:a", 1, "invalid type name"),
            ("document:read me#viewer@user:a", 14, "expected `#`"),
            ("document:*#viewer@user:a", 10, "wildcard"),
            ("document:a#viewer@user:*#member", 25, "wildcard subject"),
            (
                "document:a#viewer@user:b[expiration:tomorrow]",
                37,
                "RFC 3339",
            ),
            ("document:a#viewer@user:b[cav:{\"x\": 1]", 37, "unbalanced"),
            ("document:a#viewer@user:b[cav:{\"x\": 1", 30, "unterminated"),
            ("document:a#viewer@user:b extra", 25, "unexpected"),
            ("document:a#vi@user:b", 12, "invalid relation"),
        ];
        for (input, col, msg) in cases {
            let e = parse_relationship(input).unwrap_err();
            assert_eq!(e.column, col, "{input}: {e}");
            assert!(e.message.contains(msg), "{input}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_relationship(&s);
            let _ = parse_subject(&s);
            let _ = parse_object(&s);
        }

        #[test]
        fn never_panics_near_valid(s in "[a-z:#@*\\[\\]{}\"/.]{0,60}") {
            let _ = parse_relationship(&format!("document:a#viewer@{s}"));
        }
    }
}
