//! Loading a zed validation file into checked parts, with errors naming file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use dhow_engine::FoundSubject;
use dhow_tuples::{
    parse_object, parse_relationship, parse_subject, ObjectRef, Relationship, Subject,
};
use serde_yaml::{Mapping, Value};

/// Why a validation file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub path: String,
    /// 1-based line in the file, 0 when unknown.
    pub line: usize,
    /// 1-based column in the file, 0 when unknown.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.path, self.message),
            (l, 0) => write!(f, "{}:{}: {}", self.path, l, self.message),
            (l, c) => write!(f, "{}:{}:{}: {}", self.path, l, c, self.message),
        }
    }
}

/// Which list an assertion came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionKind {
    True,
    False,
    Caveated,
}

impl AssertionKind {
    pub fn key(&self) -> &'static str {
        match self {
            AssertionKind::True => "assertTrue",
            AssertionKind::False => "assertFalse",
            AssertionKind::Caveated => "assertCaveated",
        }
    }
}

/// One assertion: `resource#permission@subject` (optionally ` with {json}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub kind: AssertionKind,
    pub text: String,
    pub line: usize,
    pub resource: ObjectRef,
    pub permission: String,
    pub subject: Subject,
    /// Caveat context given with `with {...}`.
    pub context: Option<String>,
}

/// One entry of `validation`: the exact subjects expected to have `permission` on `resource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedRelation {
    pub resource: ObjectRef,
    pub permission: String,
    pub line: usize,
    pub subjects: Vec<FoundSubject>,
    /// True when an expected subject carries a caveat marker (`[user:tom[...]]`): it is
    /// expected conditional (its `missing` is [`MARKER`]).
    pub caveated: bool,
}

/// A loaded validation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationFile {
    pub path: String,
    pub schema: String,
    /// The file line where the schema text starts (for mapping schema errors), 0 if unknown.
    pub schema_line: usize,
    pub relationships: Vec<(usize, Relationship)>,
    pub assertions: Vec<Assertion>,
    pub expected: Vec<ExpectedRelation>,
}

/// Loads a validation file from disk (`schemaFile` is read relative to it).
pub fn load_file(path: &Path) -> Result<ValidationFile, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        path: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read file: {e}"),
    })?;
    load_str(&path.display().to_string(), &text, path.parent())
}

struct Locator<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Locator<'a> {
    /// The 1-based line of the top-level key `key:`.
    fn key_line(&self, key: &str) -> Option<usize> {
        let pat = format!("{key}:");
        self.lines
            .iter()
            .position(|l| l.starts_with(&pat))
            .map(|i| i + 1)
    }
    /// The first line at or after `from` (1-based) containing `needle`, with its column.
    fn find(&self, from: usize, needle: &str) -> Option<(usize, usize)> {
        (from.max(1)..=self.lines.len()).find_map(|l| {
            self.lines[l - 1]
                .find(needle)
                .map(|b| (l, self.lines[l - 1][..b].chars().count() + 1))
        })
    }
}

fn err(path: &str, line: usize, column: usize, message: impl Into<String>) -> LoadError {
    LoadError {
        path: path.to_string(),
        line,
        column,
        message: message.into(),
    }
}

/// Loads a validation file from text. `base` is the folder `schemaFile` is relative to.
pub fn load_str(path: &str, text: &str, base: Option<&Path>) -> Result<ValidationFile, LoadError> {
    let root: Value = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        err(path, line, column, format!("invalid YAML: {e}"))
    })?;
    let map = match &root {
        Value::Mapping(m) => m,
        Value::Null => {
            return Err(err(
                path,
                1,
                1,
                "empty validation file: expected a `schema` key",
            ))
        }
        _ => return Err(err(
            path,
            1,
            1,
            "expected a mapping with keys `schema`, `relationships`, `assertions`, `validation`",
        )),
    };
    let doc = Doc {
        path,
        loc: Locator {
            lines: text.lines().collect(),
        },
        map,
    };
    doc.check_keys()?;
    let (schema, schema_line) = doc.schema(base)?;
    Ok(ValidationFile {
        path: path.to_string(),
        schema,
        schema_line,
        relationships: doc.relationships()?,
        assertions: doc.assertions()?,
        expected: doc.expected()?,
    })
}

/// A parsed file's top-level mapping with what is needed to place errors in its text. Each
/// section has its own method.
struct Doc<'a> {
    path: &'a str,
    loc: Locator<'a>,
    map: &'a Mapping,
}

