//! Output formatting of the client commands: proof trees (as `dhow_engine::Proof` displays
//! them), expand trees, lookup results, watch changes and the JSON of a check.

use std::fmt::Write as _;

use dhow_proto::v1 as pb;
use dhow_tuples::Subject;
use pb::expand_node::Tree;
use pb::proof::Step;

use super::convert::{object_from_proto, relationship_text, subject_from_proto};

/// The text of one proof node, without its mark or indentation.
fn proof_step_text(p: &pb::Proof) -> String {
    let rel = |r: &Option<pb::Relationship>| relationship_text(r.as_ref());
    match &p.step {
        Some(Step::Member(m)) => {
            format!("{}#{}", object_from_proto(m.resource.as_ref()), m.relation)
        }
        Some(Step::Direct(d)) => format!("relationship {}", rel(&d.relationship)),
        Some(Step::Wildcard(w)) => format!("wildcard relationship {}", rel(&w.relationship)),
        Some(Step::SubjectSet(s)) => {
            format!(
                "relationship {}, through its subject set",
                rel(&s.relationship)
            )
        }
        Some(Step::SameSubject(_)) => "the subject set itself".to_string(),
        Some(Step::NoMatch(_)) => "no relationship reaches the subject".to_string(),
        Some(Step::Union(_)) => "union (+)".to_string(),
        Some(Step::Intersection(_)) => "intersection (&)".to_string(),
        Some(Step::Exclusion(_)) => "exclusion (-)".to_string(),
        Some(Step::Nil(_)) => "nil".to_string(),
        Some(Step::Arrow(a)) => {
            if a.mode == pb::ArrowMode::All as i32 {
                format!("{}.all({})", a.tupleset, a.computed)
            } else {
                format!("{}->{}", a.tupleset, a.computed)
            }
        }
        Some(Step::ArrowHop(h)) => format!("relationship {}, followed", rel(&h.relationship)),
        Some(Step::Cycle(c)) => format!(
            "{}#{} again (cycle, adds nothing)",
            object_from_proto(c.resource.as_ref()),
            c.relation
        ),
        None => "(unknown step)".to_string(),
    }
}

/// A proof tree, one node per line, indented two spaces per level, ✓ or ✗ per node.
pub fn proof(p: &pb::Proof) -> String {
    let mut out = String::new();
    proof_into(p, 0, &mut out);
    out
}

fn proof_into(p: &pb::Proof, depth: usize, out: &mut String) {
    let mark = if p.allowed { "✓" } else { "✗" };
    let _ = writeln!(
        out,
        "{:indent$}{mark} {}",
        "",
        proof_step_text(p),
        indent = depth * 2
    );
    for c in &p.children {
        proof_into(c, depth + 1, out);
    }
}

/// A proof as JSON: `{allowed, step, children}` with `step` the node's text.
pub fn proof_json(p: &pb::Proof) -> serde_json::Value {
    serde_json::json!({
        "allowed": p.allowed,
        "step": proof_step_text(p),
        "children": p.children.iter().map(proof_json).collect::<Vec<_>>(),
    })
}

/// The JSON of a check: `{"allowed": bool, "token": "...", "proof": {...}}` (proof only when
/// the response has one).
pub fn check_json(allowed: bool, token: &str, p: Option<&pb::Proof>) -> serde_json::Value {
    let mut v = serde_json::json!({ "allowed": allowed, "token": token });
    if let Some(p) = p {
        v["proof"] = proof_json(p);
    }
    v
}

/// An expand tree, one node per line, indented two spaces per level:
/// `resource#relation: subject, ...` for stored subjects, `resource#relation (union +)` etc.
/// for rewrites; the subtracted child of an exclusion is prefixed `except `.
pub fn expand(node: &pb::ExpandNode) -> String {
    let mut out = String::new();
    expand_into(node, 0, "", &mut out);
    out
}

fn expand_into(node: &pb::ExpandNode, depth: usize, prefix: &str, out: &mut String) {
    let name = format!(
        "{}#{}",
        object_from_proto(node.resource.as_ref()),
        node.relation
    );
    let pad = depth * 2;
    match &node.tree {
        Some(Tree::Leaf(l)) => {
            let subjects: Vec<String> = l
                .subjects
                .iter()
                .map(|s| subject_from_proto(Some(s)).to_string())
                .collect();
            let list = if subjects.is_empty() {
                "(no subjects)".to_string()
            } else {
                subjects.join(", ")
            };
            let _ = writeln!(out, "{:pad$}{prefix}{name}: {list}", "");
        }
        Some(Tree::Union(u)) => {
            let _ = writeln!(out, "{:pad$}{prefix}{name} (union +)", "");
            for c in &u.children {
                expand_into(c, depth + 1, "", out);
            }
        }
        Some(Tree::Intersection(i)) => {
            let _ = writeln!(out, "{:pad$}{prefix}{name} (intersection &)", "");
            for c in &i.children {
                expand_into(c, depth + 1, "", out);
            }
        }
        Some(Tree::Exclusion(e)) => {
            let _ = writeln!(out, "{:pad$}{prefix}{name} (exclusion -)", "");
            if let Some(b) = &e.base {
                expand_into(b, depth + 1, "", out);
            }
            if let Some(s) = &e.subtract {
                expand_into(s, depth + 1, "except ", out);
            }
        }
        None => {
            let _ = writeln!(out, "{:pad$}{prefix}{name}: (empty)", "");
        }
    }
}

