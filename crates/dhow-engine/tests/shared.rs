//! Answers shared between requests (the check cache's boundary, `Options::shared`): on random
//! graphs full of cycles, caveats and exclusions, written over several revisions, every check
//! made with one cache shared by all of them (across subjects, permissions and revisions, in
//! random order, each revision queried right after its write) gives exactly the answer of the
//! same check without it; an explained check gives the same proof as without it; and a cached
//! answer saves the reads.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dhow_engine::{
    CheckRequest, Engine, Options, Shared, SharedKey, SharedKeyRef, SharedResults, SharedValue,
};
use dhow_tuples::{
    parse_relationship, Error, MemStore, ObjectRef, Relationship, RelationshipFilter, Revision,
    SnapshotReader, Subject, WriteOp,
};
use proptest::prelude::*;

const SCHEMA: &str = r#"
caveat cav_a(a bool) { a }
definition user {}
definition node {
    relation direct: user | user:* | user with cav_a
    relation link: node#member | node#view | node#member with cav_a
    relation parent: node | node with cav_a
    relation banned: user
    permission member = direct + link
    permission view = member + parent->view - banned
    permission both = member & parent->both
    permission every = direct + parent.all(every)
    permission odd = direct - parent->odd
}
"#;

const PERMS: [&str; 6] = ["member", "view", "both", "every", "odd", "link"];

/// The simplest shared store: everything, forever, with counters.
#[derive(Default)]
struct Everything {
    map: Mutex<HashMap<SharedKey, SharedValue>>,
    hits: AtomicU64,
}

impl SharedResults for Everything {
    fn get(&self, key: &SharedKeyRef<'_>) -> Option<SharedValue> {
        let map = self.map.lock().unwrap();
        let v = map.iter().find(|(k, _)| key.is(k)).map(|(_, v)| v.clone());
        if v.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        v
    }
    fn put(&self, key: SharedKey, value: SharedValue) {
        self.map.lock().unwrap().insert(key, value);
    }
}

fn arb_rel(n: usize) -> impl Strategy<Value = String> {
    let node = 0..n;
    prop_oneof![
        (node.clone(), 0usize..3).prop_map(|(a, u)| format!("node:n{a}#direct@user:u{u}")),
        (node.clone(), 0usize..3).prop_map(|(a, u)| format!("node:n{a}#direct@user:u{u}[cav_a]")),
        node.clone()
            .prop_map(|a| format!("node:n{a}#direct@user:*")),
        (node.clone(), node.clone(), prop::bool::ANY).prop_map(|(a, b, v)| {
            format!(
                "node:n{a}#link@node:n{b}#{}",
                if v { "view" } else { "member" }
            )
        }),
        (node.clone(), node.clone()).prop_map(|(a, b)| format!("node:n{a}#parent@node:n{b}")),
        (node.clone(), node.clone())
            .prop_map(|(a, b)| format!("node:n{a}#parent@node:n{b}[cav_a]")),
        (node.clone(), 0usize..3).prop_map(|(a, u)| format!("node:n{a}#banned@user:u{u}")),
    ]
}

/// A graph of `n` nodes written in a few batches (touches and deletes), and the order in
/// which the queries run.
fn arb_history() -> impl Strategy<Value = (usize, Vec<Vec<(bool, String)>>, u64)> {
    (2usize..5).prop_flat_map(|n| {
        let batch = prop::collection::vec((prop::bool::weighted(0.8), arb_rel(n)), 1..8);
        (Just(n), prop::collection::vec(batch, 1..5), any::<u64>())
    })
}

fn subjects(n: usize) -> Vec<Subject> {
    let mut out: Vec<Subject> = (0..3)
        .map(|u| Subject::object("user", format!("u{u}")))
        .collect();
    for a in 0..n {
        out.push(Subject::set("node", format!("n{a}"), "member"));
    }
    out
}

