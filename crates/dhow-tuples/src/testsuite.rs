//! The store suite: behaviour every `TupleStore` must have, run against the in-memory store
//! here and against the RocksDB store in `dhow-storage` (feature `testsuite`). Each function
//! takes a fresh, empty store and panics with a message naming what broke.

use crate::{
    parse_relationship, Batch, ObjectRef, Precondition, Relationship, RelationshipFilter, Revision,
    Subject, TupleStore, WriteOp, WriteRequest,
};

fn rel(s: &str) -> Relationship {
    parse_relationship(s).unwrap_or_else(|e| panic!("test relationship `{s}`: {e}"))
}

fn write(ops: Vec<WriteOp>) -> Batch {
    Batch {
        writes: vec![WriteRequest {
            preconditions: vec![],
            ops,
        }],
        schema: None,
    }
}

fn strings(rs: Vec<Relationship>) -> Vec<String> {
    rs.into_iter().map(|r| r.to_string()).collect()
}

/// Runs every check, each on a fresh store from `make`.
pub fn run_all<S: TupleStore>(make: impl Fn() -> S) {
    empty_store(&make());
    apply_and_read_at_revisions(&make());
    revisions_only_go_forward(&make());
    failed_writes_change_nothing(&make());
    preconditions(&make());
    writes_in_one_batch_see_each_other(&make());
    touch_and_expiration(&make());
    keys_do_not_collide(&make());
    reverse_index_and_wildcards(&make());
    read_filters_and_pagination(&make());
    changes_for_watch(&make());
    schema_history(&make());
    gc_forgets_old_revisions(&make());
    restore_replaces_everything(&make());
}

pub fn empty_store(s: &impl TupleStore) {
    assert_eq!(s.head(), Revision(0), "a new store is at revision 0");
    let r = s.reader(Revision(0)).expect("revision 0 is readable");
    assert!(r
        .by_resource(&ObjectRef::new("document", "a"), "viewer")
        .unwrap()
        .is_empty());
    assert!(
        s.reader(Revision(1)).is_err(),
        "a future revision is not readable"
    );
    assert!(s.changes(Revision(0), 10).unwrap().is_empty());
    assert_eq!(s.schema_at(Revision(0)).unwrap(), None);
}

pub fn apply_and_read_at_revisions(s: &impl TupleStore) {
    let a = rel("document:a#viewer@user:alice");
    let b = rel("document:a#viewer@group:eng#member");
    let out = s
        .apply(Revision(1), &write(vec![WriteOp::Create(a.clone())]))
        .unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].is_ok());
    s.apply(Revision(2), &write(vec![WriteOp::Create(b.clone())]))
        .unwrap();
    s.apply(Revision(5), &write(vec![WriteOp::Delete(a.clone())]))
        .unwrap();
    assert_eq!(
        s.head(),
        Revision(5),
        "revisions may skip numbers (Raft entries without writes)"
    );
    let doc = ObjectRef::new("document", "a");
    let at = |rev: u64| {
        strings(
            s.reader(Revision(rev))
                .unwrap()
                .by_resource(&doc, "viewer")
                .unwrap(),
        )
    };
    assert_eq!(at(0), Vec::<String>::new());
    assert_eq!(at(1), vec![a.to_string()]);
    assert_eq!(at(2).len(), 2, "revision 2 sees both");
    assert_eq!(
        at(4).len(),
        2,
        "revision 4 (no entry of its own) sees revision 2's state"
    );
    assert_eq!(
        at(5),
        vec![b.to_string()],
        "revision 5 no longer sees the deleted one"
    );
    let r2 = s.reader(Revision(2)).unwrap();
    assert_eq!(r2.revision(), Revision(2));
    assert_eq!(
        r2.find(&doc, "viewer", &a.subject).unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        s.reader(Revision(5))
            .unwrap()
            .find(&doc, "viewer", &a.subject)
            .unwrap(),
        None
    );
}

pub fn revisions_only_go_forward(s: &impl TupleStore) {
    s.apply(Revision(3), &Batch::default()).unwrap();
    assert_eq!(
        s.head(),
        Revision(3),
        "an empty batch still advances the head"
    );
    assert!(
        s.apply(Revision(3), &Batch::default()).is_err(),
        "the same revision twice is refused"
    );
    assert!(
        s.apply(Revision(2), &Batch::default()).is_err(),
        "an older revision is refused"
    );
    assert_eq!(s.head(), Revision(3));
}

