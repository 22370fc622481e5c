//! Model test: random batches (creates, touches, deletes, preconditions, schemas), GC and
//! reopens applied to `RocksStore` and to `dhow_tuples::SharedMemStore`; every read at every
//! readable revision must agree.

use dhow_storage::{RocksStore, StoreOptions};
use dhow_tuples::{
    Batch, CaveatRef, ObjectRef, Precondition, Relationship, RelationshipFilter, Revision,
    SharedMemStore, SnapshotReader, Subject, Timestamp, TupleStore, WriteOp, WriteRequest,
};
use proptest::prelude::*;

const TYPES: [&str; 2] = ["doc", "folder"];
const IDS: [&str; 2] = ["a", "b"];
const RELATIONS: [&str; 2] = ["viewer", "owner"];

fn subjects() -> Vec<Subject> {
    vec![
        Subject::object("user", "x"),
        Subject::object("user", "y"),
        Subject::object("user", "*"),
        Subject::set("group", "g", "member"),
        Subject::object("group", "g"),
    ]
}

fn relationship(t: usize, id: usize, rel: usize, sub: usize, payload: u8) -> Relationship {
    let mut r = Relationship::new(
        ObjectRef::new(TYPES[t], IDS[id]),
        RELATIONS[rel],
        subjects()[sub].clone(),
    );
    match payload {
        1 => r.expiration = Some(Timestamp(1_000_000)),
        2 => {
            r.caveat = Some(CaveatRef {
                name: "cav".into(),
                context: Some("{\"a\": 1}".into()),
            })
        }
        _ => {}
    }
    r
}

fn arb_rel() -> impl Strategy<Value = Relationship> {
    (0..2usize, 0..2usize, 0..2usize, 0..5usize, 0..3u8)
        .prop_map(|(t, id, rel, sub, p)| relationship(t, id, rel, sub, p))
}

fn arb_op() -> impl Strategy<Value = WriteOp> {
    (0..3u8, arb_rel()).prop_map(|(k, r)| match k {
        0 => WriteOp::Create(r),
        1 => WriteOp::Touch(r),
        _ => WriteOp::Delete(r),
    })
}

fn arb_filter() -> impl Strategy<Value = RelationshipFilter> {
    (
        proptest::option::of(0..2usize),
        proptest::option::of(0..2usize),
        proptest::option::of(0..2usize),
        proptest::option::of(prop_oneof![Just("user"), Just("group")]),
        proptest::option::of(prop_oneof![Just("x"), Just("*"), Just("g")]),
        proptest::option::of(proptest::option::of(Just("member"))),
    )
        .prop_map(|(t, id, rel, st, sid, srel)| RelationshipFilter {
            resource_type: t.map(|i| TYPES[i].to_string()),
            resource_id: id.map(|i| IDS[i].to_string()),
            relation: rel.map(|i| RELATIONS[i].to_string()),
            subject_type: st.map(str::to_string),
            subject_id: sid.map(str::to_string),
            subject_relation: srel.map(|o| o.map(str::to_string)),
        })
}

fn arb_write() -> impl Strategy<Value = WriteRequest> {
    (
        proptest::collection::vec(
            (any::<bool>(), arb_filter()).prop_map(|(must, f)| {
                if must {
                    Precondition::MustMatch(f)
                } else {
                    Precondition::MustNotMatch(f)
                }
            }),
            0..2,
        ),
        proptest::collection::vec(arb_op(), 0..4),
    )
        .prop_map(|(preconditions, ops)| WriteRequest { preconditions, ops })
}

#[derive(Debug, Clone)]
enum Step {
    Apply {
        gap: u64,
        writes: Vec<WriteRequest>,
        schema: Option<u8>,
    },
    Gc {
        back: u64,
    },
    Reopen,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1..3u64, proptest::collection::vec(arb_write(), 0..4), proptest::option::of(0..3u8))
            .prop_map(|(gap, writes, schema)| Step::Apply { gap, writes, schema }),
        1 => (0..4u64).prop_map(|back| Step::Gc { back }),
        1 => Just(Step::Reopen),
    ]
}

fn outcome_kind(o: &Result<(), dhow_tuples::Error>) -> &'static str {
    match o {
        Ok(()) => "ok",
        Err(dhow_tuples::Error::AlreadyExists(_)) => "exists",
        Err(dhow_tuples::Error::PreconditionFailed(_)) => "precondition",
        Err(dhow_tuples::Error::Invalid(_)) => "invalid",
        Err(_) => "other",
    }
}

