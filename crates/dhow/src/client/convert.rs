//! Conversions between the text forms of the tuple model (`dhow_tuples`) and the `dhow.v1`
//! protobuf messages, and parsing of the CLI's filter and reference arguments.

use dhow_proto::v1 as pb;
use dhow_tuples::{
    parse_object, parse_relationship, parse_subject, validate, CaveatRef, ObjectRef, Relationship,
    Subject, Timestamp, ELLIPSIS, WILDCARD,
};
use prost_types::value::Kind;

/// Parses a relationship argument, naming it in the error.
pub fn relationship_arg(s: &str) -> Result<Relationship, String> {
    parse_relationship(s).map_err(|e| format!("invalid relationship `{s}`: {e}"))
}

/// Parses an object argument (`type:id`), naming it in the error.
pub fn object_arg(s: &str) -> Result<ObjectRef, String> {
    parse_object(s).map_err(|e| format!("invalid object `{s}`: {e}"))
}

/// Parses a subject argument (`type:id`, `type:id#relation`, `type:*`), naming it in the error.
pub fn subject_arg(s: &str) -> Result<Subject, String> {
    parse_subject(s).map_err(|e| format!("invalid subject `{s}`: {e}"))
}

/// Checks a type name argument.
pub fn type_arg(s: &str) -> Result<String, String> {
    validate::check_type(s)?;
    Ok(s.to_string())
}

/// Checks a relation or permission name argument.
pub fn relation_arg(s: &str) -> Result<String, String> {
    validate::check_relation(s)?;
    Ok(s.to_string())
}

/// A check: `resource#permission@subject`, from one argument or from three
/// (`resource permission subject`, as zed takes them).
pub fn check_args(args: &[String]) -> Result<(ObjectRef, String, Subject), String> {
    match args {
        [one] => {
            let r = relationship_arg(one)?;
            if r.caveat.is_some() || r.expiration.is_some() {
                return Err(format!(
                    "invalid check `{one}`: a check takes no caveat or expiration"
                ));
            }
            Ok((r.resource, r.relation, r.subject))
        }
        [resource, permission, subject] => Ok((
            object_arg(resource)?,
            relation_arg(permission)?,
            subject_arg(subject)?,
        )),
        _ => Err(format!(
            "expected `resource#permission@subject` or `RESOURCE PERMISSION SUBJECT`, got {} argument(s)",
            args.len()
        )),
    }
}

/// `resource#permission` from one argument, or from two (`resource permission`).
pub fn resource_permission_args(args: &[String]) -> Result<(ObjectRef, String), String> {
    match args {
        [one] => {
            let Some((obj, perm)) = one.split_once('#') else {
                return Err(format!(
                    "invalid argument `{one}`: expected `type:id#permission`"
                ));
            };
            Ok((object_arg(obj)?, relation_arg(perm)?))
        }
        [obj, perm] => Ok((object_arg(obj)?, relation_arg(perm)?)),
        _ => Err(format!(
            "expected `resource#permission` or `RESOURCE PERMISSION`, got {} argument(s)",
            args.len()
        )),
    }
}

/// Parses a relationship filter: `type`, `type:id`, `type#relation` or `type:id#relation`,
/// and an optional subject filter (see [`subject_filter`]).
pub fn relationship_filter(
    s: &str,
    subject: Option<&str>,
) -> Result<pb::RelationshipFilter, String> {
    let bad = |e: String| format!("invalid filter `{s}`: {e}");
    let (head, relation) = match s.split_once('#') {
        Some((h, r)) => (h, Some(r)),
        None => (s, None),
    };
    let (resource_type, id) = match head.split_once(':') {
        Some((t, id)) => (t, Some(id)),
        None => (head, None),
    };
    validate::check_type(resource_type).map_err(bad)?;
    if let Some(id) = id {
        validate::check_id(id).map_err(bad)?;
        if !id.chars().all(validate::is_id_char) {
            return Err(bad(format!("invalid object id `{id}`")));
        }
    }
    if let Some(r) = relation {
        validate::check_relation(r).map_err(bad)?;
    }
    Ok(pb::RelationshipFilter {
        resource_type: resource_type.to_string(),
        optional_resource_id: id.unwrap_or_default().to_string(),
        optional_relation: relation.unwrap_or_default().to_string(),
        optional_subject_filter: subject.map(subject_filter).transpose()?,
    })
}

