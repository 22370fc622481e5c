//! Agents on a three-node cluster of real `dhow serve` processes, with JWTs and the decision
//! audit log configured in a config file: a delegation revoked through one node denies the
//! agent's next check on another node (with the revocation's token) while the agent's JWT is
//! unchanged; each node audits the decisions it made, the records survive kill -9 and a
//! restart, and a query for a principal and a time range across the three nodes (the
//! AuditService of each, and `dhow audit --nodes`) finds every decision, merged by time.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhow_proto::v1 as pb;
use dhow_tests::cluster::{at_least, Client, Cluster};
use dhow_tests::{rel, repo_root};
use tonic::Request;

const ISSUER: &str = "https://idp.test";

const SCHEMA: &str = "definition user {}
definition agent {
    relation delegator: user | agent
    permission view = delegator
}
definition document {
    relation viewer: user
    permission view = viewer
}
";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let secret = repo_root().join("crates/dhow-server/tests/keys/hmac1.secret");
    let text = format!(
        r#"
[audit]
mode = "all"
max_bytes = "1MiB"

[[auth.preshared_keys]]
name = "app"
sha256 = "b7dc470b76ae08ac4afa00e114a850b05d53d19e250ba74adef6295084a7eb00"
roles = ["read", "write", "admin"]

[[auth.preshared_keys]]
name = "auditor"
sha256 = "a35cc6d9b017bda734a0328f8970a6c9264993fbb81fdb825d8308f776a0435e"
roles = ["audit"]

[[auth.jwt_issuers]]
issuer = "{ISSUER}"
audiences = ["dhow"]
algorithms = ["HS256"]
hmac_secret_file = "{}"
default_roles = ["read"]

[auth.jwt_issuers.delegation]
subject_type = "user"
actor_type = "agent"
"#,
        secret.display()
    );
    let path = dir.join("dhow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(sub: &str, actor: &str) -> String {
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": sub, "aud": "dhow", "exp": now() + 600, "iat": now(),
        "act": { "sub": actor },
    });
    let secret =
        std::fs::read(repo_root().join("crates/dhow-server/tests/keys/hmac1.secret")).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap()
}

fn with<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn write(
    c: &Client,
    op: pb::relationship_update::Operation,
    text: &str,
) -> pb::ConsistencyToken {
    pb::relationship_service_client::RelationshipServiceClient::new(c.channel.clone())
        .write(with(
            pb::WriteRequest {
                updates: vec![pb::RelationshipUpdate {
                    operation: op as i32,
                    relationship: Some(rel(text)),
                }],
                optional_preconditions: vec![],
            },
            "k-app",
        ))
        .await
        .unwrap()
        .into_inner()
        .written_at
        .unwrap()
}

/// The agent's check of `document:plan#view`, principal and chain from its token.
async fn agent_check(c: &Client, token: &pb::ConsistencyToken, jwt: &str) -> pb::CheckResponse {
    pb::permission_service_client::PermissionServiceClient::new(c.channel.clone())
        .check(with(
            pb::CheckRequest {
                consistency: at_least(token),
                resource: Some(pb::ObjectReference {
                    object_type: "document".into(),
                    object_id: "plan".into(),
                }),
                permission: "view".into(),
                ..Default::default()
            },
            jwt,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn audit(c: &Client, q: pb::QueryDecisionsRequest) -> pb::QueryDecisionsResponse {
    pb::audit_service_client::AuditServiceClient::new(c.channel.clone())
        .query_decisions(with(q, "k-audit"))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_one_node_denies_on_another_and_the_audit_spans_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut cluster =
        Cluster::start_authenticated(3, &[("DHOW_CONFIG", cfg.to_str().unwrap())], "k-app").await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let l = cluster.client(leader).await;
    pb::schema_service_client::SchemaServiceClient::new(l.channel.clone())
        .write_schema(with(
            pb::WriteSchemaRequest {
                schema: SCHEMA.into(),
            },
            "k-app",
        ))
        .await
        .unwrap();
    use pb::relationship_update::Operation::{Delete, Touch};
    write(&l, Touch, "document:plan#viewer@user:alice").await;
    let t = write(&l, Touch, "agent:assistant#delegator@user:alice").await;
    let start_us = now() as i64 * 1_000_000 - 1_000_000;
    let agent = jwt("alice", "assistant");
    // The agent's check on every node: allowed.
    let clients = [
        cluster.client(0).await,
        cluster.client(1).await,
        cluster.client(2).await,
    ];
    for c in &clients {
        let r = agent_check(c, &t, &agent).await;
        assert_eq!(r.permissionship, pb::Permissionship::HasPermission as i32);
    }
    // Alice revokes the assistant through one node; the next check on another node, with
    // the revocation's token and the same JWT, is denied at the assistant's hop.
    let (on, other) = (leader, (leader + 1) % 3);
    let revoked = write(&clients[on], Delete, "agent:assistant#delegator@user:alice").await;
    let r = agent_check(&clients[other], &revoked, &agent).await;
    assert_eq!(r.permissionship, pb::Permissionship::NoPermission as i32);
    let link = r.denied_at.unwrap();
    assert_eq!(
        (link.kind, link.actor_index),
        (pb::chain_link::Kind::Actor as i32, 0)
    );
    let end_us = now() as i64 * 1_000_000 + 2_000_000;

    // Each node audited its own decisions: three allowed, and one denial on `other`.
    let q = pb::QueryDecisionsRequest {
        principal: "user:alice".into(),
        since: Some(dhow_wire::timestamp_pb(dhow_tuples::Timestamp(start_us))),
        until: Some(dhow_wire::timestamp_pb(dhow_tuples::Timestamp(end_us))),
        ..Default::default()
    };
    let mut counts = Vec::new();
    for c in &clients {
        let r = audit(c, q.clone()).await;
        for rec in &r.records {
            assert_eq!(rec.node_id, r.node_id);
            assert_eq!(rec.caller, format!("jwt:{ISSUER}#alice"));
            assert_eq!(rec.actors, ["agent:assistant"]);
        }
        counts.push(r.records.len());
    }
    let mut want = vec![1, 1, 1];
    want[other] = 2;
    assert_eq!(counts, want);

    // kill -9 and restart the node that denied: its records are still there.
    cluster.kill9(other);
    cluster.restart(other);
    let c = loop {
        if let Ok(mut c) = Client::try_connect(&cluster.nodes[other].endpoint()).await {
            c.token = Some("k-app".into());
            if c.status().await.is_ok() {
                break c;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = audit(&c, q.clone()).await;
    assert_eq!(r.records.len(), 2);
    assert_eq!(r.records[1].outcome, pb::DecisionOutcome::Denied as i32);
    assert_eq!(r.records[1].denied_at, "actors[0]");

    // `dhow audit` across the three nodes: four records, merged by time, the denial last.
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    let out = Command::new(dhow_tests::process::dhow_bin())
        .args([
            "audit",
            "--principal",
            "user:alice",
            "--nodes",
            &nodes.join(","),
        ])
        .args(["--token", "k-audit"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[..3]
            .iter()
            .all(|l| l.contains(" allowed document:plan#view agent:assistant for user:alice ")),
        "{text}"
    );
    assert!(
        lines[3].contains(" denied ") && lines[3].ends_with("denied at actors[0]"),
        "{text}"
    );
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(sorted, lines, "merged by time");
}
