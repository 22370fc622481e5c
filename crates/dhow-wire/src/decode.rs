//! `dhow.v1` messages to domain types. Every function validates what it reads (names, ids,
//! timestamps, the shape of a proof) and names the offending field in its error; nothing
//! panics on any message.

use dhow_engine::{
    CaveatContext, ChainLink, ExpandNode, ExpandTree, FoundResource, FoundSubject, LeafSubject,
    Permissionship, Proof, Step,
};
use dhow_proto::v1 as pb;
use dhow_schema::ArrowMode;
use dhow_tuples::validate::{check_id, check_relation, check_type};
use dhow_tuples::{
    CaveatRef, ObjectRef, Relationship, RelationshipFilter, Subject, Timestamp, ELLIPSIS, WILDCARD,
};

use crate::json::struct_to_json_text;
use crate::{join, WireError, WireResult};

/// A type name (required).
pub fn type_name(s: &str, field: &str) -> WireResult<String> {
    if s.is_empty() {
        return Err(WireError::missing(field));
    }
    check_type(s).map_err(|m| WireError::invalid(field, m))?;
    Ok(s.to_string())
}

/// A relation or permission name (required).
pub fn relation_name(s: &str, field: &str) -> WireResult<String> {
    if s.is_empty() {
        return Err(WireError::missing(field));
    }
    check_relation(s).map_err(|m| WireError::invalid(field, m))?;
    Ok(s.to_string())
}

/// An object id (required); `*` only where `allow_wildcard`.
pub fn object_id(s: &str, field: &str, allow_wildcard: bool) -> WireResult<String> {
    if s.is_empty() {
        return Err(WireError::missing(field));
    }
    if s == WILDCARD {
        if allow_wildcard {
            return Ok(s.to_string());
        }
        return Err(WireError::invalid(
            field,
            "the wildcard `*` is not allowed here",
        ));
    }
    check_id(s).map_err(|m| WireError::invalid(field, m))?;
    Ok(s.to_string())
}

/// An object reference (required).
pub fn object(
    o: Option<&pb::ObjectReference>,
    field: &str,
    allow_wildcard: bool,
) -> WireResult<ObjectRef> {
    let o = o.ok_or_else(|| WireError::missing(field))?;
    // Paths relative to `field`, prefixed only when there is an error: decoding a valid
    // message builds no path.
    let decoded = (|| {
        Ok(ObjectRef::new(
            type_name(&o.object_type, "object_type")?,
            object_id(&o.object_id, "object_id", allow_wildcard)?,
        ))
    })();
    decoded.map_err(|e: WireError| e.within(field))
}

/// An optional subject relation: empty or `...` is the object itself.
pub fn subject_relation(s: &str, field: &str) -> WireResult<Option<String>> {
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
) -> WireResult<Subject> {
    let s = s.ok_or_else(|| WireError::missing(field))?;
    let decoded = (|| {
        let object = object(s.object.as_ref(), "object", allow_wildcard)?;
        let relation = subject_relation(&s.optional_relation, "optional_relation")?;
        if object.is_wildcard() && relation.is_some() {
            return Err(WireError::invalid(
                "optional_relation",
                "a wildcard subject cannot have a relation",
            ));
        }
        Ok(Subject { object, relation })
    })();
    decoded.map_err(|e: WireError| e.within(field))
}

/// A protobuf timestamp as a `Timestamp` (microseconds).
pub fn timestamp(t: &prost_types::Timestamp, field: &str) -> WireResult<Timestamp> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(WireError::invalid(
            join(field, "nanos"),
            format!("must be between 0 and 999999999, got {}", t.nanos),
        ));
    }
    t.seconds
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(i64::from(t.nanos / 1000)))
        .map(Timestamp)
        .ok_or_else(|| WireError::invalid(join(field, "seconds"), "timestamp out of range"))
}

