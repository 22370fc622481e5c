//! Delegated checks through the real server over gRPC (in-process, over a `MemNode`), with
//! JWTs minted here (HS256) whose `sub` and nested `act` claims name the principal and the
//! actors (docs/agents.md): allowed when the principal has the permission and every hop is
//! delegated; denied with the failing hop named when one is missing, expired or revoked
//! (revoked while the agent's token stays valid and unchanged); chains too deep, cyclic, or
//! disagreeing with the caller's token refused with the documented codes and reasons;
//! CheckBulk and LookupResources with a chain agree with Check.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhow_proto::v1 as pb;
use dhow_server::auth::settings::{DelegationSettings, IssuerSettings, PresharedKeySettings};
use dhow_server::auth::AuthSettings;
use dhow_server::Config;
use dhow_tests::server::{check_req, delete, fresh, reason, subj, touch, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status};

const ISSUER: &str = "https://idp.test";

pub const SCHEMA: &str = r#"
use expiration

definition user {
    relation delegate: agent | agent with expiration
}

definition agent {
    relation delegator: user | agent | user with expiration
    relation reader_for: user | agent
    relation delegate: agent
    permission view = delegator + reader_for
    permission edit = delegator
}

definition folder {
    relation viewer: user | user#delegate | agent#delegate
    relation editor: user
    permission view = viewer + editor
    permission edit = editor
}

definition document {
    relation folder: folder
    relation owner: user
    permission view = owner + folder->view
    permission edit = owner + folder->edit
}
"#;

const BASE: &[&str] = &[
    "folder:private#editor@user:alice",
    "folder:shared#editor@user:alice",
    "document:notes#folder@folder:private",
    "document:plan#folder@folder:shared",
    "document:budget#owner@user:alice",
    "document:bobs#owner@user:bob",
];

fn keys() -> PathBuf {
    dhow_tests::repo_root().join("crates/dhow-server/tests/keys")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn auth() -> AuthSettings {
    AuthSettings {
        preshared_keys: vec![PresharedKeySettings {
            name: "app".into(),
            sha256: hex::encode(Sha256::digest(b"k-app")),
            roles: vec!["read".into(), "write".into()],
        }],
        jwt_issuers: vec![IssuerSettings {
            issuer: ISSUER.into(),
            audiences: vec!["dhow".into()],
            algorithms: vec!["HS256".into()],
            jwks_file: None,
            pem_files: vec![],
            hmac_secret_file: Some(keys().join("hmac1.secret")),
            roles_claim: Some("scope".into()),
            roles: Default::default(),
            default_roles: vec![],
            leeway: Some("5s".into()),
            jwks_refresh: None,
            delegation: Some(DelegationSettings {
                subject_type: Some("user".into()),
                actor_type: Some("agent".into()),
                type_claim: None,
                prefix_types: vec!["user".into(), "agent".into()],
            }),
        }],
        client_certificates: vec![],
        jwt_cache_entries: 100,
        env_preshared_key: None,
    }
}

/// A token for `sub`, acted for by `actors` (outermost first), valid for ten minutes.
fn jwt(sub: &str, actors: &[&str]) -> String {
    let mut act: Option<serde_json::Value> = None;
    for a in actors.iter().rev() {
        let mut v = serde_json::json!({ "sub": a });
        if let Some(inner) = act.take() {
            v["act"] = inner;
        }
        act = Some(v);
    }
    let mut claims = serde_json::json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": "dhow",
        "exp": now() + 600,
        "iat": now(),
        "scope": "read",
    });
    if let Some(a) = act {
        claims["act"] = a;
    }
    let key = EncodingKey::from_secret(&std::fs::read(keys().join("hmac1.secret")).unwrap());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn with<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

struct World {
    s: TestServer,
    last: pb::ConsistencyToken,
}

