//! Cycles in the data, checked against a reference: random small graphs full of cycles
//! (through subject sets, arrows, `.all`, intersections and exclusions) where Check,
//! LookupResources and LookupSubjects must give exactly what a naive evaluator gives. The
//! naive evaluator is the definition: re-entering a `resource#relation` already on the path
//! contributes nothing. For permissions whose cycles stay monotone that is also the least
//! fixpoint, which a second naive evaluator (Kleene iteration) computes.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use dhow_engine::{CheckRequest, Engine, Options};
use dhow_tuples::{parse_relationship, MemStore, ObjectRef, Relationship, Subject, WriteOp};
use proptest::prelude::*;

const SCHEMA: &str = r#"
definition user {}
definition node {
    relation direct: user | user:*
    relation link: node#member | node#view
    relation parent: node
    relation banned: user
    permission member = direct + link
    permission view = member + parent->view - banned
    permission both = member & parent->both
    permission every = direct + parent.all(every)
    permission odd = direct - parent->odd
    permission mixed = view + link - parent->odd
}
"#;

/// Permissions whose cycles are monotone: for them the answer is the least fixpoint.
const MONOTONE: [&str; 5] = ["member", "view", "both", "every", "mixed"];
const ALL: [&str; 7] = ["member", "view", "both", "every", "odd", "mixed", "link"];

/// The naive evaluator: the definition of the answer, exponential in general.
struct Naive<'a> {
    rels: &'a [Relationship],
}

impl Naive<'_> {
    fn targets<'b>(&'b self, node: &'b str, rel: &'b str) -> impl Iterator<Item = &'b Subject> {
        self.rels
            .iter()
            .filter(move |r| r.resource.object_id == node && r.relation == rel)
            .map(|r| &r.subject)
    }

    fn member(
        &self,
        node: &str,
        name: &str,
        subject: &Subject,
        path: &mut Vec<(String, String)>,
    ) -> bool {
        if subject.relation.as_deref() == Some(name)
            && subject.object.object_type == "node"
            && subject.object.object_id == node
        {
            return true;
        }
        let key = (node.to_string(), name.to_string());
        if path.contains(&key) {
            return false;
        }
        path.push(key);
        let v = self.body(node, name, subject, path);
        path.pop();
        v
    }

    fn relation(
        &self,
        node: &str,
        rel: &str,
        subject: &Subject,
        path: &mut Vec<(String, String)>,
    ) -> bool {
        let targets: Vec<Subject> = self.targets(node, rel).cloned().collect();
        targets.iter().any(|t| {
            t == subject
                || (t.is_wildcard()
                    && subject.relation.is_none()
                    && subject.object.object_type == t.object.object_type)
                || t.relation
                    .as_deref()
                    .is_some_and(|r| self.member(&t.object.object_id, r, subject, path))
        })
    }

    fn arrow_any(
        &self,
        node: &str,
        computed: &str,
        subject: &Subject,
        path: &mut Vec<(String, String)>,
    ) -> bool {
        let parents: Vec<String> = self
            .targets(node, "parent")
            .map(|s| s.object.object_id.clone())
            .collect();
        parents
            .iter()
            .any(|p| self.member(p, computed, subject, path))
    }

    fn body(
        &self,
        node: &str,
        name: &str,
        subject: &Subject,
        path: &mut Vec<(String, String)>,
    ) -> bool {
        match name {
            "direct" | "link" | "parent" | "banned" => self.relation(node, name, subject, path),
            "member" => {
                self.member(node, "direct", subject, path)
                    || self.member(node, "link", subject, path)
            }
            "view" => {
                (self.member(node, "member", subject, path)
                    || self.arrow_any(node, "view", subject, path))
                    && !self.member(node, "banned", subject, path)
            }
            "both" => {
                self.member(node, "member", subject, path)
                    && self.arrow_any(node, "both", subject, path)
            }
            "every" => {
                if self.member(node, "direct", subject, path) {
                    return true;
                }
                let parents: Vec<String> = self
                    .targets(node, "parent")
                    .map(|s| s.object.object_id.clone())
                    .collect();
                !parents.is_empty()
                    && parents
                        .iter()
                        .all(|p| self.member(p, "every", subject, path))
            }
            "odd" => {
                self.member(node, "direct", subject, path)
                    && !self.arrow_any(node, "odd", subject, path)
            }
            "mixed" => {
                (self.member(node, "view", subject, path)
                    || self.member(node, "link", subject, path))
                    && !self.arrow_any(node, "odd", subject, path)
            }
            _ => false,
        }
    }
}

