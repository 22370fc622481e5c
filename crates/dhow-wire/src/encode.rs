//! Domain types to `dhow.v1` messages. Encoding cannot fail: every domain value has a message.

use dhow_engine::{CaveatContext, ExpandNode, ExpandTree, FoundSubject, Proof, Step};
use dhow_proto::v1 as pb;
use dhow_schema::ArrowMode;
use dhow_tuples::{ObjectRef, Relationship, RelationshipFilter, Subject, Timestamp, ELLIPSIS};

use crate::json::json_text_to_struct;

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

/// A relationship with its caveat and expiration. A caveat's context is JSON object text in
/// the domain (the text parser and the decoder both guarantee it), so it always converts.
pub fn relationship_pb(r: &Relationship) -> pb::Relationship {
    pb::Relationship {
        resource: Some(object_pb(&r.resource)),
        relation: r.relation.clone(),
        subject: Some(subject_pb(&r.subject)),
        optional_caveat: r.caveat.as_ref().map(|c| pb::ContextualizedCaveat {
            caveat_name: c.name.clone(),
            context: c
                .context
                .as_deref()
                .and_then(|text| json_text_to_struct(text).ok()),
        }),
        optional_expires_at: r.expiration.map(timestamp_pb),
    }
}

/// A relationship filter. `subject_relation: Some(None)` (plain subjects only) is `...`.
pub fn filter_pb(f: &RelationshipFilter) -> pb::RelationshipFilter {
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    pb::RelationshipFilter {
        resource_type: text(&f.resource_type),
        optional_resource_id: text(&f.resource_id),
        optional_relation: text(&f.relation),
        optional_subject_filter: f.subject_type.as_ref().map(|t| pb::SubjectFilter {
            subject_type: t.clone(),
            optional_subject_id: text(&f.subject_id),
            optional_relation: f.subject_relation.as_ref().map(|r| {
                pb::subject_filter::RelationFilter {
                    relation: r.clone().unwrap_or_else(|| ELLIPSIS.to_string()),
                }
            }),
        }),
    }
}

/// A caveat context as a `google.protobuf.Struct`.
pub fn context_pb(c: &CaveatContext) -> prost_types::Struct {
    crate::json::json_text_to_struct(&c.to_json()).unwrap_or_default()
}

pub fn found_subject_pb(f: &FoundSubject) -> (pb::SubjectReference, Vec<pb::SubjectReference>) {
    (
        subject_pb(&f.subject),
        f.excluded.iter().map(subject_pb).collect(),
    )
}

/// A proof. Until the protos carry caveat steps and conditional values (see
/// docs/caveats.md), caveat nodes are left out and a conditional node is sent as not allowed.
pub fn proof_pb(p: &Proof) -> pb::Proof {
    pb::Proof {
        allowed: p.allowed,
        step: step_pb(&p.step),
        children: p
            .children
            .iter()
            .filter(|c| !matches!(c.step, Step::Caveat { .. }))
            .map(proof_pb)
            .collect(),
    }
}

fn step_pb(step: &Step) -> Option<pb::proof::Step> {
    use pb::proof as s;
    let rel = |r: &Relationship| Some(relationship_pb(r));
    Some(match step {
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
                ArrowMode::Any => pb::ArrowMode::Any,
                ArrowMode::All => pb::ArrowMode::All,
            } as i32,
        }),
        Step::ArrowHop(r) => s::Step::ArrowHop(s::ArrowHopStep {
            relationship: rel(r),
        }),
        Step::Cycle { resource, relation } => s::Step::Cycle(s::CycleStep {
            resource: Some(object_pb(resource)),
            relation: relation.clone(),
        }),
        Step::Caveat { .. } => return None,
    })
}

