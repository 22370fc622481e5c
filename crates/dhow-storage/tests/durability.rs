//! Durability and snapshot isolation of `RocksStore`: data, head, oldest revision, changes,
//! schemas and cluster id survive a close and reopen; a reader keeps its view while applies
//! and GC run; checkpoints restore elsewhere with the same state.

use dhow_storage::{RocksStore, StorageError, StoreOptions};
use dhow_tuples::{
    parse_relationship, Batch, ObjectRef, Relationship, RelationshipFilter, Revision,
    SnapshotReader, TupleStore, WriteOp, WriteRequest,
};

fn rel(s: &str) -> Relationship {
    parse_relationship(s).unwrap()
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

fn all(r: &dyn SnapshotReader) -> Vec<String> {
    r.read(&RelationshipFilter::default(), None, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect()
}

fn fill(s: &RocksStore) {
    s.apply(
        Revision(1),
        &write(vec![
            WriteOp::Create(rel("document:a#viewer@user:alice")),
            WriteOp::Create(rel(
                "document:a#viewer@group:eng#member[expiration:2030-01-01T00:00:00Z]",
            )),
            WriteOp::Create(rel("document:b#viewer@user:bob[cav:{\"k\": 1}]")),
        ]),
    )
    .unwrap();
    s.apply(
        Revision(3),
        &Batch {
            writes: vec![],
            schema: Some("definition user {}".into()),
        },
    )
    .unwrap();
    s.apply(
        Revision(4),
        &write(vec![WriteOp::Delete(rel("document:a#viewer@user:alice"))]),
    )
    .unwrap();
    s.apply(Revision(7), &Batch::default()).unwrap();
}

#[test]
fn everything_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before_close;
    {
        let s = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        fill(&s);
        s.set_cluster_id(0xD0_u64).unwrap();
        before_close = (
            all(&*s.reader(Revision(1)).unwrap()),
            all(&*s.reader(Revision(7)).unwrap()),
            s.changes(Revision(0), 100).unwrap(),
        );
    }
    let s = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.head(), Revision(7), "the applied revision survives");
    assert_eq!(s.cluster_id().unwrap(), Some(0xD0));
    assert_eq!(all(&*s.reader(Revision(1)).unwrap()), before_close.0);
    assert_eq!(all(&*s.reader(Revision(7)).unwrap()), before_close.1);
    assert_eq!(before_close.1.len(), 2);
    assert_eq!(s.changes(Revision(0), 100).unwrap(), before_close.2);
    assert_eq!(
        s.schema_at(Revision(9)).unwrap(),
        Some((Revision(3), "definition user {}".into()))
    );
    // Writing continues after the reopened head, not before.
    assert!(s.apply(Revision(7), &Batch::default()).is_err());
    s.apply(Revision(8), &Batch::default()).unwrap();

    // GC's horizon survives too.
    s.gc(Revision(5)).unwrap();
    drop(s);
    let s = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.oldest(), Revision(5));
    assert!(matches!(
        s.reader(Revision(4)),
        Err(dhow_tuples::Error::RevisionUnavailable {
            asked: 4,
            oldest: 5,
            newest: 8
        })
    ));
    assert_eq!(all(&*s.reader(Revision(5)).unwrap()), before_close.1);
    let alice = ObjectRef::new("user", "alice");
    assert!(s
        .reader(Revision(8))
        .unwrap()
        .by_subject_object(&alice)
        .unwrap()
        .is_empty());
}

#[test]
fn a_reader_keeps_its_view_while_applies_and_gc_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    fill(&s);
    let r1 = s.reader(Revision(1)).unwrap();
    let seen = all(&*r1);
    assert_eq!(seen.len(), 3);
    s.apply(
        Revision(8),
        &write(vec![
            WriteOp::Delete(rel("document:b#viewer@user:bob")),
            WriteOp::Touch(rel("document:a#viewer@user:carol")),
        ]),
    )
    .unwrap();
    s.gc(Revision(8)).unwrap();
    assert!(s.reader(Revision(1)).is_err(), "revision 1 is collected");
    assert_eq!(all(&*r1), seen, "an open reader still sees revision 1");
    assert_eq!(
        r1.by_subject_object(&ObjectRef::new("user", "alice"))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        all(&*s.reader(Revision(8)).unwrap()),
        vec![
            "document:a#viewer@group:eng#member[expiration:2030-01-01T00:00:00Z]",
            "document:a#viewer@user:carol"
        ]
    );
}

