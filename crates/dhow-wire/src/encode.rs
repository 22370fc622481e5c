//! Domain types to `dhow.v1` messages. Encoding cannot fail: every domain value has a message.

use dhow_engine::{
    CaveatContext, ChainLink, ExpandNode, ExpandTree, FoundResource, FoundSubject, Permissionship,
    Proof, Step,
};
use dhow_proto::v1 as pb;
use dhow_schema::ArrowMode;
use dhow_tuples::{
    CaveatRef, ObjectRef, Relationship, RelationshipFilter, Subject, Timestamp, ELLIPSIS,
};

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

/// A relationship's caveat: its name and context. A caveat's context is JSON object text in
/// the domain (the text parser and the decoder both guarantee it), so it always converts.
pub fn caveat_pb(c: &CaveatRef) -> pb::ContextualizedCaveat {
    pb::ContextualizedCaveat {
        caveat_name: c.name.clone(),
        context: c
            .context
            .as_deref()
            .and_then(|text| json_text_to_struct(text).ok()),
    }
}

/// A relationship with its caveat and expiration.
pub fn relationship_pb(r: &Relationship) -> pb::Relationship {
    pb::Relationship {
        resource: Some(object_pb(&r.resource)),
        relation: r.relation.clone(),
        subject: Some(subject_pb(&r.subject)),
        optional_caveat: r.caveat.as_ref().map(caveat_pb),
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

/// The missing parameters of a conditional answer; `None` when nothing is missing.
pub fn partial_caveat_info_pb(missing: &[String]) -> Option<pb::PartialCaveatInfo> {
    (!missing.is_empty()).then(|| pb::PartialCaveatInfo {
        missing_required_context: missing.to_vec(),
    })
}

/// A three-valued answer: the `Permissionship` enum value, and for a conditional answer the
/// parameters it waits for (`partial_caveat_info`).
pub fn permissionship_pb(p: &Permissionship) -> (i32, Option<pb::PartialCaveatInfo>) {
    let value = match p {
        Permissionship::Allowed => pb::Permissionship::HasPermission,
        Permissionship::Denied => pb::Permissionship::NoPermission,
        Permissionship::Conditional { .. } => pb::Permissionship::ConditionalPermission,
    };
    (value as i32, partial_caveat_info_pb(p.missing()))
}

/// A resource found by LookupResources: its id and permissionship (the caller adds the token
/// and the cursor).
pub fn found_resource_pb(f: &FoundResource) -> pb::LookupResourcesResponse {
    let (permissionship, partial_caveat_info) = permissionship_pb(&f.permissionship);
    pb::LookupResourcesResponse {
        looked_up_at: None,
        resource_object_id: f.id.clone(),
        after_result_cursor: None,
        permissionship,
        partial_caveat_info,
    }
}

/// A subject found by LookupSubjects: the subject, the subjects a wildcard excludes, its
/// permissionship (the caller adds the token).
pub fn found_subject_pb(f: &FoundSubject) -> pb::LookupSubjectsResponse {
    let (permissionship, partial_caveat_info) = permissionship_pb(&f.permissionship());
    pb::LookupSubjectsResponse {
        looked_up_at: None,
        subject: Some(subject_pb(&f.subject)),
        excluded_subjects: f.excluded.iter().map(subject_pb).collect(),
        permissionship,
        partial_caveat_info,
    }
}

/// A proof, with its caveat steps (the context each saw and its result) and the missing
/// parameters of its conditional nodes.
pub fn proof_pb(p: &Proof) -> pb::Proof {
    pb::Proof {
        allowed: p.allowed,
        step: Some(step_pb(p)),
        children: p.children.iter().map(proof_pb).collect(),
        missing_required_context: p.missing.clone(),
    }
}

fn step_pb(p: &Proof) -> pb::proof::Step {
    use pb::proof as s;
    let rel = |r: &Relationship| Some(relationship_pb(r));
    match &p.step {
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
        Step::Caveat { name, context } => s::Step::Caveat(s::CaveatStep {
            caveat_name: name.clone(),
            context: Some(context_pb(context)),
            result: permissionship_pb(&p.permissionship()).0,
        }),
        Step::Hop {
            actor,
            acting_for,
            permission,
        } => s::Step::Hop(s::HopStep {
            actor: Some(object_pb(actor)),
            acting_for: Some(subject_pb(acting_for)),
            permission: permission.clone(),
        }),
        Step::DelegateSet { subject_set } => s::Step::DelegateSet(s::DelegateSetStep {
            subject_set: Some(subject_pb(subject_set)),
        }),
    }
}

/// A link of a delegation chain (`denied_at`).
pub fn chain_link_pb(l: ChainLink) -> pb::ChainLink {
    use pb::chain_link::Kind;
    match l {
        ChainLink::Principal => pb::ChainLink {
            kind: Kind::Principal as i32,
            actor_index: 0,
        },
        ChainLink::Actor(i) => pb::ChainLink {
            kind: Kind::Actor as i32,
            actor_index: i as u32,
        },
    }
}

/// A delegation chain's actors (objects), for requests.
pub fn actors_pb(actors: &[ObjectRef]) -> Vec<pb::SubjectReference> {
    actors
        .iter()
        .map(|a| pb::SubjectReference {
            object: Some(object_pb(a)),
            optional_relation: String::new(),
        })
        .collect()
}

pub fn expand_pb(n: &ExpandNode) -> pb::ExpandNode {
    use pb::expand_node as e;
    let tree = match &n.tree {
        ExpandTree::Leaf(subjects) => e::Tree::Leaf(e::LeafTree {
            subjects: subjects.iter().map(|l| subject_pb(&l.subject)).collect(),
            // Aligned with `subjects`, and only when some subject has a caveat.
            subject_caveats: if subjects.iter().any(|l| l.caveat.is_some()) {
                subjects
                    .iter()
                    .map(|l| l.caveat.as_ref().map(caveat_pb).unwrap_or_default())
                    .collect()
            } else {
                Vec::new()
            },
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
        optional_caveat: n.caveat.as_ref().map(caveat_pb),
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
        let hop = Proof {
            step: Step::Hop {
                actor: ObjectRef::new("agent", "a"),
                acting_for: Subject::object("user", "alice"),
                permission: "view".into(),
            },
            allowed: false,
            missing: vec![],
            children: vec![Proof {
                step: Step::DelegateSet {
                    subject_set: Subject::set("user", "alice", "delegate"),
                },
                allowed: false,
                missing: vec![],
                children: vec![p.clone()],
            }],
        };
        assert_eq!(decode::proof(&proof_pb(&hop), "proof").unwrap(), hop);
        for l in [
            ChainLink::Principal,
            ChainLink::Actor(0),
            ChainLink::Actor(7),
        ] {
            assert_eq!(decode::chain_link(&chain_link_pb(l), "l").unwrap(), l);
        }
        let actors = vec![ObjectRef::new("agent", "a"), ObjectRef::new("agent", "b")];
        assert_eq!(
            decode::actors(&actors_pb(&actors), "actors").unwrap(),
            actors
        );
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

    fn ctx(text: &str) -> CaveatContext {
        CaveatContext::from_json(text).unwrap()
    }

    #[test]
    fn contexts_round_trip() {
        let c = ctx("{\"a\": 1, \"b\": [\"x\", true], \"m\": {\"k\": 1.5}}");
        assert_eq!(
            decode::context(Some(&context_pb(&c)), "context").unwrap(),
            Some(c)
        );
        assert_eq!(
            decode::context(Some(&prost_types::Struct::default()), "context").unwrap(),
            None
        );
        assert_eq!(decode::context(None, "context").unwrap(), None);
    }

    #[test]
    fn permissionships_round_trip() {
        for p in [
            Permissionship::Allowed,
            Permissionship::Denied,
            Permissionship::Conditional {
                missing: vec!["a".into(), "b".into()],
            },
        ] {
            let (value, info) = permissionship_pb(&p);
            assert_eq!(info.is_some(), p.is_conditional());
            assert_eq!(
                decode::permissionship(value, info.as_ref(), "permissionship").unwrap(),
                p
            );
        }
        assert_eq!(
            permissionship_pb(&Permissionship::Conditional {
                missing: vec!["x".into()]
            })
            .0,
            pb::Permissionship::ConditionalPermission as i32
        );
        // A conditional answer must say what it waits for; an unknown value is refused.
        let e = decode::permissionship(
            pb::Permissionship::ConditionalPermission as i32,
            None,
            "items[2].permissionship",
        )
        .unwrap_err();
        assert_eq!(
            e.field,
            "items[2].partial_caveat_info.missing_required_context"
        );
        let e = decode::permissionship(0, None, "permissionship").unwrap_err();
        assert_eq!(e.field, "permissionship");
        assert!(decode::permissionship(9, None, "permissionship").is_err());
    }

    #[test]
    fn lookup_results_round_trip() {
        for f in [
            FoundResource {
                id: "a".into(),
                permissionship: Permissionship::Allowed,
            },
            FoundResource {
                id: "b".into(),
                permissionship: Permissionship::Conditional {
                    missing: vec!["ip".into()],
                },
            },
        ] {
            let m = found_resource_pb(&f);
            assert_eq!(decode::found_resource(&m, "r").unwrap(), f);
        }
        for f in [
            FoundSubject {
                subject: Subject::object("user", "*"),
                excluded: vec![Subject::object("user", "bob")],
                missing: vec![],
            },
            FoundSubject {
                subject: Subject::object("user", "tom"),
                excluded: vec![],
                missing: vec!["level".into(), "task".into()],
            },
        ] {
            let m = found_subject_pb(&f);
            assert_eq!(decode::found_subject(&m, "").unwrap(), f);
        }
        // A server from before caveats leaves permissionship unset: allowed.
        let mut m = found_resource_pb(&FoundResource {
            id: "a".into(),
            permissionship: Permissionship::Allowed,
        });
        m.permissionship = 0;
        assert_eq!(
            decode::found_resource(&m, "r").unwrap().permissionship,
            Permissionship::Allowed
        );
        // Lookups return no denials.
        m.permissionship = pb::Permissionship::NoPermission as i32;
        assert_eq!(
            decode::found_resource(&m, "r").unwrap_err().field,
            "r.permissionship"
        );
    }

    /// Caveat steps travel with the context they saw and their result; conditional nodes
    /// with their missing parameters.
    #[test]
    fn caveated_proofs_round_trip() {
        let r = parse_relationship("document:a#viewer@user:tom[cav:{\"k\":1}]").unwrap();
        let caveat = |allowed: bool, missing: &[&str]| Proof {
            step: Step::Caveat {
                name: "cav".into(),
                context: ctx("{\"k\": 1, \"ip\": \"10.0.0.1\"}"),
            },
            allowed,
            missing: missing.iter().map(|s| s.to_string()).collect(),
            children: vec![],
        };
        for (allowed, missing) in [(true, vec![]), (false, vec![]), (false, vec!["x", "y"])] {
            let p = Proof {
                step: Step::Direct(r.clone()),
                allowed,
                missing: missing.iter().map(|s| s.to_string()).collect(),
                children: vec![caveat(allowed, &missing)],
            };
            let wire = proof_pb(&p);
            assert_eq!(wire.children.len(), 1, "the caveat step is sent");
            let Some(pb::proof::Step::Caveat(step)) = &wire.children[0].step else {
                panic!("not a caveat step: {wire:?}");
            };
            assert_eq!(step.caveat_name, "cav");
            let want = if allowed {
                pb::Permissionship::HasPermission
            } else if missing.is_empty() {
                pb::Permissionship::NoPermission
            } else {
                pb::Permissionship::ConditionalPermission
            };
            assert_eq!(step.result, want as i32);
            assert_eq!(wire.missing_required_context.len(), missing.len());
            assert_eq!(decode::proof(&wire, "proof").unwrap(), p);
        }
        // A caveat result that disagrees with its node, or an allowed node that waits for
        // context, is a bad proof.
        let mut wire = proof_pb(&caveat(false, &["x"]));
        if let Some(pb::proof::Step::Caveat(step)) = &mut wire.step {
            step.result = pb::Permissionship::HasPermission as i32;
        }
        assert_eq!(
            decode::proof(&wire, "proof").unwrap_err().field,
            "proof.caveat.result"
        );
        let mut wire = proof_pb(&caveat(false, &["x"]));
        wire.allowed = true;
        assert_eq!(
            decode::proof(&wire, "proof").unwrap_err().field,
            "proof.missing_required_context"
        );
    }

    /// Leaf subjects keep their caveats (aligned, only when some subject has one), and an
    /// arrow's child the caveat of its tupleset relationship.
    #[test]
    fn caveated_expand_trees_round_trip() {
        let cav = |name: &str, ctx: Option<&str>| {
            Some(CaveatRef {
                name: name.into(),
                context: ctx.map(str::to_string),
            })
        };
        let leaf = ExpandNode {
            resource: ObjectRef::new("document", "a"),
            relation: "viewer".into(),
            tree: ExpandTree::Leaf(vec![
                LeafSubject::plain(Subject::object("user", "alice")),
                LeafSubject {
                    subject: Subject::object("user", "tom"),
                    caveat: cav("on_network", Some("{\"cidr\":\"10.0.0.0/8\"}")),
                },
                LeafSubject {
                    subject: Subject::object("user", "*"),
                    caveat: cav("later", None),
                },
            ]),
            caveat: None,
        };
        let wire = expand_pb(&leaf);
        let Some(pb::expand_node::Tree::Leaf(l)) = &wire.tree else {
            panic!("{wire:?}")
        };
        assert_eq!(l.subject_caveats.len(), 3);
        assert_eq!(l.subject_caveats[0].caveat_name, "");
        assert_eq!(decode::expand_tree(&wire, "tree").unwrap(), leaf);
        let n = ExpandNode {
            resource: ObjectRef::new("document", "a"),
            relation: "view".into(),
            tree: ExpandTree::Union(vec![ExpandNode {
                resource: ObjectRef::new("folder", "f"),
                relation: "view".into(),
                tree: ExpandTree::Leaf(vec![LeafSubject::plain(Subject::object("user", "b"))]),
                caveat: cav("on_network", Some("{\"cidr\":\"10.0.0.0/8\"}")),
            }]),
            caveat: None,
        };
        let wire = expand_pb(&n);
        let Some(pb::expand_node::Tree::Union(u)) = &wire.tree else {
            panic!("{wire:?}")
        };
        let Some(pb::expand_node::Tree::Leaf(l)) = &u.children[0].tree else {
            panic!("{wire:?}")
        };
        assert!(l.subject_caveats.is_empty(), "no caveat, no list");
        assert_eq!(
            u.children[0].optional_caveat.as_ref().unwrap().caveat_name,
            "on_network"
        );
        assert_eq!(decode::expand_tree(&wire, "tree").unwrap(), n);
        // Caveats not aligned with their subjects are refused.
        let mut wire = expand_pb(&leaf);
        if let Some(pb::expand_node::Tree::Leaf(l)) = &mut wire.tree {
            l.subject_caveats.pop();
        }
        assert_eq!(
            decode::expand_tree(&wire, "tree").unwrap_err().field,
            "tree.leaf.subject_caveats"
        );
    }
}