pub fn expand_pb(n: &ExpandNode) -> pb::ExpandNode {
    use pb::expand_node as e;
    let tree = match &n.tree {
        ExpandTree::Leaf(subjects) => e::Tree::Leaf(e::LeafTree {
            subjects: subjects.iter().map(|l| subject_pb(&l.subject)).collect(),
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
    use crate::decode;
    use dhow_engine::LeafSubject;
    use dhow_tuples::parse_relationship;

    #[test]
    fn relationships_round_trip() {
        for s in [
            "document:readme#viewer@user:alice",
            "document:readme#viewer@group:eng#member",
            "document:readme#viewer@user:*",
            "document:readme#viewer@user:alice[expiration:2026-12-31T00:00:00Z]",
            "document:readme#viewer@user:alice[expiration:2026-12-31T00:00:00.250000Z]",
            "document:readme#viewer@user:alice[cav:{\"a\":[1,true,null,\"x\"],\"b\":{\"c\":1.5}}]",
            "document:readme#viewer@user:alice[cav]",
            "org/team/document:a|b=c+d-e/f#viewer@org/team/user:x",
        ] {
            let r = parse_relationship(s).unwrap();
            let p = relationship_pb(&r);
            assert_eq!(decode::relationship(Some(&p), "r").unwrap().to_string(), s);
        }
    }

    #[test]
    fn negative_timestamps_round_trip() {
        let t = Timestamp(-1_500_000);
        let p = timestamp_pb(t);
        assert_eq!((p.seconds, p.nanos), (-2, 500_000_000));
        assert_eq!(decode::timestamp(&p, "t").unwrap(), t);
    }

    #[test]
    fn filters_round_trip() {
        for f in [
            RelationshipFilter {
                resource_type: Some("document".into()),
                ..Default::default()
            },
            RelationshipFilter {
                resource_type: Some("document".into()),
                resource_id: Some("a".into()),
                relation: Some("viewer".into()),
                subject_type: Some("user".into()),
                subject_id: Some("*".into()),
                subject_relation: Some(None),
            },
            RelationshipFilter {
                resource_type: Some("document".into()),
                subject_type: Some("group".into()),
                subject_relation: Some(Some("member".into())),
                ..Default::default()
            },
        ] {
            assert_eq!(
                decode::relationship_filter(Some(&filter_pb(&f)), "f").unwrap(),
                f
            );
        }
    }

    #[test]
    fn proofs_and_expand_trees_round_trip() {
        let r = parse_relationship("document:a#viewer@group:eng#member").unwrap();
        let p = Proof {
            step: Step::Member {
                resource: ObjectRef::new("document", "a"),
                relation: "view".into(),
            },
            allowed: true,
            missing: vec![],
            children: vec![
                Proof {
                    step: Step::Arrow {
                        tupleset: "parent".into(),
                        computed: "view".into(),
                        mode: ArrowMode::All,
                    },
                    allowed: false,
                    missing: vec![],
                    children: vec![],
                },
                Proof {
                    step: Step::SubjectSet(r.clone()),
                    allowed: true,
                    missing: vec![],
                    children: vec![Proof {
                        step: Step::Cycle {
                            resource: ObjectRef::new("group", "eng"),
                            relation: "member".into(),
                        },
                        allowed: false,
                        missing: vec![],
                        children: vec![],
                    }],
                },
            ],
        };
        assert_eq!(decode::proof(&proof_pb(&p), "proof").unwrap(), p);
        let leaf = |rel: &str| ExpandNode {
            resource: ObjectRef::new("document", "a"),
            relation: rel.into(),
            tree: ExpandTree::Leaf(vec![
                LeafSubject::plain(r.subject.clone()),
                LeafSubject::plain(Subject::object("user", "*")),
            ]),
            caveat: None,
        };
        let n = ExpandNode {
            resource: ObjectRef::new("document", "a"),
            relation: "view".into(),
            tree: ExpandTree::Exclusion(
                Box::new(ExpandNode {
                    resource: ObjectRef::new("document", "a"),
                    relation: "view".into(),
                    tree: ExpandTree::Union(vec![leaf("viewer"), leaf("owner")]),
                    caveat: None,
                }),
                Box::new(leaf("banned")),
            ),
            caveat: None,
        };
        assert_eq!(decode::expand_tree(&expand_pb(&n), "tree").unwrap(), n);
    }

    #[test]
    fn contexts_round_trip_and_caveat_steps_are_left_out() {
        let c = dhow_engine::CaveatContext::from_json(
            "{\"a\": 1, \"b\": [\"x\", true], \"m\": {\"k\": 1.5}}",
        )
        .unwrap();
        assert_eq!(
            decode::context(Some(&context_pb(&c)), "context").unwrap(),
            Some(c)
        );
        assert_eq!(
            decode::context(Some(&prost_types::Struct::default()), "context").unwrap(),
            None
        );
        let r = parse_relationship("document:a#viewer@user:tom[cav]").unwrap();
        let p = Proof {
            step: Step::Direct(r),
            allowed: true,
            missing: vec![],
            children: vec![Proof {
                step: Step::Caveat {
                    name: "cav".into(),
                    context: dhow_engine::CaveatContext::new(),
                },
                allowed: true,
                missing: vec![],
                children: vec![],
            }],
        };
        assert!(proof_pb(&p).children.is_empty());
    }
}
