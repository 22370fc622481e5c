//! Prometheus metrics of a three-node cluster of real `dhow serve` processes: each node serves
//! `/metrics` on a port of its own (`DHOW_METRICS_ADDR=127.0.0.1:0`, the bound address found in
//! its log); every metric documented in docs/operations.md is there with its HELP text, exactly
//! one node says it leads, all three agree on the leader, are SERVING, and report the same
//! applied revision after a write; the write, the check and their calls are counted.

use std::time::{Duration, Instant};

use dhow_tests::cluster::{fully_consistent, Cluster, SCHEMA};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every metric of docs/operations.md ("Metrics"), as exposed (counters with `_total`).
const METRICS: [&str; 11] = [
    "dhow_grpc_requests_total",
    "dhow_grpc_request_duration_seconds",
    "dhow_checks_total",
    "dhow_health_serving",
    "dhow_raft_is_leader",
    "dhow_raft_term",
    "dhow_raft_leader_id",
    "dhow_raft_commit_index",
    "dhow_applied_revision",
    "dhow_raft_leader_changes_total",
    "dhow_metrics_node_status_errors_total",
];

/// The metrics address a node logged, waiting up to 20 s for the line.
async fn metrics_addr(c: &Cluster, i: usize) -> String {
    const MARK: &str = "metrics listening on http://";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = c.nodes[i].log_tail_all();
        if let Some(at) = log.find(MARK) {
            let rest = &log[at + MARK.len()..];
            let end = rest.find("/metrics").expect("the line names /metrics");
            return rest[..end].to_string();
        }
        assert!(
            Instant::now() < deadline,
            "node {} logged no metrics address:\n{}",
            c.nodes[i].id,
            c.nodes[i].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /metrics` over plain HTTP/1.1: the status line and the body.
async fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    let raw = String::from_utf8(raw).expect("utf-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name` (no labels), if present.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of the samples of `name` whose labels contain `labels`.
fn sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_expose_their_metrics() {
    let c = Cluster::start_with_env(
        3,
        &[
            ("DHOW_METRICS_ADDR", "127.0.0.1:0"),
            ("RUST_LOG", "warn,dhow::serve=info"),
        ],
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let mut addrs = Vec::new();
    for i in 0..3 {
        addrs.push(metrics_addr(&c, i).await);
    }

    // A write and a check through the leader, retried while it settles.
    let mut cl = c.client(leader).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let written = loop {
        let tried = async {
            cl.write_schema(SCHEMA).await?;
            cl.set("document:d", "alice", true).await
        }
        .await;
        match tried {
            Ok(t) => break dhow_tests::revision(&t),
            Err(s) if Instant::now() < deadline && s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("write: {s}"),
        }
    };
    let (allowed, _) = cl
        .check("document:d", "alice", fully_consistent())
        .await
        .expect("check");
    assert!(allowed);

    // All three agree (polled briefly: followers apply the write a moment later).
    let started = Instant::now();
    let texts = loop {
        let mut texts = Vec::new();
        for a in &addrs {
            let (status, body) = get(a, "/metrics").await;
            assert!(status.contains("200"), "{status}");
            texts.push(body);
        }
        let applied: Vec<Option<f64>> = texts
            .iter()
            .map(|t| value(t, "dhow_applied_revision"))
            .collect();
        let leaders: Vec<Option<f64>> = texts
            .iter()
            .map(|t| value(t, "dhow_raft_is_leader"))
            .collect();
        let settled = applied.iter().all(|a| *a == applied[0])
            && applied[0].is_some_and(|a| a >= written as f64)
            && leaders.iter().filter(|l| **l == Some(1.0)).count() == 1
            && leaders.iter().filter(|l| **l == Some(0.0)).count() == 2;
        if settled {
            break texts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not settled after 10 s: applied {applied:?} (written {written}), is_leader {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for (i, t) in texts.iter().enumerate() {
        for m in METRICS {
            let help = m.strip_suffix("_total").unwrap_or(m);
            assert!(
                t.contains(&format!("# HELP {help} ")),
                "node {i}: no HELP of {m} in\n{t}"
            );
        }
        assert!(t.ends_with("# EOF\n"), "node {i}: not OpenMetrics text");
        assert_eq!(value(t, "dhow_health_serving"), Some(1.0), "node {i}");
        assert!(value(t, "dhow_raft_term").unwrap_or(0.0) >= 1.0, "node {i}");
        assert!(
            value(t, "dhow_raft_leader_changes_total").unwrap_or(0.0) >= 1.0,
            "node {i}"
        );
        assert_eq!(
            value(t, "dhow_raft_leader_id"),
            Some(c.nodes[leader].id as f64),
            "node {i}: the leader is node index {leader}"
        );
        assert!(
            value(t, "dhow_raft_commit_index").unwrap_or(0.0) >= 1.0,
            "node {i}"
        );
    }
    assert_eq!(value(&texts[leader], "dhow_raft_is_leader"), Some(1.0));

    // The leader counted the calls it served and the check's answer.
    let t = &texts[leader];
    assert!(
        sum(
            t,
            "dhow_grpc_requests_total",
            "method=\"/dhow.v1.PermissionService/Check\",code=\"OK\""
        ) >= 1.0,
        "{t}"
    );
    assert!(
        sum(
            t,
            "dhow_grpc_requests_total",
            "method=\"/dhow.v1.RelationshipService/Write\""
        ) >= 1.0,
        "{t}"
    );
    assert!(
        sum(
            t,
            "dhow_grpc_request_duration_seconds_count",
            "method=\"/dhow.v1.PermissionService/Check\""
        ) >= 1.0,
        "{t}"
    );
    assert!(
        sum(t, "dhow_checks_total", "result=\"allowed\"") >= 1.0,
        "{t}"
    );

    // Anything but /metrics is not found.
    let (status, _) = get(&addrs[0], "/").await;
    assert!(status.contains("404"), "{status}");
}