pub fn failed_writes_change_nothing(s: &impl TupleStore) {
    let a = rel("document:a#viewer@user:alice");
    let b = rel("document:a#viewer@user:bob");
    let c = rel("document:a#viewer@user:carol");
    s.apply(Revision(1), &write(vec![WriteOp::Create(a.clone())]))
        .unwrap();
    let batch = Batch {
        writes: vec![
            // Fails: creates an existing relationship; b must not appear.
            WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Create(b.clone()), WriteOp::Create(a.clone())],
            },
            // Fails: the same relationship twice.
            WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Touch(c.clone()), WriteOp::Delete(c.clone())],
            },
            // Succeeds.
            WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Touch(c.clone())],
            },
        ],
        schema: None,
    };
    let out = s.apply(Revision(2), &batch).unwrap();
    assert!(
        matches!(out[0], Err(crate::Error::AlreadyExists(_))),
        "{:?}",
        out[0]
    );
    assert!(out[1].is_err(), "duplicate in one write must fail");
    assert!(out[2].is_ok(), "{:?}", out[2]);
    let r = s.reader(Revision(2)).unwrap();
    let doc = ObjectRef::new("document", "a");
    assert_eq!(
        r.find(&doc, "viewer", &b.subject).unwrap(),
        None,
        "half of a failed write was applied"
    );
    assert!(r.find(&doc, "viewer", &c.subject).unwrap().is_some());
    let changes = s.changes(Revision(1), 100).unwrap();
    assert_eq!(
        changes.len(),
        1,
        "only the successful write is a change: {changes:?}"
    );
}

pub fn preconditions(s: &impl TupleStore) {
    let a = rel("document:a#viewer@user:alice");
    s.apply(Revision(1), &write(vec![WriteOp::Create(a.clone())]))
        .unwrap();
    let f = |id: &str| RelationshipFilter {
        resource_type: Some("document".into()),
        resource_id: Some(id.into()),
        ..Default::default()
    };
    let w = |pre: Precondition| Batch {
        writes: vec![WriteRequest {
            preconditions: vec![pre],
            ops: vec![WriteOp::Touch(rel("document:z#viewer@user:zed"))],
        }],
        schema: None,
    };
    let out = s
        .apply(Revision(2), &w(Precondition::MustMatch(f("a"))))
        .unwrap();
    assert!(
        out[0].is_ok(),
        "MUST_MATCH on an existing relationship: {:?}",
        out[0]
    );
    let out = s
        .apply(Revision(3), &w(Precondition::MustMatch(f("nope"))))
        .unwrap();
    assert!(
        matches!(out[0], Err(crate::Error::PreconditionFailed(_))),
        "{:?}",
        out[0]
    );
    let out = s
        .apply(Revision(4), &w(Precondition::MustNotMatch(f("a"))))
        .unwrap();
    assert!(
        matches!(out[0], Err(crate::Error::PreconditionFailed(_))),
        "{:?}",
        out[0]
    );
    let out = s
        .apply(Revision(5), &w(Precondition::MustNotMatch(f("nope"))))
        .unwrap();
    assert!(out[0].is_ok());
}

pub fn writes_in_one_batch_see_each_other(s: &impl TupleStore) {
    let a = rel("document:a#viewer@user:alice");
    let filter = RelationshipFilter {
        resource_type: Some("document".into()),
        resource_id: Some("a".into()),
        ..Default::default()
    };
    let batch = Batch {
        writes: vec![
            WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Create(a.clone())],
            },
            WriteRequest {
                preconditions: vec![Precondition::MustMatch(filter)],
                ops: vec![WriteOp::Delete(a.clone())],
            },
            WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Create(a.clone())],
            },
        ],
        schema: None,
    };
    let out = s.apply(Revision(1), &batch).unwrap();
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
    let r = s.reader(Revision(1)).unwrap();
    assert_eq!(
        r.find(&a.resource, "viewer", &a.subject).unwrap(),
        Some(a.clone())
    );
}

