//! A disk below its free-space reserve pauses the Raft loop's writes instead of failing
//! them: the write in flight is answered UNAVAILABLE "may or may not have been applied",
//! new writes are refused ("not applied"), the node reports a fault (health NOT_SERVING),
//! and once space is back it resumes by itself: the paused write is applied, in order, and
//! new writes work, with no restart. Before, a storage write that failed stopped the loop for
//! good (every later write failed until a restart, and health said SERVING).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhow_raft::{MemLog, NoTransport, RaftConfig, RaftError, RaftHandle};
use dhow_tuples::{
    parse_relationship, ObjectRef, Revision, SharedMemStore, TupleStore, WriteOp, WriteRequest,
};

fn touch(s: &str) -> WriteRequest {
    WriteRequest {
        preconditions: vec![],
        ops: vec![WriteOp::Touch(parse_relationship(s).unwrap())],
    }
}

async fn write_retrying(node: &RaftHandle, w: WriteRequest) -> Revision {
    for _ in 0..300 {
        match node.write(w.clone()).await {
            Err(RaftError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other.unwrap(),
        }
    }
    panic!("no leader after 3 s");
}

async fn wait_fault(node: &RaftHandle, want: bool) -> Option<String> {
    let fault = node.fault();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = fault.borrow().clone();
        if now.is_some() == want {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "fault {now:?}, waiting for {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn holds(store: &SharedMemStore, doc: &str) -> bool {
    let r = store.reader(store.head()).unwrap();
    !r.by_resource(&ObjectRef::new("document", doc), "viewer")
        .unwrap()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_writes_and_they_resume_once_space_is_freed() {
    let log = Arc::new(Mutex::new(MemLog::default()));
    let store = Arc::new(SharedMemStore::new());
    let config = RaftConfig {
        tick: Duration::from_millis(10),
        ..RaftConfig::default()
    };
    let node = RaftHandle::start(
        config,
        log.clone(),
        store.clone() as Arc<dyn TupleStore>,
        NoTransport,
    )
    .unwrap();
    let first = write_retrying(&node, touch("document:a#viewer@user:u")).await;
    assert!(holds(&store, "a"));

    log.lock().unwrap().set_full(true);
    let e = node
        .write(touch("document:b#viewer@user:u"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RaftError::Unavailable(m) if m.contains("may or may not have been applied")),
        "{e}"
    );
    let why = wait_fault(&node, true).await.unwrap();
    assert!(why.contains("disk is full"), "{why}");
    // A new write while paused: refused, never taken.
    let e = node
        .write(touch("document:c#viewer@user:u"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RaftError::Unavailable(m) if m.contains("not applied")),
        "{e}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.head(),
        first,
        "nothing written while the disk is full"
    );

    log.lock().unwrap().set_full(false);
    wait_fault(&node, false).await;
    // The paused write is applied after the first, and new writes work.
    let next = write_retrying(&node, touch("document:d#viewer@user:u")).await;
    assert!(holds(&store, "b"), "the paused write was skipped");
    assert!(!holds(&store, "c"), "a refused write was applied");
    assert!(holds(&store, "d"));
    assert!(next.0 >= first.0 + 2, "{next:?} after {first:?}");
}
