//! Three-node clusters of real `dhow serve` processes with a fault-injecting proxy on every
//! directed peer link, under partitions (the leader cut off, a follower cut off, one-way
//! loss of the leader's messages) and lossy, slow links, while clients write and check on
//! every node. The minority never acknowledges a write or answers a consistent read with
//! data older than asked; after healing every node converges; and the whole history of
//! every run passes the history checker (`dhow_tests::history`).
//!
//! With three nodes, cutting one off is the 2/1 split: the leader's side or the other side.
//! One run also kills the leader with kill -9 and restarts it, in the same history.
//! A negative control serves reads from a cut-off replica without waiting for the token and
//! shows that the checker catches it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhow_proto::v1 as pb;
use dhow_tests::cluster::{at_least, fully_consistent, revision, Client, Cluster, SCHEMA};
use dhow_tests::history::{self, Call, Key, Outcome, Read, Recorder};
use dhow_tests::proxy::Fault;

/// Retries a call while the cluster elects a leader or heals (any error), for up to 30 s.
macro_rules! retry {
    ($what:expr, $call:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match $call.await {
                Ok(v) => break v,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(s) => panic!("{}: {s}", $what),
            }
        }
    }};
}

/// A small deterministic generator for the clients' choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(rng: &mut Rng) -> Key {
    (format!("d{}", rng.below(4)), format!("u{}", rng.below(2)))
}

