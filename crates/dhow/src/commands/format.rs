//! Output formatting of the client commands: proof trees (decoded from the wire and shown as
//! `dhow_engine::Proof` displays them, the one renderer of proofs), expand trees, lookup
//! results, three-valued answers, watch changes and the JSON of a check.

use std::fmt::Write as _;

use dhow_engine::{ExpandNode, ExpandTree, Permissionship, Proof};
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
    let mut v = serde_json::json!({
        "allowed": p.allowed,
        "step": p.step.to_string(),
        "children": p.children.iter().map(proof_json_of).collect::<Vec<_>>(),
    });
    if !p.missing.is_empty() {
        v["missing"] = serde_json::json!(p.missing);
    }
    v
}

/// A proof as JSON: `{allowed, step, children, missing?}` with `step` the node's text and
/// `missing` the parameters a conditional node waits for.
pub fn proof_json(p: &pb::Proof) -> serde_json::Value {
    match dhow_wire::proof(p, "proof") {
        Ok(p) => proof_json_of(&p),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// `true`, `false`, or `conditional (missing a, b)`.
pub fn permissionship(p: &Permissionship) -> String {
    match p {
        Permissionship::Allowed => "true".to_string(),
        Permissionship::Denied => "false".to_string(),
        Permissionship::Conditional { missing } => {
            format!("conditional (missing {})", missing.join(", "))
        }
    }
}

/// A lookup result: `what` alone when allowed, `what (conditional, missing a, b)` otherwise.
pub fn found(what: &str, p: &Permissionship) -> String {
    match p {
        Permissionship::Conditional { missing } => {
            format!("{what} (conditional, missing {})", missing.join(", "))
        }
        _ => what.to_string(),
    }
}

/// The JSON of a check: `{"permissionship": "allowed" | "denied" | "conditional",
/// "allowed": bool, "missing": [...], "token": "...", "proof": {...}}` (`allowed` is true only
/// when allowed; `missing` only when conditional; `proof` only when the response has one).
pub fn check_json(p: &Permissionship, token: &str, proof: Option<&pb::Proof>) -> serde_json::Value {
    let name = match p {
        Permissionship::Allowed => "allowed",
        Permissionship::Denied => "denied",
        Permissionship::Conditional { .. } => "conditional",
    };
    let mut v = serde_json::json!({
        "permissionship": name,
        "allowed": p.is_allowed(),
        "token": token,
    });
    if p.is_conditional() {
        v["missing"] = serde_json::json!(p.missing());
    }
    if let Some(proof) = proof {
        v["proof"] = proof_json(proof);
    }
    v
}

/// An expand tree, one node per line, indented two spaces per level:
/// `resource#relation: subject, ...` for stored subjects (a caveated one as in the
/// relationship text form, `user:tom[on_network:{...}]`), `resource#relation (union +)` etc.
/// for rewrites; the subtracted child of an exclusion is prefixed `except `; an arrow's child
/// reached through a caveated relationship shows its caveat after its name,
/// `folder:f#view[on_network]`.
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
    let name = match &node.caveat {
        None => format!("{}#{}", node.resource, node.relation),
        Some(c) => match &c.context {
            Some(ctx) => format!("{}#{}[{}:{ctx}]", node.resource, node.relation, c.name),
            None => format!("{}#{}[{}]", node.resource, node.relation, c.name),
        },
    };
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
                let s: Vec<String> = subjects.iter().map(ToString::to_string).collect();
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
    use dhow_engine::{LeafSubject, Step};
    use dhow_schema::ArrowMode;
    use dhow_tuples::{parse_object, parse_relationship, parse_subject, CaveatRef, ObjectRef};

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
            missing: vec![],
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
            missing_required_context: vec![],
        };
        assert_eq!(proof(&p), "(invalid proof.step: required)\n");
        assert!(proof_json(&p)["error"].is_string());
    }

    #[test]
    fn check_json_shape() {
        let v = check_json(&Permissionship::Denied, "tok", None);
        assert_eq!(
            v.to_string(),
            r#"{"allowed":false,"permissionship":"denied","token":"tok"}"#
        );
        let v = check_json(
            &Permissionship::Conditional {
                missing: vec!["a".into(), "b".into()],
            },
            "tok",
            None,
        );
        assert_eq!(
            v.to_string(),
            r#"{"allowed":false,"missing":["a","b"],"permissionship":"conditional","token":"tok"}"#
        );
        let p = dhow_wire::proof_pb(&every_step());
        let v = check_json(&Permissionship::Allowed, "tok", Some(&p));
        assert_eq!(v["permissionship"], "allowed");
        assert_eq!(v["proof"]["step"], "document:1#view");
        assert_eq!(v["proof"]["children"][0]["step"], "union (+)");
        assert_eq!(v["proof"]["children"][0]["children"][0]["allowed"], true);
    }

    fn leaf(o: &str, r: &str, subjects: &[&str]) -> ExpandNode {
        ExpandNode {
            resource: obj(o),
            relation: r.into(),
            tree: ExpandTree::Leaf(
                subjects
                    .iter()
                    .map(|s| LeafSubject::plain(parse_subject(s).unwrap()))
                    .collect(),
            ),
            caveat: None,
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
                    caveat: None,
                }),
                Box::new(leaf("document:1", "banned", &["user:*"])),
            ),
            caveat: None,
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
    fn caveats_in_expand_trees_and_answers() {
        let mut tom = leaf("folder:f", "viewer", &["user:alice"]);
        if let ExpandTree::Leaf(l) = &mut tom.tree {
            l.push(LeafSubject {
                subject: parse_subject("user:tom").unwrap(),
                caveat: Some(CaveatRef {
                    name: "on_network".into(),
                    context: Some("{\"cidr\":\"10.0.0.0/8\"}".into()),
                }),
            });
        }
        tom.caveat = Some(CaveatRef {
            name: "later".into(),
            context: None,
        });
        let tree = ExpandNode {
            resource: obj("document:1"),
            relation: "view".into(),
            tree: ExpandTree::Union(vec![tom]),
            caveat: None,
        };
        assert_eq!(
            expand(&dhow_wire::expand_pb(&tree)),
            "document:1#view (union +)\n\
             \x20 folder:f#viewer[later]: user:alice, user:tom[on_network:{\"cidr\":\"10.0.0.0/8\"}]\n"
        );
        let c = Permissionship::Conditional {
            missing: vec!["ip".into(), "level".into()],
        };
        assert_eq!(permissionship(&Permissionship::Allowed), "true");
        assert_eq!(permissionship(&Permissionship::Denied), "false");
        assert_eq!(permissionship(&c), "conditional (missing ip, level)");
        assert_eq!(found("doc1", &Permissionship::Allowed), "doc1");
        assert_eq!(found("doc2", &c), "doc2 (conditional, missing ip, level)");
        // A conditional proof node carries its missing parameters in JSON.
        let p = Proof {
            step: Step::Caveat {
                name: "on_network".into(),
                context: dhow_engine::CaveatContext::new(),
            },
            allowed: false,
            missing: vec!["ip".into()],
            children: vec![],
        };
        let v = proof_json(&dhow_wire::proof_pb(&p));
        assert_eq!(v["missing"][0], "ip");
        assert!(proof(&dhow_wire::proof_pb(&p)).starts_with("? "));
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