fn paged(r: &dyn SnapshotReader, f: &RelationshipFilter, page: usize) -> Vec<Relationship> {
    let mut out = Vec::new();
    let mut after: Option<Relationship> = None;
    loop {
        let got = r.read(f, after.as_ref(), page).unwrap();
        assert!(got.len() <= page);
        if got.is_empty() {
            return out;
        }
        after = got.last().cloned();
        out.extend(got);
    }
}

fn compare_reads(rocks: &RocksStore, mem: &SharedMemStore, filters: &[RelationshipFilter]) {
    assert_eq!(rocks.head(), mem.head());
    assert_eq!(rocks.oldest(), mem.oldest());
    let (oldest, head) = (mem.oldest().0, mem.head().0);
    if oldest > 0 {
        assert!(rocks.reader(Revision(oldest - 1)).is_err());
    }
    assert!(rocks.reader(Revision(head + 1)).is_err());
    for rev in oldest..=head {
        let a = rocks.reader(Revision(rev)).unwrap();
        let b = mem.reader(Revision(rev)).unwrap();
        for t in TYPES {
            for id in IDS {
                let obj = ObjectRef::new(t, id);
                for rel in RELATIONS {
                    assert_eq!(
                        a.by_resource(&obj, rel).unwrap(),
                        b.by_resource(&obj, rel).unwrap(),
                        "by_resource {obj}#{rel} at {rev}"
                    );
                    for s in subjects() {
                        assert_eq!(
                            a.find(&obj, rel, &s).unwrap(),
                            b.find(&obj, rel, &s).unwrap(),
                            "find {obj}#{rel}@{s} at {rev}"
                        );
                    }
                }
            }
        }
        for s in subjects() {
            assert_eq!(
                a.by_subject_object(&s.object).unwrap(),
                b.by_subject_object(&s.object).unwrap(),
                "by_subject_object {} at {rev}",
                s.object
            );
            // The index alone: bare keys covering every alive one (lookups prove a key
            // absent by its missing from this list).
            let keys = a.by_subject_keys(&s.object).unwrap();
            assert!(keys
                .iter()
                .all(|k| k.caveat.is_none() && k.expiration.is_none()));
            for r in b.by_subject_object(&s.object).unwrap() {
                let bare = Relationship::new(r.resource.clone(), r.relation.clone(), r.subject);
                assert!(
                    keys.contains(&bare),
                    "by_subject_keys {} at {rev} lacks {bare:?}",
                    s.object
                );
            }
        }
        for f in filters {
            let all = b.read(f, None, usize::MAX).unwrap();
            assert_eq!(
                a.read(f, None, usize::MAX).unwrap(),
                all,
                "read {f:?} at {rev}"
            );
            assert_eq!(paged(&*a, f, 2), all, "paged read {f:?} at {rev}");
            assert_eq!(a.read(f, None, 0).unwrap(), vec![]);
        }
        for limit in [1, 100] {
            assert_eq!(
                rocks.changes(Revision(rev), limit).unwrap(),
                mem.changes(Revision(rev), limit).unwrap(),
                "changes after {rev} limit {limit}"
            );
        }
        assert_eq!(
            rocks.schema_at(Revision(rev)).unwrap(),
            mem.schema_at(Revision(rev)).unwrap()
        );
    }
    if oldest > 0 {
        assert!(rocks.changes(Revision(oldest - 1), 10).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn rocks_store_agrees_with_the_memory_store(
        steps in proptest::collection::vec(arb_step(), 1..10),
        filters in proptest::collection::vec(arb_filter(), 3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let open = || RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut rocks = open();
        let mem = SharedMemStore::new();
        let mut head = 0u64;
        for step in steps {
            match step {
                Step::Apply { gap, writes, schema } => {
                    head += gap;
                    let batch = Batch {
                        writes,
                        schema: schema.map(|s| format!("definition s{s} {{}}")),
                    };
                    let a = rocks.apply(Revision(head), &batch).unwrap();
                    let b = mem.apply(Revision(head), &batch).unwrap();
                    let ka: Vec<_> = a.iter().map(outcome_kind).collect();
                    let kb: Vec<_> = b.iter().map(outcome_kind).collect();
                    prop_assert_eq!(ka, kb, "outcomes at revision {}", head);
                }
                Step::Gc { back } => {
                    let before = Revision(head.saturating_sub(back));
                    rocks.gc(before).unwrap();
                    mem.gc(before).unwrap();
                }
                Step::Reopen => {
                    drop(rocks);
                    rocks = open();
                }
            }
            compare_reads(&rocks, &mem, &filters);
        }
    }
}