impl Doc<'_> {
    fn err(&self, line: usize, column: usize, message: impl Into<String>) -> LoadError {
        err(self.path, line, column, message)
    }

    /// An error at the start of the top-level key `key`.
    fn at_key(&self, key: &str, message: impl Into<String>) -> LoadError {
        self.err(self.loc.key_line(key).unwrap_or(0), 1, message)
    }

    /// Every top-level key is one of the five known ones.
    fn check_keys(&self) -> Result<(), LoadError> {
        for k in self.map.keys() {
            match k.as_str() {
                Some("schema" | "schemaFile" | "relationships" | "assertions" | "validation") => {}
                Some(other) => {
                    return Err(self.at_key(other, format!(
                        "unknown key `{other}` (expected schema, schemaFile, relationships, assertions, validation)"
                    )));
                }
                None => return Err(self.err(0, 0, "keys must be strings")),
            }
        }
        Ok(())
    }

    /// `schema` (inline) or `schemaFile` (read relative to `base`): the schema text and the
    /// file line where it starts (0 when unknown or in another file).
    fn schema(&self, base: Option<&Path>) -> Result<(String, usize), LoadError> {
        match (self.map.get("schema"), self.map.get("schemaFile")) {
            (Some(_), Some(_)) => {
                Err(self.at_key("schemaFile", "give `schema` or `schemaFile`, not both"))
            }
            (Some(Value::String(s)), None) => {
                let l = self.loc.key_line("schema").unwrap_or(0);
                let inline = self.loc.lines.get(l.saturating_sub(1)).is_some_and(|t| {
                    let rest = t["schema:".len().min(t.len())..].trim();
                    !rest.is_empty() && !rest.starts_with('|') && !rest.starts_with('>')
                });
                Ok((s.clone(), if inline || l == 0 { l } else { l + 1 }))
            }
            (Some(_), None) => Err(self.at_key("schema", "`schema` must be a string")),
            (None, Some(Value::String(f))) => {
                let p = base.map(|b| b.join(f)).unwrap_or_else(|| PathBuf::from(f));
                let s = std::fs::read_to_string(&p).map_err(|e| {
                    self.at_key(
                        "schemaFile",
                        format!("cannot read schemaFile `{}`: {e}", p.display()),
                    )
                })?;
                Ok((s, 0))
            }
            (None, Some(_)) => Err(self.at_key("schemaFile", "`schemaFile` must be a string")),
            (None, None) => Err(self.err(1, 1, "missing `schema` (or `schemaFile`)")),
        }
    }

    /// `relationships`: one relationship per line, `//` comments and blank lines skipped;
    /// each with its file line.
    fn relationships(&self) -> Result<Vec<(usize, Relationship)>, LoadError> {
        let s = match self.map.get("relationships") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(self.at_key(
                    "relationships",
                    "`relationships` must be a string, one relationship per line",
                ))
            }
        };
        let mut relationships = Vec::new();
        let mut from = self.loc.key_line("relationships").unwrap_or(1);
        for raw in s.lines() {
            let t = raw.trim();
            if t.is_empty() || t.starts_with("//") {
                continue;
            }
            let (line, col) = self.loc.find(from, t).unwrap_or((0, 0));
            if line > 0 {
                from = line;
            }
            let r = parse_relationship(t).map_err(|e| {
                let c = if col > 0 { col + e.column - 1 } else { 0 };
                self.err(
                    line,
                    c,
                    format!("invalid relationship `{t}`: {}", e.message),
                )
            })?;
            relationships.push((line, r));
        }
        Ok(relationships)
    }

    /// `assertions`: the lists `assertTrue`, `assertFalse` and `assertCaveated`.
    fn assertions(&self) -> Result<Vec<Assertion>, LoadError> {
        let a = match self.map.get("assertions") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Mapping(a)) => a,
            Some(_) => return Err(self.at_key("assertions", "`assertions` must be a mapping")),
        };
        let mut assertions = Vec::new();
        let start = self.loc.key_line("assertions").unwrap_or(1);
        for (k, v) in a {
            let kind = match k.as_str() {
                Some("assertTrue") => AssertionKind::True,
                Some("assertFalse") => AssertionKind::False,
                Some("assertCaveated") => AssertionKind::Caveated,
                other => {
                    let name = other.unwrap_or("?");
                    let line = self
                        .loc
                        .find(start, &format!("{name}:"))
                        .map(|x| x.0)
                        .unwrap_or(0);
                    return Err(self.err(line, 1, format!(
                        "unknown assertion list `{name}` (expected assertTrue, assertFalse, assertCaveated)"
                    )));
                }
            };
            let list_line = self
                .loc
                .find(start, &format!("{}:", kind.key()))
                .map(|x| x.0)
                .unwrap_or(start);
            let not_strings = || {
                self.err(
                    list_line,
                    1,
                    format!("`{}` must be a list of strings", kind.key()),
                )
            };
            let items = match v {
                Value::Null => Vec::new(),
                Value::Sequence(s) => s.clone(),
                _ => return Err(not_strings()),
            };
            let mut from = list_line;
            for item in items {
                let Value::String(text) = item else {
                    return Err(not_strings());
                };
                let (line, col) = self.loc.find(from, &text).unwrap_or((0, 0));
                if line > 0 {
                    from = line;
                }
                assertions.push(parse_assertion(self.path, kind, &text, line, col)?);
            }
        }
        Ok(assertions)
    }

    /// `validation`: for each `type:id#permission`, the exact subjects expected.
    fn expected(&self) -> Result<Vec<ExpectedRelation>, LoadError> {
        let v = match self.map.get("validation") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Mapping(v)) => v,
            Some(_) => return Err(self.at_key("validation", "`validation` must be a mapping")),
        };
        let mut expected = Vec::new();
        let start = self.loc.key_line("validation").unwrap_or(1);
        for (k, subjects) in v {
            let key = k.as_str().unwrap_or("");
            let line = self.loc.find(start, key).map(|x| x.0).unwrap_or(0);
            let (res, perm) = key.rsplit_once('#').ok_or_else(|| {
                self.err(
                    line,
                    1,
                    format!("expected relation key `{key}` must be `type:id#permission`"),
                )
            })?;
            let resource = parse_object(res)
                .map_err(|e| self.err(line, 0, format!("in `{key}`: {}", e.message)))?;
            let not_strings =
                || self.err(line, 1, format!("`{key}` must map to a list of strings"));
            let list = match subjects {
                Value::Null => Vec::new(),
                Value::Sequence(s) => s.clone(),
                _ => return Err(not_strings()),
            };
            let mut found = Vec::new();
            let mut caveated = false;
            for s in list {
                let Value::String(s) = s else {
                    return Err(not_strings());
                };
                let (fs, cav) = parse_expected_subject(&s).map_err(|m| {
                    self.err(self.loc.find(line, &s).map(|x| x.0).unwrap_or(line), 0, m)
                })?;
                caveated |= cav;
                found.extend(fs);
            }
            found.sort();
            expected.push(ExpectedRelation {
                resource,
                permission: perm.to_string(),
                line,
                subjects: found,
                caveated,
            });
        }
        Ok(expected)
    }
}

