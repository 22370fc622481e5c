//! Conversions between `dhow.v1` messages and domain types. Every conversion from a request
//! validates as it goes and names the offending field (`updates[3].relationship.subject.
//! object.object_id: ...`); conversions to responses cannot fail.

use dhow_engine::{ExpandNode, ExpandTree, Proof, Step};
use dhow_proto::v1 as pb;
use dhow_tuples::validate::{check_id, check_relation, check_type};
use dhow_tuples::{
    ObjectRef, Relationship, RelationshipFilter, Subject, Timestamp, ELLIPSIS, WILDCARD,
};
use tonic::Code;

use crate::error::{reason, ApiError, ApiResult};

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

/// A type name (required).
pub fn type_name(s: &str, field: &str) -> ApiResult<String> {
    if s.is_empty() {
        return Err(ApiError::missing(field));
    }
    check_type(s).map_err(|m| ApiError::invalid(field, m))?;
    Ok(s.to_string())
}

/// A relation or permission name (required).
pub fn relation_name(s: &str, field: &str) -> ApiResult<String> {
    if s.is_empty() {
        return Err(ApiError::missing(field));
    }
    check_relation(s).map_err(|m| ApiError::invalid(field, m))?;
    Ok(s.to_string())
}

/// An object id (required); `*` only where `allow_wildcard`.
pub fn object_id(s: &str, field: &str, allow_wildcard: bool) -> ApiResult<String> {
    if s.is_empty() {
        return Err(ApiError::missing(field));
    }
    if s == WILDCARD {
        if allow_wildcard {
            return Ok(s.to_string());
        }
        return Err(ApiError::invalid(
            field,
            "the wildcard `*` is not allowed here",
        ));
    }
    check_id(s).map_err(|m| ApiError::invalid(field, m))?;
    Ok(s.to_string())
}

/// An object reference (required).
pub fn object(
    o: Option<&pb::ObjectReference>,
    field: &str,
    allow_wildcard: bool,
) -> ApiResult<ObjectRef> {
    let o = o.ok_or_else(|| ApiError::missing(field))?;
    Ok(ObjectRef::new(
        type_name(&o.object_type, &join(field, "object_type"))?,
        object_id(&o.object_id, &join(field, "object_id"), allow_wildcard)?,
    ))
}

/// An optional subject relation: empty or `...` is the object itself.
pub fn subject_relation(s: &str, field: &str) -> ApiResult<Option<String>> {
    if s.is_empty() || s == ELLIPSIS {
        Ok(None)
    } else {
        relation_name(s, field).map(Some)
    }
}

/// A subject reference (required). A wildcard subject (`user:*`) only where
/// `allow_wildcard`, and never with a relation.
pub fn subject(
    s: Option<&pb::SubjectReference>,
    field: &str,
    allow_wildcard: bool,
) -> ApiResult<Subject> {
    let s = s.ok_or_else(|| ApiError::missing(field))?;
    let object = object(s.object.as_ref(), &join(field, "object"), allow_wildcard)?;
    let relation = subject_relation(&s.optional_relation, &join(field, "optional_relation"))?;
    if object.is_wildcard() && relation.is_some() {
        return Err(ApiError::invalid(
            join(field, "optional_relation"),
            "a wildcard subject cannot have a relation",
        ));
    }
    Ok(Subject { object, relation })
}

/// A protobuf timestamp as a `Timestamp` (microseconds).
pub fn timestamp(t: &prost_types::Timestamp, field: &str) -> ApiResult<Timestamp> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(ApiError::invalid(
            join(field, "nanos"),
            format!("must be between 0 and 999999999, got {}", t.nanos),
        ));
    }
    t.seconds
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(i64::from(t.nanos / 1000)))
        .map(Timestamp)
        .ok_or_else(|| ApiError::invalid(join(field, "seconds"), "timestamp out of range"))
}