pub fn touch_and_expiration(s: &impl TupleStore) {
    let a = rel("document:a#viewer@user:alice");
    let a2 = rel("document:a#viewer@user:alice[expiration:2300-01-01T00:00:00Z]");
    s.apply(Revision(1), &write(vec![WriteOp::Touch(a.clone())]))
        .unwrap();
    s.apply(Revision(2), &write(vec![WriteOp::Touch(a2.clone())]))
        .unwrap();
    let find = |rev| {
        s.reader(Revision(rev))
            .unwrap()
            .find(&a.resource, "viewer", &a.subject)
            .unwrap()
    };
    assert_eq!(find(1), Some(a.clone()));
    assert_eq!(find(2), Some(a2.clone()), "touch replaces the expiration");
    assert_eq!(
        s.reader(Revision(2))
            .unwrap()
            .by_resource(&a.resource, "viewer")
            .unwrap()
            .len(),
        1
    );
    // Caveats are kept as written.
    let c = rel("document:a#viewer@user:bob[cav:{\"x\": [1, 2]}]");
    s.apply(Revision(3), &write(vec![WriteOp::Touch(c.clone())]))
        .unwrap();
    assert_eq!(
        s.reader(Revision(3))
            .unwrap()
            .find(&c.resource, "viewer", &c.subject)
            .unwrap(),
        Some(c)
    );
}

pub fn keys_do_not_collide(s: &impl TupleStore) {
    let long = "x".repeat(1024);
    let rels = [
        "document:a#viewer@user:b".to_string(),
        "document:a/b#viewer@user:b".to_string(),
        "document:ab#viewer@user:b".to_string(),
        "document/xyz:a#viewer@user:b".to_string(),
        "documents:a#viewer@user:b".to_string(),
        "document:a#viewers@user:b".to_string(),
        "document:a#viewer@user:b#member".to_string(),
        "document:a#viewer@user_x:b".to_string(),
        "document:a#viewer@user:b|c=d+e-f_g".to_string(),
        format!("document:{long}#viewer@user:{long}"),
    ];
    let ops: Vec<WriteOp> = rels.iter().map(|r| WriteOp::Create(rel(r))).collect();
    let out = s.apply(Revision(1), &write(ops)).unwrap();
    assert!(out[0].is_ok(), "{:?}", out[0]);
    let r = s.reader(Revision(1)).unwrap();
    let got = strings(
        r.by_resource(&ObjectRef::new("document", "a"), "viewer")
            .unwrap(),
    );
    assert_eq!(
        got,
        vec![
            "document:a#viewer@user:b",
            "document:a#viewer@user:b#member",
            "document:a#viewer@user:b|c=d+e-f_g",
            "document:a#viewer@user_x:b"
        ],
        "by_resource must return exactly document:a#viewer, in key order"
    );
    let of_type = |r: &dyn crate::SnapshotReader, t: &str| {
        strings(
            r.by_resource_of_type(&ObjectRef::new("document", "a"), "viewer", t)
                .unwrap(),
        )
    };
    assert_eq!(
        of_type(&*r, "user"),
        vec![
            "document:a#viewer@user:b",
            "document:a#viewer@user:b#member",
            "document:a#viewer@user:b|c=d+e-f_g",
        ],
        "by_resource_of_type must return exactly document:a#viewer@user:..., in key order"
    );
    assert_eq!(of_type(&r, "user_x"), vec!["document:a#viewer@user_x:b"]);
    assert!(
        of_type(&*r, "use").is_empty(),
        "a type is not a prefix of another"
    );
    let all = r.read(&RelationshipFilter::default(), None, 100).unwrap();
    assert_eq!(all.len(), rels.len());
    let mut sorted = all.clone();
    sorted.sort_by(|x, y| x.key().cmp(&y.key()));
    assert_eq!(all, sorted, "read returns key order");
    let subject = Subject::object("user", "b");
    assert!(r
        .find(&ObjectRef::new("document", "a/b"), "viewer", &subject)
        .unwrap()
        .is_some());
    assert!(r
        .find(
            &ObjectRef::new("document", long.clone()),
            "viewer",
            &Subject::object("user", long)
        )
        .unwrap()
        .is_some());
    // At a later revision, a deleted one is gone; the old revision still has it (a reader
    // is dropped before a write: the shared memory store's reader holds its lock).
    drop(r);
    let del = write(vec![WriteOp::Delete(rel(
        "document:a#viewer@user:b#member",
    ))]);
    assert!(s.apply(Revision(2), &del).unwrap()[0].is_ok());
    let r2 = s.reader(Revision(2)).unwrap();
    assert_eq!(
        of_type(&*r2, "user"),
        vec![
            "document:a#viewer@user:b",
            "document:a#viewer@user:b|c=d+e-f_g"
        ]
    );
    drop(r2);
    let r1 = s.reader(Revision(1)).unwrap();
    assert_eq!(of_type(&*r1, "user").len(), 3, "revision 1 is unchanged");
}

