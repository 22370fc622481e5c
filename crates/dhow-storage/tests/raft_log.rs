//! The Raft log store: append, conflict truncation, bounded reads, compaction, snapshot
//! install, hard and conf state, and what survives a reopen.

use dhow_storage::{RaftEntry, RocksStore, StorageError, StoreOptions};

fn e(index: u64, term: u64) -> RaftEntry {
    (
        index,
        term,
        format!("entry {index} term {term}").into_bytes(),
    )
}

fn open(path: &std::path::Path) -> RocksStore {
    RocksStore::open(path, StoreOptions::default()).unwrap()
}

#[test]
fn append_read_and_truncate_on_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let log = s.raft_log();
    assert_eq!((log.first_index(), log.last_index()), (1, 0));
    assert_eq!(log.snapshot_meta(), (0, 0));
    assert_eq!(log.entries(1, 1, None).unwrap(), vec![]);

    log.append(&(1..=5).map(|i| e(i, 1)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(log.last_index(), 5);
    assert_eq!(log.entry(3).unwrap(), Some((1, e(3, 1).2)));
    assert_eq!(log.term(5).unwrap(), Some(1));
    assert_eq!(log.term(6).unwrap(), None);
    assert_eq!(
        log.entries(2, 5, None).unwrap(),
        vec![e(2, 1), e(3, 1), e(4, 1)]
    );

    // A new leader overwrites from index 3 with a shorter suffix: 4 and 5 go away.
    log.append(&[e(3, 2)]).unwrap();
    assert_eq!(log.last_index(), 3);
    assert_eq!(log.entry(3).unwrap().map(|x| x.0), Some(2));
    assert_eq!(log.entry(4).unwrap(), None);
    assert_eq!(log.entry(5).unwrap(), None);
    assert!(matches!(
        log.entries(1, 5, None),
        Err(StorageError::LogUnavailable { index: 4, last: 3 })
    ));
    // A longer overwrite replaces and extends.
    log.append(&[e(2, 3), e(3, 3), e(4, 3), e(5, 3), e(6, 3)])
        .unwrap();
    assert_eq!(log.last_index(), 6);
    assert_eq!(
        log.entries(1, 7, None).unwrap(),
        vec![e(1, 1), e(2, 3), e(3, 3), e(4, 3), e(5, 3), e(6, 3)]
    );
    // Appending right after the end just extends.
    log.append(&[e(7, 3)]).unwrap();
    assert_eq!(log.last_index(), 7);

    // Size-limited reads return at least one entry.
    let one = e(1, 1).2.len() as u64;
    assert_eq!(log.entries(1, 8, Some(0)).unwrap().len(), 1);
    assert_eq!(log.entries(1, 8, Some(one * 2)).unwrap().len(), 2);
    assert_eq!(log.entries(1, 8, Some(one * 2 + 1)).unwrap().len(), 2);
    assert_eq!(log.entries(1, 8, Some(u64::MAX)).unwrap().len(), 7);

    // Bad appends are errors and change nothing.
    assert!(matches!(
        log.append(&[e(9, 3)]),
        Err(StorageError::Invalid(m)) if m.contains("gap")
    ));
    assert!(matches!(
        log.append(&[e(8, 3), e(10, 3)]),
        Err(StorageError::Invalid(m)) if m.contains("consecutive")
    ));
    assert_eq!(log.last_index(), 7);
    log.append(&[]).unwrap();
    assert_eq!(log.last_index(), 7);
}

#[test]
fn compaction_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let log = s.raft_log();
    log.append(&(1..=10).map(|i| e(i, i / 4 + 1)).collect::<Vec<_>>())
        .unwrap();
    log.compact(4).unwrap();
    assert_eq!(log.snapshot_meta(), (4, 2));
    assert_eq!((log.first_index(), log.last_index()), (5, 10));
    assert_eq!(log.entry(4).unwrap(), None);
    assert_eq!(
        log.term(4).unwrap(),
        Some(2),
        "the snapshot index keeps its term"
    );
    assert_eq!(log.term(3).unwrap(), None);
    assert!(matches!(
        log.entries(4, 6, None),
        Err(StorageError::LogCompacted { index: 4, first: 5 })
    ));
    assert_eq!(log.entries(5, 7, None).unwrap(), vec![e(5, 2), e(6, 2)]);
    assert!(matches!(
        log.append(&[e(4, 9)]),
        Err(StorageError::Invalid(m)) if m.contains("compacted")
    ));
    // Compacting below the snapshot point does nothing; past the end fails.
    log.compact(2).unwrap();
    assert_eq!(log.snapshot_meta(), (4, 2));
    assert!(matches!(
        log.compact(11),
        Err(StorageError::LogUnavailable { index: 11, .. })
    ));
    // Compacting everything leaves an empty log that continues after the snapshot.
    log.compact(10).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (11, 10));
    log.append(&[e(11, 4)]).unwrap();

    // Installing a snapshot drops the whole log.
    log.install_snapshot(20, 5).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (21, 20));
    assert_eq!(log.entry(11).unwrap(), None);
    assert!(
        log.install_snapshot(15, 5).is_err(),
        "an older snapshot is refused"
    );
    log.append(&[e(21, 5)]).unwrap();
    assert_eq!(log.entries(21, 22, None).unwrap(), vec![e(21, 5)]);
}

