//! The reads a check makes: only those the relation's allowed subject types can answer (no
//! wildcard lookup where `type:*` is not allowed, no scan for subject sets where none is
//! allowed, and a scan only of the types subject sets are allowed of, not of the plain
//! subjects beside them), with the same answers as before on every kind of relation.

use std::cell::RefCell;
use std::sync::Arc;

use dhow_engine::{CheckRequest, Engine, Options};
use dhow_tuples::{
    parse_relationship, parse_subject, Error, MemStore, ObjectRef, Relationship,
    RelationshipFilter, Revision, SnapshotReader, Subject, WriteOp,
};

const SCHEMA: &str = r#"
definition user {}
definition group {
    relation member: user | group#member
}
definition document {
    relation owner: user
    relation viewer: user | user:* | group#member
    relation reader: group#member
    permission view = owner + viewer + reader
}
"#;

/// A reader that logs each call it answers.
struct Counting<R> {
    inner: R,
    log: RefCell<Vec<String>>,
}

impl<R: SnapshotReader> SnapshotReader for Counting<R> {
    fn revision(&self) -> Revision {
        self.inner.revision()
    }
    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, Error> {
        self.log
            .borrow_mut()
            .push(format!("scan {resource}#{relation}"));
        self.inner.by_resource(resource, relation)
    }
    fn by_resource_of_type(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, Error> {
        self.log
            .borrow_mut()
            .push(format!("scan {resource}#{relation}@{subject_type}"));
        self.inner
            .by_resource_of_type(resource, relation, subject_type)
    }
    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, Error> {
        self.log
            .borrow_mut()
            .push(format!("find {resource}#{relation}@{subject}"));
        self.inner.find(resource, relation, subject)
    }
    fn by_subject_object(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error> {
        self.log.borrow_mut().push(format!("by subject {subject}"));
        self.inner.by_subject_object(subject)
    }
    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, Error> {
        self.log.borrow_mut().push("read".to_string());
        self.inner.read(filter, after, limit)
    }
}

fn setup(rels: &[&str]) -> (Engine, MemStore) {
    let schema = dhow_schema::compile(SCHEMA).expect("schema compiles");
    let engine = Engine::new(Arc::new(schema));
    let mut store = MemStore::new();
    let ops: Vec<WriteOp> = rels
        .iter()
        .map(|r| WriteOp::Create(parse_relationship(r).unwrap()))
        .collect();
    store.write(&ops).unwrap();
    (engine, store)
}

/// The answer and the reads of one check.
fn check(engine: &Engine, store: &MemStore, s: &str) -> (bool, Vec<String>) {
    let (left, subject) = s.split_once('@').unwrap();
    let (res, perm) = left.split_once('#').unwrap();
    let (t, id) = res.split_once(':').unwrap();
    let req = CheckRequest::new(ObjectRef::new(t, id), perm, parse_subject(subject).unwrap());
    let reader = Counting {
        inner: store.latest(),
        log: RefCell::new(Vec::new()),
    };
    let allowed = engine.check(&reader, &req, Options::now()).unwrap().allowed;
    (allowed, reader.log.into_inner())
}

#[test]
fn a_relation_of_plain_users_is_one_lookup() {
    let (engine, store) = setup(&["document:d#owner@user:alice"]);
    let (allowed, reads) = check(&engine, &store, "document:d#owner@user:alice");
    assert!(allowed);
    assert_eq!(reads, ["find document:d#owner@user:alice"]);
    let (allowed, reads) = check(&engine, &store, "document:d#owner@user:bob");
    assert!(!allowed);
    assert_eq!(reads, ["find document:d#owner@user:bob"]);
}

#[test]
fn a_type_the_relation_does_not_allow_is_not_looked_up() {
    let (engine, store) = setup(&["document:d#reader@group:eng#member"]);
    // `reader` allows only `group#member`: a user is found through the group or not at all.
    let (allowed, reads) = check(&engine, &store, "document:d#reader@user:alice");
    assert!(!allowed);
    assert_eq!(
        reads,
        [
            "scan document:d#reader@group",
            "find group:eng#member@user:alice",
            "scan group:eng#member@group"
        ]
    );
    // A subject set of that type is looked up directly.
    let (allowed, reads) = check(&engine, &store, "document:d#reader@group:eng#member");
    assert!(allowed);
    assert_eq!(reads, ["find document:d#reader@group:eng#member"]);
}

#[test]
fn every_allowed_kind_is_still_read() {
    let (engine, store) = setup(&[
        "document:a#viewer@user:alice",
        "document:b#viewer@user:*",
        "document:c#viewer@group:eng#member",
        "group:eng#member@user:carol",
    ]);
    for (q, want) in [
        ("document:a#view@user:alice", true),
        ("document:b#view@user:bob", true),
        ("document:c#view@user:carol", true),
        ("document:c#view@user:dave", false),
        ("document:a#view@user:bob", false),
        ("document:b#viewer@user:*", true),
        ("document:c#viewer@group:eng#member", true),
    ] {
        assert_eq!(check(&engine, &store, q).0, want, "{q}");
    }
    let (_, reads) = check(&engine, &store, "document:a#viewer@user:bob");
    assert_eq!(
        reads,
        [
            "find document:a#viewer@user:bob",
            "find document:a#viewer@user:*",
            "scan document:a#viewer@group"
        ]
    );
}