pub fn reverse_index_and_wildcards(s: &impl TupleStore) {
    let ops = vec![
        WriteOp::Create(rel("document:a#viewer@user:alice")),
        WriteOp::Create(rel("folder:f#viewer@user:alice")),
        WriteOp::Create(rel("group:g#member@user:alice")),
        WriteOp::Create(rel("document:b#viewer@group:g#member")),
        WriteOp::Create(rel("document:c#viewer@user:*")),
        WriteOp::Create(rel("document:d#viewer@user:alicex")),
    ];
    s.apply(Revision(1), &write(ops)).unwrap();
    s.apply(
        Revision(2),
        &write(vec![WriteOp::Delete(rel("folder:f#viewer@user:alice"))]),
    )
    .unwrap();
    let r1 = s.reader(Revision(1)).unwrap();
    let by = |r: &dyn crate::SnapshotReader, t: &str, id: &str| {
        let mut v = strings(r.by_subject_object(&ObjectRef::new(t, id)).unwrap());
        v.sort();
        v
    };
    assert_eq!(
        by(&*r1, "user", "alice"),
        vec![
            "document:a#viewer@user:alice",
            "folder:f#viewer@user:alice",
            "group:g#member@user:alice"
        ]
    );
    assert_eq!(
        by(&*r1, "group", "g"),
        vec!["document:b#viewer@group:g#member"]
    );
    assert_eq!(by(&*r1, "user", "*"), vec!["document:c#viewer@user:*"]);
    let r2 = s.reader(Revision(2)).unwrap();
    assert_eq!(
        by(&*r2, "user", "alice").len(),
        2,
        "the reverse index respects deletes"
    );
}

pub fn read_filters_and_pagination(s: &impl TupleStore) {
    let mut ops: Vec<WriteOp> = (0..25)
        .map(|i| WriteOp::Create(rel(&format!("document:d{i:02}#viewer@user:u{}", i % 5))))
        .collect();
    ops.push(WriteOp::Create(rel("folder:f#viewer@user:u1")));
    ops.push(WriteOp::Create(rel("document:d00#owner@user:u1")));
    s.apply(Revision(1), &write(ops)).unwrap();
    s.apply(
        Revision(2),
        &write(vec![WriteOp::Create(rel("document:zz#viewer@user:u1"))]),
    )
    .unwrap();
    let r = s.reader(Revision(1)).unwrap();
    let f = RelationshipFilter {
        resource_type: Some("document".into()),
        relation: Some("viewer".into()),
        subject_id: Some("u1".into()),
        ..Default::default()
    };
    let mut pages = Vec::new();
    let mut after: Option<Relationship> = None;
    loop {
        let page = r.read(&f, after.as_ref(), 2).unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        pages.extend(page);
    }
    assert_eq!(
        strings(pages),
        vec![
            "document:d01#viewer@user:u1",
            "document:d06#viewer@user:u1",
            "document:d11#viewer@user:u1",
            "document:d16#viewer@user:u1",
            "document:d21#viewer@user:u1"
        ],
        "pagination at revision 1 must not see revision 2"
    );
    let exact = RelationshipFilter {
        subject_relation: Some(None),
        subject_type: Some("user".into()),
        resource_type: Some("folder".into()),
        ..Default::default()
    };
    assert_eq!(r.read(&exact, None, 10).unwrap().len(), 1);
}

pub fn changes_for_watch(s: &impl TupleStore) {
    let a = rel("document:a#viewer@user:alice");
    let b = rel("document:b#viewer@user:bob");
    s.apply(
        Revision(1),
        &write(vec![WriteOp::Create(a.clone()), WriteOp::Create(b.clone())]),
    )
    .unwrap();
    s.apply(Revision(2), &Batch::default()).unwrap();
    s.apply(Revision(3), &write(vec![WriteOp::Delete(a.clone())]))
        .unwrap();
    let all = s.changes(Revision(0), 100).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        (all[0].revision, all[1].revision, all[2].revision),
        (Revision(1), Revision(1), Revision(3))
    );
    assert!(all[2].deleted && !all[0].deleted);
    assert_eq!(all[2].relationship, a);
    let page = s.changes(Revision(0), 1).unwrap();
    assert_eq!(page.len(), 2, "a revision's changes are never split");
    assert_eq!(s.changes(Revision(1), 100).unwrap().len(), 1);
    assert!(s.changes(Revision(3), 100).unwrap().is_empty());
}

