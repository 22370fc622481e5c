//! The delegated check against the rule of docs/agents.md, evaluated by a small reference in
//! this file: random relationships (with caveats, expirations, cycles of folders and of
//! agents delegating to each other) and random chains (too long, repeated, the principal as
//! an actor, or valid), each evaluated with a context that decides the caveat, or not. The
//! reference has its own naive evaluator of plain checks (the definition: cut a cycle at the
//! first repetition; the schema's cycles are monotone, so that is the least fixpoint) and
//! composes the rule from it. The engine's Check (with and without proofs), CheckBulk and
//! LookupResources with the chain must all give the reference's answer; the lookup must be
//! exactly the set of resources for which the delegated check is not denied.

use std::collections::BTreeSet;
use std::sync::Arc;

use dhow_engine::{
    CaveatContext, ChainLink, CheckRequest, DelegatedCheck, Engine, Error, Options, Permissionship,
};
use dhow_schema::{AllowedKind, ArrowMode, Member, Rewrite, Schema};
use dhow_tuples::{
    parse_relationship, MemStore, ObjectRef, Relationship, Subject, Timestamp, WriteOp,
};
use proptest::prelude::*;

const SCHEMA: &str = r#"
use expiration
caveat cav_a(a bool) { a }
definition user {
    relation delegate: agent | agent with cav_a | agent with expiration
}
definition agent {
    relation delegator: user | agent | user with cav_a | agent with expiration
    relation reader_for: user | agent
    relation delegate: agent
    permission view = delegator + reader_for
    permission edit = delegator
}
definition folder {
    relation parent: folder
    relation viewer: user | user#delegate | agent#delegate | user with cav_a
    relation editor: user | user#delegate
    permission view = viewer + editor + parent->view
    permission edit = editor + parent->edit
}
definition document {
    relation folder: folder
    relation owner: user
    relation viewer: user | user#delegate | user:*
    relation banned: user
    permission view = owner + viewer + folder->view - banned
    permission edit = owner + folder->edit - banned
}
"#;

const NOW: &str = "2030-01-01T00:00:00Z";

fn ids(t: &str) -> &'static [&'static str] {
    match t {
        "user" => &["u0", "u1"],
        "agent" => &["a0", "a1", "a2"],
        "folder" => &["f0", "f1"],
        _ => &["d0", "d1"],
    }
}

/// Every relationship the schema allows over the ids above, in each allowed form (with its
/// caveat, or expiring before or after `NOW`).
fn candidates(schema: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for def in schema.definitions.values() {
        for rel in def.relations.values() {
            for a in &rel.allowed {
                let subjects: Vec<String> = match &a.kind {
                    AllowedKind::Object => ids(&a.type_name)
                        .iter()
                        .map(|i| format!("{}:{i}", a.type_name))
                        .collect(),
                    AllowedKind::Wildcard => vec![format!("{}:*", a.type_name)],
                    AllowedKind::SubjectSet(r) => ids(&a.type_name)
                        .iter()
                        .map(|i| format!("{}:{i}#{r}", a.type_name))
                        .collect(),
                };
                let suffixes: Vec<String> = if let Some(c) = &a.caveat {
                    vec![format!("[{c}]")]
                } else if a.expiration {
                    vec![
                        "[expiration:2029-01-01T00:00:00Z]".into(),
                        "[expiration:2031-01-01T00:00:00Z]".into(),
                    ]
                } else {
                    vec![String::new()]
                };
                for id in ids(&def.name) {
                    for s in &subjects {
                        for suffix in &suffixes {
                            out.push(format!("{}:{id}#{}@{s}{suffix}", def.name, rel.name));
                        }
                    }
                }
            }
        }
    }
    out
}

/// A three-valued answer: false, unknown (missing `a`), true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum V {
    F,
    U,
    T,
}

impl V {
    fn or(self, o: V) -> V {
        match (self, o) {
            (V::T, _) | (_, V::T) => V::T,
            (V::U, _) | (_, V::U) => V::U,
            _ => V::F,
        }
    }
    fn not(self) -> V {
        match self {
            V::T => V::F,
            V::F => V::T,
            V::U => V::U,
        }
    }
    fn and(self, o: V) -> V {
        self.not().or(o.not()).not()
    }
    fn of(p: &Permissionship) -> V {
        match p {
            Permissionship::Allowed => V::T,
            Permissionship::Denied => V::F,
            Permissionship::Conditional { missing } => {
                assert_eq!(missing, &["a".to_string()]);
                V::U
            }
        }
    }
}

/// The reference: plain checks by naive evaluation, and the delegation rule on top.
struct Reference<'a> {
    schema: &'a Schema,
    rels: Vec<Relationship>,
    a: Option<bool>,
}

