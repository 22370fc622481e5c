//! Messages a peer (or anyone who can reach the peer port) may forge: they are dropped
//! before raft-rs sees them, and the node keeps working. Before the checks, a heartbeat with
//! a commit index past the log panicked the Raft thread (every later write failed until a
//! restart), and an append from a non-member was applied.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhow_raft::{MemLog, NoTransport, RaftConfig, RaftHandle, Role};
use dhow_tuples::{SharedMemStore, TupleStore};
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};

fn start(peers: &[u64]) -> (RaftHandle, Arc<SharedMemStore>) {
    let store = Arc::new(SharedMemStore::new());
    let config = RaftConfig {
        tick: Duration::from_millis(10),
        initial_peers: peers.iter().map(|p| (*p, String::new())).collect(),
        ..RaftConfig::default()
    };
    let node = RaftHandle::start(
        config,
        Arc::new(Mutex::new(MemLog::default())),
        store.clone() as Arc<dyn TupleStore>,
        NoTransport,
    )
    .unwrap();
    (node, store)
}

fn message(kind: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_committing_past_the_log_does_not_stop_the_node() {
    // Node 1 of three, alone: it cannot elect itself, and stays a follower.
    let (node, _) = start(&[1, 2, 3]);
    let mut m = message(MessageType::MsgHeartbeat, 2, 1, 7);
    m.commit = 1_000_000;
    node.step(m.write_to_bytes().unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The Raft thread still answers.
    let status = node.status().await.expect("the raft thread is alive");
    assert_eq!(status.id, 1);
    assert!(status.commit < 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_non_members_or_for_another_node_are_dropped() {
    let (node, store) = start(&[1, 2, 3]);
    // An append from node 9 (not a member) carrying an entry at a higher term.
    let mut m = message(MessageType::MsgAppend, 9, 1, 50);
    m.entries.push(Entry {
        index: 1,
        term: 50,
        ..Default::default()
    });
    m.commit = 1;
    node.step(m.write_to_bytes().unwrap());
    // The same from a member, addressed to node 4.
    let mut m2 = m.clone();
    m2.from = 2;
    m2.to = 4;
    node.step(m2.write_to_bytes().unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = node.status().await.expect("the raft thread is alive");
    assert!(status.term < 50, "term moved to {}", status.term);
    assert_eq!(
        status.leader, 0,
        "no leader was taken from a forged message"
    );
    assert!(!matches!(status.role, Role::Leader));
    assert_eq!(store.head().0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_entry_that_does_not_decode_stops_the_node_loudly() {
    // Behind the door: a member (node 2, leader at term 5) appends an entry whose bytes are
    // no command, and commits it. Before, the node stopped applying with a log line only:
    // writes failed for good while its health said SERVING.
    let (node, store) = start(&[1, 2, 3]);
    let fault = node.fault();
    assert_eq!(*fault.borrow(), None);
    let mut m = message(MessageType::MsgAppend, 2, 1, 5);
    m.entries.push(Entry {
        index: 1,
        term: 5,
        data: vec![2, 0xee, 0xee, 0xee].into(),
        ..Default::default()
    });
    m.commit = 1;
    node.step(m.write_to_bytes().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let why = loop {
        if let Some(why) = fault.borrow().clone() {
            break why;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no fault reported for an undecodable committed entry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(why.contains("raft entry 1"), "{why}");
    assert_eq!(store.head().0, 0, "nothing applied past the entry");
    // Writes are refused with the reason, not accepted and lost.
    let e = node
        .write(dhow_tuples::WriteRequest {
            preconditions: vec![],
            ops: vec![],
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("raft entry 1"), "{e}");
}
