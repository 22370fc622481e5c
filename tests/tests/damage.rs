//! Damaged data dirs, with real `dhow serve` processes: a node whose RocksDB WAL was damaged
//! in the middle while it was stopped refuses to start, saying what happened and what to do
//! (before, it started at an older revision with thousands of acknowledged relationships gone
//! and handed their revisions out again); in a three-node cluster, such a node is replaced as
//! docs/operations.md says (remove, wipe, add under a new id, start with
//! `--initial-cluster-state existing`) and the cluster ends with every acknowledged write;
//! a damaged node that ran alone is restored from a logical backup into a new data dir (a new
//! cluster id: the old node's consistency tokens are refused, never pointed at other data);
//! a data dir started under another `--node-id` is refused, naming the node it belongs to.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dhow_tests::cluster::{at_least, fully_consistent, revision, Client, Cluster, SCHEMA};
use dhow_tests::damage::{dhow_cli, dhow_cli_split, flip_wal_middle, serve_until_exit, write_many};
use dhow_tests::process::Server;

/// Writes per node and relationships per write: a WAL of several hundred KiB.
const WRITES: usize = 60;
const PER_WRITE: usize = 40;

/// Retries a call while the cluster elects a leader or a node restarts, for up to 30 s.
macro_rules! retry {
    ($what:expr, $call:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
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
                                | tonic::Code::DeadlineExceeded
                        ) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(s) => panic!("{}: {s}", $what),
            }
        }
    }};
}