/// Clients on every node until stopped, recording every call.
struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Session clients (writes, and checks at their newest token or fully consistent, on a
    /// random node each time) and one minimize_latency reader per node.
    fn start(c: &Cluster, rec: &Recorder) -> Workload {
        let nodes: Vec<(u64, String)> = c.nodes.iter().map(|n| (n.id, n.endpoint())).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for client in 0..3usize {
            let (nodes, stop, rec) = (nodes.clone(), stop.clone(), rec.clone());
            tasks.push(tokio::spawn(async move {
                let clients: Vec<Client> = nodes
                    .iter()
                    .map(|(_, ep)| Client::lazy(ep, Duration::from_secs(3)))
                    .collect();
                let mut rng = Rng(0x5EED ^ ((client as u64 + 1) * 0x9E37_79B9));
                let mut token: Option<pb::ConsistencyToken> = None;
                while !stop.load(Ordering::Relaxed) {
                    let n = rng.below(nodes.len() as u64) as usize;
                    let mut cl = clients[n].clone();
                    let k = key(&mut rng);
                    let start = rec.now();
                    let roll = rng.below(10);
                    let (call, outcome, got) = if roll < 4 {
                        let grant = rng.below(2) == 0;
                        let r = cl.set(&format!("document:{}", k.0), &k.1, grant).await;
                        let call = Call::Write { key: k, grant };
                        match r {
                            Ok(t) => (call, Outcome::Written(revision(&t)), Some(t)),
                            Err(s) => (call, Outcome::Failed(s.to_string()), None),
                        }
                    } else {
                        let (read, consistency) = match (&token, roll) {
                            (Some(t), 4..=7) => (Read::AtLeast(revision(t)), at_least(t)),
                            _ => (Read::Full, fully_consistent()),
                        };
                        let r = cl
                            .check(&format!("document:{}", k.0), &k.1, consistency)
                            .await;
                        let call = Call::Check { key: k, read };
                        match r {
                            Ok((allowed, at)) => (call, Outcome::Checked { allowed, at }, None),
                            Err(s) => (call, Outcome::Failed(s.to_string()), None),
                        }
                    };
                    // A session keeps the newest token it was given.
                    let at = match &outcome {
                        Outcome::Written(r) => Some(*r),
                        Outcome::Checked { at, .. } => Some(*at),
                        Outcome::Failed(_) => None,
                    };
                    if let Some(t) = got {
                        if token
                            .as_ref()
                            .is_none_or(|old| revision(old) < revision(&t))
                        {
                            token = Some(t);
                        }
                    } else if let (Some(at), Some(old)) = (at, &token) {
                        // A check's revision advances the session too (its token is the
                        // same cluster's, at that revision).
                        if at > revision(old) {
                            token = Some(token_at(old, at));
                        }
                    }
                    rec.record(client, nodes[n].0, true, call, start, outcome);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
        for (i, (id, ep)) in nodes.iter().enumerate() {
            let (stop, rec, id, ep) = (stop.clone(), rec.clone(), *id, ep.clone());
            let client = 100 + i;
            tasks.push(tokio::spawn(async move {
                let mut cl = Client::lazy(&ep, Duration::from_secs(3));
                let mut rng = Rng(0xFACE ^ ((client as u64) * 0x9E37_79B9));
                while !stop.load(Ordering::Relaxed) {
                    let k = key(&mut rng);
                    let start = rec.now();
                    let r = cl.check(&format!("document:{}", k.0), &k.1, None).await;
                    let outcome = match r {
                        Ok((allowed, at)) => Outcome::Checked { allowed, at },
                        Err(s) => Outcome::Failed(s.to_string()),
                    };
                    let call = Call::Check {
                        key: k,
                        read: Read::Minimize,
                    };
                    rec.record(client, id, false, call, start, outcome);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        Workload { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a client task panicked");
        }
    }
}

/// A token of the same cluster as `t`, at revision `at`.
fn token_at(t: &pb::ConsistencyToken, at: u64) -> pb::ConsistencyToken {
    let mut tok = dhow_server::token::Token::decode(&t.token).expect("token");
    tok.revision = dhow_tuples::Revision(at);
    pb::ConsistencyToken {
        token: tok.encode(),
    }
}

/// The direct assertions while `cut` is cut off from the others: a write through it is not
/// acknowledged, and neither a fully_consistent read nor a read at a token from the majority
/// is answered. The writes go into the history too.
async fn minority_refuses(c: &Cluster, rec: &Recorder, cut: usize) {
    let majority: Vec<usize> = (0..c.nodes.len()).filter(|&i| i != cut).collect();
    // The majority keeps (or regains) a leader and takes writes.
    let m_id = c.nodes[majority[0]].id;
    let mut m = Client::lazy(&c.nodes[majority[0]].endpoint(), Duration::from_secs(3));
    let fence: Key = ("fence".into(), "m".into());
    let fresh = loop {
        let start = rec.now();
        let r = m.set("document:fence", "m", true).await;
        let call = Call::Write {
            key: fence.clone(),
            grant: true,
        };
        match r {
            Ok(t) => {
                rec.record(
                    200,
                    m_id,
                    false,
                    call,
                    start,
                    Outcome::Written(revision(&t)),
                );
                break t;
            }
            Err(s) => rec.record(
                200,
                m_id,
                false,
                call,
                start,
                Outcome::Failed(s.to_string()),
            ),
        }
        assert!(
            start < Duration::from_secs(60),
            "the majority took no write for a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut minority = Client::lazy(&c.nodes[cut].endpoint(), Duration::from_secs(4));
    let start = rec.now();
    let w = minority.set("document:minority", "x", true).await;
    rec.record(
        201,
        c.nodes[cut].id,
        false,
        Call::Write {
            key: ("minority".into(), "x".into()),
            grant: true,
        },
        start,
        match &w {
            Ok(t) => Outcome::Written(revision(t)),
            Err(s) => Outcome::Failed(s.to_string()),
        },
    );
    assert!(
        w.is_err(),
        "node {} (cut off) acknowledged a write: {w:?}",
        c.nodes[cut].id
    );
    let r = minority
        .check("document:fence", "m", at_least(&fresh))
        .await;
    assert!(
        r.is_err(),
        "node {} (cut off) answered at a token from the majority (revision {}): {r:?}",
        c.nodes[cut].id,
        revision(&fresh)
    );
    let r = minority
        .check("document:fence", "m", fully_consistent())
        .await;
    assert!(
        r.is_err(),
        "node {} (cut off) answered a fully_consistent read: {r:?}",
        c.nodes[cut].id
    );
}

/// After healing: a final write, then each node's Watch log to it and export at it, and the
/// history check.
async fn converge_and_check(c: &Cluster, rec: &Recorder, schema: &pb::ConsistencyToken) {
    let mut cl = c.client(0).await;
    let start = rec.now();
    let last = retry!("the final write", cl.set("document:final", "f", true));
    rec.record(
        999,
        c.nodes[0].id,
        false,
        Call::Write {
            key: ("final".into(), "f".into()),
            grant: true,
        },
        start,
        Outcome::Written(revision(&last)),
    );
    let mut logs = Vec::new();
    let mut exports = Vec::new();
    for n in &c.nodes {
        let mut cl = Client::connect(&n.endpoint()).await;
        let export = retry!("export after healing", cl.export(at_least(&last)));
        exports.push((n.id, export.into_keys().collect::<BTreeSet<String>>()));
        let log = cl
            .watch_log(schema, revision(&last))
            .await
            .unwrap_or_else(|e| panic!("node {}: {e}", n.id));
        logs.push((n.id, log));
    }
    let events = rec.events();
    match history::check(SCHEMA, revision(schema), &events, &logs, &exports) {
        Ok(sum) => eprintln!("history checked: {sum}"),
        Err(v) => panic!(
            "the history of {} calls breaks {} rule(s):\n{}",
            events.len(),
            v.len(),
            v.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        ),
    }
}

async fn setup() -> (Cluster, pb::ConsistencyToken) {
    let c = Cluster::start_proxied(3).await;
    let mut cl = c.client(0).await;
    let schema = retry!("write schema", cl.write_schema(SCHEMA));
    (c, schema)
}

/// How long a fault lasts: long enough for an election (1 to 2 s) and some traffic on both
/// sides.
const FAULT: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_cut_off_never_acknowledges_and_the_cluster_heals() {
    let (c, schema) = setup().await;
    let rec = Recorder::default();
    let load = Workload::start(&c, &rec);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    c.mesh().isolate(c.nodes[leader].id, Fault::Blackhole);
    minority_refuses(&c, &rec, leader).await;
    tokio::time::sleep(FAULT).await;
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    c.mesh().set_all(Fault::Pass);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;
    assert_ne!(
        leader, new_leader,
        "the majority did not elect a new leader while the old one was cut off"
    );
    converge_and_check(&c, &rec, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_never_answers_stale_and_catches_up() {
    let (mut c, schema) = setup().await;
    let rec = Recorder::default();
    let load = Workload::start(&c, &rec);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    // Drop: connections reset and refused (unlike the blackhole above).
    c.mesh().isolate(c.nodes[follower].id, Fault::Drop);
    minority_refuses(&c, &rec, follower).await;
    tokio::time::sleep(FAULT).await;
    c.mesh().set_all(Fault::Pass);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // And a crash in the same history: kill -9 of the leader, restarted on its data dir.
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    c.kill9(leader);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.restart(leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;
    converge_and_check(&c, &rec, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_loss_of_the_leaders_messages_moves_leadership_safely() {
    let (c, schema) = setup().await;
    let rec = Recorder::default();
    let load = Workload::start(&c, &rec);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let lid = c.nodes[leader].id;
    // The leader hears the others, but nothing it sends arrives.
    for n in &c.nodes {
        if n.id != lid {
            c.mesh().set(lid, n.id, Fault::Blackhole);
        }
    }
    tokio::time::sleep(FAULT).await;
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    c.mesh().set_all(Fault::Pass);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;
    assert_ne!(
        leader, new_leader,
        "the followers, hearing nothing from the leader, did not elect another"
    );
    converge_and_check(&c, &rec, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_lossy_links_keep_every_answer_right() {
    let (c, schema) = setup().await;
    let rec = Recorder::default();
    let load = Workload::start(&c, &rec);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.mesh().set_all(Fault::Delay(Duration::from_millis(20)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.mesh().set_all(Fault::Lossy(0.05));
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.mesh().set_all(Fault::Pass);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;
    converge_and_check(&c, &rec, &schema).await;
}

/// The negative control: a reader that asks a cut-off replica with minimize_latency while its
/// session holds a newer token (what a server that skipped the wait for the token would
/// answer). The checker must catch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_reads_served_from_a_lagging_replica_without_waiting() {
    let (c, schema) = setup().await;
    let rec = Recorder::default();
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let mut w = c.client(leader).await;
    let k: Key = ("d0".into(), "u0".into());
    let start = rec.now();
    let t = retry!("grant", w.set("document:d0", "u0", true));
    rec.record(
        0,
        c.nodes[leader].id,
        true,
        Call::Write {
            key: k.clone(),
            grant: true,
        },
        start,
        Outcome::Written(revision(&t)),
    );
    // The follower has the grant; then it is cut off and the grant is revoked.
    let mut f = c.client(follower).await;
    retry!(
        "the follower sees the grant",
        f.check("document:d0", "u0", at_least(&t))
    );
    c.mesh().isolate(c.nodes[follower].id, Fault::Drop);
    let start = rec.now();
    let revoked = retry!("revoke", w.set("document:d0", "u0", false));
    rec.record(
        0,
        c.nodes[leader].id,
        true,
        Call::Write {
            key: k.clone(),
            grant: false,
        },
        start,
        Outcome::Written(revision(&revoked)),
    );
    // The broken read: the session holds `revoked`, the replica answers without waiting.
    let start = rec.now();
    let (allowed, at) = f
        .check("document:d0", "u0", None)
        .await
        .expect("a minimize_latency read on the cut-off replica");
    assert!(
        allowed && at < revision(&revoked),
        "the cut-off replica should still have the grant: {allowed} at {at}"
    );
    rec.record(
        0,
        c.nodes[follower].id,
        true,
        Call::Check {
            key: k,
            read: Read::AtLeast(revision(&revoked)),
        },
        start,
        Outcome::Checked { allowed, at },
    );
    c.mesh().set_all(Fault::Pass);
    let mut logs = Vec::new();
    let mut exports = Vec::new();
    for n in &c.nodes {
        let mut cl = Client::connect(&n.endpoint()).await;
        let export = retry!("export", cl.export(at_least(&revoked)));
        exports.push((n.id, export.into_keys().collect::<BTreeSet<String>>()));
        logs.push((
            n.id,
            cl.watch_log(&schema, revision(&revoked)).await.unwrap(),
        ));
    }
    let v = history::check(SCHEMA, revision(&schema), &rec.events(), &logs, &exports)
        .expect_err("the checker passed a read served from a lagging replica");
    let joined = v.join("\n");
    assert!(joined.contains("older than its token"), "{joined}");
    assert!(joined.contains("after the client had seen"), "{joined}");
}