impl World {
    async fn new(rels: &[&str]) -> World {
        let s = TestServer::start_with(Config {
            auth: auth(),
            ..Config::default()
        })
        .await;
        let last = s
            .schema()
            .write_schema(with(
                pb::WriteSchemaRequest {
                    schema: SCHEMA.into(),
                },
                "k-app",
            ))
            .await
            .unwrap()
            .into_inner()
            .written_at
            .unwrap();
        let mut w = World { s, last };
        let all: Vec<&str> = BASE.iter().chain(rels).copied().collect();
        w.write(all.iter().map(|r| touch(r)).collect()).await;
        w
    }

    async fn write(&mut self, updates: Vec<pb::RelationshipUpdate>) {
        self.last = self
            .s
            .rel()
            .write(with(
                pb::WriteRequest {
                    updates,
                    optional_preconditions: vec![],
                },
                "k-app",
            ))
            .await
            .unwrap()
            .into_inner()
            .written_at
            .unwrap();
    }

    /// `resource#permission@subject` by `actors` (explicit, with the app's key).
    fn req(&self, check: &str, actors: &[&str]) -> pb::CheckRequest {
        let (rp, subject) = check.split_once('@').unwrap();
        let (resource, permission) = rp.split_once('#').unwrap();
        let mut r = check_req(resource, permission, subject, fresh(&self.last));
        r.actors = actors
            .iter()
            .map(|a| {
                let (t, id) = a.split_once(':').unwrap();
                subj(t, id).unwrap()
            })
            .collect();
        r
    }

    async fn check(&self, req: pb::CheckRequest, token: &str) -> Result<pb::CheckResponse, Status> {
        self.s
            .perm()
            .check(with(req, token))
            .await
            .map(|r| r.into_inner())
    }

    async fn allowed(&self, check: &str, actors: &[&str]) -> bool {
        let r = self.check(self.req(check, actors), "k-app").await.unwrap();
        r.permissionship == pb::Permissionship::HasPermission as i32
    }

    async fn lookup(&self, subject: &str, actors: &[&str], token: &str) -> BTreeSet<String> {
        let (t, id) = subject.split_once(':').unwrap();
        let req = pb::LookupResourcesRequest {
            consistency: fresh(&self.last),
            resource_object_type: "document".into(),
            permission: "view".into(),
            subject: subj(t, id),
            optional_limit: 0,
            optional_cursor: None,
            context: None,
            actors: self.req("document:x#view@user:x", actors).actors,
        };
        let mut stream = self
            .s
            .perm()
            .lookup_resources(with(req, token))
            .await
            .unwrap()
            .into_inner();
        let mut out = BTreeSet::new();
        while let Some(r) = stream.message().await.unwrap() {
            out.insert(r.resource_object_id);
        }
        out
    }
}

fn denied_at(r: &pb::CheckResponse) -> Option<(i32, u32)> {
    r.denied_at.as_ref().map(|l| (l.kind, l.actor_index))
}

const PRINCIPAL: i32 = pb::chain_link::Kind::Principal as i32;
const ACTOR: i32 = pb::chain_link::Kind::Actor as i32;
const DOCS: [&str; 4] = ["notes", "plan", "budget", "bobs"];