#[test]
fn state_and_log_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        let log = s.raft_log();
        assert_eq!(log.hard_state().unwrap(), None);
        assert_eq!(log.conf_state().unwrap(), None);
        log.persist(&(1..=6).map(|i| e(i, 1)).collect::<Vec<_>>(), Some(b"hs-1"))
            .unwrap();
        log.set_conf_state(b"voters 1 2 3").unwrap();
        log.compact(2).unwrap();
        log.append(&[e(5, 2)]).unwrap();
        log.set_hard_state(b"hs-2").unwrap();
    }
    let s = open(dir.path());
    let log = s.raft_log();
    assert_eq!(log.hard_state().unwrap().as_deref(), Some(&b"hs-2"[..]));
    assert_eq!(
        log.conf_state().unwrap().as_deref(),
        Some(&b"voters 1 2 3"[..])
    );
    assert_eq!(log.snapshot_meta(), (2, 1));
    assert_eq!((log.first_index(), log.last_index()), (3, 5));
    assert_eq!(
        log.entries(3, 6, None).unwrap(),
        vec![e(3, 1), e(4, 1), e(5, 2)]
    );
    // The tuple side of the same database is untouched.
    assert_eq!(dhow_tuples::TupleStore::head(&s), dhow_tuples::Revision(0));
}

/// What the Raft loop does for a Ready while it applies: the entries and hard state written
/// without a sync, then synced on another thread while relationships are applied on this
/// one; both are there after a reopen, and the unsynced write refuses what `persist` refuses.
#[test]
fn an_unsynced_append_is_synced_beside_an_apply() {
    use dhow_tuples::{parse_relationship, Batch, Revision, TupleStore, WriteOp, WriteRequest};
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        let log = s.raft_log();
        log.persist_unsynced(&(1..=3).map(|i| e(i, 1)).collect::<Vec<_>>(), Some(b"hs-1"))
            .unwrap();
        // Read back before any sync: the loop's next Ready reads what it wrote.
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.hard_state().unwrap().as_deref(), Some(&b"hs-1"[..]));
        let err = log.persist_unsynced(&[e(9, 1)], None).unwrap_err();
        assert!(err.to_string().contains("gap"), "{err}");
        let syncing = {
            let log = log.clone();
            std::thread::spawn(move || log.sync())
        };
        for rev in 1..=3 {
            let r = parse_relationship(&format!("document:d{rev}#viewer@user:u")).unwrap();
            let batch = Batch {
                writes: vec![WriteRequest {
                    preconditions: vec![],
                    ops: vec![WriteOp::Touch(r)],
                }],
                schema: None,
            };
            s.apply(Revision(rev), &batch).unwrap();
        }
        syncing.join().unwrap().unwrap();
        log.sync().unwrap();
    }
    let s = open(dir.path());
    let log = s.raft_log();
    assert_eq!(
        log.entries(1, 4, None).unwrap(),
        vec![e(1, 1), e(2, 1), e(3, 1)]
    );
    assert_eq!(log.hard_state().unwrap().as_deref(), Some(&b"hs-1"[..]));
    assert_eq!(dhow_tuples::TupleStore::head(&s), dhow_tuples::Revision(3));
}