/// A small deterministic shuffle (the order of queries must vary with the case).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn shared_answers_equal_fresh_ones((n, batches, seed) in arb_history()) {
        let engine = Engine::new(Arc::new(dhow_schema::compile(SCHEMA).expect("schema")));
        let mut store = MemStore::new();
        let cache = Arc::new(Everything::default());
        let shared = Options { shared: Some(Shared(cache.clone())), ..Options::now() };
        let subjects = subjects(n);
        let mut revisions: Vec<Revision> = Vec::new();
        let mut written: Vec<String> = Vec::new();
        for batch in &batches {
            let ops: Vec<WriteOp> = batch
                .iter()
                .map(|(touch, r)| {
                    let r = parse_relationship(r).expect("relationship");
                    if *touch { WriteOp::Touch(r) } else { WriteOp::Delete(r) }
                })
                .collect();
            written.extend(batch.iter().map(|(t, r)| format!("{}{r}", if *t { "+" } else { "-" })));
            // The same relationship twice in one batch is refused; the batch is then skipped.
            if let Ok(rev) = store.write(&ops) {
                revisions.push(rev);
            }
            // Every revision so far (the newest right after its write), in random order.
            let mut queries = Vec::new();
            for rev in &revisions {
                for a in 0..n {
                    for perm in PERMS {
                        for s in &subjects {
                            queries.push((*rev, a, perm, s.clone()));
                        }
                    }
                }
            }
            shuffle(&mut queries, seed ^ revisions.len() as u64);
            for (rev, a, perm, s) in queries {
                let reader = store.snapshot(rev).expect("snapshot");
                let req = CheckRequest::new(ObjectRef::new("node", format!("n{a}")), perm, s.clone());
                let fresh = engine.check(&reader, &req, Options::now()).expect("check");
                // The answer given without the engine (the server's fast path), when held.
                if let Some(hit) = Engine::cached_check(&req, rev, &shared) {
                    prop_assert_eq!(&hit.permissionship, &fresh.permissionship,
                        "cached_check node:n{}#{}@{} at {:?} after {:?}", a, perm, s, rev, written);
                    prop_assert_eq!(hit.revision, rev);
                }
                let cached = engine.check(&reader, &req, shared.clone()).expect("cached check");
                prop_assert_eq!(&cached.permissionship, &fresh.permissionship,
                    "node:n{}#{}@{} at {:?} after {:?}", a, perm, s, rev, written);
                let explained = engine
                    .check(&reader, &req, Options { explain: true, ..shared.clone() })
                    .expect("explained check");
                let fresh_explained = engine
                    .check(&reader, &req, Options { explain: true, ..Options::now() })
                    .expect("explained check");
                prop_assert_eq!(explained.proof, fresh_explained.proof);
            }
        }
    }
}

/// A reader that counts the calls it answers.
struct Counting<'a, R> {
    inner: &'a R,
    calls: Cell<u32>,
}

impl<R: SnapshotReader> SnapshotReader for Counting<'_, R> {
    fn revision(&self) -> Revision {
        self.inner.revision()
    }
    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, Error> {
        self.calls.set(self.calls.get() + 1);
        self.inner.by_resource(resource, relation)
    }
    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, Error> {
        self.calls.set(self.calls.get() + 1);
        self.inner.find(resource, relation, subject)
    }
    fn by_subject_object(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error> {
        self.calls.set(self.calls.get() + 1);
        self.inner.by_subject_object(subject)
    }
    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, Error> {
        self.calls.set(self.calls.get() + 1);
        self.inner.read(filter, after, limit)
    }
}

#[test]
fn a_shared_answer_saves_the_reads_and_a_new_revision_reads_again() {
    let engine = Engine::new(Arc::new(dhow_schema::compile(SCHEMA).expect("schema")));
    let mut store = MemStore::new();
    let rel = |s: &str| parse_relationship(s).unwrap();
    store
        .write(&[
            WriteOp::Touch(rel("node:n0#parent@node:n1")),
            WriteOp::Touch(rel("node:n1#direct@user:u0")),
        ])
        .unwrap();
    let cache = Arc::new(Everything::default());
    let opts = Options {
        shared: Some(Shared(cache.clone())),
        ..Options::now()
    };
    let req = CheckRequest::new(
        ObjectRef::new("node", "n0"),
        "view",
        Subject::object("user", "u0"),
    );
    let check = |store: &MemStore, opts: &Options| {
        let snap = store.latest();
        let reader = Counting {
            inner: &snap,
            calls: Cell::new(0),
        };
        let allowed = engine.check(&reader, &req, opts.clone()).unwrap().allowed;
        (allowed, reader.calls.get())
    };
    let head = store.latest().revision();
    assert_eq!(
        Engine::cached_check(&req, head, &opts),
        None,
        "nothing is held before the first check"
    );
    let (allowed, first) = check(&store, &opts);
    assert!(allowed);
    assert!(first > 0);
    // The whole check is now answered without a reader; never for an explained check.
    let hit = Engine::cached_check(&req, head, &opts).expect("held after the first check");
    assert!(hit.allowed && hit.proof.is_none() && hit.revision == head);
    let explain = Options {
        explain: true,
        ..opts.clone()
    };
    assert_eq!(Engine::cached_check(&req, head, &explain), None);
    assert_eq!(
        check(&store, &opts),
        (true, 0),
        "the second check is answered from the cache"
    );
    // Not with a context or a proof: those evaluate.
    let (_, with_proof) = check(
        &store,
        &Options {
            explain: true,
            ..opts.clone()
        },
    );
    assert_eq!(with_proof, first);
    // A revocation is a new revision: read again, and denied.
    store
        .write(&[WriteOp::Delete(rel("node:n1#direct@user:u0"))])
        .unwrap();
    let next = store.latest().revision();
    assert_eq!(
        Engine::cached_check(&req, next, &opts),
        None,
        "a new revision holds nothing yet"
    );
    let (allowed, after) = check(&store, &opts);
    assert!(!allowed, "the revocation is seen");
    assert!(after > 0);
    let denied = Engine::cached_check(&req, next, &opts).expect("the denial is held");
    assert!(!denied.allowed);
    assert!(cache.hits.load(Ordering::Relaxed) > 0);
}
