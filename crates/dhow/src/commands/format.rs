//! Output formatting of the client commands: proof trees (decoded from the wire and shown as
//! `dhow_engine::Proof` displays them, the one renderer of proofs), expand trees, lookup
//! results, watch changes and the JSON of a check.

use std::fmt::Write as _;

use dhow_engine::{ExpandNode, ExpandTree, Proof};
use dhow_proto::v1 as pb;
use dhow_tuples::Subject;

use super::args::relationship_text;

/// A proof tree, one node per line, indented two spaces per level, ✓ or ✗ per node (the
/// engine's own rendering); what is wrong with it if the server sent a malformed one.
pub fn proof(p: &pb::Proof) -> String {
    match dhow_wire::proof(p, "proof") {
        Ok(p) => p.to_string(),
        Err(e) => format!("(invalid {e})\n"),
    }
}

fn proof_json_of(p: &Proof) -> serde_json::Value {
    serde_json::json!({
        "allowed": p.allowed,
        "step": p.step.to_string(),
        "children": p.children.iter().map(proof_json_of).collect::<Vec<_>>(),
    })
}

/// A proof as JSON: `{allowed, step, children}` with `step` the node's text.
pub fn proof_json(p: &pb::Proof) -> serde_json::Value {
    match dhow_wire::proof(p, "proof") {
        Ok(p) => proof_json_of(&p),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
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
    match dhow_wire::expand_tree(node, "tree") {
        Ok(n) => {
            let mut out = String::new();
            expand_into(&n, 0, "", &mut out);
            out
        }
        Err(e) => format!("(invalid {e})\n"),
    }
}

fn expand_into(node: &ExpandNode, depth: usize, prefix: &str, out: &mut String) {
    let name = format!("{}#{}", node.resource, node.relation);
    let pad = depth * 2;
    let children = |c: &[ExpandNode], kind: &str, out: &mut String| {
        let _ = writeln!(out, "{:pad$}{prefix}{name} ({kind})", "");
        for c in c {
            expand_into(c, depth + 1, "", out);
        }
    };
    match &node.tree {
        ExpandTree::Leaf(subjects) => {
            let list = if subjects.is_empty() {
                "(no subjects)".to_string()
            } else {
                let s: Vec<String> = subjects.iter().map(Subject::to_string).collect();
                s.join(", ")
            };
            let _ = writeln!(out, "{:pad$}{prefix}{name}: {list}", "");
        }
        ExpandTree::Union(c) => children(c, "union +", out),
        ExpandTree::Intersection(c) => children(c, "intersection &", out),
        ExpandTree::Exclusion(base, subtract) => {
            let _ = writeln!(out, "{:pad$}{prefix}{name} (exclusion -)", "");
            expand_into(base, depth + 1, "", out);
            expand_into(subtract, depth + 1, "except ", out);
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
    use dhow_engine::Step;
    use dhow_schema::ArrowMode;
    use dhow_tuples::{parse_object, parse_relationship, parse_subject, ObjectRef};

    fn obj(s: &str) -> ObjectRef {
        parse_object(s).unwrap()
    }

    fn rel(s: &str) -> dhow_tuples::Relationship {
        parse_relationship(s).unwrap()
    }

    fn node(allowed: bool, step: Step, children: Vec<Proof>) -> Proof {
        Proof {
            step,
            allowed,
            children,
        }
    }

    /// A proof with every step kind.
    fn every_step() -> Proof {
        node(
            true,
            Step::Member {
                resource: obj("document:1"),
                relation: "view".into(),
            },
            vec![node(
                true,
                Step::Union,
                vec![
                    node(true, Step::Direct(rel("document:1#owner@user:a")), vec![]),
                    node(
                        true,
                        Step::Wildcard(rel("document:1#viewer@user:*")),
                        vec![],
                    ),
                    node(
                        true,
                        Step::SubjectSet(rel("document:1#viewer@group:g#member")),
                        vec![node(true, Step::SameSubject, vec![])],
                    ),
                    node(false, Step::NoMatch, vec![]),
                    node(false, Step::Intersection, vec![]),
                    node(false, Step::Exclusion, vec![]),
                    node(false, Step::Nil, vec![]),
                    node(
                        true,
                        Step::Arrow {
                            tupleset: "folder".into(),
                            computed: "view".into(),
                            mode: ArrowMode::Any,
                        },
                        vec![node(
                            true,
                            Step::ArrowHop(rel("document:1#folder@folder:f")),
                            vec![],
                        )],
                    ),
                    node(
                        false,
                        Step::Arrow {
                            tupleset: "parent".into(),
                            computed: "view".into(),
                            mode: ArrowMode::All,
                        },
                        vec![],
                    ),
                    node(
                        false,
                        Step::Cycle {
                            resource: obj("folder:f"),
                            relation: "view".into(),
                        },
                        vec![],
                    ),
                ],
            )],
        )
    }

    #[test]
    fn a_proof_from_the_wire_reads_as_the_engine_shows_it() {
        let e = every_step();
        let p = dhow_wire::proof_pb(&e);
        assert_eq!(proof(&p), e.to_string());
        assert!(proof(&p).starts_with("✓ document:1#view\n  ✓ union (+)\n    ✓ relationship"));
        assert!(proof(&p).contains("✗ parent.all(view)\n"));
    }

    #[test]
    fn a_malformed_proof_does_not_panic() {
        let p = pb::Proof {
            allowed: false,
            step: None,
            children: vec![],
        };
        assert_eq!(proof(&p), "(invalid proof.step: required)\n");
        assert!(proof_json(&p)["error"].is_string());
    }

    #[test]
    fn check_json_shape() {
        let v = check_json(false, "tok", None);
        assert_eq!(v.to_string(), r#"{"allowed":false,"token":"tok"}"#);
        let p = dhow_wire::proof_pb(&every_step());
        let v = check_json(true, "tok", Some(&p));
        assert_eq!(v["proof"]["step"], "document:1#view");
        assert_eq!(v["proof"]["children"][0]["step"], "union (+)");
        assert_eq!(v["proof"]["children"][0]["children"][0]["allowed"], true);
    }

    fn leaf(o: &str, r: &str, subjects: &[&str]) -> ExpandNode {
        ExpandNode {
            resource: obj(o),
            relation: r.into(),
            tree: ExpandTree::Leaf(subjects.iter().map(|s| parse_subject(s).unwrap()).collect()),
        }
    }

    #[test]
    fn expand_tree_text() {
        let tree = ExpandNode {
            resource: obj("document:1"),
            relation: "view".into(),
            tree: ExpandTree::Exclusion(
                Box::new(ExpandNode {
                    resource: obj("document:1"),
                    relation: "view".into(),
                    tree: ExpandTree::Union(vec![
                        leaf("document:1", "owner", &["user:alice", "group:eng#member"]),
                        leaf("folder:f", "viewer", &[]),
                    ]),
                }),
                Box::new(leaf("document:1", "banned", &["user:*"])),
            ),
        };
        assert_eq!(
            expand(&dhow_wire::expand_pb(&tree)),
            "document:1#view (exclusion -)\n\
             \x20 document:1#view (union +)\n\
             \x20   document:1#owner: user:alice, group:eng#member\n\
             \x20   folder:f#viewer: (no subjects)\n\
             \x20 except document:1#banned: user:*\n"
        );
    }

    #[test]
    fn found_subjects_and_changes() {
        let s = |t: &str| parse_subject(t).unwrap();
        assert_eq!(found_subject(&s("user:alice"), &[]), "user:alice");
        assert_eq!(
            found_subject(&s("user:*"), &[s("user:bob"), s("user:carol")]),
            "user:* - {user:bob, user:carol}"
        );
        let c = pb::RelationshipChange {
            operation: pb::relationship_change::Operation::Delete as i32,
            relationship: Some(dhow_wire::relationship_pb(&rel("document:1#viewer@user:a"))),
        };
        assert_eq!(change(&c), "DELETE document:1#viewer@user:a");
        let c = pb::RelationshipChange {
            operation: pb::relationship_change::Operation::Touch as i32,
            relationship: Some(dhow_wire::relationship_pb(&rel("document:1#viewer@user:a"))),
        };
        assert_eq!(change(&c), "TOUCH document:1#viewer@user:a");
    }
}