/// Parses a subject filter: `type`, `type:id`, `type:*`, `type:id#relation`, `type#relation`,
/// or with `#...` for plain objects only. Without `#`, objects and subject sets both match.
pub fn subject_filter(s: &str) -> Result<pb::SubjectFilter, String> {
    let bad = |e: String| format!("invalid subject filter `{s}`: {e}");
    let (head, relation) = match s.split_once('#') {
        Some((h, r)) => (h, Some(r)),
        None => (s, None),
    };
    let (subject_type, id) = match head.split_once(':') {
        Some((t, id)) => (t, Some(id)),
        None => (head, None),
    };
    validate::check_type(subject_type).map_err(bad)?;
    if let Some(id) = id {
        if id != WILDCARD {
            validate::check_id(id).map_err(bad)?;
            if !id.chars().all(validate::is_id_char) {
                return Err(bad(format!("invalid object id `{id}`")));
            }
        }
    }
    let optional_relation = match relation {
        None => None,
        Some(ELLIPSIS) => Some(String::new()),
        Some(r) => {
            validate::check_relation(r).map_err(bad)?;
            Some(r.to_string())
        }
    };
    Ok(pb::SubjectFilter {
        subject_type: subject_type.to_string(),
        optional_subject_id: id.unwrap_or_default().to_string(),
        optional_relation: optional_relation
            .map(|relation| pb::subject_filter::RelationFilter { relation }),
    })
}

pub fn object_to_proto(o: &ObjectRef) -> pb::ObjectReference {
    pb::ObjectReference {
        object_type: o.object_type.clone(),
        object_id: o.object_id.clone(),
    }
}

pub fn subject_to_proto(s: &Subject) -> pb::SubjectReference {
    pb::SubjectReference {
        object: Some(object_to_proto(&s.object)),
        optional_relation: s.relation.clone().unwrap_or_default(),
    }
}

/// A relationship as a proto message. A caveat context must be a JSON object.
pub fn relationship_to_proto(r: &Relationship) -> Result<pb::Relationship, String> {
    let optional_caveat = match &r.caveat {
        None => None,
        Some(c) => Some(pb::ContextualizedCaveat {
            caveat_name: c.name.clone(),
            context: c
                .context
                .as_deref()
                .map(|text| json_text_to_struct(text).map_err(|e| format!("{r}: {e}")))
                .transpose()?,
        }),
    };
    Ok(pb::Relationship {
        resource: Some(object_to_proto(&r.resource)),
        relation: r.relation.clone(),
        subject: Some(subject_to_proto(&r.subject)),
        optional_caveat,
        optional_expires_at: r.expiration.map(timestamp_to_proto),
    })
}

pub fn timestamp_to_proto(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(1_000_000),
        nanos: (t.0.rem_euclid(1_000_000) * 1000) as i32,
    }
}

pub fn timestamp_from_proto(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp(
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos) / 1000),
    )
}

/// An object from a proto message; a missing one reads as `?:?` so output never panics.
pub fn object_from_proto(o: Option<&pb::ObjectReference>) -> ObjectRef {
    match o {
        Some(o) => ObjectRef::new(o.object_type.clone(), o.object_id.clone()),
        None => ObjectRef::new("?", "?"),
    }
}

pub fn subject_from_proto(s: Option<&pb::SubjectReference>) -> Subject {
    match s {
        Some(s) => Subject {
            object: object_from_proto(s.object.as_ref()),
            relation: match s.optional_relation.as_str() {
                "" | ELLIPSIS => None,
                r => Some(r.to_string()),
            },
        },
        None => Subject::object("?", "?"),
    }
}

