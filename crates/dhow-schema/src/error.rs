//! The crate's one error type, [`SchemaError`]: one or more diagnostics, each with a 1-based line
//! and column and a message saying what was found and what was expected.

use std::fmt;

/// What kind of problem a [`Diagnostic`] reports. Lets callers and tests match on errors without
/// parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not in the schema language (unexpected token, unterminated comment or string,
    /// nesting too deep, nested arrow, ...).
    Syntax,
    /// `relation foo:` followed by no subject type.
    RelationWithoutTypes,
    /// A type, relation, permission, caveat or parameter name breaks SpiceDB's naming rules or is a
    /// reserved keyword.
    InvalidName,
    /// `use something` other than `use expiration`.
    UnsupportedUseFlag,
    /// `use ...` after a definition or caveat.
    UseAfterDefinition,
    /// Two definitions and/or caveats with the same name.
    DuplicateDefinition,
    /// Two relations/permissions with the same name in one definition.
    DuplicateMember,
    /// The same allowed subject type written twice on one relation.
    DuplicateAllowedType,
    /// An allowed subject type (`foo`, `foo:*`, `foo#bar`) names an undefined type.
    UnknownType,
    /// `group#member` where `group` has no relation/permission `member`.
    UnknownSubjectRelation,
    /// A permission expression names a relation/permission its definition does not have.
    UnknownMember,
    /// `with somecaveat` where the caveat is not defined.
    UnknownCaveat,
    /// `with expiration` without `use expiration`.
    ExpirationNotEnabled,
    /// `perm->x` where `perm` is a permission: arrows must walk a relation.
    ArrowOverPermission,
    /// `rel->x` where `rel` admits a wildcard, directly or through subject sets.
    ArrowOverWildcard,
    /// `rel->x` where none of `rel`'s subject types has a relation/permission `x`.
    ArrowTargetMissing,
    /// `foo#bar` where `foo#bar` admits a wildcard, directly or through subject sets.
    TransitiveWildcard,
    /// A permission that reaches itself only through computed references on the same object.
    PermissionCycle,
    /// A caveat parameter type that is unknown or has the wrong number of type arguments.
    InvalidCaveatType,
    /// A caveat without parameters, with a parameter declared twice, or with an unused parameter.
    InvalidCaveatParameters,
    /// A caveat expression that is not valid CEL, names an undeclared parameter, applies an
    /// operator or function to operands of the wrong types, uses an unsupported function, or is
    /// not a boolean.
    InvalidCaveatExpression,
    /// The schema is past one of its [`CompileLimits`](crate::CompileLimits): text size,
    /// definitions, members of one definition, members in total.
    TooLarge,
}

/// One problem found in a schema, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub kind: ErrorKind,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Byte offset into the schema text.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Why a schema did not compile: at least one [`Diagnostic`], sorted by position. `Display`
/// prints one diagnostic a line, like ``line 3, column 17: expected `:` after relation name, found `=` ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_all(.diagnostics))]
pub struct SchemaError {
    diagnostics: Vec<Diagnostic>,
}

fn display_all(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most this many diagnostics are kept, so that garbage input cannot produce huge errors.
pub const MAX_DIAGNOSTICS: usize = 100;

impl SchemaError {
    /// All diagnostics, sorted by position; never empty.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The first diagnostic (by position).
    pub fn first(&self) -> &Diagnostic {
        // The constructor guarantees at least one diagnostic.
        &self.diagnostics[0]
    }

    /// Line (1-based) of the first diagnostic.
    pub fn line(&self) -> usize {
        self.first().line
    }

    /// Column (1-based) of the first diagnostic.
    pub fn column(&self) -> usize {
        self.first().column
    }

    /// Message of the first diagnostic, without its position.
    pub fn message(&self) -> &str {
        &self.first().message
    }

    /// Kind of the first diagnostic.
    pub fn kind(&self) -> ErrorKind {
        self.first().kind
    }

    /// Builds the error from pending problems; `None` when there are none.
    pub(crate) fn from_pending(src: &str, mut pending: Vec<Pending>) -> Option<SchemaError> {
        if pending.is_empty() {
            return None;
        }
        pending.sort_by_key(|p| p.offset);
        pending.dedup_by(|a, b| a.offset == b.offset && a.message == b.message);
        pending.truncate(MAX_DIAGNOSTICS);
        let index = LineIndex::new(src);
        let diagnostics = pending
            .into_iter()
            .map(|p| {
                let (line, column) = index.line_column(src, p.offset);
                Diagnostic {
                    kind: p.kind,
                    line,
                    column,
                    offset: p.offset,
                    message: p.message,
                }
            })
            .collect();
        Some(SchemaError { diagnostics })
    }

    pub(crate) fn single(src: &str, pending: Pending) -> SchemaError {
        let index = LineIndex::new(src);
        let (line, column) = index.line_column(src, pending.offset);
        SchemaError {
            diagnostics: vec![Diagnostic {
                kind: pending.kind,
                line,
                column,
                offset: pending.offset,
                message: pending.message,
            }],
        }
    }
}

/// A problem found before line and column are known: a byte offset, a kind and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub offset: usize,
    pub kind: ErrorKind,
    pub message: String,
}

impl Pending {
    pub(crate) fn new(offset: usize, kind: ErrorKind, message: impl Into<String>) -> Pending {
        Pending {
            offset,
            kind,
            message: message.into(),
        }
    }
}

/// Byte offsets of line starts. `\n`, `\r\n` and a lone `\r` each end a line.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(src: &str) -> LineIndex {
        let mut starts = vec![0];
        let bytes = src.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => starts.push(i + 1),
                b'\r' if bytes.get(i + 1) != Some(&b'\n') => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        LineIndex { starts }
    }

    pub(crate) fn line_column(&self, src: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(src.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts.get(line).copied().unwrap_or(0);
        let column = src
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line + 1, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let src = "ab\ncd\r\nef\rgh";
        let idx = LineIndex::new(src);
        assert_eq!(idx.line_column(src, 0), (1, 1));
        assert_eq!(idx.line_column(src, 1), (1, 2));
        assert_eq!(idx.line_column(src, 3), (2, 1));
        assert_eq!(idx.line_column(src, 7), (3, 1));
        assert_eq!(idx.line_column(src, 10), (4, 1));
        assert_eq!(idx.line_column(src, 100), (4, 3));
    }

    #[test]
    fn columns_count_characters() {
        let src = "é = x";
        let idx = LineIndex::new(src);
        assert_eq!(idx.line_column(src, 3), (1, 3));
    }

    #[test]
    fn display() {
        let err = SchemaError::single(
            "a\nb",
            Pending::new(
                2,
                ErrorKind::Syntax,
                "expected `:` after relation name, found `=`",
            ),
        );
        assert_eq!(
            err.to_string(),
            "line 2, column 1: expected `:` after relation name, found `=`"
        );
    }
}