fn parse_assertion(
    path: &str,
    kind: AssertionKind,
    text: &str,
    line: usize,
    col: usize,
) -> Result<Assertion, LoadError> {
    let (rel, context) = match text.split_once(" with ") {
        Some((r, c)) => (r.trim(), Some(c.trim().to_string())),
        None => (text.trim(), None),
    };
    let at_col = |c: usize| if col > 0 { col + c - 1 } else { 0 };
    if let Some(c) = &context {
        dhow_engine::CaveatContext::from_json(c).map_err(|m| {
            err(
                path,
                line,
                at_col(text.find(" with ").map_or(1, |i| i + 7)),
                format!("invalid assertion `{text}`: its context: {m}"),
            )
        })?;
    }
    let bad = |c: usize, m: String| {
        err(
            path,
            line,
            at_col(c),
            format!("invalid assertion `{text}`: {m}"),
        )
    };
    let (left, subj) = rel
        .split_once('@')
        .ok_or_else(|| bad(rel.len() + 1, "expected `@` before the subject".into()))?;
    let (res, perm) = left
        .split_once('#')
        .ok_or_else(|| bad(left.len() + 1, "expected `#` after the resource".into()))?;
    let resource = parse_object(res).map_err(|e| bad(e.column, e.message))?;
    dhow_tuples::validate::check_relation(perm).map_err(|m| bad(res.len() + 2, m))?;
    let subject = parse_subject(subj).map_err(|e| bad(left.len() + 1 + e.column, e.message))?;
    Ok(Assertion {
        kind,
        text: text.to_string(),
        line,
        resource,
        permission: perm.to_string(),
        subject,
        context,
    })
}

