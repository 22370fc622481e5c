//! Cycles in the data, checked against a reference: random small graphs full of cycles
//! (through subject sets, arrows, `.all`, intersections and exclusions) where Check,
//! LookupResources and LookupSubjects must give exactly what a naive evaluator gives. The
//! naive evaluator is the definition: re-entering a `resource#relation` already on the path
//! contributes nothing. For permissions whose cycles stay monotone that is also the least
//! fixpoint, which a second naive evaluator (Kleene iteration) computes.
//!
//! Relationships may carry one of two caveats (`ca(a bool)`, `cb(b bool)`), and each case is
//! evaluated with a context that decides none, one or both: answers are three-valued
//! (allowed, denied, conditional with the missing parameters), and the reference is the naive
//! evaluator in Kleene's logic. Check, CheckBulk, LookupResources and LookupSubjects must
//! agree exactly; with the naive evaluator on the answer, and on the missing parameters up to
//! the ones a cycle through caveats adds (see `agrees`).

use std::collections::BTreeSet;
use std::sync::Arc;

use dhow_engine::{CaveatContext, CheckRequest, Engine, Options, Permissionship};
use dhow_tuples::{
    parse_relationship, Error, MemStore, ObjectRef, Relationship, RelationshipFilter, Revision,
    SnapshotReader, Subject, WriteOp,
};
use proptest::prelude::*;

const SCHEMA: &str = r#"
caveat cav_a(a bool) { a }
caveat cav_b(b bool) { b }
definition user {}
definition node {
    relation direct: user | user:* | user with cav_a | user with cav_b | user:* with cav_a | user:* with cav_b
    relation link: node#member | node#view | node#member with cav_a | node#view with cav_b
    relation parent: node | node with cav_a | node with cav_b
    relation banned: user | user with cav_a | user with cav_b
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

/// A three-valued answer: false, unknown (missing these parameters), true.
#[derive(Debug, Clone, PartialEq, Eq)]
enum V {
    F,
    U(BTreeSet<String>),
    T,
}

impl V {
    fn or(self, o: V) -> V {
        match (self, o) {
            (V::T, _) | (_, V::T) => V::T,
            (V::U(mut a), V::U(b)) => {
                a.extend(b);
                V::U(a)
            }
            (V::U(a), V::F) | (V::F, V::U(a)) => V::U(a),
            (V::F, V::F) => V::F,
        }
    }

    fn not(self) -> V {
        match self {
            V::T => V::F,
            V::F => V::T,
            u => u,
        }
    }

    fn and(self, o: V) -> V {
        self.not().or(o.not()).not()
    }

    fn any(items: impl IntoIterator<Item = V>) -> V {
        items.into_iter().fold(V::F, V::or)
    }

    fn all(items: impl IntoIterator<Item = V>) -> V {
        items.into_iter().fold(V::T, V::and)
    }

    /// Only whether it is allowed, denied or conditional.
    fn level(&self) -> u8 {
        match self {
            V::F => 0,
            V::U(_) => 1,
            V::T => 2,
        }
    }
}

/// The context of a case: each of `a` and `b` set, or missing.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    a: Option<bool>,
    b: Option<bool>,
}

impl Ctx {
    fn json(&self) -> CaveatContext {
        let mut fields = Vec::new();
        if let Some(a) = self.a {
            fields.push(format!("\"a\": {a}"));
        }
        if let Some(b) = self.b {
            fields.push(format!("\"b\": {b}"));
        }
        CaveatContext::from_json(&format!("{{{}}}", fields.join(", "))).expect("context")
    }

    /// The value of a relationship's caveat.
    fn caveat(&self, r: &Relationship) -> V {
        let (value, name) = match r.caveat.as_ref().map(|c| c.name.as_str()) {
            None => return V::T,
            Some("cav_a") => (self.a, "a"),
            Some(_) => (self.b, "b"),
        };
        match value {
            Some(true) => V::T,
            Some(false) => V::F,
            None => V::U(BTreeSet::from([name.to_string()])),
        }
    }
}

/// The naive evaluator: the definition of the answer, exponential in general.
struct Naive<'a> {
    rels: &'a [Relationship],
    ctx: Ctx,
}

