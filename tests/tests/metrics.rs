//! Prometheus metrics of a three-node cluster of real `dhow serve` processes: each node serves
//! `/metrics` on a port of its own (`DHOW_METRICS_ADDR=127.0.0.1:0`, the bound address found in
//! its log). Every metric of the table in docs/operations.md ("Metrics", read here so that doc
//! and code cannot drift) is on every node with its HELP text, and every metric a node exposes
//! is in that table; every sample is a finite number >= 0; exactly one node says it leads, all
//! three agree on the leader, are SERVING, and report the same applied revision after a write;
//! the write, the check and their calls, reader calls, waits and latencies are counted, the
//! RocksDB gauges name every column family, the peer links are counted per peer. Then a
//! learner joins by snapshot: the leader counts it sent, the learner received and installed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dhow_tests::cluster::{at_least, fully_consistent, Cluster, SCHEMA};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The operations guide, whose "Metrics" table lists every metric.
const OPERATIONS: &str = include_str!("../../docs/operations.md");

/// The metrics of the table in docs/operations.md's "Metrics" section, as exposed (counters
/// with `_total`).
fn documented() -> Vec<String> {
    let section = OPERATIONS
        .split("\n## ")
        .find(|s| s.starts_with("Metrics\n"))
        .expect("docs/operations.md has a Metrics section");
    let names: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `dhow_"))
        .map(|rest| {
            format!(
                "dhow_{}",
                &rest[..rest.find('`').expect("a closing backtick")]
            )
        })
        .collect();
    assert!(
        names.len() >= 30,
        "only {} metrics found in the table of docs/operations.md: {names:?}",
        names.len()
    );
    names
}

/// The name a metric's HELP line carries: without a counter's `_total`.
fn family(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

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

/// Checks the exposition `t` of node `node` against the documented metrics `docs`: each is
/// there (its HELP line and a sample), nothing undocumented is, and every sample of a Dhow
/// metric is a finite number >= 0.
fn check_exposition(node: usize, t: &str, docs: &[String]) {
    let families: BTreeSet<&str> = docs.iter().map(|m| family(m)).collect();
    for m in docs {
        let f = family(m);
        assert!(
            t.contains(&format!("# HELP {f} ")),
            "node {node}: no HELP of {m} in\n{t}"
        );
        // A sample: `NAME VALUE`, `NAME{...} VALUE`, or a histogram's `NAME_count ...`.
        let count = format!("{f}_count");
        let sample_of = |l: &str, name: &str| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        };
        let sampled = t
            .lines()
            .filter(|l| !l.starts_with('#'))
            .any(|l| sample_of(l, m) || sample_of(l, &count));
        assert!(sampled, "node {node}: no sample of {m} in\n{t}");
    }
    for l in t.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(
                families.contains(name),
                "node {node}: {name} is exposed but not documented in docs/operations.md"
            );
        } else if l.starts_with("dhow_") {
            let v: f64 = l
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or_else(|| panic!("node {node}: no value in `{l}`"));
            assert!(v.is_finite() && v >= 0.0, "node {node}: `{l}`");
        }
    }
    assert!(t.ends_with("# EOF\n"), "node {node}: not OpenMetrics text");
}