#[tokio::test]
async fn every_hop_delegated_is_allowed_and_a_missing_hop_is_named() {
    let w = World::new(&[
        "agent:assistant#delegator@user:alice",
        "agent:researcher#reader_for@agent:assistant",
    ])
    .await;
    let chain = ["agent:researcher", "agent:assistant"];
    assert!(w.allowed("document:plan#view@user:alice", &chain).await);
    assert!(
        w.allowed("document:plan#edit@user:alice", &chain[1..])
            .await
    );
    // Bob's document: the principal herself lacks it.
    let mut req = w.req("document:bobs#view@user:alice", &chain);
    req.explain = true;
    let r = w.check(req, "k-app").await.unwrap();
    assert_eq!(denied_at(&r), Some((PRINCIPAL, 0)));
    // The researcher only reads: its hop (actors[0]) is the first that denies edit.
    let mut req = w.req("document:plan#edit@user:alice", &chain);
    req.explain = true;
    let r = w.check(req, "k-app").await.unwrap();
    assert_eq!(r.permissionship, pb::Permissionship::NoPermission as i32);
    assert_eq!(denied_at(&r), Some((ACTOR, 0)));
    assert!(r.proof.as_ref().unwrap().allowed, "alice may edit");
    assert_eq!(r.actor_proofs.len(), 2);
    assert!(!r.actor_proofs[0].allowed && r.actor_proofs[1].allowed);
    match &r.actor_proofs[0].step {
        Some(pb::proof::Step::Hop(h)) => {
            assert_eq!(h.actor.as_ref().unwrap().object_id, "researcher");
            assert_eq!(h.permission, "edit");
        }
        other => panic!("a hop step, got {other:?}"),
    }
    // Without explain the failing hop is still named.
    let r = w
        .check(w.req("document:plan#edit@user:alice", &chain), "k-app")
        .await
        .unwrap();
    assert_eq!(denied_at(&r), Some((ACTOR, 0)));
    assert!(r.actor_proofs.is_empty() && r.proof.is_none());
    // An agent nobody delegated to.
    let r = w
        .check(
            w.req("document:plan#view@user:alice", &["agent:stranger"]),
            "k-app",
        )
        .await
        .unwrap();
    assert_eq!(denied_at(&r), Some((ACTOR, 0)));
}