pub fn relationship_from_proto(r: &pb::Relationship) -> Relationship {
    Relationship {
        resource: object_from_proto(r.resource.as_ref()),
        relation: r.relation.clone(),
        subject: subject_from_proto(r.subject.as_ref()),
        caveat: r.optional_caveat.as_ref().map(|c| CaveatRef {
            name: c.caveat_name.clone(),
            context: c.context.as_ref().map(|s| struct_to_json(s).to_string()),
        }),
        expiration: r.optional_expires_at.as_ref().map(timestamp_from_proto),
    }
}

/// The text form of a proto relationship, e.g. `document:1#viewer@user:alice`.
pub fn relationship_text(r: Option<&pb::Relationship>) -> String {
    match r {
        Some(r) => relationship_from_proto(r).to_string(),
        None => "(missing relationship)".to_string(),
    }
}

/// Parses JSON object text into a `google.protobuf.Struct`.
pub fn json_text_to_struct(text: &str) -> Result<prost_types::Struct, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(json_object_to_struct(map)),
        Ok(_) => Err("caveat context must be a JSON object".to_string()),
        Err(e) => Err(format!("invalid caveat context JSON: {e}")),
    }
}

fn json_object_to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        J::Object(m) => Kind::StructValue(json_object_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as JSON.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                J::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_round_trips_through_proto() {
        for s in [
            "document:readme#viewer@user:alice",
            "document:readme#viewer@group:eng#member",
            "document:readme#viewer@user:*",
            "document:readme#viewer@user:alice[expiration:2026-12-31T00:00:00Z]",
            "document:readme#viewer@user:alice[expiration:2026-12-31T00:00:00.250000Z]",
            "document:readme#viewer@user:alice[cav:{\"a\":[1,true,null,\"x\"],\"b\":{\"c\":1.5}}]",
            "org/team/document:a|b=c+d-e/f#viewer@org/team/user:x",
        ] {
            let r = relationship_arg(s).unwrap();
            let p = relationship_to_proto(&r).unwrap();
            assert_eq!(relationship_from_proto(&p).to_string(), s);
        }
    }

    #[test]
    fn proto_fields() {
        let r = relationship_arg("document:1#viewer@group:eng#member").unwrap();
        let p = relationship_to_proto(&r).unwrap();
        let s = p.subject.unwrap();
        assert_eq!(s.optional_relation, "member");
        assert_eq!(s.object.unwrap().object_type, "group");
        let r = relationship_arg("document:1#viewer@user:bob#...").unwrap();
        let p = relationship_to_proto(&r).unwrap();
        assert_eq!(p.subject.as_ref().unwrap().optional_relation, "");
        assert_eq!(p.optional_expires_at, None);
    }

    #[test]
    fn ellipsis_and_missing_fields_from_proto() {
        let s = pb::SubjectReference {
            object: Some(pb::ObjectReference {
                object_type: "user".into(),
                object_id: "a".into(),
            }),
            optional_relation: "...".into(),
        };
        assert_eq!(subject_from_proto(Some(&s)).to_string(), "user:a");
        assert_eq!(
            relationship_text(Some(&pb::Relationship::default())),
            "?:?#@?:?"
        );
        assert_eq!(relationship_text(None), "(missing relationship)");
    }

    #[test]
    fn negative_timestamps_convert() {
        let t = Timestamp(-1_500_000);
        let p = timestamp_to_proto(t);
        assert_eq!((p.seconds, p.nanos), (-2, 500_000_000));
        assert_eq!(timestamp_from_proto(&p), t);
    }

    #[test]
    fn bad_relationships_are_named() {
        let e = relationship_arg("document:1#viewer").unwrap_err();
        assert!(
            e.contains("invalid relationship `document:1#viewer`"),
            "{e}"
        );
        assert!(e.contains("column 18"), "{e}");
        let e = relationship_arg("document:1#viewer@user:a[cav:{\"x\": 1]").unwrap_err();
        assert!(e.contains("unbalanced"), "{e}");
    }

    #[test]
    fn filters() {
        let f = relationship_filter("document", None).unwrap();
        assert_eq!(f.resource_type, "document");
        assert_eq!(f.optional_resource_id, "");
        assert_eq!(f.optional_relation, "");
        assert!(f.optional_subject_filter.is_none());

        let f = relationship_filter("document:readme", None).unwrap();
        assert_eq!(f.optional_resource_id, "readme");

        let f = relationship_filter("document:readme#viewer", Some("user:alice")).unwrap();
        assert_eq!(f.optional_relation, "viewer");
        let sf = f.optional_subject_filter.unwrap();
        assert_eq!(sf.subject_type, "user");
        assert_eq!(sf.optional_subject_id, "alice");
        assert!(sf.optional_relation.is_none());

        let f = relationship_filter("document#viewer", None).unwrap();
        assert_eq!(f.optional_resource_id, "");
        assert_eq!(f.optional_relation, "viewer");

        for bad in [
            "",
            "Document",
            "document:",
            "document:a b",
            "document#",
            "document#vi",
        ] {
            let e = relationship_filter(bad, None).unwrap_err();
            assert!(e.starts_with(&format!("invalid filter `{bad}`")), "{e}");
        }
    }

    #[test]
    fn subject_filters() {
        let f = subject_filter("user").unwrap();
        assert_eq!(
            (f.subject_type.as_str(), f.optional_subject_id.as_str()),
            ("user", "")
        );
        assert!(f.optional_relation.is_none());
        let f = subject_filter("user:*").unwrap();
        assert_eq!(f.optional_subject_id, "*");
        let f = subject_filter("group:eng#member").unwrap();
        assert_eq!(f.optional_relation.unwrap().relation, "member");
        let f = subject_filter("group#...").unwrap();
        assert_eq!(f.optional_relation.unwrap().relation, "");
        assert!(subject_filter("group:eng#").is_err());
        assert!(subject_filter("user:a b").is_err());
    }

    #[test]
    fn check_and_expand_arguments() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (r, p, s) = check_args(&args(&["document:1#view@user:alice"])).unwrap();
        assert_eq!(
            (r.to_string(), p.as_str(), s.to_string()),
            ("document:1".into(), "view", "user:alice".into())
        );
        let (r, p, s) = check_args(&args(&["document:1", "view", "group:eng#member"])).unwrap();
        assert_eq!(
            (r.to_string(), p.as_str(), s.to_string()),
            ("document:1".into(), "view", "group:eng#member".into())
        );
        assert!(check_args(&args(&[
            "document:1#view@user:a[expiration:2030-01-01T00:00:00Z]"
        ]))
        .unwrap_err()
        .contains("no caveat or expiration"));
        assert!(check_args(&args(&["document:1", "view"])).is_err());
        assert!(check_args(&args(&["document:1#view"])).is_err());

        let (r, p) = resource_permission_args(&args(&["document:1#view"])).unwrap();
        assert_eq!((r.to_string(), p.as_str()), ("document:1".into(), "view"));
        let (r, p) = resource_permission_args(&args(&["document:1", "view"])).unwrap();
        assert_eq!((r.to_string(), p.as_str()), ("document:1".into(), "view"));
        assert!(resource_permission_args(&args(&["document:1"])).is_err());
        assert!(resource_permission_args(&args(&["document:1#"])).is_err());
    }

    #[test]
    fn caveat_context_must_be_an_object() {
        assert!(json_text_to_struct("[1]").is_err());
        assert!(json_text_to_struct("{").is_err());
        let s = json_text_to_struct("{\"n\": 3, \"f\": 0.5}").unwrap();
        assert_eq!(struct_to_json(&s).to_string(), "{\"f\":0.5,\"n\":3}");
    }
}