/// A relationship (required). Caveats are refused: they are not supported yet.
pub fn relationship(r: Option<&pb::Relationship>, field: &str) -> ApiResult<Relationship> {
    let r = r.ok_or_else(|| ApiError::missing(field))?;
    let resource = object(r.resource.as_ref(), &join(field, "resource"), false)?;
    let relation = relation_name(&r.relation, &join(field, "relation"))?;
    let subject = subject(r.subject.as_ref(), &join(field, "subject"), true)?;
    if r.optional_caveat.is_some() {
        return Err(ApiError::new(
            Code::InvalidArgument,
            reason::CAVEAT_UNSUPPORTED,
            "caveats are not supported yet",
        )
        .at(join(field, "optional_caveat")));
    }
    let expiration = r
        .optional_expires_at
        .as_ref()
        .map(|t| timestamp(t, &join(field, "optional_expires_at")))
        .transpose()?;
    Ok(Relationship {
        resource,
        relation,
        subject,
        caveat: None,
        expiration,
    })
}

/// A relationship filter (resource type required).
pub fn filter(f: Option<&pb::RelationshipFilter>, field: &str) -> ApiResult<RelationshipFilter> {
    let f = f.ok_or_else(|| ApiError::missing(field))?;
    let mut out = RelationshipFilter {
        resource_type: Some(type_name(&f.resource_type, &join(field, "resource_type"))?),
        ..Default::default()
    };
    if !f.optional_resource_id.is_empty() {
        out.resource_id = Some(object_id(
            &f.optional_resource_id,
            &join(field, "optional_resource_id"),
            false,
        )?);
    }
    if !f.optional_relation.is_empty() {
        out.relation = Some(relation_name(
            &f.optional_relation,
            &join(field, "optional_relation"),
        )?);
    }
    if let Some(sf) = &f.optional_subject_filter {
        let sfield = join(field, "optional_subject_filter");
        out.subject_type = Some(type_name(&sf.subject_type, &join(&sfield, "subject_type"))?);
        if !sf.optional_subject_id.is_empty() {
            out.subject_id = Some(object_id(
                &sf.optional_subject_id,
                &join(&sfield, "optional_subject_id"),
                true,
            )?);
        }
        if let Some(rf) = &sf.optional_relation {
            out.subject_relation = Some(subject_relation(
                &rf.relation,
                &join(&sfield, "optional_relation.relation"),
            )?);
        }
    }
    Ok(out)
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

// ---- to protobuf ----

pub fn object_pb(o: &ObjectRef) -> pb::ObjectReference {
    pb::ObjectReference {
        object_type: o.object_type.clone(),
        object_id: o.object_id.clone(),
    }
}

pub fn subject_pb(s: &Subject) -> pb::SubjectReference {
    pb::SubjectReference {
        object: Some(object_pb(&s.object)),
        optional_relation: s.relation.clone().unwrap_or_default(),
    }
}

pub fn timestamp_pb(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(1_000_000),
        // In 0..1e9 by construction.
        nanos: (t.0.rem_euclid(1_000_000) * 1000) as i32,
    }
}

pub fn relationship_pb(r: &Relationship) -> pb::Relationship {
    pb::Relationship {
        resource: Some(object_pb(&r.resource)),
        relation: r.relation.clone(),
        subject: Some(subject_pb(&r.subject)),
        optional_caveat: r.caveat.as_ref().map(|c| pb::ContextualizedCaveat {
            caveat_name: c.name.clone(),
            context: None,
        }),
        optional_expires_at: r.expiration.map(timestamp_pb),
    }
}

