//! `dhow compact` on a data dir: it shrinks the database and keeps every relationship, and
//! it refuses, naming why, a dir without a database or one a node still holds open.

use std::path::Path;
use std::process::{Command, Output};

use dhow_storage::{RocksStore, StoreOptions};
use dhow_tuples::{
    parse_relationship, Batch, RelationshipFilter, Revision, TupleStore, WriteOp, WriteRequest,
};

fn compact(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dhow"))
        .args(["compact", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run dhow")
}

fn open(dir: &Path) -> RocksStore {
    RocksStore::open(&dir.join("db"), StoreOptions::default()).expect("open the store")
}

/// 3,000 relationships written in 30 revisions, and a third of them deleted in 10 more.
fn fill(store: &RocksStore) {
    let rel = |i: usize| {
        parse_relationship(&format!(
            "document:doc{}#viewer@user:user{}",
            i % 997,
            i / 997
        ))
        .unwrap()
    };
    let batch = |ops: Vec<WriteOp>| Batch {
        writes: vec![WriteRequest {
            preconditions: vec![],
            ops,
        }],
        schema: None,
    };
    for r in 0..30 {
        let ops = (r * 100..(r + 1) * 100)
            .map(|i| WriteOp::Create(rel(i)))
            .collect();
        store.apply(Revision(r as u64 + 1), &batch(ops)).unwrap();
    }
    for r in 0..10 {
        let ops = (r * 100..(r + 1) * 100)
            .map(|i| WriteOp::Delete(rel(i)))
            .collect();
        store.apply(Revision(r as u64 + 31), &batch(ops)).unwrap();
    }
}

fn alive(store: &RocksStore) -> Vec<String> {
    let reader = store.reader(store.head()).unwrap();
    let mut v: Vec<String> = reader
        .read(&RelationshipFilter::default(), None, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn compact_shrinks_the_database_and_keeps_every_relationship() {
    let dir = tempfile::tempdir().unwrap();
    let (before, head) = {
        let store = open(dir.path());
        fill(&store);
        (alive(&store), store.head())
    };
    assert_eq!(before.len(), 2000);

    let o = compact(dir.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // "…/db: B bytes before, A bytes after (…)": the WAL and the unflushed memtables are gone.
    let sizes = out
        .lines()
        .find_map(|l| l.split_once(": ")?.1.split_once(" bytes before, "))
        .unwrap_or_else(|| panic!("no size line in: {out}"));
    let before_bytes: u64 = sizes.0.parse().unwrap();
    let after_bytes: u64 = sizes.1.split(' ').next().unwrap().parse().unwrap();
    assert!(after_bytes < before_bytes, "{out}");
    let tuples = out
        .lines()
        .find(|l| l.starts_with("tuples "))
        .unwrap_or_else(|| panic!("no tuples line in: {out}"));
    let after_sst: u64 = tuples.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(after_sst > 0, "{out}");

    let store = open(dir.path());
    assert_eq!(store.head(), head);
    assert_eq!(alive(&store), before);
}

#[test]
fn compact_refuses_a_dir_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let o = compact(dir.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holds no Dhow database"), "{err}");
}

#[test]
fn compact_refuses_a_database_a_node_holds_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store);
    let o = compact(dir.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is a node running on it?"), "{err}");
    assert_eq!(alive(&store).len(), 2000);
}
