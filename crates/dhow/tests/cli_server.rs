//! The `dhow` client commands against the real API server, in-process over a `MemNode` (the
//! server `dhow-server`'s own tests start): wiring, streaming, outputs, tokens, error reasons
//! and exit codes. End-to-end runs against `dhow serve` itself are in `serve_e2e.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use dhow_proto::v1 as pb;
use dhow_tests::revision;
use dhow_tests::server::TestServer;

/// Starts the real server over a fresh `MemNode` on its own runtime thread (it runs until the
/// test process ends); returns its URL.
fn start() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let server = TestServer::start().await;
            tx.send(format!("http://{}", server.addr))
                .expect("send url");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("the server started")
}

fn dhow(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dhow"))
        .args(args)
        .env("DHOW_ENDPOINT", endpoint)
        .output()
        .expect("run dhow")
}

fn ok(endpoint: &str, args: &[&str]) -> (String, String) {
    let o = dhow(endpoint, args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{args:?}: {out}{err}");
    (out, err)
}

/// The revision of a token printed alone on a line (`TOKEN\n` or `token: TOKEN\n`).
fn rev(text: &str) -> u64 {
    let t = text.trim().trim_start_matches("token: ");
    revision(&pb::ConsistencyToken {
        token: t.to_string(),
    })
}

/// The error line and exit code of a refused command.
fn refused(endpoint: &str, args: &[&str]) -> (Option<i32>, String) {
    let o = dhow(endpoint, args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const SCHEMA: &str = "use expiration
definition user {}
definition group {
  relation member: user | group#member
}
definition document {
  relation owner: user | user with expiration
  relation viewer: user | user:* | group#member
  relation banned: user
  permission view = (owner + viewer) - banned
}
";

/// A server with the schema written (at revision 1); its URL and the schema's token.
fn setup_with_token() -> (String, String) {
    let ep = start();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.zed");
    std::fs::write(&schema, SCHEMA).unwrap();
    let (out, _) = ok(&ep, &["schema", "write", schema.to_str().unwrap()]);
    assert_eq!(rev(&out), 1, "{out}");
    (ep, out.trim().to_string())
}

fn setup() -> String {
    setup_with_token().0
}

#[test]
fn schema_rel_and_check() {
    let ep = setup();
    let (out, err) = ok(&ep, &["schema", "read"]);
    assert_eq!(out, SCHEMA);
    assert_eq!(rev(&err), 1);

    let (out, _) = ok(
        &ep,
        &[
            "rel",
            "create",
            "document:1#owner@user:alice",
            "document:1#viewer@group:eng#member",
            "group:eng#member@user:bob",
            "document:2#owner@user:alice[expiration:2300-01-01T00:00:00Z]",
        ],
    );
    assert_eq!(rev(&out), 2);

    // Create of an existing relationship: server error, code, reason, exit 2.
    let (code, e) = refused(&ep, &["rel", "create", "document:1#owner@user:alice"]);
    assert_eq!(code, Some(2));
    assert!(
        e.starts_with("error: ALREADY_EXISTS: ")
            && e.contains("document:1#owner@user:alice")
            && e.ends_with("(reason: ALREADY_EXISTS)\n"),
        "{e}"
    );

    let (out, err) = ok(&ep, &["check", "document:1#view@user:bob"]);
    assert_eq!(out, "true\n");
    assert!(rev(&err) >= 2, "{err}");
    let (out, _) = ok(
        &ep,
        &[
            "check",
            "document:1",
            "view",
            "user:carol",
            "--consistency",
            "fully-consistent",
        ],
    );
    assert_eq!(out, "false\n");

    let (out, _) = ok(&ep, &["check", "document:1#view@user:bob", "--explain"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "true");
    assert_eq!(lines[1], "✓ document:1#view");
    assert!(
        lines.iter().any(|l| l
            .contains("relationship document:1#viewer@group:eng#member, through its subject set")),
        "{out}"
    );
    assert!(lines[2..].iter().all(|l| l.starts_with("  ")), "{out}");

    let (out, err) = ok(
        &ep,
        &["check", "document:1#view@user:alice", "--json", "--explain"],
    );
    assert!(err.is_empty());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], true);
    assert!(rev(v["token"].as_str().unwrap()) >= 2);
    assert_eq!(v["proof"]["step"], "document:1#view");
    let (out, _) = ok(&ep, &["check", "document:1#view@user:alice", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 3, "{out}");
    assert_eq!(v["allowed"], true);
    assert_eq!(v["permissionship"], "allowed");

    // Unknown permission: FAILED_PRECONDITION, exit 2.
    let (code, e) = refused(&ep, &["check", "document:1#nope@user:alice"]);
    assert_eq!(code, Some(2));
    assert!(
        e.starts_with("error: FAILED_PRECONDITION: ")
            && e.ends_with("(reason: UNKNOWN_RELATION)\n"),
        "{e}"
    );

    let (out, err) = ok(&ep, &["rel", "read", "document:1"]);
    assert_eq!(
        out,
        "document:1#owner@user:alice\ndocument:1#viewer@group:eng#member\n"
    );
    assert!(rev(&err) >= 2);
    let (out, _) = ok(&ep, &["rel", "read", "document", "--subject", "user:alice"]);
    assert_eq!(
        out,
        "document:1#owner@user:alice\ndocument:2#owner@user:alice[expiration:2300-01-01T00:00:00Z]\n"
    );
    let (out, err) = ok(&ep, &["rel", "read", "document:9"]);
    assert_eq!((out.as_str(), err.as_str()), ("", ""));

    let (out, _) = ok(&ep, &["lookup-resources", "document", "view", "user:alice"]);
    assert_eq!(out, "1\n2\n");
    let (out, _) = ok(&ep, &["lookup-subjects", "document:1", "view", "user"]);
    assert_eq!(out, "user:alice\nuser:bob\n");
    let (out, _) = ok(
        &ep,
        &[
            "lookup-subjects",
            "document:1",
            "viewer",
            "group",
            "--subject-relation",
            "member",
        ],
    );
    assert_eq!(out, "group:eng#member\n");

    let (out, _) = ok(&ep, &["expand", "document:1#view"]);
    assert!(out.starts_with("document:1#view (exclusion -)\n"), "{out}");
    assert!(out.contains("document:1#owner: user:alice\n"), "{out}");
    assert!(
        out.contains(
            "\n  except document:1#view (union +)\n    document:1#banned: (no subjects)\n"
        ),
        "{out}"
    );

    let (out, _) = ok(&ep, &["rel", "delete", "document:1#owner@user:alice"]);
    // The refused create consumed revision 3, as a Raft entry would.
    assert_eq!(rev(&out), 4);
    let (out, _) = ok(&ep, &["check", "document:1#view@user:alice"]);
    assert_eq!(out, "false\n");
}

#[test]
fn import_and_export() {
    let ep = setup();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rels.txt");
    let mut text = String::from("// generated\n\n");
    for i in 0..2500 {
        text.push_str(&format!("document:d{i}#viewer@user:u{}\n", i % 7));
    }
    std::fs::write(&file, &text).unwrap();
    let (out, err) = ok(&ep, &["rel", "import", file.to_str().unwrap()]);
    // Three batches (1000, 1000, 500), each committed after the schema's revision 1.
    assert_eq!(rev(&out), 4);
    assert_eq!(err, "imported 2500 relationships\n");

    let o = dhow(&ep, &["rel", "export"]);
    assert!(o.status.success());
    let exported = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(exported.lines().count(), 2500);
    assert_eq!(rev(&String::from_utf8_lossy(&o.stderr)), 4);

    // What export prints, import reads.
    std::fs::write(&file, &exported).unwrap();
    let (_, err) = ok(
        &ep,
        &[
            "rel",
            "import",
            file.to_str().unwrap(),
            "--batch-size",
            "300",
        ],
    );
    assert_eq!(err, "imported 2500 relationships\n");
}

#[test]
fn watch_count_and_errors() {
    let (ep, schema_token) = setup_with_token();
    let (r2, _) = ok(
        &ep,
        &[
            "rel",
            "create",
            "document:w#viewer@user:a",
            "document:w#viewer@user:b",
        ],
    );
    let (r3, _) = ok(&ep, &["rel", "delete", "document:w#viewer@user:b"]);
    ok(&ep, &["rel", "touch", "document:w#viewer@user:c"]);
    // From the schema's token: revision 2 is one batch of two changes, revision 3 one of one.
    let (out, err) = ok(&ep, &["watch", "--from", &schema_token, "--count", "3"]);
    assert_eq!(
        out,
        "TOUCH document:w#viewer@user:a\nTOUCH document:w#viewer@user:b\nDELETE document:w#viewer@user:b\n"
    );
    let tokens: Vec<u64> = err.lines().map(rev).collect();
    assert_eq!(tokens, vec![rev(&r2), rev(&r3)], "{err}");
    // Stopping inside a batch prints no token past the last change shown.
    let (out, err) = ok(&ep, &["watch", "--from", &schema_token, "--count", "1"]);
    assert_eq!(out, "TOUCH document:w#viewer@user:a\n");
    assert_eq!(err, "");
    let (code, e) = refused(&ep, &["watch", "--from", "expired"]);
    assert_eq!(code, Some(2));
    assert!(
        e.starts_with("error: INVALID_ARGUMENT: ") && e.ends_with("(reason: TOKEN_MALFORMED)\n"),
        "{e}"
    );
}

#[test]
fn watch_stops_on_interrupt() {
    let (ep, schema_token) = setup_with_token();
    ok(
        &ep,
        &[
            "rel",
            "create",
            "document:w#viewer@user:a",
            "document:w#viewer@user:b",
            "document:w#viewer@user:c",
        ],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_dhow"))
        .args(["watch", "--from", &schema_token, "--endpoint", &ep])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        lines.next().unwrap().unwrap();
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn validate_against_the_server() {
    let ep = setup();
    let root = dhow_tests::repo_root();
    // Twice: the second load replaces the first's relationships.
    for _ in 0..2 {
        let o = Command::new(env!("CARGO_BIN_EXE_dhow"))
            .current_dir(&root)
            .args(["validate", "examples/quickstart.yaml", "--endpoint", &ep])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(" passed, 0 failed"), "{out}");
    }
    let (out, _) = ok(&ep, &["schema", "read"]);
    assert!(out.contains("definition folder"), "{out}");
}

const CAVEAT_SCHEMA: &str = "caveat on_network(user_ip ipaddress, cidr string) {
  user_ip.in_cidr(cidr)
}
definition user {}
definition document {
  relation viewer: user | user with on_network
  permission view = viewer
}
";

/// Caveats through the CLI: `rel create` in the caveat form reaches the server (and `rel
/// read` shows it back), `--context` reaches Check and the lookups, a conditional answer
/// prints `conditional` with the missing parameters (in `--json` too), Expand shows the
/// caveat, and a bad context is refused locally or by the server with its reason.
#[test]
fn caveats_through_the_cli() {
    let ep = start();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.zed");
    std::fs::write(&schema, CAVEAT_SCHEMA).unwrap();
    ok(&ep, &["schema", "write", schema.to_str().unwrap()]);
    let tom = r#"document:1#viewer@user:tom[on_network:{"cidr":"10.0.0.0/8"}]"#;
    ok(&ep, &["rel", "create", tom, "document:2#viewer@user:tom"]);
    let (out, _) = ok(&ep, &["rel", "read", "document:1"]);
    assert_eq!(out, format!("{tom}\n"));

    let (out, _) = ok(&ep, &["check", "document:1#view@user:tom"]);
    assert_eq!(out, "conditional (missing user_ip)\n");
    let ctx_in = r#"{"user_ip": "10.1.2.3"}"#;
    let ctx_out = r#"{"user_ip": "11.1.2.3"}"#;
    let (out, _) = ok(
        &ep,
        &["check", "document:1#view@user:tom", "--context", ctx_in],
    );
    assert_eq!(out, "true\n");
    let (out, _) = ok(
        &ep,
        &["check", "document:1#view@user:tom", "--context", ctx_out],
    );
    assert_eq!(out, "false\n");
    let (out, _) = ok(&ep, &["check", "document:1#view@user:tom", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["permissionship"], "conditional", "{out}");
    assert_eq!(v["allowed"], false, "{out}");
    assert_eq!(v["missing"], serde_json::json!(["user_ip"]), "{out}");
    let (out, _) = ok(&ep, &["check", "document:1#view@user:tom", "--explain"]);
    assert!(
        out.contains(
            r#"? caveat on_network with {"cidr":"10.0.0.0/8"} (conditional: missing user_ip)"#
        ),
        "{out}"
    );

    let (out, _) = ok(&ep, &["lookup-resources", "document", "view", "user:tom"]);
    assert_eq!(out, "1 (conditional, missing user_ip)\n2\n");
    let (out, _) = ok(
        &ep,
        &[
            "lookup-resources",
            "document",
            "view",
            "user:tom",
            "--context",
            ctx_in,
        ],
    );
    assert_eq!(out, "1\n2\n");
    let (out, _) = ok(&ep, &["lookup-subjects", "document:1", "view", "user"]);
    assert_eq!(out, "user:tom (conditional, missing user_ip)\n");
    let (out, _) = ok(
        &ep,
        &[
            "lookup-subjects",
            "document:1",
            "view",
            "user",
            "--context",
            ctx_out,
        ],
    );
    assert_eq!(out, "");
    let (out, _) = ok(&ep, &["expand", "document:1#viewer"]);
    assert_eq!(
        out,
        format!("document:1#viewer: user:tom[on_network:{{\"cidr\":\"10.0.0.0/8\"}}]\n")
    );

    // Not JSON: refused before sending (exit 1); the wrong type: refused by the server.
    let (code, e) = refused(
        &ep,
        &["check", "document:1#view@user:tom", "--context", "[1]"],
    );
    assert_eq!(code, Some(1), "{e}");
    assert!(e.starts_with("error: --context: "), "{e}");
    let (code, e) = refused(
        &ep,
        &[
            "check",
            "document:1#view@user:tom",
            "--context",
            r#"{"user_ip": 7}"#,
        ],
    );
    assert_eq!(code, Some(2), "{e}");
    assert!(e.ends_with("(reason: INVALID_CAVEAT_CONTEXT)\n"), "{e}");
    // A relationship context that does not fit the caveat: refused at write.
    let (code, e) = refused(
        &ep,
        &[
            "rel",
            "create",
            r#"document:3#viewer@user:tom[on_network:{"cidr":1}]"#,
        ],
    );
    assert_eq!(code, Some(2), "{e}");
    assert!(e.ends_with("(reason: INVALID_RELATIONSHIP)\n"), "{e}");
}

const AGENT_SCHEMA: &str = "definition user {
    relation delegate: agent
}
definition agent {
    relation delegator: user | agent
    relation reader_for: user | agent
    permission view = delegator + reader_for
    permission edit = delegator
}
definition folder {
    relation viewer: user | user#delegate
    relation editor: user
    permission view = viewer + editor
    permission edit = editor
}
definition document {
    relation folder: folder
    permission view = folder->view
    permission edit = folder->edit
}
";

#[test]
fn delegated_checks_through_the_cli() {
    let ep = start();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.zed");
    std::fs::write(&schema, AGENT_SCHEMA).unwrap();
    ok(&ep, &["schema", "write", schema.to_str().unwrap()]);
    ok(
        &ep,
        &[
            "rel",
            "create",
            "folder:f#editor@user:alice",
            "document:1#folder@folder:f",
            "agent:assistant#delegator@user:alice",
            "agent:researcher#reader_for@agent:assistant",
        ],
    );
    let chain = ["--actor", "agent:researcher", "--actor", "agent:assistant"];
    let args = |check: &'static str, explain: bool| {
        let mut a = vec!["check", check];
        a.extend(chain);
        if explain {
            a.push("--explain");
        }
        a
    };
    let (out, _) = ok(&ep, &args("document:1#view@user:alice", false));
    assert_eq!(out, "true\n");
    // Edit: the researcher only reads for the assistant; the tree names its hop.
    let (out, _) = ok(&ep, &args("document:1#edit@user:alice", true));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "false", "{out}");
    assert!(
        lines[1].starts_with(
            "✗ document:1#edit: agent:researcher for agent:assistant for user:alice at revision "
        ),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("├─ ✓ principal user:alice has edit on document:1")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("├─ ✓ hop 1: actors[1] agent:assistant acting for user:alice")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "└─ ✗ hop 2: actors[0] agent:researcher acting for agent:assistant   ← first link that denies"
        )),
        "{out}"
    );
    // The lookup with the chain; a chain with a repeated actor is refused.
    let (out, _) = ok(
        &ep,
        &[
            "lookup-resources",
            "document",
            "view",
            "user:alice",
            "--actor",
            "agent:assistant",
        ],
    );
    assert_eq!(out, "1\n");
    let (code, e) = refused(
        &ep,
        &[
            "check",
            "document:1#view@user:alice",
            "--actor",
            "agent:a",
            "--actor",
            "agent:a",
        ],
    );
    assert_eq!(code, Some(2));
    assert!(e.contains("INVALID_DELEGATION_CHAIN"), "{e}");
}

/// `dhow health` prints the node's gRPC health and exits 0 only when it is SERVING (the
/// docker-compose healthcheck runs it); a health entry the server does not know is the
/// server's error (exit code 2).
#[test]
fn health_for_probes() {
    let url = start();
    let (out, _) = ok(&url, &["health"]);
    assert_eq!(out.trim(), "SERVING");
    let (out, _) = ok(&url, &["health", "--service", "dhow.v1.PermissionService"]);
    assert_eq!(out.trim(), "SERVING");
    let (code, err) = refused(&url, &["health", "--service", "no.such.Service"]);
    assert_eq!(code, Some(2), "{err}");
}