impl Naive<'_> {
    fn targets<'b>(
        &'b self,
        node: &'b str,
        rel: &'b str,
    ) -> impl Iterator<Item = &'b Relationship> {
        self.rels
            .iter()
            .filter(move |r| r.resource.object_id == node && r.relation == rel)
    }

    fn member(
        &self,
        node: &str,
        name: &str,
        subject: &Subject,
        path: &mut Vec<(String, String)>,
    ) -> V {
        if subject.relation.as_deref() == Some(name)
            && subject.object.object_type == "node"
            && subject.object.object_id == node
        {
            return V::T;
        }
        let key = (node.to_string(), name.to_string());
        if path.contains(&key) {
            return V::F;
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
    ) -> V {
        let targets: Vec<Relationship> = self.targets(node, rel).cloned().collect();
        V::any(targets.iter().map(|r| {
            let t = &r.subject;
            let reached = if t == subject
                || (t.is_wildcard()
                    && subject.relation.is_none()
                    && subject.object.object_type == t.object.object_type)
            {
                V::T
            } else if let Some(tr) = t.relation.as_deref() {
                self.member(&t.object.object_id, tr, subject, path)
            } else {
                V::F
            };
            self.ctx.caveat(r).and(reached)
        }))
    }

    /// The hops of `node`'s parent arrow to `computed`: caveat ∧ membership, one per parent.
    fn hops(
        &self,
        node: &str,
        computed: &str,
        subject: &Subject,
        path: &mut Vec<(String, String)>,
    ) -> Vec<V> {
        let parents: Vec<Relationship> = self.targets(node, "parent").cloned().collect();
        parents
            .iter()
            .map(|r| {
                self.ctx.caveat(r).and(self.member(
                    &r.subject.object.object_id,
                    computed,
                    subject,
                    path,
                ))
            })
            .collect()
    }

    fn body(
        &self,
        node: &str,
        name: &str,
        subject: &Subject,
        path: &mut Vec<(String, String)>,
    ) -> V {
        match name {
            "direct" | "link" | "parent" | "banned" => self.relation(node, name, subject, path),
            "member" => self
                .member(node, "direct", subject, path)
                .or(self.member(node, "link", subject, path)),
            "view" => {
                let base = self
                    .member(node, "member", subject, path)
                    .or(V::any(self.hops(node, "view", subject, path)));
                base.and(self.member(node, "banned", subject, path).not())
            }
            "both" => self
                .member(node, "member", subject, path)
                .and(V::any(self.hops(node, "both", subject, path))),
            "every" => {
                let direct = self.member(node, "direct", subject, path);
                let hops = self.hops(node, "every", subject, path);
                let all = if hops.is_empty() { V::F } else { V::all(hops) };
                direct.or(all)
            }
            "odd" => self
                .member(node, "direct", subject, path)
                .and(V::any(self.hops(node, "odd", subject, path)).not()),
            "mixed" => {
                let base = self
                    .member(node, "view", subject, path)
                    .or(self.member(node, "link", subject, path));
                base.and(V::any(self.hops(node, "odd", subject, path)).not())
            }
            _ => V::F,
        }
    }
}

