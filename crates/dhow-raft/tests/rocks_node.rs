//! A one-node Raft cluster on the RocksDB store and log: acknowledged writes survive closing
//! and reopening the database, and revision numbering continues.
#![cfg(feature = "rocks")]

use std::sync::Arc;
use std::time::Duration;

use dhow_raft::{NoTransport, RaftConfig, RaftError, RaftHandle};
use dhow_storage::{RocksStore, StoreOptions};
use dhow_tuples::{parse_relationship, ObjectRef, Revision, TupleStore, WriteOp, WriteRequest};

fn touch(s: &str) -> WriteRequest {
    WriteRequest {
        preconditions: vec![],
        ops: vec![WriteOp::Touch(parse_relationship(s).unwrap())],
    }
}

async fn write_retrying(node: &RaftHandle, w: WriteRequest) -> Revision {
    for _ in 0..300 {
        match node.write(w.clone()).await {
            Ok(rev) => return rev,
            Err(RaftError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    panic!("no leader after 3 s");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    {
        let store = Arc::new(RocksStore::open(dir.path(), StoreOptions::default()).unwrap());
        let mut node = start(&store);
        for i in 0..50 {
            acked.push((
                i,
                write_retrying(&node, touch(&format!("document:d{i}#viewer@user:u{i}"))).await,
            ));
        }
        node.shutdown();
    }
    let store = Arc::new(RocksStore::open(dir.path(), StoreOptions::default()).unwrap());
    let last = acked.last().unwrap().1;
    assert!(
        store.head() >= last,
        "head {} after reopen, last ack {last}",
        store.head()
    );
    for (i, rev) in &acked {
        let r = store.reader(*rev).unwrap();
        assert_eq!(
            r.by_resource(&ObjectRef::new("document", format!("d{i}")), "viewer")
                .unwrap()
                .len(),
            1
        );
    }
    let node = start(&store);
    let next = write_retrying(&node, touch("document:after#viewer@user:x")).await;
    assert!(next > last);
}
