//! End to end on the real binary: `dhow serve` on a real port with a RocksDB data dir,
//! driven over gRPC and through the CLI. Covers schema, writes, checks with tokens, exact
//! snapshots, `kill -9` during a stream of writes (every acknowledged write is there after a
//! restart, at the revision it was acknowledged with), Watch through the Raft node (every
//! change once, in revision order, resumable from any token, also across a `kill -9`), and
//! the SpiceDB scenarios through `dhow validate --endpoint`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use dhow_proto::v1 as pb;
use pb::permission_service_client::PermissionServiceClient;
use pb::relationship_service_client::RelationshipServiceClient;

use dhow_tests::process::{dhow_bin, Server};
use dhow_tests::{conformance_files, rel, revision as rev_of};

fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(dhow_bin())
        .args(args)
        .args(["--endpoint", &server.endpoint()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn update(op: pb::relationship_update::Operation, s: &str) -> pb::RelationshipUpdate {
    pb::RelationshipUpdate {
        operation: op as i32,
        relationship: Some(rel(s)),
    }
}

fn exact(token: &pb::ConsistencyToken) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtExactSnapshot(token.clone())),
    })
}

fn fresh(token: &pb::ConsistencyToken) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token.clone())),
    })
}

async fn check(
    client: &mut PermissionServiceClient<tonic::transport::Channel>,
    consistency: Option<pb::Consistency>,
    resource: &str,
    permission: &str,
    subject: &str,
) -> (bool, pb::ConsistencyToken) {
    let (t, id) = resource.split_once(':').unwrap();
    let subject = dhow_tuples::parse_subject(subject).unwrap();
    let resp = client
        .check(pb::CheckRequest {
            consistency,
            resource: Some(pb::ObjectReference {
                object_type: t.into(),
                object_id: id.into(),
            }),
            permission: permission.into(),
            subject: Some(dhow_wire::subject_pb(&subject)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("check {resource}#{permission}@{subject}: {e}"))
        .into_inner();
    (
        resp.permissionship == pb::Permissionship::HasPermission as i32,
        resp.checked_at.unwrap(),
    )
}

const SCHEMA: &str = "definition user {}\ndefinition document {\n  relation viewer: user\n  permission view = viewer\n}\n";

async fn connect(server: &Server) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tonic::transport::Channel::from_shared(server.endpoint())
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("connect {}: {e}", server.endpoint()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Writes, retrying while the freshly started node elects itself.
async fn write(
    client: &mut RelationshipServiceClient<tonic::transport::Channel>,
    updates: Vec<pb::RelationshipUpdate>,
) -> Result<pb::ConsistencyToken, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .write(pb::WriteRequest {
                updates: updates.clone(),
                optional_preconditions: vec![],
            })
            .await
        {
            Ok(r) => return Ok(r.into_inner().written_at.unwrap()),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => return Err(s),
        }
    }
}

/// Writes `schema` with `dhow schema write` (from a file in `dir`), retrying while the
/// freshly started node elects itself.
fn write_schema_via_cli(server: &Server, dir: &std::path::Path, schema: &str) {
    let schema_file = dir.join("schema.zed");
    std::fs::write(&schema_file, schema).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, _, err) = cli(server, &["schema", "write", schema_file.to_str().unwrap()]);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline && err.contains("UNAVAILABLE"),
            "schema write failed: {err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_check_snapshots_and_kill9_keeps_acknowledged_writes() {
    use pb::relationship_update::Operation;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 0);
    let port = server.port();

    // Schema through the CLI, then a write and checks over gRPC.
    write_schema_via_cli(&server, dir.path(), SCHEMA);
    let channel = connect(&server).await;
    let mut rels = RelationshipServiceClient::new(channel.clone());
    let mut perms = PermissionServiceClient::new(channel.clone());
    let t1 = write(
        &mut rels,
        vec![update(
            Operation::Create,
            "document:readme#viewer@user:alice",
        )],
    )
    .await
    .unwrap();
    let (allowed, at) = check(
        &mut perms,
        fresh(&t1),
        "document:readme",
        "view",
        "user:alice",
    )
    .await;
    assert!(
        allowed,
        "at_least_as_fresh with the write's token sees the write"
    );
    assert!(!at.token.is_empty());
    let t2 = write(
        &mut rels,
        vec![update(
            Operation::Delete,
            "document:readme#viewer@user:alice",
        )],
    )
    .await
    .unwrap();
    assert!(
        !check(
            &mut perms,
            fresh(&t2),
            "document:readme",
            "view",
            "user:alice"
        )
        .await
        .0,
        "the revocation is seen"
    );
    assert!(
        check(
            &mut perms,
            exact(&t1),
            "document:readme",
            "view",
            "user:alice"
        )
        .await
        .0,
        "the old snapshot still grants"
    );
    // A write with one bad update changes nothing.
    let bad = write(
        &mut rels,
        vec![
            update(Operation::Create, "document:x#viewer@user:bob"),
            update(Operation::Create, "document:x#nosuch@user:bob"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::FailedPrecondition, "{bad}");
    assert!(
        !check(&mut perms, None, "document:x", "view", "user:bob")
            .await
            .0
    );
    // CLI check prints true/false.
    let (ok, out, _) = cli(
        &server,
        &[
            "check",
            "document:readme#view@user:alice",
            "--consistency",
            "fully-consistent",
        ],
    );
    assert!(ok);
    assert_eq!(out.trim(), "false");

    // A stream of writes from three clients, with kill -9 at arbitrary moments.
    let mut acked: Vec<(String, pb::ConsistencyToken)> = Vec::new();
    for (n, round) in (0..3u64).enumerate() {
        let channel = connect(&server).await;
        let stop = Instant::now() + Duration::from_millis(400 + 300 * round);
        let mut tasks = Vec::new();
        for w in 0..3 {
            let mut client = RelationshipServiceClient::new(channel.clone());
            let base = n + w * 100_000;
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut i = 0;
                while Instant::now() < stop {
                    let r = format!("document:r{round}w{w}i{i}#viewer@user:u{base}");
                    match client
                        .write(pb::WriteRequest {
                            updates: vec![update(Operation::Touch, &r)],
                            optional_preconditions: vec![],
                        })
                        .await
                    {
                        Ok(resp) => mine.push((r, resp.into_inner().written_at.unwrap())),
                        Err(_) => break, // the server died under us: outcome unknown, not asserted
                    }
                    i += 1;
                }
                mine
            }));
        }
        // Kill while the writers are running.
        tokio::time::sleep(Duration::from_millis(200 + 150 * round)).await;
        server.kill9();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        server.restart(port);
    }
    assert!(
        acked.len() > 20,
        "too few writes acknowledged to mean anything: {}",
        acked.len()
    );
    let channel = connect(&server).await;
    let mut perms = PermissionServiceClient::new(channel.clone());
    for (r, token) in &acked {
        let (res, rest) = r.split_once('#').unwrap();
        let subject = rest.split_once('@').unwrap().1;
        // Present now, and present at exactly the revision it was acknowledged with.
        let (now, _) = check(&mut perms, fresh(token), res, "view", subject).await;
        assert!(now, "acknowledged write {r} lost after kill -9");
        let (then, _) = check(&mut perms, exact(token), res, "view", subject).await;
        assert!(
            then,
            "acknowledged write {r} not visible at its own revision"
        );
    }
    eprintln!(
        "{} acknowledged writes survived 3 kill -9 restarts",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spicedb_scenarios_pass_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 0);
    // Every scenario, caveated ones included: their relationships are written with their
    // caveats and contexts, and their assertions' contexts reach the server's checks.
    let files: Vec<PathBuf> = conformance_files();
    assert_eq!(files.len(), 73, "every SpiceDB scenario");
    assert_eq!(
        files
            .iter()
            .filter(|p| std::fs::read_to_string(p).unwrap().contains("caveat"))
            .count(),
        20,
        "the caveated scenarios are among them"
    );
    // Give the node a moment to elect itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut args: Vec<String> = vec!["validate".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args.extend(["--endpoint".into(), server.endpoint()]);
    loop {
        let out = Command::new(dhow_bin()).args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let last = stdout.lines().last().unwrap_or("").to_string();
        if out.status.success() {
            // The summary names skipped assertions only when there are some.
            assert_eq!(last, "411 passed, 0 failed", "{stdout}");
            assert!(!stdout.contains("skipped"), "{stdout}");
            return;
        }
        if Instant::now() > deadline || !stdout.contains("UNAVAILABLE") {
            panic!(
                "validate --endpoint failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The revision a token stands for.
/// Import through the Raft node keeps several writes in flight: the copies of one relationship
/// in later messages still win (the writes apply in the order of the messages), and a message
/// refused in the middle leaves exactly the messages before it, whose count the error reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_keeps_message_order_and_reports_what_a_failure_left() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 0);
    let schema = "use expiration\ndefinition user {}\ndefinition document {\n  relation viewer: user with expiration\n  permission view = viewer\n}\n";
    write_schema_via_cli(&server, dir.path(), schema);
    let mut rels = RelationshipServiceClient::new(connect(&server).await);
    // 12 messages of 50; each also touches `document:same` with a later expiration.
    let far = 4_000_000_000i64;
    let messages: Vec<pb::ImportRequest> = (0..12)
        .map(|m| {
            let mut relationships: Vec<pb::Relationship> = (0..50)
                .map(|i| rel(&format!("document:m{m}_{i}#viewer@user:u")))
                .collect();
            let mut same = rel("document:same#viewer@user:u");
            same.optional_expires_at = Some(prost_types::Timestamp {
                seconds: far + m,
                nanos: 0,
            });
            relationships.push(same);
            pb::ImportRequest { relationships }
        })
        .collect();
    let r = rels
        .import(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.loaded_count, 12 * 51);
    let token = r.written_at.unwrap();
    let mut read = rels
        .read(pb::ReadRequest {
            consistency: fresh(&token),
            filter: Some(pb::RelationshipFilter {
                resource_type: "document".into(),
                optional_resource_id: "same".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let same = read.message().await.unwrap().unwrap().relationship.unwrap();
    assert_eq!(
        same.optional_expires_at.map(|t| t.seconds),
        Some(far + 11),
        "the copy in the last message wins"
    );

    // Message 5 of 9 names a relation the schema lacks.
    let messages: Vec<pb::ImportRequest> = (0..9)
        .map(|m| pb::ImportRequest {
            relationships: (0..40)
                .map(|i| {
                    let relation = if m == 5 && i == 7 { "owner" } else { "viewer" };
                    rel(&format!("document:f{m}_{i}#{relation}@user:u"))
                })
                .collect(),
        })
        .collect();
    let e = rels.import(tokio_stream::iter(messages)).await.unwrap_err();
    let info = error_info(&e);
    assert_eq!(info.get("batch").map(String::as_str), Some("5"), "{e:?}");
    assert_eq!(info.get("loaded").map(String::as_str), Some("200"), "{e:?}");
    let mut all = rels
        .read(pb::ReadRequest {
            consistency: Some(pb::Consistency {
                requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
            }),
            filter: Some(pb::RelationshipFilter {
                resource_type: "document".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut failed_import = std::collections::BTreeSet::new();
    while let Some(m) = all.message().await.unwrap() {
        let id = m.relationship.unwrap().resource.unwrap().object_id;
        if let Some(rest) = id.strip_prefix('f') {
            failed_import.insert(rest.split('_').next().unwrap().parse::<u32>().unwrap());
        }
    }
    assert_eq!(
        failed_import,
        (0..5).collect(),
        "exactly the messages before the refused one are stored"
    );
}

/// The metadata of a status's ErrorInfo detail.
fn error_info(s: &tonic::Status) -> std::collections::BTreeMap<String, String> {
    use tonic_types::StatusExt;
    s.get_details_error_info()
        .map(|i| i.metadata.into_iter().collect())
        .unwrap_or_default()
}

/// One acknowledged write: its revision and its changes as `+rel` (touch) / `-rel` (delete).
type Logged = (u64, Vec<String>);

/// Writes `updates` (retrying while the node elects itself) and logs the changes it makes.
async fn logged_write(
    client: &mut RelationshipServiceClient<tonic::transport::Channel>,
    log: &mut Vec<Logged>,
    updates: &[(pb::relationship_update::Operation, &str)],
) {
    use pb::relationship_update::Operation;
    let ups = updates.iter().map(|(op, r)| update(*op, r)).collect();
    let token = write(client, ups)
        .await
        .unwrap_or_else(|e| panic!("write {updates:?}: {e}"));
    let rev = rev_of(&token);
    if let Some((prev, _)) = log.last() {
        assert!(
            rev > *prev,
            "sequential writes at revisions {prev} then {rev}"
        );
    }
    let changes = updates
        .iter()
        .map(|(op, r)| match op {
            Operation::Delete => format!("-{r}"),
            _ => format!("+{r}"),
        })
        .collect();
    log.push((rev, changes));
}

async fn open_watch(
    client: &mut RelationshipServiceClient<tonic::transport::Channel>,
    from: &pb::ConsistencyToken,
) -> tonic::Streaming<pb::WatchResponse> {
    client
        .watch(pb::WatchRequest {
            optional_object_types: vec![],
            optional_start_cursor: Some(from.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("watch from {}: {e}", rev_of(from)))
        .into_inner()
}

/// Reads `stream`, which started after revision `after`, until it has covered the last write
/// of `expected`. Every response must carry exactly the changes of the write acknowledged at
/// its `changes_through` (within one revision, in any order), and responses come in revision
/// order: nothing missing, nothing twice, nothing else.
/// Returns the `changes_through` tokens received.
async fn expect_changes(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    after: u64,
    expected: &[Logged],
) -> Vec<pb::ConsistencyToken> {
    let until = expected.last().expect("something to expect").0;
    assert!(
        expected[0].0 > after,
        "test bug: expecting revision {} after {after}",
        expected[0].0
    );
    let mut prev = after;
    let mut next = 0;
    let mut throughs = Vec::new();
    while prev < until {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after revision {prev}, waiting for {until}"))
            .unwrap_or_else(|e| panic!("watch failed after revision {prev}: {e}"))
            .unwrap_or_else(|| panic!("watch ended after revision {prev}"));
        let token = m
            .changes_through
            .expect("a response without changes_through");
        let through = rev_of(&token);
        assert!(
            through > prev,
            "changes_through went from {prev} to {through}"
        );
        let got: Vec<String> = m
            .changes
            .iter()
            .map(|c| {
                let sign = if c.operation == pb::relationship_change::Operation::Delete as i32 {
                    "-"
                } else {
                    "+"
                };
                format!(
                    "{sign}{}",
                    dhow::commands::args::relationship_text(c.relationship.as_ref())
                )
            })
            .collect();
        let mut at = 0;
        while next < expected.len() && expected[next].0 <= through {
            let (rev, want) = &expected[next];
            assert_eq!(
                *rev, through,
                "a response holds the changes of one revision: revision {rev} arrived in the \
                 response through {through}"
            );
            let n = want.len();
            assert!(
                at + n <= got.len(),
                "the response after {prev} through {through} lacks the changes of revision \
                 {rev} ({want:?}): {got:?}"
            );
            let mut g = got[at..at + n].to_vec();
            let mut w = want.clone();
            g.sort();
            w.sort();
            assert_eq!(
                g, w,
                "changes of revision {rev} in the response after {prev} through {through}: {got:?}"
            );
            at += n;
            next += 1;
        }
        assert_eq!(
            at,
            got.len(),
            "the response after {prev} through {through} has changes no write made (duplicates?): {:?}",
            &got[at..]
        );
        prev = through;
        throughs.push(token);
    }
    assert_eq!(next, expected.len());
    throughs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_through_the_raft_node_is_ordered_exactly_once_and_resumable_after_kill9() {
    use pb::relationship_update::Operation::{Create, Delete, Touch};
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 0);
    let port = server.port();
    write_schema_via_cli(&server, dir.path(), SCHEMA);
    let mut rels = RelationshipServiceClient::new(connect(&server).await);
    let t0 = write(
        &mut rels,
        vec![update(Create, "document:start#viewer@user:start")],
    )
    .await
    .unwrap();

    // 1. A live watch from t0 sees creates, touches and deletes, some several to a write.
    let mut a = open_watch(&mut rels, &t0).await;
    let mut first: Vec<Logged> = Vec::new();
    logged_write(
        &mut rels,
        &mut first,
        &[(Create, "document:w1#viewer@user:alice")],
    )
    .await;
    logged_write(
        &mut rels,
        &mut first,
        &[
            (Create, "document:w2#viewer@user:bob"),
            (Create, "document:w3#viewer@user:carol"),
        ],
    )
    .await;
    logged_write(
        &mut rels,
        &mut first,
        &[(Delete, "document:w1#viewer@user:alice")],
    )
    .await;
    logged_write(
        &mut rels,
        &mut first,
        &[(Touch, "document:w2#viewer@user:bob")],
    )
    .await;
    logged_write(
        &mut rels,
        &mut first,
        &[
            (Create, "document:w4#viewer@user:dave"),
            (Delete, "document:w3#viewer@user:carol"),
            (Touch, "document:start#viewer@user:erin"),
        ],
    )
    .await;
    for i in 0..5 {
        let r = format!("document:s{i}#viewer@user:u{i}");
        logged_write(&mut rels, &mut first, &[(Create, &r)]).await;
    }
    let a_throughs = expect_changes(&mut a, rev_of(&t0), &first).await;
    let a_last = a_throughs.last().unwrap().clone();
    drop(a);

    // 2. Writes while nobody watches; resuming from the last token starts exactly after it,
    // and the resumed stream then carries live writes with nothing repeated.
    let mut second: Vec<Logged> = Vec::new();
    for i in 0..4 {
        let r = format!("document:e{i}#viewer@user:u{i}");
        logged_write(&mut rels, &mut second, &[(Create, &r)]).await;
    }
    logged_write(
        &mut rels,
        &mut second,
        &[(Delete, "document:w2#viewer@user:bob")],
    )
    .await;
    let mut b = open_watch(&mut rels, &a_last).await;
    let b_throughs = expect_changes(&mut b, rev_of(&a_last), &second).await;
    let mut live: Vec<Logged> = Vec::new();
    logged_write(
        &mut rels,
        &mut live,
        &[(Create, "document:live#viewer@user:v")],
    )
    .await;
    logged_write(
        &mut rels,
        &mut live,
        &[(Delete, "document:s0#viewer@user:u0")],
    )
    .await;
    let b_last = expect_changes(&mut b, rev_of(b_throughs.last().unwrap()), &live)
        .await
        .pop()
        .unwrap();
    drop(b);

    // 3. Resuming from a token in the middle of the first stream gives the rest, once.
    let mid = a_throughs[a_throughs.len() / 2].clone();
    let rest: Vec<Logged> = first
        .iter()
        .chain(&second)
        .chain(&live)
        .filter(|(r, _)| *r > rev_of(&mid))
        .cloned()
        .collect();
    let mut m = open_watch(&mut rels, &mid).await;
    expect_changes(&mut m, rev_of(&mid), &rest).await;
    drop(m);

    // 4. Writes acknowledged before a kill -9 come back to a watch resumed after the restart,
    // followed by writes made after it.
    let mut before_kill: Vec<Logged> = Vec::new();
    for i in 0..4 {
        let r = format!("document:k{i}#viewer@user:u{i}");
        logged_write(&mut rels, &mut before_kill, &[(Create, &r)]).await;
    }
    logged_write(
        &mut rels,
        &mut before_kill,
        &[
            (Delete, "document:w4#viewer@user:dave"),
            (Touch, "document:k0#viewer@user:u0"),
        ],
    )
    .await;
    drop(rels);
    server.restart(port);
    let mut rels = RelationshipServiceClient::new(connect(&server).await);
    let mut c = open_watch(&mut rels, &b_last).await;
    let c_throughs = expect_changes(&mut c, rev_of(&b_last), &before_kill).await;
    let mut after_restart: Vec<Logged> = Vec::new();
    logged_write(
        &mut rels,
        &mut after_restart,
        &[(Create, "document:after#viewer@user:x")],
    )
    .await;
    logged_write(
        &mut rels,
        &mut after_restart,
        &[(Delete, "document:k1#viewer@user:u1")],
    )
    .await;
    expect_changes(&mut c, rev_of(c_throughs.last().unwrap()), &after_restart).await;
}
