//! Three-node clusters of real `dhow serve` processes on loopback, under kill -9: a revocation
//! written on one node is denied with its token on every other node (also across leader
//! kills); acknowledged writes survive leader kills and the loss of every node at once; a new
//! node and a lagging node catch up by snapshot; a removed node stops receiving the log.
//!
//! CI runs a short form. The long form (`just soak`) sets `DHOW_SOAK_PAIRS` (revoke-then-check
//! pairs, default 150) and `DHOW_SOAK_KILLS` (leader kills, default 3).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhow_tests::cluster::{at_least, fully_consistent, revision, Client, Cluster, SCHEMA};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Retries a call while the cluster elects a leader or a node restarts (UNAVAILABLE, or the
/// node is unreachable), for up to 20 s.
macro_rules! retry {
    ($what:expr, $call:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match $call.await {
                Ok(v) => break v,
                Err(s)
                    if Instant::now() < deadline
                        && matches!(
                            s.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                        ) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(s) => panic!("{}: {s}", $what),
            }
        }
    }};
}

async fn schema(c: &Cluster) {
    let mut cl = c.client(0).await;
    retry!("write schema", cl.write_schema(SCHEMA));
}

/// The new-enemy problem: revoke on node A, check with the revocation's token on B and C:
/// denied, every time, while the leader is killed and restarted now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_denied_with_its_token_on_every_node() {
    let pairs = env_usize("DHOW_SOAK_PAIRS", 150);
    let kills = env_usize("DHOW_SOAK_KILLS", 3).max(1);
    let kill_every = (pairs / (kills + 1)).max(1);
    let mut c = Cluster::start(3).await;
    schema(&c).await;
    let mut killed: Option<usize> = None;
    let mut denied = 0usize;
    for i in 0..pairs {
        if i > 0 && i % kill_every == 0 {
            if let Some(k) = killed.take() {
                c.restart(k);
            } else {
                let leader = c.wait_leader(Duration::from_secs(20)).await;
                c.kill9(leader);
                killed = Some(leader);
            }
        }
        let running: Vec<usize> = (0..3).filter(|&j| c.nodes[j].running()).collect();
        let a = running[i % running.len()];
        let doc = format!("document:r{i}");
        let mut wa = c.client(a).await;
        let granted = retry!("grant", wa.set(&doc, "alice", true));
        let revoked = retry!("revoke", wa.set(&doc, "alice", false));
        assert!(revision(&revoked) > revision(&granted));
        for &b in running.iter().filter(|&&b| b != a) {
            let mut cb = c.client(b).await;
            let (allowed, at) = retry!("check", cb.check(&doc, "alice", at_least(&revoked)));
            assert!(
                !allowed,
                "pair {i}: revoked on node {} at revision {}, node {} still allows at revision {at}",
                c.nodes[a].id,
                revision(&revoked),
                c.nodes[b].id
            );
            assert!(
                at >= revision(&revoked),
                "pair {i}: node {} answered at {at}, below the token's {}",
                c.nodes[b].id,
                revision(&revoked)
            );
            denied += 1;
        }
    }
    assert!(denied >= pairs, "{denied} checks for {pairs} pairs");
    eprintln!("{pairs} revoke-then-check pairs, {denied} checks on other nodes, all denied");
}

/// Writers on every node; the leader is killed with kill -9 again and again. Every
/// acknowledged write is on every node afterwards, and a new leader serves writes quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_lose_no_acknowledged_write() {
    let kills = env_usize("DHOW_SOAK_KILLS", 3);
    let mut c = Cluster::start(3).await;
    schema(&c).await;
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.endpoint()).collect();
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3usize {
        let (endpoints, acked, stop) = (endpoints.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let ep = &endpoints[(w + n) % endpoints.len()];
                let doc = format!("document:w{w}_{n}");
                n += 1;
                let Ok(mut cl) = Client::try_connect(ep).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if let Ok(t) = cl.set(&doc, "u", true).await {
                    acked
                        .lock()
                        .unwrap()
                        .insert(format!("{doc}#viewer@user:u"), revision(&t));
                }
            }
        }));
    }
    let mut failovers = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let before = acked.lock().unwrap().len();
        c.kill9(leader);
        let t0 = Instant::now();
        // A new leader is serving writes once a write through a survivor is acknowledged.
        let survivor = (0..3).find(|&j| j != leader).unwrap();
        let mut cl = c.client(survivor).await;
        retry!(
            "write after the leader was killed",
            cl.set("document:probe", "p", true)
        );
        failovers.push(t0.elapsed());
        c.restart(leader);
        assert!(
            acked.lock().unwrap().len() >= before,
            "acknowledged writes only grow"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
    let mut exports = Vec::new();
    for i in 0..3 {
        let mut cl = c.client(i).await;
        let all = retry!("export", cl.export(fully_consistent()));
        for k in acked.keys() {
            assert!(
                all.contains_key(k),
                "node {}: acknowledged write {k} (revision {}) is missing",
                c.nodes[i].id,
                acked[k]
            );
        }
        exports.push(all);
    }
    assert!(
        exports.windows(2).all(|w| w[0] == w[1]),
        "the nodes disagree after healing"
    );
    failovers.sort();
    eprintln!(
        "{} acknowledged writes kept through {kills} leader kills; time to a new leader serving writes: min {:?}, median {:?}, max {:?}",
        acked.len(),
        failovers.first(),
        failovers.get(failovers.len() / 2),
        failovers.last()
    );
}

