//! Readiness means "can serve": gRPC health of real `dhow serve` processes says NOT_SERVING
//! while the node knows no leader (a survivor of a three-node cluster whose two other nodes
//! were killed) and SERVING again once they are back; a one-node server says SERVING only
//! once it can answer a fully consistent read, which it then does at once; and SIGTERM to a
//! leader hands leadership over, so writes through another node resume well under an
//! election timeout; a learner cut off from the cluster (it keeps its leader id: a learner
//! never campaigns) says NOT_SERVING too. The health entry `liveness` stays SERVING
//! throughout.

use std::time::{Duration, Instant};

use dhow_tests::cluster::{fully_consistent, Client, Cluster, SCHEMA};
use dhow_tests::process::Server;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The services whose health is asked: the server as a whole and the API's main service.
const SERVICES: [&str; 2] = ["", "dhow.v1.PermissionService"];

/// The health of every service of [`SERVICES`] (an error counts as unknown, -1).
async fn health(channel: &Channel) -> Vec<i32> {
    let mut out = Vec::new();
    for svc in SERVICES {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(-1);
        out.push(status);
    }
    out
}

/// Waits up to `within` until every service reports `want`; how long it took.
async fn wait_health(channel: &Channel, want: ServingStatus, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = health(channel).await;
        if now.iter().all(|s| *s == want as i32) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "health {now:?} after {:?}, waiting for {want:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes the schema through node index `i`, retrying while the cluster elects a leader.
async fn write_schema(c: &Cluster, i: usize) {
    let mut cl = c.client(i).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cl.write_schema(SCHEMA).await {
            Ok(_) => return,
            Err(s) if Instant::now() < deadline && s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("write schema: {s}"),
        }
    }
}

/// A fully consistent check through `client`, retried while UNAVAILABLE for up to `within`:
/// how many times it answered UNAVAILABLE first.
async fn consistent_read(client: &mut Client, within: Duration) -> usize {
    let started = Instant::now();
    let mut unavailable = 0;
    loop {
        match client
            .check("document:d", "alice", fully_consistent())
            .await
        {
            Ok(_) => return unavailable,
            Err(s) if s.code() == tonic::Code::Unavailable && started.elapsed() < within => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(s) => panic!("fully consistent check after {:?}: {s}", started.elapsed()),
        }
    }
}

/// With two of three nodes killed, the survivor (the leader in the first round, a follower in
/// the second) says NOT_SERVING within a few seconds and refuses fully consistent reads; with
/// them back, SERVING again, and a fully consistent read is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_without_quorum_is_not_serving_and_serves_again_once_the_others_return() {
    let mut c = Cluster::start(3).await;
    write_schema(&c, 0).await;
    for round in ["leader", "follower"] {
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let survivor = if round == "leader" {
            leader
        } else {
            (leader + 1) % 3
        };
        let client = Client::connect(&c.nodes[survivor].endpoint()).await;
        wait_health(
            &client.channel,
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;

        let others: Vec<usize> = (0..3).filter(|&j| j != survivor).collect();
        let killed = Instant::now();
        for &j in &others {
            c.kill9(j);
        }
        let took = wait_health(
            &client.channel,
            ServingStatus::NotServing,
            Duration::from_secs(8),
        )
        .await;
        eprintln!("survivor ({round}): NOT_SERVING {took:?} after the two others were killed");
        assert!(killed.elapsed() < Duration::from_secs(8));
        // The probe the docker-compose healthcheck runs says so too: exit code 2.
        let probe = std::process::Command::new(dhow_tests::process::dhow_bin())
            .args(["health", "--endpoint", &c.nodes[survivor].endpoint()])
            .output()
            .expect("run dhow health");
        assert_eq!(
            (
                probe.status.code(),
                String::from_utf8_lossy(&probe.stdout).trim()
            ),
            (Some(2), "NOT_SERVING"),
            "{}",
            String::from_utf8_lossy(&probe.stderr)
        );
        // NOT_SERVING means what it says: a fully consistent read is refused.
        let mut reader = client.clone();
        let refused = reader
            .check("document:d", "alice", fully_consistent())
            .await
            .expect_err("a fully consistent read without a quorum");
        assert!(
            matches!(
                refused.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ),
            "{refused}"
        );
        // Liveness is not readiness: the process serves, so a liveness probe keeps it.
        let live = HealthClient::new(client.channel.clone())
            .check(HealthCheckRequest {
                service: "liveness".into(),
            })
            .await
            .expect("health liveness")
            .into_inner()
            .status;
        assert_eq!(
            live,
            ServingStatus::Serving as i32,
            "liveness without quorum"
        );
        // Still NOT_SERVING a while later (no flapping back while no leader is known).
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            health(&client.channel)
                .await
                .iter()
                .all(|s| *s == ServingStatus::NotServing as i32),
            "health went back to SERVING without a quorum"
        );

        let back = Instant::now();
        for &j in &others {
            c.restart(j);
        }
        let took = wait_health(
            &client.channel,
            ServingStatus::Serving,
            Duration::from_secs(20),
        )
        .await;
        let unavailable = consistent_read(&mut reader, Duration::from_secs(2)).await;
        eprintln!(
            "survivor ({round}): SERVING {took:?} after the two others were restarted ({:?} since), then a fully consistent read ({unavailable} UNAVAILABLE first)",
            back.elapsed()
        );
        assert!(
            unavailable <= 2,
            "SERVING, but {unavailable} fully consistent reads were refused first"
        );
    }
}