#[test]
fn concurrent_readers_and_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(
        dir.path(),
        StoreOptions {
            sync_writes: false,
            ..Default::default()
        },
    )
    .unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 1..=200u64 {
                let r = rel(&format!("document:d#viewer@user:u{i}"));
                s.apply(Revision(i), &write(vec![WriteOp::Create(r)]))
                    .unwrap();
                if i % 50 == 0 {
                    s.gc(Revision(i - 10)).unwrap();
                }
            }
        });
        for _ in 0..2 {
            scope.spawn(|| {
                let doc = ObjectRef::new("document", "d");
                while s.head() < Revision(200) {
                    let head = s.head();
                    // Revision i holds exactly i relationships.
                    // GC may overtake a slow reader: then the revision is gone, and says so.
                    let r = match s.reader(head) {
                        Ok(r) => r,
                        Err(dhow_tuples::Error::RevisionUnavailable { .. }) => continue,
                        Err(e) => panic!("reader at {head}: {e}"),
                    };
                    assert_eq!(r.by_resource(&doc, "viewer").unwrap().len() as u64, head.0);
                }
            });
        }
    });
}

#[test]
fn a_checkpoint_restores_elsewhere_with_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    fill(&s);
    s.set_cluster_id(42).unwrap();
    let log = s.raft_log();
    log.append(&[(1, 1, b"one".to_vec())]).unwrap();
    log.set_hard_state(b"hs").unwrap();

    let cp = dir.path().join("cp");
    assert_eq!(s.checkpoint(&cp).unwrap(), Revision(7));
    // Later writes are not in the checkpoint.
    s.apply(
        Revision(9),
        &write(vec![WriteOp::Touch(rel("document:z#viewer@user:z"))]),
    )
    .unwrap();

    let restored =
        RocksStore::restore_from_checkpoint(&cp, &dir.path().join("b"), StoreOptions::default())
            .unwrap();
    assert_eq!(restored.head(), Revision(7));
    assert_eq!(restored.cluster_id().unwrap(), Some(42));
    for rev in [0, 1, 4, 7] {
        assert_eq!(
            all(&*restored.reader(Revision(rev)).unwrap()),
            all(&*s.reader(Revision(rev)).unwrap()),
            "revision {rev}"
        );
    }
    assert_eq!(
        restored.changes(Revision(0), 100).unwrap(),
        s.changes(Revision(0), 100).unwrap()[..4].to_vec()
    );
    assert_eq!(
        restored.schema_at(Revision(7)).unwrap().unwrap().0,
        Revision(3)
    );
    let rlog = restored.raft_log();
    assert_eq!(
        rlog.hard_state().unwrap(),
        None,
        "the sender's Raft state is dropped"
    );
    assert_eq!((rlog.first_index(), rlog.last_index()), (1, 0));
    restored.apply(Revision(8), &Batch::default()).unwrap();

    // The original checkpoint directory also opens as a store.
    let direct = RocksStore::open(&cp, StoreOptions::default()).unwrap();
    assert_eq!(direct.head(), Revision(7));
    drop(direct);

    let err =
        RocksStore::restore_from_checkpoint(&cp, &dir.path().join("b"), StoreOptions::default())
            .unwrap_err();
    assert!(matches!(err, StorageError::Invalid(_)), "{err}");
    assert!(
        s.checkpoint(&cp).is_err(),
        "an existing checkpoint dir is refused"
    );
}

#[test]
fn preconditions_see_earlier_deletes_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    s.apply(
        Revision(1),
        &write(vec![
            WriteOp::Create(rel("document:a#viewer@user:x")),
            WriteOp::Create(rel("document:a#viewer@user:y")),
        ]),
    )
    .unwrap();
    let doc_a = RelationshipFilter {
        resource_type: Some("document".into()),
        resource_id: Some("a".into()),
        ..Default::default()
    };
    let guarded = |pre: dhow_tuples::Precondition| WriteRequest {
        preconditions: vec![pre],
        ops: vec![WriteOp::Touch(rel("document:z#viewer@user:z"))],
    };
    let batch = Batch {
        writes: vec![
            // Hides the first match in key order; user:y still matches after it.
            WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Delete(rel("document:a#viewer@user:x"))],
            },
            guarded(dhow_tuples::Precondition::MustMatch(doc_a.clone())),
            WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Delete(rel("document:a#viewer@user:y"))],
            },
            // Now nothing matches.
            guarded(dhow_tuples::Precondition::MustNotMatch(doc_a.clone())),
            guarded(dhow_tuples::Precondition::MustMatch(doc_a)),
        ],
        schema: None,
    };
    let out = s.apply(Revision(2), &batch).unwrap();
    assert!(out[..4].iter().all(|o| o.is_ok()), "{out:?}");
    assert!(
        matches!(out[4], Err(dhow_tuples::Error::PreconditionFailed(_))),
        "{out:?}"
    );
}