pub fn proof_pb(p: &Proof) -> pb::Proof {
    use pb::proof as s;
    let rel = |r: &Relationship| Some(relationship_pb(r));
    let step = match &p.step {
        Step::Member { resource, relation } => s::Step::Member(s::MemberStep {
            resource: Some(object_pb(resource)),
            relation: relation.clone(),
        }),
        Step::Direct(r) => s::Step::Direct(s::DirectStep {
            relationship: rel(r),
        }),
        Step::Wildcard(r) => s::Step::Wildcard(s::WildcardStep {
            relationship: rel(r),
        }),
        Step::SubjectSet(r) => s::Step::SubjectSet(s::SubjectSetStep {
            relationship: rel(r),
        }),
        Step::SameSubject => s::Step::SameSubject(s::SameSubjectStep {}),
        Step::NoMatch => s::Step::NoMatch(s::NoMatchStep {}),
        Step::Union => s::Step::Union(s::UnionStep {}),
        Step::Intersection => s::Step::Intersection(s::IntersectionStep {}),
        Step::Exclusion => s::Step::Exclusion(s::ExclusionStep {}),
        Step::Nil => s::Step::Nil(s::NilStep {}),
        Step::Arrow {
            tupleset,
            computed,
            mode,
        } => s::Step::Arrow(s::ArrowStep {
            tupleset: tupleset.clone(),
            computed: computed.clone(),
            mode: match mode {
                dhow_schema::ArrowMode::Any => pb::ArrowMode::Any,
                dhow_schema::ArrowMode::All => pb::ArrowMode::All,
            } as i32,
        }),
        Step::ArrowHop(r) => s::Step::ArrowHop(s::ArrowHopStep {
            relationship: rel(r),
        }),
        Step::Cycle { resource, relation } => s::Step::Cycle(s::CycleStep {
            resource: Some(object_pb(resource)),
            relation: relation.clone(),
        }),
    };
    pb::Proof {
        allowed: p.allowed,
        step: Some(step),
        children: p.children.iter().map(proof_pb).collect(),
    }
}

pub fn expand_pb(n: &ExpandNode) -> pb::ExpandNode {
    use pb::expand_node as e;
    let tree = match &n.tree {
        ExpandTree::Leaf(subjects) => e::Tree::Leaf(e::LeafTree {
            subjects: subjects.iter().map(subject_pb).collect(),
        }),
        ExpandTree::Union(c) => e::Tree::Union(e::UnionTree {
            children: c.iter().map(expand_pb).collect(),
        }),
        ExpandTree::Intersection(c) => e::Tree::Intersection(e::IntersectionTree {
            children: c.iter().map(expand_pb).collect(),
        }),
        ExpandTree::Exclusion(base, sub) => e::Tree::Exclusion(Box::new(e::ExclusionTree {
            base: Some(Box::new(expand_pb(base))),
            subtract: Some(Box::new(expand_pb(sub))),
        })),
    };
    pb::ExpandNode {
        resource: Some(object_pb(&n.resource)),
        relation: n.relation.clone(),
        tree: Some(tree),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(t: &str, id: &str) -> Option<pb::ObjectReference> {
        Some(pb::ObjectReference {
            object_type: t.into(),
            object_id: id.into(),
        })
    }

    #[test]
    fn fields_are_named() {
        let r = pb::Relationship {
            resource: obj("document", "1"),
            relation: "viewer".into(),
            subject: Some(pb::SubjectReference {
                object: obj("user", "a:b"),
                optional_relation: String::new(),
            }),
            optional_caveat: None,
            optional_expires_at: None,
        };
        let e = relationship(Some(&r), "updates[3].relationship").unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("updates[3].relationship.subject.object.object_id")
        );
        assert!(e
            .message
            .starts_with("updates[3].relationship.subject.object.object_id: "));
        let e = relationship(None, "x").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("x"));
    }

    #[test]
    fn timestamps_round_trip() {
        let t = prost_types::Timestamp {
            seconds: -5,
            nanos: 123_000,
        };
        assert_eq!(timestamp_pb(timestamp(&t, "t").unwrap()), t);
        assert!(timestamp(
            &prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0
            },
            "t"
        )
        .is_err());
    }
}
