//! The one error type of the engine.

use crate::Budget;

/// Why an evaluation could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The type is not defined in the schema.
    #[error("object type `{0}` is not defined in the schema")]
    UnknownType(String),
    /// The relation or permission is not defined on the type.
    #[error("`{relation}` is not a relation or permission of `{type_name}`")]
    UnknownRelation { type_name: String, relation: String },
    /// The request ran out of one of its budgets
    /// ([`Options::max_depth`](crate::Options::max_depth),
    /// [`Options::max_dispatches`](crate::Options::max_dispatches)); `at` names where
    /// (`resource#relation`).
    #[error("evaluation ran out of its {budget} budget of {limit} at `{at}`: {}", .budget.hint())]
    BudgetExhausted {
        budget: Budget,
        limit: u64,
        at: String,
    },
    /// The caller set the request's [`Cancel`](crate::Cancel) flag.
    #[error("evaluation cancelled by the caller")]
    Cancelled,
    /// The request's caveat context is unusable: a value of the wrong type for a caveat
    /// parameter (`parameter` names it), or a context past [`Options::max_context_bytes`](crate::Options::max_context_bytes).
    /// The caller's fault (INVALID_ARGUMENT).
    #[error("invalid caveat context{}: {message}", .parameter.as_ref().map(|p| format!(" for parameter `{p}`")).unwrap_or_default())]
    InvalidContext {
        parameter: Option<String>,
        message: String,
    },
    /// A caveat could not be evaluated: its expression failed (no such key, overflow,
    /// division by zero), or a stored relationship's context or caveat no longer fits the
    /// schema.
    #[error("caveat `{caveat}` could not be evaluated: {message}")]
    CaveatEvaluation { caveat: String, message: String },
    /// The delegation chain of a delegated check is refused: longer than
    /// [`Options::max_actors`](crate::Options::max_actors), an actor that is a wildcard, or an
    /// actor that appears twice (or is the principal itself). `index` names the offending
    /// actor (its position in the request's `actors`), `None` for the length. The caller's
    /// fault (INVALID_ARGUMENT).
    #[error("invalid delegation chain{}: {message}", .index.map(|i| format!(" at actors[{i}]")).unwrap_or_default())]
    InvalidChain {
        index: Option<usize>,
        message: String,
    },
    /// A relationship the schema does not allow.
    #[error("invalid relationship {0}")]
    InvalidRelationship(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] dhow_tuples::Error),
}