impl Reference<'_> {
    fn caveat(&self, r: &Relationship) -> V {
        match (&r.caveat, self.a) {
            (None, _) => V::T,
            (Some(_), Some(true)) => V::T,
            (Some(_), Some(false)) => V::F,
            (Some(_), None) => V::U,
        }
    }

    /// Is `subject` in `res#rel`? Re-entering a node on the path contributes nothing.
    fn member(
        &self,
        res: &ObjectRef,
        rel: &str,
        subject: &Subject,
        path: &mut Vec<(ObjectRef, String)>,
    ) -> V {
        if subject.relation.as_deref() == Some(rel) && &subject.object == res {
            return V::T;
        }
        let key = (res.clone(), rel.to_string());
        if path.contains(&key) {
            return V::F;
        }
        path.push(key);
        let v = match self.schema.member(&res.object_type, rel).expect("member") {
            Member::Relation(_) => {
                let mut v = V::F;
                for r in self
                    .rels
                    .iter()
                    .filter(|r| &r.resource == res && r.relation == rel)
                {
                    // The subject itself, or a wildcard of its type (for an object).
                    let direct = &r.subject == subject
                        || (r.subject.is_wildcard()
                            && subject.relation.is_none()
                            && !subject.is_wildcard()
                            && r.subject.object.object_type == subject.object.object_type);
                    let hit = if direct {
                        self.caveat(r)
                    } else if let Some(sr) = &r.subject.relation {
                        self.caveat(r)
                            .and(self.member(&r.subject.object, sr, subject, path))
                    } else {
                        V::F
                    };
                    v = v.or(hit);
                }
                v
            }
            Member::Permission(p) => self.rewrite(res, &p.rewrite, subject, path),
        };
        path.pop();
        v
    }

    fn rewrite(
        &self,
        res: &ObjectRef,
        rw: &Rewrite,
        subject: &Subject,
        path: &mut Vec<(ObjectRef, String)>,
    ) -> V {
        match rw {
            Rewrite::Nil => V::F,
            Rewrite::Computed(n) => self.member(res, n, subject, path),
            Rewrite::Union(items) => items
                .iter()
                .fold(V::F, |v, i| v.or(self.rewrite(res, i, subject, path))),
            Rewrite::Intersection(items) => items
                .iter()
                .fold(V::T, |v, i| v.and(self.rewrite(res, i, subject, path))),
            Rewrite::Exclusion(b, e) => self
                .rewrite(res, b, subject, path)
                .and(self.rewrite(res, e, subject, path).not()),
            Rewrite::Arrow {
                tupleset,
                computed,
                mode,
            } => {
                assert_eq!(*mode, ArrowMode::Any);
                let mut v = V::F;
                for r in self
                    .rels
                    .iter()
                    .filter(|r| &r.resource == res && &r.relation == tupleset)
                {
                    let t = &r.subject.object;
                    if self.schema.member(&t.object_type, computed).is_some() {
                        v = v.or(self.caveat(r).and(self.member(t, computed, subject, path)));
                    }
                }
                v
            }
        }
    }

    fn check(&self, res: &ObjectRef, rel: &str, subject: &Subject) -> V {
        self.member(res, rel, subject, &mut Vec::new())
    }

    /// The subject sets `d#D` the schema allows anywhere, for `d`'s type.
    fn delegate_sets(&self, t: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for def in self.schema.definitions.values() {
            for rel in def.relations.values() {
                for a in &rel.allowed {
                    if let AllowedKind::SubjectSet(d) = &a.kind {
                        if a.type_name == t {
                            out.insert(d.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// The rule: the actor's delegation, or a delegate set of the one it acts for.
    fn hop(&self, res: &ObjectRef, perm: &str, actor: &ObjectRef, d: &Subject) -> V {
        let mut v = V::F;
        if self.schema.member(&actor.object_type, perm).is_some() {
            v = v.or(self.check(actor, perm, d));
        }
        if d.relation.is_none() {
            for set in self.delegate_sets(&d.object.object_type) {
                let s = Subject {
                    object: d.object.clone(),
                    relation: Some(set.clone()),
                };
                let h = Subject {
                    object: actor.clone(),
                    relation: None,
                };
                v = v.or(self
                    .check(res, perm, &s)
                    .and(self.check(&d.object, &set, &h)));
            }
        }
        v
    }

    /// The delegated check: its value and the first link (from the principal outward) that
    /// is false.
    fn delegated(
        &self,
        res: &ObjectRef,
        perm: &str,
        principal: &Subject,
        actors: &[ObjectRef],
    ) -> (V, Option<ChainLink>) {
        let mut v = self.check(res, perm, principal);
        let mut first = (v == V::F).then_some(ChainLink::Principal);
        for i in (0..actors.len()).rev() {
            let d = match actors.get(i + 1) {
                Some(a) => Subject {
                    object: a.clone(),
                    relation: None,
                },
                None => principal.clone(),
            };
            let h = self.hop(res, perm, &actors[i], &d);
            if h == V::F && first.is_none() {
                first = Some(ChainLink::Actor(i));
            }
            v = v.and(h);
        }
        (v, first)
    }
}

fn case() -> impl Strategy<Value = (Vec<usize>, Vec<(usize, Vec<usize>)>)> {
    (
        prop::collection::vec(0usize..1000, 0..28),
        prop::collection::vec((0usize..2, prop::collection::vec(0usize..4, 0..4)), 1..5),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn delegated_checks_follow_the_rule((picks, chains) in case()) {
        let schema = Arc::new(dhow_schema::compile(SCHEMA).unwrap());
        let engine = Engine::new(schema.clone());
        let all = candidates(&schema);
        let mut store = MemStore::new();
        let mut rels: Vec<Relationship> = Vec::new();
        for p in picks {
            let r = parse_relationship(&all[p % all.len()]).unwrap();
            engine.validate_relationship(&r).unwrap();
            rels.retain(|x| x.key() != r.key());
            rels.push(r.clone());
            store.write(&[WriteOp::Touch(r)]).unwrap();
        }
        let now = Timestamp::parse_rfc3339(NOW).unwrap();
        let visible: Vec<Relationship> =
            rels.iter().filter(|r| !r.is_expired_at(now)).cloned().collect();
        let reader = store.latest();
        for a in [None, Some(true), Some(false)] {
            let reference = Reference { schema: &schema, rels: visible.clone(), a };
            let mut opts = Options::at(now);
            if let Some(a) = a {
                opts = opts.with_context(CaveatContext::from_json(&format!("{{\"a\": {a}}}")).unwrap());
            }
            let mut bulk = Vec::new();
            let mut expected = Vec::new();
            for (u, chain) in &chains {
                let principal = Subject::object("user", ids("user")[*u]);
                // Agent 3 stands for the principal itself, to exercise that refusal too.
                let actors: Vec<ObjectRef> = chain
                    .iter()
                    .map(|i| match i {
                        3 => principal.object.clone(),
                        i => ObjectRef::new("agent", ids("agent")[*i]),
                    })
                    .collect();
                let repeated = actors
                    .iter()
                    .enumerate()
                    .any(|(i, x)| actors[..i].contains(x) || *x == principal.object);
                for t in ["folder", "document"] {
                    for perm in ["view", "edit"] {
                        let mut allowed_ids = BTreeSet::new();
                        for id in ids(t) {
                            let res = ObjectRef::new(t, *id);
                            let q = DelegatedCheck::new(
                                CheckRequest::new(res.clone(), perm, principal.clone()),
                                actors.clone(),
                            );
                            let got = engine.check_delegated(&reader, &q, opts.clone());
                            let explained = engine.check_delegated(&reader, &q, opts.clone().with_explain());
                            bulk.push(q.clone());
                            if repeated {
                                prop_assert!(matches!(got, Err(Error::InvalidChain { .. })), "{q:?}: {got:?}");
                                prop_assert!(matches!(explained, Err(Error::InvalidChain { .. })), "{:?}", q);
                                expected.push(None);
                                continue;
                            }
                            let (want, first) = reference.delegated(&res, perm, &principal, &actors);
                            let got = got.unwrap();
                            let explained = explained.unwrap();
                            prop_assert_eq!(V::of(&got.permissionship), want, "{:?} a={:?}", q, a);
                            prop_assert_eq!(got.denied_at, first, "{:?}", q);
                            prop_assert_eq!(&explained.permissionship, &got.permissionship);
                            prop_assert_eq!(explained.denied_at, first);
                            // The proofs carry the same values, hop by hop.
                            prop_assert_eq!(explained.actor_proofs.len(), actors.len());
                            let p = explained.proof.as_ref().unwrap();
                            prop_assert_eq!(V::of(&p.permissionship()), reference.check(&res, perm, &principal));
                            for (i, hp) in explained.actor_proofs.iter().enumerate() {
                                let d = match actors.get(i + 1) {
                                    Some(x) => Subject { object: x.clone(), relation: None },
                                    None => principal.clone(),
                                };
                                prop_assert_eq!(V::of(&hp.permissionship()), reference.hop(&res, perm, &actors[i], &d));
                            }
                            if want != V::F {
                                allowed_ids.insert((id.to_string(), want));
                            }
                            expected.push(Some(got.permissionship));
                        }
                        // LookupResources with the chain: exactly the resources not denied.
                        let found = engine.lookup_resources_delegated(
                            &reader, t, perm, &principal, &actors, opts.clone(),
                        );
                        if repeated {
                            prop_assert!(matches!(found, Err(Error::InvalidChain { .. })), "{:?}", actors);
                        } else {
                            let found: BTreeSet<(String, V)> = found
                                .unwrap()
                                .into_iter()
                                .map(|f| (f.id, V::of(&f.permissionship)))
                                .collect();
                            prop_assert_eq!(found, allowed_ids, "{} {} {:?} {:?}", t, perm, principal, actors);
                        }
                    }
                }
            }
            // CheckBulk: one memo per subject across all items, the same answers.
            let results = engine.check_bulk_delegated(&reader, &bulk, opts.clone());
            for ((r, e), q) in results.iter().zip(&expected).zip(&bulk) {
                match (r, e) {
                    (Ok(r), Some(e)) => prop_assert_eq!(&r.permissionship, e, "{:?}", q),
                    (Err(Error::InvalidChain { .. }), None) => {}
                    (r, e) => prop_assert!(false, "{:?}: {:?} vs {:?}", q, r, e),
                }
            }
        }
    }
}