/// Kleene iteration from all-false, for one subject: the least fixpoint of the monotone part
/// (`odd`, used by `mixed` only through its excluded side, is taken from the naive evaluator:
/// it does not depend on `mixed`).
fn least_fixpoint(
    rels: &[Relationship],
    nodes: &[String],
    subject: &Subject,
) -> HashSet<(String, String)> {
    let naive = Naive { rels };
    let names = [
        "direct", "link", "member", "view", "both", "every", "banned", "mixed",
    ];
    let mut t: HashSet<(String, String)> = HashSet::new();
    let odd: HashSet<String> = nodes
        .iter()
        .filter(|n| naive.member(n, "odd", subject, &mut Vec::new()))
        .cloned()
        .collect();
    loop {
        let get = |t: &HashSet<(String, String)>, n: &str, r: &str| {
            (subject.relation.as_deref() == Some(r) && subject.object.object_id == n)
                || t.contains(&(n.to_string(), r.to_string()))
        };
        let parents = |n: &str| -> Vec<String> {
            naive
                .targets(n, "parent")
                .map(|s| s.object.object_id.clone())
                .collect()
        };
        let mut next = HashSet::new();
        for n in nodes {
            for &r in &names {
                let v = match r {
                    "direct" | "banned" => naive.targets(n, r).any(|s| {
                        s == subject
                            || (s.is_wildcard()
                                && subject.relation.is_none()
                                && subject.object.object_type == "user")
                    }),
                    "link" => naive.targets(n, r).any(|s| {
                        s == subject
                            || get(&t, &s.object.object_id, s.relation.as_deref().unwrap_or(""))
                    }),
                    "member" => get(&t, n, "direct") || get(&t, n, "link"),
                    "view" => {
                        (get(&t, n, "member") || parents(n).iter().any(|p| get(&t, p, "view")))
                            && !get(&t, n, "banned")
                    }
                    "both" => get(&t, n, "member") && parents(n).iter().any(|p| get(&t, p, "both")),
                    "every" => {
                        get(&t, n, "direct") || {
                            let ps = parents(n);
                            !ps.is_empty() && ps.iter().all(|p| get(&t, p, "every"))
                        }
                    }
                    "mixed" => {
                        (get(&t, n, "view") || get(&t, n, "link"))
                            && !parents(n).iter().any(|p| odd.contains(p))
                    }
                    _ => false,
                };
                if v {
                    next.insert((n.clone(), r.to_string()));
                }
            }
        }
        if next == t {
            return t;
        }
        t = next;
    }
}

fn arb_graph() -> impl Strategy<Value = (usize, Vec<String>)> {
    (2usize..6).prop_flat_map(|n| {
        let node = 0..n;
        let rel = prop_oneof![
            (node.clone(), 0usize..3).prop_map(|(a, u)| format!("node:n{a}#direct@user:u{u}")),
            node.clone()
                .prop_map(|a| format!("node:n{a}#direct@user:*")),
            (node.clone(), node.clone(), prop::bool::ANY).prop_map(|(a, b, v)| {
                format!(
                    "node:n{a}#link@node:n{b}#{}",
                    if v { "view" } else { "member" }
                )
            }),
            (node.clone(), node.clone()).prop_map(|(a, b)| format!("node:n{a}#parent@node:n{b}")),
            (node.clone(), node.clone()).prop_map(|(a, b)| format!("node:n{a}#parent@node:n{b}")),
            (node.clone(), 0usize..3).prop_map(|(a, u)| format!("node:n{a}#banned@user:u{u}")),
        ];
        (Just(n), prop::collection::vec(rel, 0..16))
    })
}

