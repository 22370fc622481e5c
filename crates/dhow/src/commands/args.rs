//! The arguments of the client commands: relationships, objects, subjects, names, checks and
//! filters in their text forms, parsed and checked with errors that name the argument; and
//! the two steps between a parsed relationship and the wire that the commands need.

use dhow_proto::v1 as pb;
use dhow_tuples::{
    parse_object, parse_relationship, parse_subject, validate, ObjectRef, Relationship,
    RelationshipFilter, Subject, ELLIPSIS, WILDCARD,
};

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
/// and an optional subject filter (see [`subject_filter`]), as the wire message.
pub fn relationship_filter(
    s: &str,
    subject: Option<&str>,
) -> Result<pb::RelationshipFilter, String> {
    let bad = |e: String| format!("invalid filter `{s}`: {e}");
    let (resource_type, id, relation) = split_filter(s);
    validate::check_type(resource_type).map_err(bad)?;
    if let Some(id) = id {
        checked_id(id).map_err(bad)?;
    }
    if let Some(r) = relation {
        validate::check_relation(r).map_err(bad)?;
    }
    let mut f = RelationshipFilter {
        resource_type: Some(resource_type.to_string()),
        resource_id: id.map(str::to_string),
        relation: relation.map(str::to_string),
        ..Default::default()
    };
    if let Some(subject) = subject {
        subject_filter(subject, &mut f)?;
    }
    Ok(dhow_wire::filter_pb(&f))
}

/// `type[:id][#relation]` in its three parts, unchecked.
fn split_filter(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (head, relation) = match s.split_once('#') {
        Some((h, r)) => (h, Some(r)),
        None => (s, None),
    };
    match head.split_once(':') {
        Some((t, id)) => (t, Some(id), relation),
        None => (head, None, relation),
    }
}

fn checked_id(id: &str) -> Result<(), String> {
    validate::check_id(id)?;
    if !id.chars().all(validate::is_id_char) {
        return Err(format!("invalid object id `{id}`"));
    }
    Ok(())
}

/// Parses a subject filter into `f`: `type`, `type:id`, `type:*`, `type:id#relation`,
/// `type#relation`, or with `#...` for plain objects only. Without `#`, objects and subject
/// sets both match.
fn subject_filter(s: &str, f: &mut RelationshipFilter) -> Result<(), String> {
    let bad = |e: String| format!("invalid subject filter `{s}`: {e}");
    let (subject_type, id, relation) = split_filter(s);
    validate::check_type(subject_type).map_err(bad)?;
    if let Some(id) = id {
        if id != WILDCARD {
            checked_id(id).map_err(bad)?;
        }
    }
    f.subject_type = Some(subject_type.to_string());
    f.subject_id = id.map(str::to_string);
    f.subject_relation = match relation {
        None => None,
        Some(ELLIPSIS) => Some(None),
        Some(r) => {
            validate::check_relation(r).map_err(bad)?;
            Some(Some(r.to_string()))
        }
    };
    Ok(())
}

/// A parsed relationship as the wire message, refusing a caveat context that is not a JSON
/// object (the text parser only checks that its braces balance).
pub fn relationship_pb(r: &Relationship) -> Result<pb::Relationship, String> {
    if let Some(text) = r.caveat.as_ref().and_then(|c| c.context.as_deref()) {
        dhow_wire::json_text_to_struct(text).map_err(|e| format!("{r}: {e}"))?;
    }
    Ok(dhow_wire::relationship_pb(r))
}

/// The text form of a relationship the server sent, e.g. `document:1#viewer@user:alice`
/// (or what is wrong with it).
pub fn relationship_text(r: Option<&pb::Relationship>) -> String {
    match dhow_wire::relationship(r, "relationship") {
        Ok(r) => r.to_string(),
        Err(e) => format!("(invalid {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationships_and_their_text_through_the_wire() {
        let r = relationship_arg("document:1#viewer@user:bob#...").unwrap();
        let p = relationship_pb(&r).unwrap();
        assert_eq!(p.subject.as_ref().unwrap().optional_relation, "");
        assert_eq!(relationship_text(Some(&p)), "document:1#viewer@user:bob");
        assert!(relationship_text(Some(&pb::Relationship::default())).starts_with("(invalid "));
        assert_eq!(relationship_text(None), "(invalid relationship: required)");
        // The text parser balances braces; the JSON must still be an object.
        let r = relationship_arg("document:1#viewer@user:a[cav:{\"x\": }]").unwrap();
        assert!(relationship_pb(&r).unwrap_err().contains("JSON"));
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
        let sf = |s: &str| {
            relationship_filter("document", Some(s)).map(|f| f.optional_subject_filter.unwrap())
        };
        let f = sf("user").unwrap();
        assert_eq!(
            (f.subject_type.as_str(), f.optional_subject_id.as_str()),
            ("user", "")
        );
        assert!(f.optional_relation.is_none());
        let f = sf("user:*").unwrap();
        assert_eq!(f.optional_subject_id, "*");
        let f = sf("group:eng#member").unwrap();
        assert_eq!(f.optional_relation.unwrap().relation, "member");
        let f = sf("group#...").unwrap();
        assert_eq!(f.optional_relation.unwrap().relation, "...");
        assert!(sf("group:eng#").is_err());
        assert!(sf("user:a b").is_err());
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
}
