//! Request checks beyond decoding (which is `dhow_wire`'s job): the names a request uses
//! exist in the schema in force (each error naming the request field), and the stable text of
//! a filter that cursors fingerprint. (A written relationship, caveat and context included,
//! is checked against the schema by `Engine::validate_relationship`.)

use dhow_proto::v1 as pb;
use dhow_tuples::{Relationship, RelationshipFilter};
use dhow_wire::join;

use crate::error::{ApiError, ApiResult};

/// A relationship to write (required), decoded. Its caveat (name and context) is checked
/// against the schema with the rest of it when the write is validated.
pub fn writable_relationship(r: Option<&pb::Relationship>, field: &str) -> ApiResult<Relationship> {
    Ok(dhow_wire::relationship(r, field)?)
}

/// A stable text of a filter, for cursor fingerprints.
pub fn filter_key(f: &RelationshipFilter) -> String {
    let o = |s: &Option<String>| s.clone().unwrap_or_else(|| "\u{1}".into());
    let sr = match &f.subject_relation {
        None => "\u{1}".to_string(),
        Some(None) => "...".to_string(),
        Some(Some(r)) => r.clone(),
    };
    [
        o(&f.resource_type),
        o(&f.resource_id),
        o(&f.relation),
        o(&f.subject_type),
        o(&f.subject_id),
        sr,
    ]
    .join("\u{0}")
}

/// Checks that a type (and relation) exist in the engine's schema, naming the fields.
pub fn check_ref(
    engine: &dhow_engine::Engine,
    type_name: &str,
    relation: Option<&str>,
    type_field: &str,
    relation_field: &str,
) -> ApiResult<()> {
    engine.validate_ref(type_name, relation).map_err(|e| {
        let f = match e {
            dhow_engine::Error::UnknownRelation { .. } => relation_field,
            _ => type_field,
        };
        ApiError::from(e).at(f)
    })
}

/// Checks a filter's types and relations against the schema.
pub fn check_filter(
    engine: &dhow_engine::Engine,
    f: &RelationshipFilter,
    field: &str,
) -> ApiResult<()> {
    if let Some(t) = &f.resource_type {
        check_ref(
            engine,
            t,
            f.relation.as_deref(),
            &join(field, "resource_type"),
            &join(field, "optional_relation"),
        )?;
    }
    if let Some(t) = &f.subject_type {
        let sfield = join(field, "optional_subject_filter");
        check_ref(
            engine,
            t,
            f.subject_relation.as_ref().and_then(|r| r.as_deref()),
            &join(&sfield, "subject_type"),
            &join(&sfield, "optional_relation.relation"),
        )?;
    }
    Ok(())
}
