//! Damaged files: a store whose WAL is damaged before its end refuses to open (kind
//! Corruption) instead of opening behind what it acknowledged; a torn last record (a crash in
//! the middle of a write) is dropped and the store opens; a damaged table file is an error on
//! read, never different data.

use std::path::{Path, PathBuf};

use dhow_storage::{ErrorKind, RocksStore, StoreOptions};
use dhow_tuples::{
    parse_relationship, Batch, RelationshipFilter, Revision, TupleStore, WriteOp, WriteRequest,
};

const WRITES: u64 = 2000;

/// A store with `WRITES` revisions, one relationship each, every one synced.
fn filled(dir: &Path) {
    let s = RocksStore::open(dir, StoreOptions::default()).unwrap();
    for i in 1..=WRITES {
        let r = parse_relationship(&format!("document:d{i}#viewer@user:u")).unwrap();
        s.apply(
            Revision(i),
            &Batch {
                writes: vec![WriteRequest {
                    preconditions: vec![],
                    ops: vec![WriteOp::Create(r)],
                }],
                schema: None,
            },
        )
        .unwrap();
    }
}

/// The files of `dir` ending in `.ext`, oldest first.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn newest_wal(dir: &Path) -> PathBuf {
    files(dir, "log").pop().expect("a WAL file")
}

#[test]
fn damage_in_the_middle_of_the_wal_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let wal = newest_wal(dir.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    assert!(bytes.len() > 100_000, "WAL of {} bytes", bytes.len());
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0xff;
    }
    std::fs::write(&wal, &bytes).unwrap();
    // Before: RocksDB's point-in-time recovery opened this store at revision 1008 of 2000.
    match RocksStore::open(dir.path(), StoreOptions::default()) {
        Ok(s) => panic!(
            "a store with a damaged WAL opened at revision {} (it had acknowledged {WRITES})",
            s.head()
        ),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
            assert!(e.to_string().contains("opening the store"), "{e}");
        }
    }
    // Refused again, not repaired by the first attempt.
    let e = RocksStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
}

#[test]
fn a_torn_last_record_is_dropped_and_the_store_opens() {
    for cut in [1usize, 7, 40] {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path());
        let wal = newest_wal(dir.path());
        let bytes = std::fs::read(&wal).unwrap();
        // The last write was cut short: a crash while it was written (it was never
        // acknowledged: an acknowledged write was synced whole).
        std::fs::write(&wal, &bytes[..bytes.len() - cut]).unwrap();
        let s = RocksStore::open(dir.path(), StoreOptions::default())
            .unwrap_or_else(|e| panic!("cut {cut}: a torn tail must not refuse the store: {e}"));
        assert_eq!(s.head(), Revision(WRITES - 1), "cut {cut}");
        let r = s.reader(s.head()).unwrap();
        let all = r
            .read(&RelationshipFilter::default(), None, usize::MAX)
            .unwrap();
        assert_eq!(all.len() as u64, WRITES - 1, "cut {cut}");
        // And it goes on from there.
        s.apply(Revision(WRITES), &Batch::default()).unwrap();
    }
}

#[test]
fn a_damaged_table_file_is_an_error_never_other_data() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    // Reopening replays the WAL into table files.
    drop(RocksStore::open(dir.path(), StoreOptions::default()).unwrap());
    let tables = files(dir.path(), "sst");
    assert!(!tables.is_empty(), "no table files");
    for t in &tables {
        let mut bytes = std::fs::read(t).unwrap();
        // Damage data blocks (the first part of the file), not the footer.
        for at in [bytes.len() / 8, bytes.len() / 4, bytes.len() / 3] {
            bytes[at] ^= 0x5a;
        }
        std::fs::write(t, &bytes).unwrap();
    }
    let outcome = RocksStore::open(dir.path(), StoreOptions::default()).and_then(|s| {
        let r = s.snapshot_reader(s.head())?;
        Ok(
            dhow_tuples::SnapshotReader::read(&r, &RelationshipFilter::default(), None, usize::MAX)
                .map(|v| v.len()),
        )
    });
    match outcome {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corruption, "{e}"),
        Ok(Err(e)) => assert!(
            matches!(&e, dhow_tuples::Error::Storage(m) if m.to_string().to_lowercase().contains("corruption")),
            "{e}"
        ),
        Ok(Ok(n)) => panic!("a damaged table file read as {n} relationships"),
    }
}
