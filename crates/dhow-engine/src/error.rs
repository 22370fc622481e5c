//! The one error type of the engine.

use dhow_tuples::ObjectRef;

/// Why an evaluation could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The type is not defined in the schema.
    #[error("object type `{0}` is not defined in the schema")]
    UnknownType(String),
    /// The relation or permission is not defined on the type.
    #[error("`{relation}` is not a relation or permission of `{type_name}`")]
    UnknownRelation { type_name: String, relation: String },
    /// The evaluation recursed past the depth limit.
    #[error(
        "evaluation exceeded the maximum depth of {max_depth} at `{resource}#{relation}`; \
         the relationship graph is too deep (or the limit too low)"
    )]
    MaxDepth {
        max_depth: u32,
        resource: ObjectRef,
        relation: String,
    },
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