/// A relationship's caveat (required): its name, and its context as JSON object text.
pub fn caveat(c: &pb::ContextualizedCaveat, field: &str) -> WireResult<CaveatRef> {
    let name_field = join(field, "caveat_name");
    if c.caveat_name.is_empty() {
        return Err(WireError::missing(name_field));
    }
    check_type(&c.caveat_name)
        .map_err(|m| WireError::invalid(name_field, m.replace("type name", "caveat name")))?;
    Ok(CaveatRef {
        name: c.caveat_name.clone(),
        context: c.context.as_ref().map(struct_to_json_text),
    })
}

/// A relationship (required), with its caveat (name and context as JSON text) and
/// expiration. Whether the schema allows the caveat is the caller's decision.
pub fn relationship(r: Option<&pb::Relationship>, field: &str) -> WireResult<Relationship> {
    let r = r.ok_or_else(|| WireError::missing(field))?;
    let decoded = (|| {
        let resource = object(r.resource.as_ref(), "resource", false)?;
        let relation = relation_name(&r.relation, "relation")?;
        let subject = subject(r.subject.as_ref(), "subject", true)?;
        let caveat = r
            .optional_caveat
            .as_ref()
            .map(|c| caveat(c, "optional_caveat"))
            .transpose()?;
        let expiration = r
            .optional_expires_at
            .as_ref()
            .map(|t| timestamp(t, "optional_expires_at"))
            .transpose()?;
        Ok(Relationship {
            resource,
            relation,
            subject,
            caveat,
            expiration,
        })
    })();
    decoded.map_err(|e: WireError| e.within(field))
}

