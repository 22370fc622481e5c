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
    /// A relationship with a caveat was met; caveats are not evaluated yet.
    #[error("relationship `{0}` has a caveat; caveats are not supported yet")]
    CaveatUnsupported(String),
    /// A relationship the schema does not allow.
    #[error("invalid relationship {0}")]
    InvalidRelationship(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] dhow_tuples::Error),
}