/// Kleene iteration from all-false, for one subject: the least fixpoint of the monotone part
/// (`odd`, used by `mixed` only through its excluded side, is taken from the naive evaluator:
/// it does not depend on `mixed`). Three-valued; compared by level (allowed, conditional,
/// denied), and settled by level: a level depends only on the levels it is made of, so once
/// no level changes none will, while the sets of missing parameters can go round a cycle for
/// ever (a `view` -> `member` -> `link` -> `view` loop passing `{a, b}` and `{b}` along,
/// after a parent turned allowed and stopped adding `a`).
fn least_fixpoint(
    rels: &[Relationship],
    ctx: Ctx,
    nodes: &[String],
    subject: &Subject,
) -> std::collections::HashMap<(String, String), V> {
    use std::collections::HashMap;
    let naive = Naive { rels, ctx };
    let names = [
        "direct", "link", "member", "view", "both", "every", "banned", "mixed",
    ];
    let odd: HashMap<String, V> = nodes
        .iter()
        .map(|n| (n.clone(), naive.member(n, "odd", subject, &mut Vec::new())))
        .collect();
    let mut t: HashMap<(String, String), V> = HashMap::new();
    for _ in 0..1000 {
        let get = |t: &HashMap<(String, String), V>, n: &str, r: &str| {
            if subject.relation.as_deref() == Some(r) && subject.object.object_id == n {
                V::T
            } else {
                t.get(&(n.to_string(), r.to_string()))
                    .cloned()
                    .unwrap_or(V::F)
            }
        };
        let hops = |t: &HashMap<(String, String), V>, n: &str, r: &str| -> Vec<V> {
            naive
                .targets(n, "parent")
                .map(|p| ctx.caveat(p).and(get(t, &p.subject.object.object_id, r)))
                .collect()
        };
        let mut next = HashMap::new();
        for n in nodes {
            for &r in &names {
                let v = match r {
                    "direct" | "banned" => V::any(naive.targets(n, r).map(|rel| {
                        let s = &rel.subject;
                        let hit = s == subject
                            || (s.is_wildcard()
                                && subject.relation.is_none()
                                && subject.object.object_type == "user");
                        if hit {
                            ctx.caveat(rel)
                        } else {
                            V::F
                        }
                    })),
                    "link" => V::any(naive.targets(n, r).map(|rel| {
                        let s = &rel.subject;
                        let reached = if s == subject {
                            V::T
                        } else {
                            get(&t, &s.object.object_id, s.relation.as_deref().unwrap_or(""))
                        };
                        ctx.caveat(rel).and(reached)
                    })),
                    "member" => get(&t, n, "direct").or(get(&t, n, "link")),
                    "view" => get(&t, n, "member")
                        .or(V::any(hops(&t, n, "view")))
                        .and(get(&t, n, "banned").not()),
                    "both" => get(&t, n, "member").and(V::any(hops(&t, n, "both"))),
                    "every" => {
                        let hs = hops(&t, n, "every");
                        let all = if hs.is_empty() { V::F } else { V::all(hs) };
                        get(&t, n, "direct").or(all)
                    }
                    "mixed" => {
                        let odd_parent = V::any(naive.targets(n, "parent").map(|p| {
                            ctx.caveat(p).and(
                                odd.get(&p.subject.object.object_id)
                                    .cloned()
                                    .unwrap_or(V::F),
                            )
                        }));
                        get(&t, n, "view")
                            .or(get(&t, n, "link"))
                            .and(odd_parent.not())
                    }
                    _ => V::F,
                };
                if v != V::F {
                    next.insert((n.clone(), r.to_string()), v);
                }
            }
        }
        let levels = |m: &HashMap<(String, String), V>| -> HashMap<(String, String), u8> {
            m.iter().map(|(k, v)| (k.clone(), v.level())).collect()
        };
        if levels(&next) == levels(&t) {
            return next;
        }
        t = next;
    }
    panic!("Kleene iteration did not settle");
}