/// A relationship filter (resource type required).
pub fn relationship_filter(
    f: Option<&pb::RelationshipFilter>,
    field: &str,
) -> WireResult<RelationshipFilter> {
    let f = f.ok_or_else(|| WireError::missing(field))?;
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

/// A three-valued answer: `value` is a `Permissionship` enum value, `info` the
/// `partial_caveat_info` beside it (which a conditional answer must carry, with at least one
/// parameter). `field` names the enum field; its sibling `partial_caveat_info` is named by
/// replacing the last segment.
pub fn permissionship(
    value: i32,
    info: Option<&pb::PartialCaveatInfo>,
    field: &str,
) -> WireResult<Permissionship> {
    match pb::Permissionship::try_from(value) {
        Ok(pb::Permissionship::HasPermission) => Ok(Permissionship::Allowed),
        Ok(pb::Permissionship::NoPermission) => Ok(Permissionship::Denied),
        Ok(pb::Permissionship::ConditionalPermission) => {
            let info_field = match field.rsplit_once('.') {
                Some((prefix, _)) => join(prefix, "partial_caveat_info"),
                None => "partial_caveat_info".to_string(),
            };
            let missing = info
                .map(|i| i.missing_required_context.clone())
                .unwrap_or_default();
            if missing.is_empty() {
                return Err(WireError::invalid(
                    join(&info_field, "missing_required_context"),
                    "a conditional answer names at least one missing parameter",
                ));
            }
            Ok(Permissionship::Conditional {
                missing: sorted(missing),
            })
        }
        _ => Err(WireError::invalid(
            field,
            format!("unknown or unspecified permissionship {value}"),
        )),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// A lookup result's permissionship: as [`permissionship`], but unspecified (a server from
/// before caveats) is allowed, and a denial is refused (lookups return no denied results).
fn lookup_permissionship(
    value: i32,
    info: Option<&pb::PartialCaveatInfo>,
    field: &str,
) -> WireResult<Permissionship> {
    if value == pb::Permissionship::Unspecified as i32 {
        return Ok(Permissionship::Allowed);
    }
    match permissionship(value, info, field)? {
        Permissionship::Denied => Err(WireError::invalid(
            field,
            "a lookup returns no denied results",
        )),
        p => Ok(p),
    }
}

/// A resource found by LookupResources: its id and permissionship.
pub fn found_resource(r: &pb::LookupResourcesResponse, field: &str) -> WireResult<FoundResource> {
    Ok(FoundResource {
        id: object_id(
            &r.resource_object_id,
            &join(field, "resource_object_id"),
            false,
        )?,
        permissionship: lookup_permissionship(
            r.permissionship,
            r.partial_caveat_info.as_ref(),
            &join(field, "permissionship"),
        )?,
    })
}

/// A subject found by LookupSubjects, with the subjects a wildcard excludes and, for a
/// conditional result, the missing parameters.
pub fn found_subject(r: &pb::LookupSubjectsResponse, field: &str) -> WireResult<FoundSubject> {
    let p = lookup_permissionship(
        r.permissionship,
        r.partial_caveat_info.as_ref(),
        &join(field, "permissionship"),
    )?;
    Ok(FoundSubject {
        subject: subject(r.subject.as_ref(), &join(field, "subject"), true)?,
        excluded: r
            .excluded_subjects
            .iter()
            .enumerate()
            .map(|(i, s)| {
                subject(
                    Some(s),
                    &join(field, &format!("excluded_subjects[{i}]")),
                    false,
                )
            })
            .collect::<WireResult<_>>()?,
        missing: p.missing().to_vec(),
    })
}

/// A request's caveat context (`google.protobuf.Struct`); `None` when absent or empty.
/// Values keep their JSON kinds (numbers that are whole become integers); each caveat
/// converts them to its parameters' types when it is evaluated.
pub fn context(s: Option<&prost_types::Struct>, field: &str) -> WireResult<Option<CaveatContext>> {
    let Some(s) = s else {
        return Ok(None);
    };
    if s.fields.is_empty() {
        return Ok(None);
    }
    CaveatContext::from_json(&crate::json::struct_to_json_text(s))
        .map(Some)
        .map_err(|e| WireError::invalid(field, e))
}

/// A proof tree, as the engine built it.
pub fn proof(p: &pb::Proof, field: &str) -> WireResult<Proof> {
    let missing = sorted(p.missing_required_context.clone());
    if p.allowed && !missing.is_empty() {
        return Err(WireError::invalid(
            join(field, "missing_required_context"),
            "an allowed node waits for no context",
        ));
    }
    use pb::proof::Step as S;
    let rel = |r: &Option<pb::Relationship>, f: &str| relationship(r.as_ref(), &join(field, f));
    let step = match &p.step {
        None => return Err(WireError::missing(join(field, "step"))),
        Some(S::Member(m)) => Step::Member {
            resource: object(m.resource.as_ref(), &join(field, "member.resource"), false)?,
            relation: relation_name(&m.relation, &join(field, "member.relation"))?,
        },
        Some(S::Direct(d)) => Step::Direct(rel(&d.relationship, "direct.relationship")?),
        Some(S::Wildcard(w)) => Step::Wildcard(rel(&w.relationship, "wildcard.relationship")?),
        Some(S::SubjectSet(s)) => {
            Step::SubjectSet(rel(&s.relationship, "subject_set.relationship")?)
        }
        Some(S::SameSubject(_)) => Step::SameSubject,
        Some(S::NoMatch(_)) => Step::NoMatch,
        Some(S::Union(_)) => Step::Union,
        Some(S::Intersection(_)) => Step::Intersection,
        Some(S::Exclusion(_)) => Step::Exclusion,
        Some(S::Nil(_)) => Step::Nil,
        Some(S::Arrow(a)) => Step::Arrow {
            tupleset: relation_name(&a.tupleset, &join(field, "arrow.tupleset"))?,
            computed: relation_name(&a.computed, &join(field, "arrow.computed"))?,
            mode: match pb::ArrowMode::try_from(a.mode) {
                Ok(pb::ArrowMode::All) => ArrowMode::All,
                Ok(pb::ArrowMode::Any) => ArrowMode::Any,
                _ => {
                    return Err(WireError::invalid(
                        join(field, "arrow.mode"),
                        format!("unknown arrow mode {}", a.mode),
                    ))
                }
            },
        },
        Some(S::ArrowHop(h)) => Step::ArrowHop(rel(&h.relationship, "arrow_hop.relationship")?),
        Some(S::Cycle(c)) => Step::Cycle {
            resource: object(c.resource.as_ref(), &join(field, "cycle.resource"), false)?,
            relation: relation_name(&c.relation, &join(field, "cycle.relation"))?,
        },
        Some(S::Caveat(c)) => {
            let name_field = join(field, "caveat.caveat_name");
            if c.caveat_name.is_empty() {
                return Err(WireError::missing(name_field));
            }
            check_type(&c.caveat_name).map_err(|m| {
                WireError::invalid(name_field, m.replace("type name", "caveat name"))
            })?;
            // The step's result repeats the node's value; a disagreement is a bad proof.
            let value = if p.allowed {
                pb::Permissionship::HasPermission
            } else if missing.is_empty() {
                pb::Permissionship::NoPermission
            } else {
                pb::Permissionship::ConditionalPermission
            };
            if c.result != pb::Permissionship::Unspecified as i32 && c.result != value as i32 {
                return Err(WireError::invalid(
                    join(field, "caveat.result"),
                    format!(
                        "the caveat's result {} disagrees with its node's value {}",
                        c.result, value as i32
                    ),
                ));
            }
            Step::Caveat {
                name: c.caveat_name.clone(),
                context: context(c.context.as_ref(), &join(field, "caveat.context"))?
                    .unwrap_or_default(),
            }
        }
        Some(S::Hop(h)) => Step::Hop {
            actor: object(h.actor.as_ref(), &join(field, "hop.actor"), false)?,
            acting_for: subject(h.acting_for.as_ref(), &join(field, "hop.acting_for"), false)?,
            permission: relation_name(&h.permission, &join(field, "hop.permission"))?,
        },
        Some(S::DelegateSet(d)) => Step::DelegateSet {
            subject_set: subject(
                d.subject_set.as_ref(),
                &join(field, "delegate_set.subject_set"),
                false,
            )?,
        },
    };
    Ok(Proof {
        step,
        allowed: p.allowed,
        missing,
        children: p
            .children
            .iter()
            .enumerate()
            .map(|(i, c)| proof(c, &format!("{field}.children[{i}]")))
            .collect::<WireResult<_>>()?,
    })
}

/// A delegation chain: objects, outermost first (`CheckRequest.actors`). An actor is never a
/// subject set or a wildcard.
pub fn actors(a: &[pb::SubjectReference], field: &str) -> WireResult<Vec<ObjectRef>> {
    a.iter()
        .enumerate()
        .map(|(i, s)| {
            let f = format!("{field}[{i}]");
            let s = subject(Some(s), &f, false)?;
            if s.relation.is_some() {
                return Err(WireError::invalid(
                    join(&f, "optional_relation"),
                    "an actor is an object, not a subject set",
                ));
            }
            Ok(s.object)
        })
        .collect()
}

/// A link of a delegation chain (`denied_at`).
pub fn chain_link(l: &pb::ChainLink, field: &str) -> WireResult<ChainLink> {
    use pb::chain_link::Kind;
    match Kind::try_from(l.kind) {
        Ok(Kind::Principal) => Ok(ChainLink::Principal),
        Ok(Kind::Actor) => Ok(ChainLink::Actor(l.actor_index as usize)),
        _ => Err(WireError::invalid(
            join(field, "kind"),
            format!("unknown chain link kind {}", l.kind),
        )),
    }
}

/// An expand tree, as the engine built it.
pub fn expand_tree(n: &pb::ExpandNode, field: &str) -> WireResult<ExpandNode> {
    use pb::expand_node::Tree;
    let children = |c: &[pb::ExpandNode], f: &str| {
        c.iter()
            .enumerate()
            .map(|(i, n)| expand_tree(n, &format!("{field}.{f}[{i}]")))
            .collect::<WireResult<Vec<_>>>()
    };
    let tree = match &n.tree {
        None => return Err(WireError::missing(join(field, "tree"))),
        Some(Tree::Leaf(l)) => {
            let caveats = &l.subject_caveats;
            if !caveats.is_empty() && caveats.len() != l.subjects.len() {
                return Err(WireError::invalid(
                    join(field, "leaf.subject_caveats"),
                    format!(
                        "{} caveats for {} subjects: they must be aligned",
                        caveats.len(),
                        l.subjects.len()
                    ),
                ));
            }
            ExpandTree::Leaf(
                l.subjects
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let subject =
                            subject(Some(s), &join(field, &format!("leaf.subjects[{i}]")), true)?;
                        let caveat = match caveats.get(i) {
                            Some(c) if !c.caveat_name.is_empty() => Some(caveat(
                                c,
                                &join(field, &format!("leaf.subject_caveats[{i}]")),
                            )?),
                            _ => None,
                        };
                        Ok(LeafSubject { subject, caveat })
                    })
                    .collect::<WireResult<_>>()?,
            )
        }
        Some(Tree::Union(u)) => ExpandTree::Union(children(&u.children, "union.children")?),
        Some(Tree::Intersection(u)) => {
            ExpandTree::Intersection(children(&u.children, "intersection.children")?)
        }
        Some(Tree::Exclusion(x)) => {
            let part = |p: &Option<Box<pb::ExpandNode>>, f: &str| {
                let f = join(field, f);
                p.as_deref()
                    .ok_or_else(|| WireError::missing(f.clone()))
                    .and_then(|n| expand_tree(n, &f))
            };
            ExpandTree::Exclusion(
                Box::new(part(&x.base, "exclusion.base")?),
                Box::new(part(&x.subtract, "exclusion.subtract")?),
            )
        }
    };
    Ok(ExpandNode {
        resource: object(n.resource.as_ref(), &join(field, "resource"), false)?,
        relation: relation_name(&n.relation, &join(field, "relation"))?,
        tree,
        caveat: n
            .optional_caveat
            .as_ref()
            .map(|c| caveat(c, &join(field, "optional_caveat")))
            .transpose()?,
    })
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
        assert_eq!(e.field, "updates[3].relationship.subject.object.object_id");
        assert!(e
            .to_string()
            .starts_with("updates[3].relationship.subject.object.object_id: "));
        let e = relationship(None, "x").unwrap_err();
        assert_eq!(e, WireError::missing("x"));
        let mut caveated = r.clone();
        caveated.subject = Some(pb::SubjectReference {
            object: obj("user", "a"),
            optional_relation: String::new(),
        });
        caveated.optional_caveat = Some(pb::ContextualizedCaveat {
            caveat_name: "Bad Name".into(),
            context: None,
        });
        let e = relationship(Some(&caveated), "r").unwrap_err();
        assert_eq!(e.field, "r.optional_caveat.caveat_name");
    }

    #[test]
    fn a_relative_path_is_prefixed_by_within() {
        let r = pb::Relationship {
            resource: obj("document", "1"),
            relation: "viewer".into(),
            subject: Some(pb::SubjectReference {
                object: obj("user", "*"),
                optional_relation: "member".into(),
            }),
            optional_caveat: None,
            optional_expires_at: None,
        };
        let e = relationship(Some(&r), "").unwrap_err();
        assert_eq!(e.field, "subject.optional_relation");
        let e = e.within("relationships[7]");
        assert_eq!(e.field, "relationships[7].subject.optional_relation");
        assert!(e
            .to_string()
            .starts_with("relationships[7].subject.optional_relation: "));
        // The message itself at fault: the prefix is the whole path.
        let e = relationship(None, "")
            .unwrap_err()
            .within("relationships[0]");
        assert_eq!(e, WireError::missing("relationships[0]"));
    }

    #[test]
    fn a_wildcard_subject_has_no_relation() {
        let s = pb::SubjectReference {
            object: obj("user", "*"),
            optional_relation: "member".into(),
        };
        assert!(subject(Some(&s), "s", false).is_err());
        let e = subject(Some(&s), "s", true).unwrap_err();
        assert_eq!(e.field, "s.optional_relation");
    }

    #[test]
    fn timestamps_are_checked() {
        assert!(timestamp(
            &prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0
            },
            "t"
        )
        .is_err());
        let e = timestamp(
            &prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            },
            "t",
        )
        .unwrap_err();
        assert_eq!(e.field, "t.nanos");
    }

    #[test]
    fn a_proof_without_a_step_is_refused() {
        let p = pb::Proof {
            allowed: true,
            step: Some(pb::proof::Step::Union(pb::proof::UnionStep {})),
            children: vec![pb::Proof::default()],
            missing_required_context: vec![],
        };
        let e = proof(&p, "proof").unwrap_err();
        assert_eq!(e.field, "proof.children[0].step");
    }
}
