//! A data dir written before format 2: a RocksDB Raft log whose entries, change context and
//! membership are in format 1 (bytes captured from the old encoders in `tests/golden/v1`,
//! appended through the real `RaftLogStore`) is read by this build: its entries apply, its
//! membership change names the learner's address, and new writes follow in format 2. An
//! entry of a format nobody knows stops the node with an error naming the version.
#![cfg(feature = "rocks")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dhow_raft::{DecodeError, NoTransport, Problem, RaftConfig, RaftError, RaftHandle, Role};
use dhow_storage::{RocksStore, StoreOptions};
use dhow_tuples::{
    parse_relationship, ObjectRef, Revision, Subject, TupleStore, WriteOp, WriteRequest,
};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState};

/// The bytes of a golden dump (`src/golden.rs` writes them): 16 bytes a line after an offset.
fn golden_v1(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/v1")
        .join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .flat_map(|l| {
            l[10..57]
                .split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn normal(index: u64, data: Vec<u8>) -> (u64, u64, Vec<u8>) {
    let e = Entry {
        index,
        term: 1,
        data: data.into(),
        ..Default::default()
    };
    (index, 1, e.write_to_bytes().unwrap())
}

/// Writes a log the way a node before format 2 left it: four committed entries (writes, a
/// schema, writes to subject sets and wildcards, a learner added), a single-voter membership.
fn old_data_dir(path: &Path, first_entry: Vec<u8>) {
    let store = RocksStore::open(path, StoreOptions::default()).unwrap();
    let log = store.raft_log();
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    cc.node_id = 2;
    cc.context = golden_v1("change_context").into();
    let mut change = Entry {
        index: 4,
        term: 1,
        data: cc.write_to_bytes().unwrap().into(),
        ..Default::default()
    };
    change.set_entry_type(EntryType::EntryConfChange);
    log.append(&[
        normal(1, first_entry),
        normal(2, golden_v1("entry_schema")),
        normal(3, golden_v1("entry_writes_subject_set_and_wildcard")),
        (4, 1, change.write_to_bytes().unwrap()),
    ])
    .unwrap();
    let hs = HardState {
        term: 1,
        vote: 1,
        commit: 4,
        ..Default::default()
    };
    log.set_hard_state(&hs.write_to_bytes().unwrap()).unwrap();
    // Membership in format 1: 0xD1, then bincode of (protobuf conf state, peers).
    let conf = ConfState::from((vec![1], vec![])).write_to_bytes().unwrap();
    let peers = BTreeMap::from([(1u64, "127.0.0.1:7001".to_string())]);
    let mut membership = vec![0xD1];
    bincode::serialize_into(&mut membership, &(conf, &peers)).unwrap();
    log.set_conf_state(&membership).unwrap();
}

fn start(store: &Arc<RocksStore>) -> RaftHandle {
    let config = RaftConfig {
        tick: Duration::from_millis(10),
        ..RaftConfig::default()
    };
    RaftHandle::start(
        config,
        store.raft_log(),
        store.clone() as Arc<dyn TupleStore>,
        NoTransport,
    )
    .unwrap()
}

async fn write_retrying(node: &RaftHandle, w: WriteRequest) -> Result<Revision, RaftError> {
    for _ in 0..300 {
        match node.write(w.clone()).await {
            Err(RaftError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other,
        }
    }
    panic!("no leader after 3 s");
}

fn touch(s: &str) -> WriteRequest {
    WriteRequest {
        preconditions: vec![],
        ops: vec![WriteOp::Touch(parse_relationship(s).unwrap())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_format_1_is_applied_and_continued_in_format_2() {
    let dir = tempfile::tempdir().unwrap();
    old_data_dir(dir.path(), golden_v1("entry_writes_create"));
    let store = Arc::new(RocksStore::open(dir.path(), StoreOptions::default()).unwrap());
    let mut node = start(&store);
    node.wait_applied(Revision(4), Duration::from_secs(5))
        .await
        .unwrap();
    let reader = store.reader(Revision(4)).unwrap();
    let viewers = reader
        .by_resource(&ObjectRef::new("document", "readme"), "viewer")
        .unwrap();
    let subjects: Vec<String> = viewers.iter().map(|r| r.subject.to_string()).collect();
    assert!(subjects.contains(&"user:alice".to_string()), "{subjects:?}");
    assert!(
        subjects.contains(&"group:eng#member".to_string()),
        "{subjects:?}"
    );
    assert!(subjects.contains(&"user:*".to_string()), "{subjects:?}");
    let tenant = reader
        .find(
            &ObjectRef::new("tenant/document", "a/b_c|d-e=f+g"),
            "parent",
            &Subject::set("tenant/folder", "x", "viewer"),
        )
        .unwrap();
    assert!(tenant.is_some());
    drop(reader);
    let (at, schema) = store.schema_at(Revision(4)).unwrap().unwrap();
    assert_eq!(at, Revision(2));
    assert!(schema.contains("permission view = viewer"), "{schema}");
    // New entries are format 2, and the mixed log reads back after a restart.
    let rev = write_retrying(&node, touch("document:new#viewer@user:zed"))
        .await
        .unwrap();
    assert!(rev > Revision(4));
    // The learner's address came from the format 1 change context.
    let status = node.status().await.unwrap();
    assert_eq!(status.role, Role::Leader);
    let learner = status.members.iter().find(|m| m.id == 2).unwrap();
    assert!(learner.learner);
    assert_eq!(learner.addr, "10.0.0.4:7001");
    node.shutdown();
    drop(node);
    drop(store);
    let store = Arc::new(RocksStore::open(dir.path(), StoreOptions::default()).unwrap());
    let (_, data) = store.raft_log().entry(rev.0).unwrap().unwrap();
    let entry = Entry::parse_from_bytes(&data).unwrap();
    assert_eq!(entry.data[0], 2, "written in format 2");
    let node = start(&store);
    let again = write_retrying(&node, touch("document:new2#viewer@user:zed"))
        .await
        .unwrap();
    assert!(again > rev);
    assert!(
        store
            .reader(again)
            .unwrap()
            .by_resource(&ObjectRef::new("document", "new"), "viewer")
            .unwrap()
            .len()
            == 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_an_unknown_format_stops_the_node_naming_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut future = golden_v1("entry_writes_create");
    future[0] = 9;
    old_data_dir(dir.path(), future);
    let store = Arc::new(RocksStore::open(dir.path(), StoreOptions::default()).unwrap());
    // The log is read whole at start: the node refuses to start, naming the entry and the
    // version (a newer build's log, not a damaged one).
    let config = RaftConfig {
        tick: Duration::from_millis(10),
        ..RaftConfig::default()
    };
    let err = match RaftHandle::start(
        config,
        store.raft_log(),
        store.clone() as Arc<dyn TupleStore>,
        NoTransport,
    ) {
        Ok(_) => panic!("a node started on a log entry of an unknown format"),
        Err(e) => e,
    };
    assert!(
        matches!(
            &err,
            RaftError::Codec { what, error: DecodeError { problem: Problem::UnknownVersion { found: 9, .. }, .. } }
                if what == "raft entry 1"
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("unknown format version 9"),
        "{err}"
    );
    assert_eq!(
        store.head(),
        Revision(0),
        "nothing applied past the bad entry"
    );
}
