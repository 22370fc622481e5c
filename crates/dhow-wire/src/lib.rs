//! The one home of wire conversions: `dhow.v1` messages to and from the domain types of
//! `dhow-tuples` and `dhow-engine`. The server decodes requests and encodes responses with
//! it; the CLI (and any Rust client) encodes requests and decodes responses with it.
//!
//! Decoding validates as it goes and names the offending field as a path
//! (`updates[3].relationship.subject.object.object_id`); encoding cannot fail. Nothing here
//! knows gRPC statuses: a [`WireError`] carries the field and what is wrong with it, and the
//! server maps it to a status in its one place.

mod audit;
mod decode;
mod encode;
mod json;

pub use audit::{audit_query, audit_query_pb, audit_record, audit_record_pb};
pub use decode::{
    actors, caveat, chain_link, context, expand_tree, found_resource, found_subject, object,
    object_id, permissionship, proof, relation_name, relationship, relationship_filter, subject,
    subject_relation, timestamp, type_name,
};
pub use encode::{
    actors_pb, caveat_pb, chain_link_pb, context_pb, expand_pb, filter_pb, found_resource_pb,
    found_subject_pb, object_pb, partial_caveat_info_pb, permissionship_pb, proof_pb,
    relationship_pb, subject_pb, timestamp_pb,
};
pub use json::{json_text_to_struct, struct_to_json, struct_to_json_text};
/// The wire form of caveat contexts, `google.protobuf.Struct`, for callers that build
/// requests without depending on `prost-types` themselves.
pub use prost_types::Struct;

/// A field that could not be decoded: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct WireError {
    /// The field at fault, as a path (`updates[3].relationship.subject`); empty for the
    /// message itself.
    pub field: String,
    /// What is wrong with it (`required`, `the wildcard `*` is not allowed here`, ...).
    pub message: String,
}

impl WireError {
    /// `field` is wrong for `message`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        WireError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `field` is required and absent or empty.
    pub fn missing(field: impl Into<String>) -> Self {
        WireError::invalid(field, "required")
    }

    /// The same error one level down: its field path under `prefix` (an error found in
    /// `object_id` of `resource` is at `resource.object_id`). Decoders name their fields
    /// relative to the message they read and prefix the path only when there is an error,
    /// so a valid message allocates no path.
    #[must_use]
    pub fn within(self, prefix: &str) -> Self {
        WireError {
            field: join(prefix, &self.field),
            message: self.message,
        }
    }

    fn render(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Shorthand for decoding results.
pub type WireResult<T> = Result<T, WireError>;

/// Joins a field path: `join("updates[3]", "relationship")`.
pub fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else if field.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_with_their_field() {
        assert_eq!(WireError::missing("a.b").to_string(), "a.b: required");
        assert_eq!(WireError::invalid("", "bad").to_string(), "bad");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a", ""), "a");
        assert_eq!(join("a", "b"), "a.b");
    }
}