/// Parses `[user:tom] is <...>`, `[user:* - {user:a, user:b}] is <...>` or
/// `[user:tom[...]] is <...>` (a caveat marker: conditional). A conditional exclusion
/// (`user:* - {user:a[...]}`) lists `user:a` as a conditional subject of its own. Returns the
/// subjects (conditional ones with `missing` = `["..."]`) and whether any is caveated.
fn parse_expected_subject(s: &str) -> Result<(Vec<FoundSubject>, bool), String> {
    let t = s.trim();
    let inner = t
        .strip_prefix('[')
        .ok_or_else(|| format!("expected subject `{s}` to start with `[`"))?;
    let end = closing(inner).ok_or_else(|| format!("unbalanced `[` in expected subject `{s}`"))?;
    let body = inner[..end].trim();
    let (main, exclusions) = match body.split_once(" - ") {
        Some((w, ex)) => (w.trim(), Some(ex.trim())),
        None => (body, None),
    };
    let mut out = Vec::new();
    let (subject, caveated) = marked_subject(main, s)?;
    let mut any_caveat = caveated;
    let mut excluded = Vec::new();
    if let Some(ex) = exclusions {
        let ex = ex.trim_start_matches('{').trim_end_matches('}');
        for e in ex.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (sub, cav) = marked_subject(e, s)?;
            if cav {
                any_caveat = true;
                out.push(FoundSubject {
                    subject: sub,
                    excluded: Vec::new(),
                    missing: vec![MARKER.to_string()],
                });
            } else {
                excluded.push(sub);
            }
        }
        excluded.sort();
    }
    out.push(FoundSubject {
        subject,
        excluded,
        missing: if caveated {
            vec![MARKER.to_string()]
        } else {
            Vec::new()
        },
    });
    Ok((out, any_caveat))
}

/// What a caveat marker stands for in [`FoundSubject::missing`] (the file does not say which
/// parameters are missing).
pub const MARKER: &str = "...";

/// The byte index of the `]` closing an opened `[` (`s` starts after it).
fn closing(s: &str) -> Option<usize> {
    let mut depth = 1usize;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `user:tom` or `user:tom[...]`: the subject and whether it carries a caveat marker.
fn marked_subject(text: &str, whole: &str) -> Result<(Subject, bool), String> {
    let (subj, caveated) = match text.find('[') {
        Some(i) => (text[..i].trim(), true),
        None => (text.trim(), false),
    };
    let subject =
        parse_subject(subj).map_err(|e| format!("in expected subject `{whole}`: {}", e.message))?;
    Ok((subject, caveated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_point_at_line_and_column() {
        let text = "schema: >-\n  definition user {}\nrelationships: |-\n  document:1#viewer@user:tom\n  document:1#viewer@user tom\n";
        let e = load_str("f.yaml", text, None).unwrap_err();
        assert_eq!((e.line, e.column), (5, 25), "{e}");
        assert!(e.message.contains("expected `:`"), "{e}");
    }

    #[test]
    fn bad_yaml_and_unknown_keys() {
        let e = load_str("f.yaml", "schema: [\n", None).unwrap_err();
        assert!(e.line > 0 && e.message.contains("invalid YAML"), "{e}");
        let e = load_str("f.yaml", "schema: x\nfoo: 1\n", None).unwrap_err();
        assert_eq!(e.line, 2);
        let e = load_str("f.yaml", "relationships: x\n", None).unwrap_err();
        assert!(e.message.contains("missing `schema`"), "{e}");
    }

    #[test]
    fn assertions_and_expected() {
        let text = "schema: x\nassertions:\n  assertTrue:\n    - 'document:1#view@user:tom with {\"a\": 1}'\n  assertFalse:\n    - document:1#view@user:ann\nvalidation:\n  document:1#view:\n    - '[user:* - {user:bob}] is <document:1#viewer>'\n    - '[user:tom[cav]] is <document:1#viewer>'\n";
        let f = load_str("f.yaml", text, None).unwrap();
        assert_eq!(f.assertions.len(), 2);
        assert_eq!(f.assertions[0].context.as_deref(), Some("{\"a\": 1}"));
        assert_eq!(f.assertions[1].line, 6);
        assert_eq!(f.expected[0].subjects.len(), 2);
        assert!(f.expected[0].caveated);
        let e = load_str(
            "f.yaml",
            "schema: x\nassertions:\n  assertTrue:\n    - document:1view@user:tom\n",
            None,
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (4, 21), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn loader_never_panics(s in "\\PC{0,200}") {
            let _ = load_str("p.yaml", &s, None);
        }

        #[test]
        fn loader_never_panics_on_structured(rel in "[a-z:#@*\\[\\]{}\" /.-]{0,40}", a in "[a-z:#@* {}\"]{0,40}") {
            let text = format!("schema: x\nrelationships: |\n  {rel}\nassertions:\n  assertTrue:\n    - \"{a}\"\nvalidation:\n  \"{a}\":\n    - \"[{rel}]\"\n");
            let _ = load_str("p.yaml", &text, None);
        }
    }
}