/// A one-node server (a real process, restarted three times after kill -9) says SERVING as
/// soon as it accepts connections (it elected itself and committed its first entry before it
/// listened), and its first fully consistent read is answered, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_serves_consistent_reads_as_soon_as_health_says_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("node");
    let mut server = Server::start(&data, 0);
    {
        let mut c = Client::connect(&server.endpoint()).await;
        c.write_schema(SCHEMA).await.expect("write schema");
    }
    for run in 0..3 {
        server.kill9();
        let data = server.data.clone();
        server = Server::start(&data, 0);
        let mut client = Client::connect(&server.endpoint()).await;
        let first = health(&client.channel).await;
        let took = wait_health(
            &client.channel,
            ServingStatus::Serving,
            Duration::from_secs(5),
        )
        .await;
        let unavailable = consistent_read(&mut client, Duration::from_secs(5)).await;
        eprintln!(
            "run {run}: first health {first:?}, SERVING after {took:?}, then {unavailable} fully consistent reads refused"
        );
        assert_eq!(
            unavailable, 0,
            "health said SERVING, yet a fully consistent read was refused"
        );
        assert!(
            first.iter().all(|s| *s == ServingStatus::Serving as i32),
            "a one-node server elects itself before it listens; first health {first:?}"
        );
    }
}

/// Writes one relationship after the other through `client` until stopped: when each was
/// acknowledged, and how many were refused.
struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Vec<Instant>, usize)>,
}

impl Writer {
    async fn start(client: Client) -> Writer {
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut client = client;
            let mut acked: Vec<Instant> = vec![Instant::now()];
            let mut failed = 0usize;
            let mut i = 0u64;
            while !*stop_rx.borrow_and_update() {
                i += 1;
                match client.set(&format!("document:w{i}"), "alice", true).await {
                    Ok(_) => acked.push(Instant::now()),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            acked.push(Instant::now());
            (acked, failed)
        });
        // Running steadily before the event.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Writer { stop, task }
    }

    /// After `after` more: the longest pause between two acknowledged writes, and how many
    /// were refused.
    async fn finish(self, after: Duration) -> (Duration, usize) {
        tokio::time::sleep(after).await;
        self.stop.send(true).expect("writer alive");
        let (acked, failed) = self.task.await.expect("writer");
        let gap = acked
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        (gap, failed)
    }
}

/// SIGTERM to the leader: it hands leadership to an up-to-date follower before it stops, so
/// writes through another node pause for far less than an election timeout (1 s; raft-rs
/// draws each from 1 to 2 s). A kill -9 of the next leader, for comparison, costs an election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_leader_hands_leadership_over_without_an_election_timeout() {
    let mut c = Cluster::start(3).await;
    write_schema(&c, 0).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let via = (leader + 1) % 3;
    let writer = Writer::start(c.client(via).await).await;
    let exit = c.terminate(leader, Duration::from_secs(10));
    let (gap, failed) = writer.finish(Duration::from_secs(2)).await;
    let exit = exit.expect("the leader exits on SIGTERM within 10 s");
    let log = c.nodes[leader].log_tail_all();
    eprintln!("SIGTERM to the leader: longest write gap through node {via}: {gap:?} ({failed} writes refused); exit {exit}");
    assert!(exit.success(), "exit after SIGTERM: {exit}\n{log}");
    assert!(
        log.contains("leadership handed over"),
        "the leader did not hand leadership over:\n{log}"
    );
    assert!(
        gap < Duration::from_millis(700),
        "writes paused {gap:?} after SIGTERM to the leader"
    );

    // For comparison: kill -9 of the next leader, once the first one is back.
    c.restart(leader);
    let next = c.wait_leader(Duration::from_secs(20)).await;
    let via = (next + 1) % 3;
    let writer = Writer::start(c.client(via).await).await;
    c.kill9(next);
    let (gap9, _) = writer.finish(Duration::from_secs(4)).await;
    eprintln!(
        "kill -9 of the leader, for comparison: longest write gap through node {via}: {gap9:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_cut_off_from_the_cluster_is_not_serving() {
    let mut c = Cluster::start(3).await;
    write_schema(&c, 0).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let i4 = c.add_learner(4, leader).await;
    let learner = Client::connect(&c.nodes[i4].endpoint()).await;
    wait_health(
        &learner.channel,
        ServingStatus::Serving,
        Duration::from_secs(30),
    )
    .await;
    // Every voter goes: the learner still names its leader, but hears nothing from it.
    let killed = Instant::now();
    for j in 0..3 {
        c.kill9(j);
    }
    let took = wait_health(
        &learner.channel,
        ServingStatus::NotServing,
        Duration::from_secs(10),
    )
    .await;
    eprintln!("learner: NOT_SERVING {took:?} after every voter was killed");
    assert!(killed.elapsed() < Duration::from_secs(10));
    assert!(
        c.nodes[i4].log_tail().contains("nothing heard from leader"),
        "the reason is logged:\n{}",
        c.nodes[i4].log_tail()
    );
}