#[tokio::test]
async fn a_folder_limited_delegation_and_the_lookup_an_agent_filters_by() {
    let w = World::new(&[
        "user:alice#delegate@agent:filer",
        "folder:private#viewer@user:alice#delegate",
    ])
    .await;
    let a = ["agent:filer"];
    let tok = jwt("alice", &a);
    let mut allowed = BTreeSet::new();
    for d in DOCS {
        if w.allowed(&format!("document:{d}#view@user:alice"), &a)
            .await
        {
            allowed.insert(d.to_string());
        }
    }
    assert_eq!(allowed, BTreeSet::from(["notes".to_string()]));
    // LookupResources with the chain: explicit, and taken from the agent's token.
    assert_eq!(w.lookup("user:alice", &a, "k-app").await, allowed);
    let mut req = pb::LookupResourcesRequest {
        consistency: fresh(&w.last),
        resource_object_type: "document".into(),
        permission: "view".into(),
        subject: None,
        optional_limit: 0,
        optional_cursor: None,
        context: None,
        actors: vec![],
    };
    let mut stream =
        w.s.perm()
            .lookup_resources(with(req.clone(), &tok))
            .await
            .unwrap()
            .into_inner();
    let mut from_token = BTreeSet::new();
    while let Some(r) = stream.message().await.unwrap() {
        from_token.insert(r.resource_object_id);
    }
    assert_eq!(from_token, allowed);
    // Without the chain alice reaches three documents.
    assert_eq!(w.lookup("user:alice", &[], "k-app").await.len(), 3);
    // CheckBulk with the chain from the token gives the same answers, item by item.
    let items: Vec<pb::CheckBulkRequestItem> = DOCS
        .iter()
        .map(|d| pb::CheckBulkRequestItem {
            resource: dhow_tests::server::obj("document", d),
            permission: "view".into(),
            subject: None,
            explain: false,
            actors: vec![],
            context: None,
        })
        .collect();
    let r =
        w.s.perm()
            .check_bulk(with(
                pb::CheckBulkRequest {
                    consistency: fresh(&w.last),
                    items,
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner();
    let bulk: BTreeSet<String> = r
        .items
        .iter()
        .zip(DOCS)
        .filter(|(i, _)| match &i.response {
            Some(pb::check_bulk_response_item::Response::Result(r)) => {
                r.permissionship == pb::Permissionship::HasPermission as i32
            }
            other => panic!("{other:?}"),
        })
        .map(|(_, d)| d.to_string())
        .collect();
    assert_eq!(bulk, allowed);
    // A lookup for bob with alice's agent token is refused.
    req.subject = subj("user", "bob");
    let e =
        w.s.perm()
            .lookup_resources(with(req, &tok))
            .await
            .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::PermissionDenied, "DELEGATION_CHAIN_MISMATCH")
    );
}

#[tokio::test]
async fn revoking_a_hop_denies_while_the_agents_token_is_unchanged() {
    let mut w = World::new(&[
        "agent:assistant#delegator@user:alice",
        "agent:researcher#reader_for@agent:assistant",
    ])
    .await;
    // The researcher's token: alice, through the assistant, through the researcher.
    let tok = jwt("alice", &["researcher", "assistant"]);
    let req = pb::CheckRequest {
        subject: None,
        actors: vec![],
        ..w.req("document:plan#view@user:alice", &[])
    };
    let r = w.check(req.clone(), &tok).await.unwrap();
    assert_eq!(r.permissionship, pb::Permissionship::HasPermission as i32);
    // Alice revokes the assistant (the middle hop, for the researcher's chain).
    w.write(vec![delete("agent:assistant#delegator@user:alice")])
        .await;
    let req = pb::CheckRequest {
        consistency: fresh(&w.last),
        explain: true,
        ..req
    };
    let r = w.check(req, &tok).await.unwrap();
    assert_eq!(r.permissionship, pb::Permissionship::NoPermission as i32);
    // actors = [researcher, assistant]: the assistant's hop (actors[1]) acts for alice.
    assert_eq!(denied_at(&r), Some((ACTOR, 1)));
    assert!(!r.actor_proofs[1].allowed);
    assert!(
        r.actor_proofs[0].allowed,
        "the researcher still reads for the assistant"
    );
}

#[tokio::test]
async fn a_time_boxed_delegation_ends_at_its_expiration() {
    let soon = dhow_tuples::Timestamp::now().0 / 1_000_000 + 2;
    let soon = dhow_tuples::Timestamp(soon * 1_000_000).to_rfc3339();
    let w = World::new(&[&format!(
        "agent:assistant#delegator@user:alice[expiration:{soon}]"
    )])
    .await;
    let tok = jwt("alice", &["assistant"]);
    let req = pb::CheckRequest {
        subject: None,
        ..w.req("document:plan#view@user:alice", &[])
    };
    let r = w.check(req.clone(), &tok).await.unwrap();
    assert_eq!(r.permissionship, pb::Permissionship::HasPermission as i32);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = w.check(req, &tok).await.unwrap();
    assert_eq!(r.permissionship, pb::Permissionship::NoPermission as i32);
    assert_eq!(denied_at(&r), Some((ACTOR, 0)));
}

#[tokio::test]
async fn chains_that_are_refused() {
    let w = World::new(&["agent:assistant#delegator@user:alice"]).await;
    // Nine actors: more than the default limit of eight.
    let nine: Vec<String> = (0..9).map(|i| format!("agent:a{i}")).collect();
    let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
    let e = w
        .check(w.req("document:plan#view@user:alice", &nine), "k-app")
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::InvalidArgument, "INVALID_DELEGATION_CHAIN")
    );
    // A cycle: an actor twice; and the principal as an actor.
    for (chain, field) in [
        (&["agent:a", "agent:b", "agent:a"][..], "actors[2]"),
        (&["agent:a", "user:alice"][..], "actors[1]"),
    ] {
        let e = w
            .check(w.req("document:plan#view@user:alice", chain), "k-app")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(reason(&e), "INVALID_DELEGATION_CHAIN");
        assert_eq!(dhow_tests::server::field(&e), field);
    }
    // The same cycle in a token.
    let e = w
        .check(
            pb::CheckRequest {
                subject: None,
                ..w.req("document:plan#view@user:alice", &[])
            },
            &jwt("alice", &["a", "b", "a"]),
        )
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "INVALID_DELEGATION_CHAIN");
    // A chain that disagrees with the caller's token: another principal, another chain, a
    // shorter one (dropping the agent to check as alice herself).
    let tok = jwt("alice", &["assistant"]);
    for (check, actors, field) in [
        (
            "document:bobs#view@user:bob",
            &["agent:assistant"][..],
            "subject",
        ),
        (
            "document:plan#view@user:alice",
            &["agent:other"][..],
            "actors",
        ),
        (
            "document:plan#view@user:alice",
            &["agent:x", "agent:assistant"][..],
            "actors",
        ),
    ] {
        let e = w.check(w.req(check, actors), &tok).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (Code::PermissionDenied, "DELEGATION_CHAIN_MISMATCH"),
            "{check} {actors:?}"
        );
        assert_eq!(dhow_tests::server::field(&e), field);
    }
    // Giving the principal alone means the token's chain: still the assistant's answer.
    let r = w
        .check(w.req("document:plan#edit@user:alice", &[]), &tok)
        .await
        .unwrap();
    assert_eq!(r.permissionship, pb::Permissionship::HasPermission as i32);
    let r = w
        .check(
            w.req("document:budget#edit@user:alice", &[]),
            &jwt("alice", &["nobody"]),
        )
        .await
        .unwrap();
    assert_eq!(denied_at(&r), Some((ACTOR, 0)));
    // A token whose claims do not map (a type the issuer may not name).
    let e = w
        .check(
            pb::CheckRequest {
                subject: None,
                ..w.req("document:plan#view@user:alice", &[])
            },
            &jwt("robot:x", &[]),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::PermissionDenied, "DELEGATION_CLAIMS_INVALID")
    );
}