/// Power loss: kill -9 of every node at once during writes, then start them all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_node_at_once_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3).await;
    schema(&c).await;
    let mut acked = Vec::new();
    for i in 0..60 {
        let mut cl = c.client(i % 3).await;
        let t = retry!("write", cl.set(&format!("document:p{i}"), "u", true));
        acked.push((format!("document:p{i}#viewer@user:u"), revision(&t)));
    }
    for i in 0..3 {
        c.kill9(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_leader(Duration::from_secs(30)).await;
    for i in 0..3 {
        let mut cl = c.client(i).await;
        let all = retry!("export", cl.export(fully_consistent()));
        for (k, rev) in &acked {
            assert!(
                all.contains_key(k),
                "node {}: {k} (acknowledged at {rev}) lost",
                c.nodes[i].id
            );
        }
    }
}

/// A learner added to a running cluster catches up by snapshot and serves reads at a token;
/// promoted, it votes; removed, it no longer receives the log. A node kept down while the log
/// is compacted catches up by snapshot when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_lagging_nodes_catch_up_by_snapshot_and_removed_nodes_stop() {
    let mut c = Cluster::start_with_env(
        3,
        &[
            ("DHOW_RAFT_LOG_RETAIN", "10"),
            ("RUST_LOG", "warn,dhow_raft=info"),
        ],
    )
    .await;
    schema(&c).await;
    // A lagging node: node 3 is down while the log moves well past the retained window.
    c.kill9(2);
    let mut last = None;
    for i in 0..80 {
        let mut cl = c.client(i % 2).await;
        last = Some(retry!(
            "write",
            cl.set(&format!("document:l{i}"), "u", true)
        ));
    }
    let last = last.unwrap();
    c.restart(2);
    let mut c3 = c.client(2).await;
    let (allowed, at) = retry!(
        "check on the lagging node",
        c3.check("document:l79", "u", at_least(&last))
    );
    assert!(
        allowed && at >= revision(&last),
        "lagging node: {allowed} at {at}"
    );
    assert!(
        c.nodes[2].log_tail_all().contains("installing a snapshot"),
        "node 3 caught up without a snapshot: the log was not compacted?\n{}",
        c.nodes[2].log_tail()
    );
    // The snapshot was staged durably before it was installed, and the staged copy is gone
    // once the store holds it.
    assert!(
        c.nodes[2].log_tail_all().contains("snapshot staged"),
        "node 3 installed a snapshot it had not staged\n{}",
        c.nodes[2].log_tail()
    );
    let stage = c.nodes[2].data.join("snapshots");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(&stage)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "staged snapshots left after the restore: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A new learner.
    let mut admin = c.client(0).await;
    let i4 = c.spawn_joining(4);
    let mut add = pb_add(&c.nodes[i4].peer_addr(), true);
    retry!("add learner", admin_add(&mut admin, &mut add));
    let mut c4 = c.client(i4).await;
    let (allowed, _) = retry!(
        "check on the learner",
        c4.check("document:l79", "u", at_least(&last))
    );
    assert!(allowed, "the learner must see the data after its snapshot");
    let s = retry!("status", c4.status());
    assert_eq!(s.role, dhow_proto::v1::MemberRole::Learner as i32, "{s:?}");
    // Writes through the learner are forwarded to the leader.
    let t = retry!(
        "write through the learner",
        c4.set("document:via4", "u", true)
    );
    let mut c1 = c.client(0).await;
    let (allowed, _) = retry!("check", c1.check("document:via4", "u", at_least(&t)));
    assert!(allowed);
    // Promote, then remove.
    let mut promote = pb_add(&c.nodes[i4].peer_addr(), false);
    retry!("promote", admin_add(&mut admin, &mut promote));
    let s = retry!("status", c1.status());
    assert!(s.members.iter().any(|m| m.id == 4 && !m.learner), "{s:?}");
    retry!("remove", admin_remove(&mut admin, 4));
    let s = retry!("status", c1.status());
    assert!(s.members.iter().all(|m| m.id != 4), "{s:?}");
    let before = retry!("status of the removed node", c4.status()).applied_revision;
    for i in 0..10 {
        retry!("write", c1.set(&format!("document:after{i}"), "u", true));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = retry!("status of the removed node", c4.status()).applied_revision;
    assert!(
        after <= before + 1,
        "a removed node kept receiving the log: applied {before} -> {after}"
    );
}

fn pb_add(addr: &str, learner: bool) -> dhow_proto::v1::AddMemberRequest {
    dhow_proto::v1::AddMemberRequest {
        id: 4,
        peer_addr: addr.to_string(),
        learner,
        force: false,
    }
}

async fn admin_add(
    c: &mut Client,
    req: &mut dhow_proto::v1::AddMemberRequest,
) -> Result<(), tonic::Status> {
    dhow_proto::v1::cluster_service_client::ClusterServiceClient::new(c.channel.clone())
        .add_member(req.clone())
        .await
        .map(|_| ())
}

async fn admin_remove(c: &mut Client, id: u64) -> Result<(), tonic::Status> {
    dhow_proto::v1::cluster_service_client::ClusterServiceClient::new(c.channel.clone())
        .remove_member(dhow_proto::v1::RemoveMemberRequest { id, force: false })
        .await
        .map(|_| ())
}