/// A subject found by LookupSubjects: `user:alice`, `group:eng#member`, or a wildcard with
/// the subjects it excludes, `user:* - {user:bob, user:carol}`.
pub fn found_subject(subject: &Subject, excluded: &[Subject]) -> String {
    if excluded.is_empty() {
        subject.to_string()
    } else {
        let ex: Vec<String> = excluded.iter().map(Subject::to_string).collect();
        format!("{subject} - {{{}}}", ex.join(", "))
    }
}

/// One change of a watch: `TOUCH relationship` or `DELETE relationship`.
pub fn change(c: &pb::RelationshipChange) -> String {
    use pb::relationship_change::Operation;
    let op = match Operation::try_from(c.operation) {
        Ok(Operation::Touch) => "TOUCH",
        Ok(Operation::Delete) => "DELETE",
        _ => "UNKNOWN",
    };
    format!("{op} {}", relationship_text(c.relationship.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::convert::{object_to_proto, relationship_arg, relationship_to_proto};
    use dhow_engine::Proof as EProof;
    use dhow_engine::Step as EStep;
    use dhow_schema::ArrowMode;
    use dhow_tuples::ObjectRef;

    fn obj(s: &str) -> ObjectRef {
        dhow_tuples::parse_object(s).unwrap()
    }

    fn rel(s: &str) -> pb::Relationship {
        relationship_to_proto(&relationship_arg(s).unwrap()).unwrap()
    }

    fn erel(s: &str) -> dhow_tuples::Relationship {
        relationship_arg(s).unwrap()
    }

    fn node(allowed: bool, step: Step, children: Vec<pb::Proof>) -> pb::Proof {
        pb::Proof {
            allowed,
            step: Some(step),
            children,
        }
    }

    fn enode(allowed: bool, step: EStep, children: Vec<EProof>) -> EProof {
        EProof {
            step,
            allowed,
            children,
        }
    }

    /// Every step kind, in the engine's form and the proto form.
    fn both() -> (EProof, pb::Proof) {
        let e = enode(
            true,
            EStep::Member {
                resource: obj("document:1"),
                relation: "view".into(),
            },
            vec![enode(
                true,
                EStep::Union,
                vec![
                    enode(true, EStep::Direct(erel("document:1#owner@user:a")), vec![]),
                    enode(
                        true,
                        EStep::Wildcard(erel("document:1#viewer@user:*")),
                        vec![],
                    ),
                    enode(
                        true,
                        EStep::SubjectSet(erel("document:1#viewer@group:g#member")),
                        vec![enode(true, EStep::SameSubject, vec![])],
                    ),
                    enode(false, EStep::NoMatch, vec![]),
                    enode(false, EStep::Intersection, vec![]),
                    enode(false, EStep::Exclusion, vec![]),
                    enode(false, EStep::Nil, vec![]),
                    enode(
                        true,
                        EStep::Arrow {
                            tupleset: "folder".into(),
                            computed: "view".into(),
                            mode: ArrowMode::Any,
                        },
                        vec![enode(
                            true,
                            EStep::ArrowHop(erel("document:1#folder@folder:f")),
                            vec![],
                        )],
                    ),
                    enode(
                        false,
                        EStep::Arrow {
                            tupleset: "parent".into(),
                            computed: "view".into(),
                            mode: ArrowMode::All,
                        },
                        vec![],
                    ),
                    enode(
                        false,
                        EStep::Cycle {
                            resource: obj("folder:f"),
                            relation: "view".into(),
                        },
                        vec![],
                    ),
                ],
            )],
        );
        let p = node(
            true,
            Step::Member(pb::proof::MemberStep {
                resource: Some(object_to_proto(&obj("document:1"))),
                relation: "view".into(),
            }),
            vec![node(
                true,
                Step::Union(pb::proof::UnionStep {}),
                vec![
                    node(
                        true,
                        Step::Direct(pb::proof::DirectStep {
                            relationship: Some(rel("document:1#owner@user:a")),
                        }),
                        vec![],
                    ),
                    node(
                        true,
                        Step::Wildcard(pb::proof::WildcardStep {
                            relationship: Some(rel("document:1#viewer@user:*")),
                        }),
                        vec![],
                    ),
                    node(
                        true,
                        Step::SubjectSet(pb::proof::SubjectSetStep {
                            relationship: Some(rel("document:1#viewer@group:g#member")),
                        }),
                        vec![node(
                            true,
                            Step::SameSubject(pb::proof::SameSubjectStep {}),
                            vec![],
                        )],
                    ),
                    node(false, Step::NoMatch(pb::proof::NoMatchStep {}), vec![]),
                    node(
                        false,
                        Step::Intersection(pb::proof::IntersectionStep {}),
                        vec![],
                    ),
                    node(false, Step::Exclusion(pb::proof::ExclusionStep {}), vec![]),
                    node(false, Step::Nil(pb::proof::NilStep {}), vec![]),
                    node(
                        true,
                        Step::Arrow(pb::proof::ArrowStep {
                            tupleset: "folder".into(),
                            computed: "view".into(),
                            mode: pb::ArrowMode::Any as i32,
                        }),
                        vec![node(
                            true,
                            Step::ArrowHop(pb::proof::ArrowHopStep {
                                relationship: Some(rel("document:1#folder@folder:f")),
                            }),
                            vec![],
                        )],
                    ),
                    node(
                        false,
                        Step::Arrow(pb::proof::ArrowStep {
                            tupleset: "parent".into(),
                            computed: "view".into(),
                            mode: pb::ArrowMode::All as i32,
                        }),
                        vec![],
                    ),
                    node(
                        false,
                        Step::Cycle(pb::proof::CycleStep {
                            resource: Some(object_to_proto(&obj("folder:f"))),
                            relation: "view".into(),
                        }),
                        vec![],
                    ),
                ],
            )],
        );
        (e, p)
    }

    #[test]
    fn proof_matches_the_engine_display() {
        let (e, p) = both();
        assert_eq!(proof(&p), e.to_string());
        assert!(proof(&p).starts_with("✓ document:1#view\n  ✓ union (+)\n    ✓ relationship"));
    }

    #[test]
    fn proof_without_step_does_not_panic() {
        let p = pb::Proof {
            allowed: false,
            step: None,
            children: vec![],
        };
        assert_eq!(proof(&p), "✗ (unknown step)\n");
    }

    #[test]
    fn check_json_shape() {
        let v = check_json(false, "tok", None);
        assert_eq!(v.to_string(), r#"{"allowed":false,"token":"tok"}"#);
        let (_, p) = both();
        let v = check_json(true, "tok", Some(&p));
        assert_eq!(v["proof"]["step"], "document:1#view");
        assert_eq!(v["proof"]["children"][0]["step"], "union (+)");
        assert_eq!(v["proof"]["children"][0]["children"][0]["allowed"], true);
    }

    fn leaf(o: &str, r: &str, subjects: &[&str]) -> pb::ExpandNode {
        pb::ExpandNode {
            resource: Some(object_to_proto(&obj(o))),
            relation: r.into(),
            tree: Some(Tree::Leaf(pb::expand_node::LeafTree {
                subjects: subjects
                    .iter()
                    .map(|s| {
                        crate::client::convert::subject_to_proto(
                            &dhow_tuples::parse_subject(s).unwrap(),
                        )
                    })
                    .collect(),
            })),
        }
    }

    #[test]
    fn expand_tree_text() {
        let tree = pb::ExpandNode {
            resource: Some(object_to_proto(&obj("document:1"))),
            relation: "view".into(),
            tree: Some(Tree::Exclusion(Box::new(pb::expand_node::ExclusionTree {
                base: Some(Box::new(pb::ExpandNode {
                    resource: Some(object_to_proto(&obj("document:1"))),
                    relation: "view".into(),
                    tree: Some(Tree::Union(pb::expand_node::UnionTree {
                        children: vec![
                            leaf("document:1", "owner", &["user:alice", "group:eng#member"]),
                            leaf("folder:f", "viewer", &[]),
                        ],
                    })),
                })),
                subtract: Some(Box::new(leaf("document:1", "banned", &["user:*"]))),
            }))),
        };
        assert_eq!(
            expand(&tree),
            "document:1#view (exclusion -)\n\
             \x20 document:1#view (union +)\n\
             \x20   document:1#owner: user:alice, group:eng#member\n\
             \x20   folder:f#viewer: (no subjects)\n\
             \x20 except document:1#banned: user:*\n"
        );
    }

    #[test]
    fn found_subjects_and_changes() {
        let s = |t: &str| dhow_tuples::parse_subject(t).unwrap();
        assert_eq!(found_subject(&s("user:alice"), &[]), "user:alice");
        assert_eq!(
            found_subject(&s("user:*"), &[s("user:bob"), s("user:carol")]),
            "user:* - {user:bob, user:carol}"
        );
        let c = pb::RelationshipChange {
            operation: pb::relationship_change::Operation::Delete as i32,
            relationship: Some(rel("document:1#viewer@user:a")),
        };
        assert_eq!(change(&c), "DELETE document:1#viewer@user:a");
        let c = pb::RelationshipChange {
            operation: pb::relationship_change::Operation::Touch as i32,
            relationship: Some(rel("document:1#viewer@user:a")),
        };
        assert_eq!(change(&c), "TOUCH document:1#viewer@user:a");
    }
}