async fn audit_server(dir: &std::path::Path, mode: dhow_audit::Mode, proofs: bool) -> TestServer {
    let mut auth = auth();
    auth.preshared_keys.push(PresharedKeySettings {
        name: "auditor".into(),
        sha256: hex::encode(Sha256::digest(b"k-audit")),
        roles: vec!["audit".into()],
    });
    let mut config = Config {
        auth,
        audit: dhow_audit::AuditSettings {
            mode,
            proofs,
            ..Default::default()
        },
        ..Config::default()
    };
    config.node.node_id = 7;
    config.node.data_dir = dir.to_path_buf();
    TestServer::start_with(config).await
}

async fn decisions(
    s: &TestServer,
    q: pb::QueryDecisionsRequest,
    token: &str,
) -> Result<pb::QueryDecisionsResponse, Status> {
    pb::audit_service_client::AuditServiceClient::new(s.channel.clone())
        .query_decisions(with(q, token))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn decisions_are_audited_with_caller_chain_and_failing_hop() {
    let dir = tempfile::tempdir().unwrap();
    let s = audit_server(dir.path(), dhow_audit::Mode::All, false).await;
    let mut w = World {
        s,
        last: pb::ConsistencyToken::default(),
    };
    w.last =
        w.s.schema()
            .write_schema(with(
                pb::WriteSchemaRequest {
                    schema: SCHEMA.into(),
                },
                "k-app",
            ))
            .await
            .unwrap()
            .into_inner()
            .written_at
            .unwrap();
    let rels: Vec<&str> = BASE
        .iter()
        .copied()
        .chain(["agent:assistant#delegator@user:alice"])
        .collect();
    w.write(rels.iter().map(|r| touch(r)).collect()).await;
    let before = dhow_audit::now_us();
    let tok = jwt("alice", &["assistant"]);
    let req = pb::CheckRequest {
        subject: None,
        ..w.req("document:plan#view@user:alice", &[])
    };
    w.check(req, &tok).await.unwrap();
    // Denied, with a proof asked for: the proof is recorded.
    let mut req = w.req("document:plan#edit@user:alice", &["agent:other"]);
    req.explain = true;
    w.check(req, "k-app").await.unwrap();
    w.check(w.req("document:bobs#view@user:bob", &[]), "k-app")
        .await
        .unwrap();
    let after = dhow_audit::now_us();
    let all = decisions(&w.s, Default::default(), "k-audit")
        .await
        .unwrap();
    assert_eq!(all.node_id, 7);
    assert_eq!(all.records.len(), 3, "{all:?}");
    let r = &all.records[0];
    assert_eq!(r.caller, format!("jwt:{ISSUER}#alice"));
    assert_eq!(
        (r.principal.as_str(), r.actors.clone(), r.resource.as_str()),
        (
            "user:alice",
            vec!["agent:assistant".to_string()],
            "document:plan"
        )
    );
    assert_eq!(r.outcome, pb::DecisionOutcome::Allowed as i32);
    assert_eq!(r.node_id, 7);
    assert!(r.proof.is_empty());
    let d = &all.records[1];
    assert_eq!(d.caller, "psk:app");
    assert_eq!(d.outcome, pb::DecisionOutcome::Denied as i32);
    assert_eq!(d.denied_at, "actors[0]");
    assert!(d.proof.contains("first link that denies"), "{}", d.proof);
    // By principal, actor, outcome and time range.
    let ts = |us: i64| Some(dhow_wire::timestamp_pb(dhow_tuples::Timestamp(us)));
    let q = pb::QueryDecisionsRequest {
        principal: "user:alice".into(),
        since: ts(before),
        until: ts(after + 1),
        ..Default::default()
    };
    assert_eq!(
        decisions(&w.s, q, "k-audit").await.unwrap().records.len(),
        2
    );
    let q = pb::QueryDecisionsRequest {
        actor: "agent:other".into(),
        outcome: pb::DecisionOutcome::Denied as i32,
        ..Default::default()
    };
    assert_eq!(
        decisions(&w.s, q, "k-audit").await.unwrap().records.len(),
        1
    );
    let q = pb::QueryDecisionsRequest {
        until: ts(before),
        ..Default::default()
    };
    assert!(decisions(&w.s, q, "k-audit")
        .await
        .unwrap()
        .records
        .is_empty());
    // The audit role (or admin) only.
    let e = decisions(&w.s, Default::default(), "k-app")
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::PermissionDenied, "ROLE_MISSING")
    );
    // A restart keeps the records.
    w.s.stop().await.unwrap();
    let s = audit_server(dir.path(), dhow_audit::Mode::DeniedOnly, true).await;
    let again = decisions(&s, Default::default(), "k-audit").await.unwrap();
    assert_eq!(again.records, all.records);
    // Denied only, with every proof: an allowed check leaves nothing, a denied one its proof.
    // (A fresh MemNode: the schema and relationships again.)
    let mut w = World {
        s,
        last: pb::ConsistencyToken::default(),
    };
    w.last =
        w.s.schema()
            .write_schema(with(
                pb::WriteSchemaRequest {
                    schema: SCHEMA.into(),
                },
                "k-app",
            ))
            .await
            .unwrap()
            .into_inner()
            .written_at
            .unwrap();
    w.write(rels.iter().map(|r| touch(r)).collect()).await;
    let r = w
        .check(
            w.req("document:plan#view@user:alice", &["agent:assistant"]),
            "k-app",
        )
        .await
        .unwrap();
    assert_eq!(r.permissionship, pb::Permissionship::HasPermission as i32);
    let r = w
        .check(
            w.req("document:plan#edit@user:alice", &["agent:other"]),
            "k-app",
        )
        .await
        .unwrap();
    assert!(r.actor_proofs.is_empty(), "proofs for the log only");
    let now = decisions(&w.s, Default::default(), "k-audit")
        .await
        .unwrap();
    assert_eq!(now.records.len(), 4);
    let last = now.records.last().unwrap();
    assert_eq!(last.outcome, pb::DecisionOutcome::Denied as i32);
    assert!(
        last.proof.contains("hop 1: actors[0] agent:other"),
        "{}",
        last.proof
    );
}