pub fn schema_history(s: &impl TupleStore) {
    let b = |text: &str| Batch {
        writes: vec![],
        schema: Some(text.to_string()),
    };
    s.apply(Revision(2), &b("definition user {}")).unwrap();
    s.apply(Revision(4), &b("definition user {}\ndefinition doc {}"))
        .unwrap();
    assert_eq!(s.schema_at(Revision(1)).unwrap(), None);
    assert_eq!(
        s.schema_at(Revision(3)).unwrap(),
        Some((Revision(2), "definition user {}".to_string()))
    );
    assert_eq!(
        s.schema_at(Revision(4)).unwrap().map(|x| x.0),
        Some(Revision(4))
    );
}

pub fn gc_forgets_old_revisions(s: &impl TupleStore) {
    let a = rel("document:a#viewer@user:alice");
    let b = rel("document:a#viewer@user:bob");
    s.apply(
        Revision(1),
        &write(vec![WriteOp::Create(a.clone()), WriteOp::Create(b.clone())]),
    )
    .unwrap();
    s.apply(Revision(2), &write(vec![WriteOp::Delete(a.clone())]))
        .unwrap();
    s.apply(Revision(3), &Batch::default()).unwrap();
    s.gc(Revision(2)).unwrap();
    assert!(s.oldest() >= Revision(2));
    assert!(
        s.reader(Revision(1)).is_err(),
        "a collected revision must not be readable"
    );
    let r = s.reader(Revision(3)).unwrap();
    assert_eq!(
        strings(r.by_resource(&a.resource, "viewer").unwrap()),
        vec![b.to_string()]
    );
    assert!(
        s.changes(Revision(0), 10).is_err(),
        "changes below the GC horizon are gone: say so"
    );
    assert_eq!(s.changes(Revision(2), 10).unwrap().len(), 0);
}

pub fn restore_replaces_everything(s: &impl TupleStore) {
    let old = rel("document:old#viewer@user:alice");
    s.apply(Revision(1), &write(vec![WriteOp::Create(old.clone())]))
        .unwrap();
    s.apply(
        Revision(2),
        &Batch {
            writes: vec![],
            schema: Some("definition old {}".into()),
        },
    )
    .unwrap();
    let kept = vec![
        rel("document:a#viewer@user:bob"),
        rel("document:a#viewer@group:eng#member"),
        rel("document:b#owner@user:*"),
    ];
    s.restore(
        Revision(10),
        Some("definition user {}"),
        &mut kept.clone().into_iter(),
    )
    .unwrap();
    assert_eq!((s.head(), s.oldest()), (Revision(10), Revision(10)));
    assert!(
        s.reader(Revision(2)).is_err(),
        "revisions before a restored snapshot are gone"
    );
    let r = s.reader(Revision(10)).unwrap();
    let all = strings(r.read(&RelationshipFilter::default(), None, 100).unwrap());
    let mut want = strings(kept.clone());
    want.sort();
    let mut got = all.clone();
    got.sort();
    assert_eq!(got, want, "exactly the snapshot's relationships");
    assert!(r
        .find(&old.resource, "viewer", &old.subject)
        .unwrap()
        .is_none());
    assert_eq!(
        strings(
            r.by_subject_object(&ObjectRef::new("group", "eng"))
                .unwrap()
        ),
        vec!["document:a#viewer@group:eng#member".to_string()],
        "the reverse index is rebuilt"
    );
    drop(r);
    assert_eq!(
        s.schema_at(Revision(10)).unwrap(),
        Some((Revision(10), "definition user {}".to_string()))
    );
    assert!(s.changes(Revision(9), 10).is_err());
    assert!(s.changes(Revision(10), 10).unwrap().is_empty());
    // The store goes on from the snapshot.
    s.apply(Revision(11), &write(vec![WriteOp::Delete(kept[0].clone())]))
        .unwrap();
    assert_eq!(s.changes(Revision(10), 10).unwrap().len(), 1);
    assert!(s
        .reader(Revision(11))
        .unwrap()
        .find(&kept[0].resource, "viewer", &kept[0].subject)
        .unwrap()
        .is_none());
    // A snapshot listing a relationship twice is refused and changes nothing.
    let dup = vec![kept[1].clone(), kept[1].clone()];
    assert!(s.restore(Revision(20), None, &mut dup.into_iter()).is_err());
    assert_eq!(s.head(), Revision(11));
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_mem_store_passes_the_suite() {
        super::run_all(crate::SharedMemStore::new);
    }
}