/// Scrapes `addr` until `done` holds for its text, at most 20 s.
async fn scrape_until(addr: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let (status, body) = get(addr, "/metrics").await;
        assert!(status.contains("200"), "{status}");
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_expose_their_metrics() {
    let mut c = Cluster::start_with_env(
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
    let (written, token) = loop {
        let tried = async {
            cl.write_schema(SCHEMA).await?;
            cl.set("document:d", "alice", true).await
        }
        .await;
        match tried {
            Ok(t) => break (dhow_tests::revision(&t), t),
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

    let docs = documented();
    for (i, t) in texts.iter().enumerate() {
        check_exposition(i, t, &docs);
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

    // What the Raft loop, RocksDB and the peer links count, copied in at each scrape.
    for (i, t) in texts.iter().enumerate() {
        // A fresh node applied every entry up to the write, each timed.
        assert!(
            value(t, "dhow_raft_apply_duration_seconds_count").unwrap_or(0.0) >= written as f64,
            "node {i}: written at {written}\n{t}"
        );
        assert!(
            value(t, "dhow_raft_log_entries").unwrap_or(0.0) >= written as f64,
            "node {i}: written at {written}\n{t}"
        );
        assert_eq!(
            value(t, "dhow_raft_proposals_in_flight"),
            Some(0.0),
            "node {i}: nobody waits for an entry any more"
        );
        for cf in [
            "tuples",
            "by_subject",
            "changes",
            "schemas",
            "meta",
            "raft_log",
            "raft_state",
        ] {
            assert!(
                t.contains(&format!("dhow_rocksdb_sst_bytes{{cf=\"{cf}\"}} ")),
                "node {i}: no size of column family {cf}\n{t}"
            );
        }
        let stored = sum(t, "dhow_rocksdb_sst_bytes", "cf=")
            + value(t, "dhow_rocksdb_memtable_bytes").unwrap_or(0.0);
        assert!(stored > 0.0, "node {i}: RocksDB holds nothing?\n{t}");
        assert_eq!(
            value(t, "dhow_rocksdb_write_stopped"),
            Some(0.0),
            "node {i}"
        );
        for other in c.nodes.iter().filter(|n| n.id != c.nodes[i].id) {
            for m in [
                "dhow_peer_send_errors_total",
                "dhow_peer_reconnects_total",
                "dhow_peer_messages_dropped_total",
            ] {
                assert!(
                    t.contains(&format!("{m}{{peer=\"{}\"}} ", other.id)),
                    "node {i}: no {m} of the link to node {}\n{t}",
                    other.id
                );
            }
        }
        assert_eq!(
            sum(t, "dhow_consistency_timeouts_total", "wait="),
            0.0,
            "node {i}"
        );
    }
    // The leader proposed the schema and the write, and served the fully consistent check:
    // their commit latencies, the check's reader calls (it found alice: at least one), its
    // ReadIndex wait.
    assert!(
        value(t, "dhow_raft_commit_duration_seconds_count").unwrap_or(0.0) >= 2.0,
        "{t}"
    );
    assert!(
        value(t, "dhow_check_reader_calls_count").unwrap_or(0.0) >= 1.0,
        "{t}"
    );
    assert!(
        value(t, "dhow_check_reader_calls_sum").unwrap_or(0.0) >= 1.0,
        "{t}"
    );
    assert!(
        sum(
            t,
            "dhow_consistency_wait_duration_seconds_count",
            "wait=\"read_index\""
        ) >= 1.0,
        "{t}"
    );

    // Anything but /metrics is not found.
    let (status, _) = get(&addrs[0], "/").await;
    assert!(status.contains("404"), "{status}");

    // A learner joins: the leader streams it a snapshot (adding a member compacts the log),
    // which it receives and installs.
    let i4 = c.add_learner(4, leader).await;
    let addr4 = metrics_addr(&c, i4).await;
    let mut c4 = c.client(i4).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c4.check("document:d", "alice", at_least(&token)).await {
            Ok((true, _)) => break,
            Ok((false, _)) => panic!("the learner denies what its snapshot holds"),
            Err(s) => assert!(
                Instant::now() < deadline,
                "the learner did not catch up within 30 s: {s}\n{}",
                c.nodes[i4].log_tail()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t4 = scrape_until(&addr4, "the learner counting its snapshot", |t| {
        value(t, "dhow_raft_snapshots_installed_total").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(
        value(&t4, "dhow_raft_snapshots_received_total").unwrap_or(0.0) >= 1.0,
        "{t4}"
    );
    assert_eq!(value(&t4, "dhow_raft_is_leader"), Some(0.0), "{t4}");
    check_exposition(i4, &t4, &docs);
    let t = scrape_until(
        &addrs[leader],
        "the leader counting the snapshot sent",
        |t| value(t, "dhow_raft_snapshots_sent_total").unwrap_or(0.0) >= 1.0,
    )
    .await;
    assert!(
        t.contains(&format!(
            "dhow_peer_send_errors_total{{peer=\"{}\"}} ",
            c.nodes[i4].id
        )),
        "the leader links to the learner:\n{t}"
    );

    // A follower goes away: the leader counts failed deliveries to it; it comes back: the
    // leader counts the link restored.
    let f = (0..3).find(|i| *i != leader).expect("a follower");
    let fid = c.nodes[f].id;
    let errors = format!("dhow_peer_send_errors_total{{peer=\"{fid}\"}}");
    let reconnects = format!("dhow_peer_reconnects_total{{peer=\"{fid}\"}}");
    // (Links may have failed while the nodes started: count from now.)
    let (errors_before, reconnects_before) = (
        value(&t, &errors).unwrap_or(0.0),
        value(&t, &reconnects).unwrap_or(0.0),
    );
    c.kill9(f);
    scrape_until(&addrs[leader], "errors to the killed follower", |t| {
        value(t, &errors).unwrap_or(0.0) > errors_before
    })
    .await;
    c.restart(f);
    scrape_until(&addrs[leader], "the link to the restarted follower", |t| {
        value(t, &reconnects).unwrap_or(0.0) > reconnects_before
    })
    .await;
}