fn load(rels: &[String]) -> (Engine, MemStore, Vec<Relationship>) {
    let engine = Engine::new(Arc::new(dhow_schema::compile(SCHEMA).expect("schema")));
    let rels: BTreeSet<String> = rels.iter().cloned().collect();
    let rels: Vec<Relationship> = rels
        .iter()
        .map(|r| parse_relationship(r).expect("relationship"))
        .collect();
    let mut store = MemStore::new();
    let ops: Vec<WriteOp> = rels
        .iter()
        .map(|r| {
            engine.validate_relationship(r).expect("valid");
            WriteOp::Touch(r.clone())
        })
        .collect();
    store.write(&ops).expect("write");
    (engine, store, rels)
}

fn subjects(n: usize) -> Vec<Subject> {
    let mut out: Vec<Subject> = (0..4)
        .map(|u| Subject::object("user", format!("u{u}")))
        .collect();
    for a in 0..n {
        out.push(Subject::set("node", format!("n{a}"), "member"));
        out.push(Subject::set("node", format!("n{a}"), "view"));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_naive_evaluator((n, rels) in arb_graph()) {
        let (engine, store, rels) = load(&rels);
        let reader = store.latest();
        let naive = Naive { rels: &rels };
        let nodes: Vec<String> = (0..n).map(|a| format!("n{a}")).collect();
        let subjects = subjects(n);
        // CheckBulk over everything: one memo per subject, reused across the queries.
        let mut reqs = Vec::new();
        for node in &nodes {
            for perm in ALL {
                for s in &subjects {
                    reqs.push(CheckRequest::new(ObjectRef::new("node", node.clone()), perm, s.clone()));
                }
            }
        }
        let bulk = engine.check_bulk(&reader, &reqs, Options::now());
        for (req, got) in reqs.iter().zip(bulk) {
            let want = naive.member(&req.resource.object_id, &req.permission, &req.subject, &mut Vec::new());
            let got = got.expect("check_bulk").allowed;
            prop_assert_eq!(got, want, "check_bulk {}#{}@{} over {:?}", req.resource, req.permission, req.subject, rels.iter().map(|r| r.to_string()).collect::<Vec<_>>());
            let single = engine.check(&reader, req, Options::now()).expect("check").allowed;
            prop_assert_eq!(single, want, "check {}#{}@{}", req.resource, req.permission, req.subject);
        }
        for perm in ALL {
            for s in &subjects {
                let found = engine.lookup_resources(&reader, "node", perm, s, Options::now()).expect("lookup_resources");
                let want: Vec<String> = nodes.iter().filter(|node| naive.member(node, perm, s, &mut Vec::new())).cloned().collect();
                prop_assert_eq!(found, want, "lookup_resources node#{}@{}", perm, s);
            }
            for node in &nodes {
                let resource = ObjectRef::new("node", node.clone());
                for (t, r) in [("user", None), ("node", Some("member")), ("node", Some("view"))] {
                    let set = engine.lookup_subject_set(&reader, &resource, perm, t, r, Options::now()).expect("lookup_subjects");
                    for s in subjects.iter().filter(|s| s.object.object_type == t && s.relation.as_deref() == r) {
                        let want = naive.member(node, perm, s, &mut Vec::new());
                        prop_assert_eq!(set.contains(s), want, "lookup_subjects {}#{} for {}", resource, perm, s);
                    }
                }
            }
        }
        // Where cycles are monotone, the answer is the least fixpoint.
        for s in &subjects {
            let lfp = least_fixpoint(&rels, &nodes, s);
            for node in &nodes {
                for perm in MONOTONE {
                    let itself = s.relation.as_deref() == Some(perm) && &s.object.object_id == node;
                    let want = itself || lfp.contains(&(node.clone(), perm.to_string()));
                    let got = naive.member(node, perm, s, &mut Vec::new());
                    prop_assert_eq!(got, want, "least fixpoint {}#{}@{}", node, perm, s);
                }
            }
        }
    }
}
