//! The one error type of the tuple crate.

/// A parse error with the column (1-based, in characters) where the input went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// 1-based column, in characters, of the first offending character.
    pub column: usize,
    /// What was wrong and what was expected.
    pub message: String,
}

/// Errors of the tuple model and the in-memory store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A relationship's text form could not be parsed.
    #[error("invalid relationship `{input}`: {error}")]
    Parse { input: String, error: ParseError },
    /// A name or id broke the documented limits.
    #[error("{0}")]
    Invalid(String),
    /// A write tried to create a relationship that already exists.
    #[error("relationship `{0}` already exists")]
    AlreadyExists(String),
    /// A write's precondition did not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The storage layer failed (IO, corruption, a poisoned lock).
    #[error("storage failure: {0}")]
    Storage(String),
    /// A read asked for a revision the store has garbage-collected or never had.
    #[error("revision {asked} is not available (store holds {oldest}..={newest})")]
    RevisionUnavailable {
        asked: u64,
        oldest: u64,
        newest: u64,
    },
}