fn arb_graph() -> impl Strategy<Value = (usize, Vec<String>)> {
    (2usize..6).prop_flat_map(|n| {
        let node = 0..n;
        let plain = prop_oneof![
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
        // A third of the relationships carry a caveat (the schema admits both everywhere,
        // except `cb` on `link` to `#member` and `ca` on `link` to `#view`).
        let rel = (plain, 0usize..6).prop_map(|(r, c)| {
            let caveat = match c {
                0 if !r.contains("#view") => "[cav_a]",
                1 if !r.contains("#link@") || r.ends_with("#view") => "[cav_b]",
                _ => "",
            };
            format!("{r}{caveat}")
        });
        (Just(n), prop::collection::vec(rel, 0..16))
    })
}

/// The engine agrees with the naive evaluator: the same answer (allowed, denied or
/// conditional), and a conditional one misses at least the parameters the naive one misses.
/// In a cycle through caveats it may list more: the fixpoint keeps the parameters of every
/// caveat on the cycle (those of the residual expression, as SpiceDB's unfolding would name
/// them), where cutting the cycle at the first repetition drops some.
fn agrees(got: &Permissionship, want: &V) -> bool {
    match (got, want) {
        (Permissionship::Allowed, V::T) | (Permissionship::Denied, V::F) => true,
        (Permissionship::Conditional { missing }, V::U(w)) => w.iter().all(|m| missing.contains(m)),
        _ => false,
    }
}

fn arb_ctx() -> impl Strategy<Value = Ctx> {
    let v = prop_oneof![Just(None), Just(Some(true)), Just(Some(false))];
    (v.clone(), v).prop_map(|(a, b)| Ctx { a, b })
}

fn load(rels: &[String]) -> (Engine, MemStore, Vec<Relationship>) {
    let engine = Engine::new(Arc::new(dhow_schema::compile(SCHEMA).expect("schema")));
    // One relationship per key (the last caveat written wins, as in the store).
    let mut by_key = std::collections::BTreeMap::new();
    for r in rels {
        let r = parse_relationship(r).expect("relationship");
        by_key.insert(r.to_string().split('[').next().unwrap_or("").to_string(), r);
    }
    let rels: Vec<Relationship> = by_key.into_values().collect();
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
    fn engine_agrees_with_the_naive_evaluator((n, rels) in arb_graph(), ctx in arb_ctx()) {
        let (engine, store, rels) = load(&rels);
        let reader = store.latest();
        let naive = Naive { rels: &rels, ctx };
        let opts = Options::now().with_context(ctx.json());
        let shown = || rels.iter().map(|r| r.to_string()).collect::<Vec<_>>();
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
        let bulk = engine.check_bulk(&reader, &reqs, opts.clone());
        for (req, got) in reqs.iter().zip(bulk) {
            let want = naive.member(&req.resource.object_id, &req.permission, &req.subject, &mut Vec::new());
            let got = got.expect("check_bulk").permissionship;
            prop_assert!(agrees(&got, &want), "check_bulk {}#{}@{} with {:?} over {:?}: {:?}, naive {:?}", req.resource, req.permission, req.subject, ctx, shown(), got, want);
            let single = engine.check(&reader, req, opts.clone()).expect("check").permissionship;
            prop_assert_eq!(&single, &got, "check {}#{}@{} with {:?} over {:?}", req.resource, req.permission, req.subject, ctx, shown());
            let found = engine
                .lookup_found_resources(&reader, "node", &req.permission, &req.subject, opts.clone())
                .expect("lookup_resources")
                .into_iter()
                .find(|f| f.id == req.resource.object_id)
                .map_or(Permissionship::Denied, |f| f.permissionship);
            prop_assert_eq!(&found, &got, "lookup_resources {}#{}@{} with {:?} over {:?}", req.resource, req.permission, req.subject, ctx, shown());
            if let Some(t) = Some(req.subject.object.object_type.as_str()) {
                let set = engine
                    .lookup_subject_set(&reader, &req.resource, &req.permission, t, req.subject.relation.as_deref(), opts.clone())
                    .expect("lookup_subjects");
                prop_assert_eq!(set.membership(&req.subject), got, "lookup_subjects {}#{}@{} with {:?} over {:?}", req.resource, req.permission, req.subject, ctx, shown());
            }
        }
        // A subject index that also lists keys not alive at the revision (RocksDB's keeps
        // a deleted key until garbage collection): the same lookups.
        let ghost = Ghost { inner: &reader, nodes: &nodes };
        for perm in ALL {
            for s in &subjects {
                let want = engine.lookup_found_resources(&reader, "node", perm, s, opts.clone()).expect("lookup_resources");
                let got = engine.lookup_found_resources(&ghost, "node", perm, s, opts.clone()).expect("lookup_resources");
                prop_assert_eq!(got, want, "lookup_resources node#{}@{} over a subject index with dead keys, {:?} over {:?}", perm, s, ctx, shown());
            }
        }
        // Where cycles are monotone, the answer is the least fixpoint.
        for s in &subjects {
            let lfp = least_fixpoint(&rels, ctx, &nodes, s);
            for node in &nodes {
                for perm in MONOTONE {
                    let itself = s.relation.as_deref() == Some(perm) && &s.object.object_id == node;
                    let want = if itself { V::T } else { lfp.get(&(node.clone(), perm.to_string())).cloned().unwrap_or(V::F) };
                    let got = naive.member(node, perm, s, &mut Vec::new());
                    prop_assert_eq!(got.level(), want.level(), "least fixpoint {}#{}@{} with {:?}: {:?} vs {:?}", node, perm, s, ctx, got, want);
                }
            }
        }
    }
}

/// A reader whose subject index lists, beside the live keys, a dead key from every node to
/// the subject on every relation (as a store that keeps index entries of deleted
/// relationships until garbage collection): lookups must not take them for relationships.
struct Ghost<'a, R> {
    inner: &'a R,
    nodes: &'a [String],
}

impl<R: SnapshotReader> SnapshotReader for Ghost<'_, R> {
    fn revision(&self) -> Revision {
        self.inner.revision()
    }
    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, Error> {
        self.inner.by_resource(resource, relation)
    }
    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, Error> {
        self.inner.find(resource, relation, subject)
    }
    fn by_subject_object(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error> {
        self.inner.by_subject_object(subject)
    }
    fn by_subject_keys(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error> {
        let mut keys = self.inner.by_subject_keys(subject)?;
        for n in self.nodes {
            for rel in ["direct", "link", "parent", "banned"] {
                for srel in [None, Some("member"), Some("view")] {
                    let s = match srel {
                        None => {
                            Subject::object(subject.object_type.clone(), subject.object_id.clone())
                        }
                        Some(r) => {
                            Subject::set(subject.object_type.clone(), subject.object_id.clone(), r)
                        }
                    };
                    keys.push(Relationship::new(ObjectRef::new("node", n.clone()), rel, s));
                }
            }
        }
        Ok(keys)
    }
    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, Error> {
        self.inner.read(filter, after, limit)
    }
}