fn damaged_message(out: &str) {
    assert!(
        out.contains("is damaged") && out.contains("When a node's data is damaged"),
        "dhow serve did not say the data is damaged and what to do:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_wal_is_damaged_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut server = Server::start(&data, 0);
    let mut client = Client::connect(&server.endpoint()).await;
    retry!("schema", client.write_schema(SCHEMA));
    let mut last = None;
    for w in 0..WRITES {
        let (_, t) = retry!("write", write_many(&client, &format!("w{w}"), PER_WRITE));
        last = Some(revision(&t));
    }
    let last = last.unwrap();
    server.kill9();
    let (wal, len) = flip_wal_middle(&data);
    eprintln!(
        "flipped 8 bytes at {} of {len} in {}; the node had acknowledged revision {last}",
        len / 2,
        wal.display()
    );
    let data_arg = data.to_str().unwrap();
    let args = ["--data-dir", data_arg, "--grpc-addr", "127.0.0.1:0"];
    let (status, out) = serve_until_exit(&args);
    assert!(!status.success(), "{status}: {out}");
    damaged_message(&out);
    assert!(out.contains("Corruption"), "{out}");
    // The refused start repaired nothing: it is refused again.
    let (status, out) = serve_until_exit(&args);
    assert!(!status.success(), "{status}: {out}");
    damaged_message(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_node_alone_is_restored_from_its_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut server = Server::start(&data, 0);
    let endpoint = server.endpoint();
    let mut client = Client::connect(&endpoint).await;
    retry!("schema", client.write_schema(SCHEMA));
    let mut acked = Vec::new();
    let mut last = None;
    for w in 0..WRITES {
        let (texts, t) = retry!("write", write_many(&client, &format!("w{w}"), PER_WRITE));
        acked.extend(texts);
        last = Some(t);
    }
    let old_token = last.unwrap();

    // The backup, as docs/operations.md says: an export and the schema at its token.
    let (status, rels, err) = dhow_cli_split(&[
        "rel",
        "export",
        "--consistency",
        "fully-consistent",
        "--endpoint",
        &endpoint,
    ]);
    assert!(status.success(), "dhow rel export: {err}");
    let token = err
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no token from dhow rel export: {err}"))
        .to_string();
    let (status, schema, err) = dhow_cli_split(&[
        "schema",
        "read",
        "--at-exact-snapshot",
        &token,
        "--endpoint",
        &endpoint,
    ]);
    assert!(status.success(), "dhow schema read: {err}");
    assert_eq!(rels.lines().count(), acked.len(), "the export");
    let rels_file = dir.path().join("rels.txt");
    let schema_file = dir.path().join("schema.zed");
    std::fs::write(&rels_file, &rels).unwrap();
    std::fs::write(&schema_file, &schema).unwrap();

    // The node's WAL is damaged while it is stopped: it refuses to start.
    server.kill9();
    flip_wal_middle(&data);
    let data_arg = data.to_str().unwrap();
    let (status, out) = serve_until_exit(&["--data-dir", data_arg, "--grpc-addr", "127.0.0.1:0"]);
    assert!(!status.success(), "{status}: {out}");
    damaged_message(&out);

    // Alone: wipe the data dir, start afresh, restore the backup.
    std::fs::remove_dir_all(&data).unwrap();
    let server = Server::start(&data, 0);
    let endpoint = server.endpoint();
    let schema_arg = schema_file.to_str().unwrap();
    let (status, out) = dhow_cli(&["schema", "write", schema_arg, "--endpoint", &endpoint]);
    assert!(status.success(), "dhow schema write: {out}");
    let rels_arg = rels_file.to_str().unwrap();
    let (status, out) = dhow_cli(&["rel", "import", rels_arg, "--endpoint", &endpoint]);
    assert!(status.success(), "dhow rel import: {out}");
    let mut client = Client::connect(&endpoint).await;
    let all = retry!("export", client.export(fully_consistent()));
    let missing: Vec<&String> = acked.iter().filter(|k| !all.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged relationships missing after the restore, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(3)]
    );
    // A token of the damaged node names another cluster: refused, never read as this one's.
    let e = client
        .check("document:w0_0", "u", at_least(&old_token))
        .await
        .expect_err("a token of the old node was accepted by the restored one");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    eprintln!(
        "{} relationships restored from the backup after the damaged node was refused",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_node_is_replaced_and_the_cluster_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(3).await;
    let mut admin = c.client(0).await;
    retry!("schema", admin.write_schema(SCHEMA));
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = None;
    for w in 0..WRITES {
        let cl = c.client(w % 3).await;
        let (texts, t) = retry!("write", write_many(&cl, &format!("a{w}"), PER_WRITE));
        for text in texts {
            acked.insert(text, revision(&t));
        }
        last = Some(t);
    }
    // Node 3 has every write (it is in the quorum or catches up): wait, then stop it.
    let mut c3 = c.client(2).await;
    retry!(
        "node 3 catching up",
        c3.check("document:a0_0", "u", at_least(last.as_ref().unwrap()))
    );
    c.kill9(2);
    let (wal, len) = flip_wal_middle(&c.nodes[2].data);
    eprintln!(
        "node 3: flipped 8 bytes at {} of {len} in {}",
        len / 2,
        wal.display()
    );
    c.restart(2);
    let status = c
        .wait_exit(2, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("node 3 started on a damaged WAL\n{}", c.nodes[2].log_tail()));
    assert!(!status.success(), "{status}");
    damaged_message(&c.nodes[2].log_tail_all());

    // The cluster goes on with two of three nodes meanwhile.
    let mut last_b = None;
    for w in 0..10 {
        let cl = c.client(w % 2).await;
        let (texts, t) = retry!("write", write_many(&cl, &format!("b{w}"), PER_WRITE));
        for text in texts {
            acked.insert(text, revision(&t));
        }
        last_b = Some(t);
    }

    // The operator's way (docs/operations.md): remove it, wipe its data dir, add it back
    // under a new id, start it joining the running cluster.
    let endpoint = c.nodes[0].endpoint();
    let (status, out) = dhow_cli(&["cluster", "remove", "3", "--endpoint", &endpoint]);
    assert!(status.success(), "dhow cluster remove 3: {out}");
    std::fs::remove_dir_all(&c.nodes[2].data).unwrap();
    let i4 = c.spawn_joining(4);
    let peer4 = c.nodes[i4].peer_addr();
    let (status, out) = dhow_cli(&["cluster", "add", "4", &peer4, "--endpoint", &endpoint]);
    assert!(status.success(), "dhow cluster add 4: {out}");
    // Node 4 rejoins by snapshot: it has every write before it was added.
    let mut c4 = c.client(i4).await;
    retry!(
        "node 4 receiving its snapshot",
        c4.check("document:b9_0", "u", at_least(last_b.as_ref().unwrap()))
    );

    // More writes with node 4 in the cluster.
    let mut last = None;
    for w in 0..5 {
        let cl = c.client([0, 1, i4][w % 3]).await;
        let (texts, t) = retry!("write", write_many(&cl, &format!("c{w}"), PER_WRITE));
        for text in texts {
            acked.insert(text, revision(&t));
        }
        last = Some(t);
    }
    let last = last.unwrap();
    retry!(
        "node 4 catching up",
        c4.check("document:c4_0", "u", at_least(&last))
    );
    for i in [0, 1, i4] {
        let mut cl = c.client(i).await;
        let all = retry!("export", cl.export(fully_consistent()));
        let missing: Vec<&String> = acked.keys().filter(|k| !all.contains_key(*k)).collect();
        assert!(
            missing.is_empty(),
            "node {}: {} of {} acknowledged relationships missing, e.g. {:?}",
            c.nodes[i].id,
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(3)]
        );
    }
    let s = retry!("status", c4.status());
    assert!(
        s.members.iter().any(|m| m.id == 4) && s.members.iter().all(|m| m.id != 3),
        "{s:?}"
    );
    eprintln!(
        "{} acknowledged relationships on nodes 1, 2 and 4 after node 3's damaged data was replaced",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_started_with_another_node_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut server = Server::start(&data, 0);
    let mut client = Client::connect(&server.endpoint()).await;
    retry!("schema", client.write_schema(SCHEMA));
    let (_, token) = retry!("write", write_many(&client, "n", 3));
    server.kill9();
    // Before: node 2 started on node 1's data dir (its log, its votes) and served it.
    let data_arg = data.to_str().unwrap();
    let (status, out) = serve_until_exit(&[
        "--data-dir",
        data_arg,
        "--grpc-addr",
        "127.0.0.1:0",
        "--node-id",
        "2",
    ]);
    assert!(!status.success(), "{status}: {out}");
    assert!(
        out.contains("belongs to node 1")
            && out.contains("started as node 2")
            && out.contains("--node-id 1"),
        "dhow serve did not say whose data dir it is:\n{out}"
    );
    // Its own id still starts it, with its data.
    let server = Server::start(&data, 0);
    let mut client = Client::connect(&server.endpoint()).await;
    let (allowed, _) = retry!("check", client.check("document:n_2", "u", at_least(&token)));
    assert!(allowed, "node 1's data after the refused start");
}
