//! End-to-end tests of the gRPC services: a real server on 127.0.0.1:0 over a `MemNode`,
//! driven through the generated tonic clients.

use std::collections::BTreeSet;
use std::time::Duration;

use dhow_proto::v1 as pb;
use dhow_tests::server::*;
use dhow_tuples::{Revision, TupleStore};
use tonic::Code;

#[tokio::test]
async fn schema_write_read_compile_error_and_orphans() {
    let s = TestServer::start().await;
    let mut sc = s.schema();
    let e = sc
        .read_schema(pb::ReadSchemaRequest { consistency: None })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "NO_SCHEMA")
    );
    // Checks before any schema say so too.
    let e = s
        .perm()
        .check(check_req("document:doc1", "view", "user:alice", None))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "NO_SCHEMA");

    let written = s.with_schema().await;
    let r = sc
        .read_schema(pb::ReadSchemaRequest {
            consistency: fresh(&written),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.schema_text, SCHEMA);
    assert!(revision(r.read_at.as_ref().unwrap()) >= revision(&written));

    // A compile error: INVALID_ARGUMENT with line and column.
    let e = sc
        .write_schema(pb::WriteSchemaRequest {
            schema: "definition user {}\ndefinition document {\n  relation viewer user\n}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "SCHEMA_PARSE_ERROR");
    let info = tonic_types::StatusExt::get_details_error_info(&e).unwrap();
    assert_eq!(info.metadata["line"], "3");
    assert!(e.message().contains("line 3, column"), "{}", e.message());

    // Orphaning: relationships use document#viewer with group#member and document#banned.
    write(
        &s,
        vec![
            touch("document:doc1#viewer@group:eng#member"),
            touch("document:doc1#banned@user:mallory"),
            touch("document:doc1#owner@user:alice"),
        ],
    )
    .await;
    let narrowed = SCHEMA
        .replace(
            "relation viewer: user | group#member | user:*",
            "relation viewer: user",
        )
        .replace("    relation banned: user\n", "")
        .replace(" - banned", "");
    let e = sc
        .write_schema(pb::WriteSchemaRequest { schema: narrowed })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(reason(&e), "SCHEMA_ORPHANS_RELATIONSHIPS");
    assert!(e.message().contains("document#viewer"), "{}", e.message());
    assert!(e.message().contains("document#banned"), "{}", e.message());
    assert!(!e.message().contains("document#owner"), "{}", e.message());
    // The schema did not change.
    let r = sc
        .read_schema(pb::ReadSchemaRequest { consistency: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.schema_text, SCHEMA);

    // A compatible change is accepted.
    let wider = SCHEMA.replace(
        "relation owner: user",
        "relation owner: user | group#member",
    );
    sc.write_schema(pb::WriteSchemaRequest {
        schema: wider.clone(),
    })
    .await
    .unwrap();
    let r = sc
        .read_schema(pb::ReadSchemaRequest { consistency: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.schema_text, wider);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn write_then_check_with_explain_and_the_other_permission_calls() {
    let s = TestServer::start().await;
    s.with_schema().await;
    let t = write(
        &s,
        vec![
            create("document:doc1#owner@user:alice"),
            create("document:doc1#viewer@group:eng#member"),
            create("group:eng#member@user:bob"),
            create("document:doc2#viewer@user:*"),
            create("document:doc2#banned@user:mallory"),
        ],
    )
    .await;
    let mut req = check_req("document:doc1", "view", "user:alice", fresh(&t));
    req.explain = true;
    let r = s.perm().check(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.permissionship, pb::Permissionship::HasPermission as i32);
    assert!(revision(r.checked_at.as_ref().unwrap()) >= revision(&t));
    let proof = r.proof.expect("explain returns a proof");
    assert!(proof.allowed);
    match &proof.step {
        Some(pb::proof::Step::Member(m)) => assert_eq!(m.relation, "view"),
        other => panic!("unexpected root step {other:?}"),
    }
    fn has_direct(p: &pb::Proof) -> bool {
        matches!(p.step, Some(pb::proof::Step::Direct(_))) || p.children.iter().any(has_direct)
    }
    assert!(has_direct(&proof));

    // Denied, with a proof of what was missing.
    let mut denied = check_req("document:doc1", "view", "user:carol", fresh(&t));
    denied.explain = true;
    let r = s.perm().check(denied).await.unwrap().into_inner();
    assert_eq!(r.permissionship, pb::Permissionship::NoPermission as i32);
    assert!(!r.proof.unwrap().allowed);
    // Without explain, no proof.
    let r = s
        .perm()
        .check(check_req("document:doc1", "view", "user:bob", fresh(&t)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.permissionship, pb::Permissionship::HasPermission as i32);
    assert!(r.proof.is_none());

    // A delegated check: `user` declares no `view` and no delegate set, so no user may act
    // for alice; the hop of actors[0] is the first link that denies.
    let mut delegated = check_req("document:doc1", "view", "user:alice", fresh(&t));
    delegated.actors = vec![subj("user", "agent1").unwrap()];
    let r = s.perm().check(delegated).await.unwrap().into_inner();
    assert_eq!(r.permissionship, pb::Permissionship::NoPermission as i32);
    let link = r.denied_at.unwrap();
    assert_eq!(link.kind, pb::chain_link::Kind::Actor as i32);
    assert_eq!(link.actor_index, 0);

    // Unknown relation: FAILED_PRECONDITION naming the field.
    let e = s
        .perm()
        .check(check_req("document:doc1", "nothing", "user:alice", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "UNKNOWN_RELATION");
    assert_eq!(field(&e), "permission");

    // CheckBulk: items fail on their own.
    let item = |res: &str, perm: &str, sub: &str| {
        let c = check_req(res, perm, sub, None);
        pb::CheckBulkRequestItem {
            resource: c.resource,
            permission: c.permission,
            subject: c.subject,
            explain: false,
            actors: vec![],
            context: None,
        }
    };
    let mut explained = item("document:doc2", "view", "user:zed");
    explained.explain = true;
    let r = s
        .perm()
        .check_bulk(pb::CheckBulkRequest {
            consistency: fresh(&t),
            items: vec![
                item("document:doc2", "view", "user:zed"),
                item("document:doc2", "view", "user:mallory"),
                item("document:doc2", "nope", "user:zed"),
                item("document:doc2", "view", "user:a:b"),
                explained,
            ],
        })
        .await
        .unwrap()
        .into_inner();
    use pb::check_bulk_response_item::Response as R;
    let got: Vec<String> = r
        .items
        .iter()
        .map(|i| match i.response.as_ref().unwrap() {
            R::Result(x) => format!("{}:{}", x.permissionship, x.proof.is_some()),
            R::Error(e) => format!("{}:{}", e.code, e.reason),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            "2:false",
            "1:false",
            "9:UNKNOWN_RELATION",
            "3:INVALID_FIELD",
            "2:true"
        ]
    );

    // Expand.
    let r = s
        .perm()
        .expand(pb::ExpandRequest {
            consistency: fresh(&t),
            resource: obj("document", "doc1"),
            permission: "viewer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    match r.tree.unwrap().tree.unwrap() {
        pb::expand_node::Tree::Leaf(l) => {
            assert_eq!(l.subjects.len(), 1);
            assert_eq!(l.subjects[0].optional_relation, "member");
        }
        other => panic!("unexpected tree {other:?}"),
    }

    // LookupResources with limit and cursor.
    write(
        &s,
        (3..8)
            .map(|i| touch(&format!("document:doc{i}#owner@user:alice")))
            .collect(),
    )
    .await;
    let lookup = |cursor: Option<pb::Cursor>, consistency| pb::LookupResourcesRequest {
        consistency,
        resource_object_type: "document".into(),
        permission: "view".into(),
        subject: subj("user", "alice"),
        optional_limit: 3,
        optional_cursor: cursor,
        context: None,
        actors: Vec::new(),
    };
    let mut ids = Vec::new();
    let mut cursor = None;
    let mut at = None;
    loop {
        let mut st = s
            .perm()
            .lookup_resources(lookup(cursor.clone(), at.clone()))
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(m) = st.message().await.unwrap() {
            ids.push(m.resource_object_id.clone());
            cursor = m.after_result_cursor.clone();
            at = exact(m.looked_up_at.as_ref().unwrap());
            n += 1;
        }
        if n < 3 {
            break;
        }
    }
    // doc2 is viewable by every user through the wildcard.
    assert_eq!(
        ids,
        vec!["doc1", "doc2", "doc3", "doc4", "doc5", "doc6", "doc7"]
    );

    // LookupSubjects: the wildcard, with its exclusion.
    let mut st = s
        .perm()
        .lookup_subjects(pb::LookupSubjectsRequest {
            consistency: fresh(&t),
            resource: obj("document", "doc2"),
            permission: "view".into(),
            subject_object_type: "user".into(),
            optional_subject_relation: String::new(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    let m = st.message().await.unwrap().unwrap();
    assert_eq!(m.subject.unwrap().object.unwrap().object_id, "*");
    assert_eq!(m.excluded_subjects.len(), 1);
    assert_eq!(
        m.excluded_subjects[0].object.as_ref().unwrap().object_id,
        "mallory"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn at_least_as_fresh_sees_its_write_and_bad_tokens_are_refused() {
    let config = dhow_server::Config {
        consistency_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let s = TestServer::start_with(config).await;
    s.with_schema().await;
    let t = write(&s, vec![touch("document:doc1#viewer@user:alice")]).await;
    assert!(
        allowed(
            &s,
            check_req("document:doc1", "view", "user:alice", fresh(&t))
        )
        .await
    );
    let t2 = write(&s, vec![delete("document:doc1#viewer@user:alice")]).await;
    assert!(
        !allowed(
            &s,
            check_req("document:doc1", "view", "user:alice", fresh(&t2))
        )
        .await
    );

    // A token this node has not reached: bounded wait, then UNAVAILABLE.
    let future = dhow_server::token::to_proto(CLUSTER, Revision(revision(&t2) + 100));
    let started = std::time::Instant::now();
    let e = s
        .perm()
        .check(check_req(
            "document:doc1",
            "view",
            "user:alice",
            fresh(&future),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(reason(&e), "REVISION_NOT_APPLIED");
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A token from another cluster.
    let other = dhow_server::token::to_proto(CLUSTER + 1, Revision(1));
    let e = s
        .perm()
        .check(check_req(
            "document:doc1",
            "view",
            "user:alice",
            fresh(&other),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "TOKEN_WRONG_CLUSTER");
    assert_eq!(field(&e), "consistency.at_least_as_fresh.token");
    let garbage = pb::ConsistencyToken {
        token: "not a token!".into(),
    };
    let e = s
        .perm()
        .check(check_req(
            "document:doc1",
            "view",
            "user:alice",
            exact(&garbage),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "TOKEN_MALFORMED");
    assert_eq!(field(&e), "consistency.at_exact_snapshot.token");

    // fully_consistent.
    let full = Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
    });
    let r = s
        .perm()
        .check(check_req("document:doc1", "view", "user:alice", full))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revision(r.checked_at.as_ref().unwrap()), revision(&t2));
    s.stop().await.unwrap();
}

/// A check the check cache answers (the server's fast path, without the engine) gives what
/// the engine gives: the same answer and token, a revocation seen at once by the next check
/// at the newest revision, a proof when one is asked for, and its errors for bad names.
#[tokio::test]
async fn checks_answered_from_the_cache_match_the_engine() {
    let s = TestServer::start().await;
    s.with_schema().await;
    let t = write(&s, vec![touch("document:doc1#viewer@user:alice")]).await;
    let check = |explain: bool| {
        let mut r = check_req("document:doc1", "view", "user:alice", None);
        r.explain = explain;
        r
    };
    let first = s.perm().check(check(false)).await.unwrap().into_inner();
    for _ in 0..3 {
        let again = s.perm().check(check(false)).await.unwrap().into_inner();
        assert_eq!(
            again, first,
            "a held answer is the evaluated one, with its token"
        );
    }
    assert_eq!(
        first.permissionship,
        pb::Permissionship::HasPermission as i32
    );
    assert_eq!(revision(first.checked_at.as_ref().unwrap()), revision(&t));
    // An explained check evaluates: its proof is there.
    let explained = s.perm().check(check(true)).await.unwrap().into_inner();
    assert!(explained.proof.is_some(), "{explained:?}");
    // A name the schema lacks is still refused after hits for other keys.
    let e = s
        .perm()
        .check(check_req("document:doc1", "nope", "user:alice", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // The revocation is a new revision: the next check at the newest one is denied.
    let t2 = write(&s, vec![delete("document:doc1#viewer@user:alice")]).await;
    for _ in 0..2 {
        let after = s.perm().check(check(false)).await.unwrap().into_inner();
        assert_eq!(
            after.permissionship,
            pb::Permissionship::NoPermission as i32
        );
        assert_eq!(revision(after.checked_at.as_ref().unwrap()), revision(&t2));
    }
}

#[tokio::test]
async fn at_exact_snapshot_reads_the_old_state_until_gc() {
    let s = TestServer::start().await;
    s.with_schema().await;
    let t1 = write(&s, vec![touch("document:doc1#viewer@user:alice")]).await;
    let t2 = write(&s, vec![delete("document:doc1#viewer@user:alice")]).await;
    assert!(
        allowed(
            &s,
            check_req("document:doc1", "view", "user:alice", exact(&t1))
        )
        .await
    );
    assert!(!allowed(&s, check_req("document:doc1", "view", "user:alice", None)).await);
    assert_eq!(
        read_all(&s, "document", exact(&t1)).await,
        vec!["document:doc1#viewer@user:alice"]
    );
    assert!(read_all(&s, "document", exact(&t2)).await.is_empty());

    // Once the GC passes t1, the token is refused with TOKEN_EXPIRED.
    s.node.mem_store().gc(Revision(revision(&t2))).unwrap();
    let e = s
        .perm()
        .check(check_req("document:doc1", "view", "user:alice", exact(&t1)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "TOKEN_EXPIRED");
    assert!(e.message().contains("GC window"), "{}", e.message());
    assert!(
        !allowed(
            &s,
            check_req("document:doc1", "view", "user:alice", exact(&t2))
        )
        .await
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn read_pages_stay_at_one_snapshot_while_writes_happen() {
    let s = TestServer::start().await;
    s.with_schema().await;
    let first: Vec<String> = (0..25)
        .map(|i| format!("document:doc{i:02}#viewer@user:u{i:02}"))
        .collect();
    write(&s, first.iter().map(|t| touch(t)).collect()).await;
    let filter = Some(pb::RelationshipFilter {
        resource_type: "document".into(),
        optional_relation: "viewer".into(),
        ..Default::default()
    });
    let page = |cursor: Option<pb::Cursor>, consistency: Option<pb::Consistency>| pb::ReadRequest {
        consistency,
        filter: filter.clone(),
        optional_limit: 10,
        optional_cursor: cursor,
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut read_at: Option<pb::ConsistencyToken> = None;
    for round in 0.. {
        let mut st = s
            .rel()
            .read(page(cursor.clone(), None))
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(m) = st.message().await.unwrap() {
            let at = m.read_at.clone().unwrap();
            if let Some(prev) = &read_at {
                assert_eq!(prev, &at, "every page is read at the first page's revision");
            }
            read_at = Some(at);
            seen.push(text(m.relationship.as_ref().unwrap()));
            cursor = m.after_result_cursor.clone();
            n += 1;
        }
        // Meanwhile, the data changes.
        write(
            &s,
            vec![
                touch(&format!("document:doc{round:02}x#viewer@user:new")),
                delete(&first[24 - round]),
            ],
        )
        .await;
        if n < 10 {
            break;
        }
    }
    assert_eq!(seen, first);

    // A cursor with a contradicting snapshot, or another filter, is refused.
    let now = write(&s, vec![touch("document:zz#viewer@user:zz")]).await;
    let e = s
        .rel()
        .read(page(cursor.clone(), exact(&now)))
        .await
        .unwrap_err();
    assert_invalid(&e, "optional_cursor");
    let mut other = page(cursor.clone(), None);
    other.filter.as_mut().unwrap().optional_relation = "owner".into();
    let e = s.rel().read(other).await.unwrap_err();
    assert_invalid(&e, "optional_cursor.token");
    assert_eq!(reason(&e), "CURSOR_INVALID");
    s.stop().await.unwrap();
}

/// Collects Watch responses until `changes_through` reaches `until`; returns the changes
/// (as `+text` / `-text`) and the last `changes_through`.
async fn watch_until(
    s: &TestServer,
    from: Option<pb::ConsistencyToken>,
    types: Vec<String>,
    until: u64,
) -> (Vec<String>, pb::ConsistencyToken) {
    let mut st = s
        .rel()
        .watch(pb::WatchRequest {
            optional_object_types: types,
            optional_start_cursor: from,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    let mut last = None;
    while last.as_ref().is_none_or(|t| revision(t) < until) {
        let m = tokio::time::timeout(Duration::from_secs(10), st.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        for c in &m.changes {
            let sign = if c.operation == pb::relationship_change::Operation::Delete as i32 {
                "-"
            } else {
                "+"
            };
            out.push(format!("{sign}{}", text(c.relationship.as_ref().unwrap())));
        }
        last = m.changes_through;
    }
    (out, last.unwrap())
}

#[tokio::test]
async fn watch_resumes_from_a_token_without_gaps_or_duplicates() {
    let s = TestServer::start().await;
    let t0 = s.with_schema().await;
    let mut expected = Vec::new();
    let mut tokens = Vec::new();
    let mut step = |i: usize| {
        let a = format!("document:doc{i}#viewer@user:u{i}");
        let b = format!("group:g{i}#member@user:u{i}");
        expected.push(format!("+{a}"));
        expected.push(format!("+{b}"));
        let mut ups = vec![touch(&a), touch(&b)];
        if i > 0 {
            let old = format!("document:doc{}#viewer@user:u{}", i - 1, i - 1);
            expected.push(format!("-{old}"));
            ups.push(delete(&old));
        }
        ups
    };
    let batches: Vec<_> = (0..8).map(&mut step).collect();
    let mut batches = batches.into_iter();
    for ups in batches.by_ref().take(4) {
        tokens.push(write(&s, ups).await);
    }
    // The first watcher stops after the third write.
    let (got1, through) = watch_until(&s, Some(t0.clone()), vec![], revision(&tokens[2])).await;
    // More writes while nobody watches, and one while the second watcher runs.
    for ups in batches.by_ref().take(3) {
        tokens.push(write(&s, ups).await);
    }
    let s2 = &s;
    let last_batch = batches.next().unwrap();
    let writer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        write(s2, last_batch).await
    };
    let until = revision(tokens.last().unwrap()) + 1;
    let ((got2, _), _) = tokio::join!(watch_until(&s, Some(through), vec![], until), writer);
    let mut all = got1;
    all.extend(got2);
    // Within one revision, changes come in key order, not write order.
    let norm = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(norm(&all), norm(&expected));
    assert_eq!(all.len(), expected.len(), "no duplicates");

    // Filtered by object type, from the start.
    let last = revision(&write(&s, vec![touch("group:late#member@user:x")]).await);
    let (groups, _) = watch_until(&s, Some(t0.clone()), vec!["group".into()], last).await;
    assert!(
        groups.iter().all(|c| c[1..].starts_with("group:")),
        "{groups:?}"
    );
    assert_eq!(groups.len(), 9);

    // An expired start token.
    s.node.mem_store().gc(Revision(last)).unwrap();
    let e = s
        .rel()
        .watch(pb::WatchRequest {
            optional_object_types: vec![],
            optional_start_cursor: Some(t0),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "TOKEN_EXPIRED");
    s.stop().await.unwrap();
}

/// An Import stream has no deadline as a whole: one that keeps sending for longer than
/// `request_timeout` loads everything (before, the server's deadline cut it with CANCELLED and
/// no count of what was loaded). A stream whose client stops sending ends after
/// `request_timeout` with DEADLINE_EXCEEDED `TIMEOUT` and what was loaded; a unary call still
/// has the deadline.
#[tokio::test]
async fn an_import_longer_than_the_request_timeout_loads_everything() {
    let config = dhow_server::Config {
        request_timeout: Duration::from_millis(600),
        ..Default::default()
    };
    let s = TestServer::start_with(config).await;
    s.with_schema().await;
    let batch = |b: usize| pb::ImportRequest {
        relationships: (0..100)
            .map(|i| rel(&format!("document:b{b}d{i}#viewer@user:u{i}")))
            .collect(),
    };
    // Five batches 250 ms apart: 1.25 s in all, twice the timeout.
    let (paced, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for b in 0..5 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            paced.send(batch(b)).await.unwrap();
        }
    });
    let r = s
        .rel()
        .import(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.loaded_count, 500);

    // Two batches, then nothing: the stream is ended after the idle bound.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(batch(10)).await.unwrap();
    tx.send(batch(11)).await.unwrap();
    let started = std::time::Instant::now();
    let e = s
        .rel()
        .import(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert_eq!(reason(&e), "TIMEOUT");
    let info = tonic_types::StatusExt::get_details_error_info(&e).unwrap();
    assert_eq!(info.metadata["loaded"], "200");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(tx);
}

#[tokio::test]
async fn import_export_round_trip() {
    let config = dhow_server::Config {
        max_updates_per_write: 400,
        ..Default::default()
    };
    let s = TestServer::start_with(config).await;
    s.with_schema().await;
    let all: Vec<String> = (0..2500)
        .map(|i| format!("document:d{:04}#viewer@user:u{}", i, i % 37))
        .collect();
    let mut batches: Vec<pb::ImportRequest> = all
        .chunks(1000)
        .map(|c| pb::ImportRequest {
            relationships: c.iter().map(|t| rel(t)).collect(),
        })
        .collect();
    // A duplicate inside a batch is a touch of the same relationship.
    batches[0].relationships.push(rel(&all[5]));
    // An expired relationship is loaded but never exported.
    let mut expired = rel("document:old#viewer@user:gone");
    expired.optional_expires_at = Some(prost_types::Timestamp {
        seconds: 1_000,
        nanos: 0,
    });
    batches[2].relationships.push(expired);
    let schema_expiring = SCHEMA
        .replace("definition user {}", "use expiration\ndefinition user {}")
        .replace(
            "relation viewer: user | group#member | user:*",
            "relation viewer: user with expiration | group#member | user:*",
        );
    s.schema()
        .write_schema(pb::WriteSchemaRequest {
            schema: schema_expiring,
        })
        .await
        .unwrap();
    let r = s
        .rel()
        .import(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    // Every relationship sent counts, the duplicate too (it was touched twice).
    assert_eq!(r.loaded_count, 2502);
    let written = r.written_at.unwrap();

    let export = |consistency, cursor| pb::ExportRequest {
        consistency,
        optional_cursor: cursor,
    };
    let mut st = s
        .rel()
        .export(export(fresh(&written), None))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut first_cursor = None;
    let mut at = None;
    while let Some(m) = st.message().await.unwrap() {
        if first_cursor.is_none() {
            first_cursor = m.after_result_cursor.clone();
            at = m.exported_at.clone();
        }
        got.extend(m.relationships.iter().map(text));
    }
    let want: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), want);

    // Resume after the first batch, at the same revision, while the data changes.
    write(
        &s,
        vec![delete(&all[2499]), touch("document:new#viewer@user:x")],
    )
    .await;
    let mut st = s
        .rel()
        .export(export(exact(at.as_ref().unwrap()), first_cursor))
        .await
        .unwrap()
        .into_inner();
    let mut rest = Vec::new();
    while let Some(m) = st.message().await.unwrap() {
        assert_eq!(m.exported_at, at);
        rest.extend(m.relationships.iter().map(text));
    }
    assert_eq!(rest, got[1000..].to_vec());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_write_changes_nothing() {
    let s = TestServer::start().await;
    s.with_schema().await;
    let base = write(&s, vec![touch("document:doc1#owner@user:alice")]).await;

    // One update the schema refuses (a group without #member is not allowed on viewer).
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![
                touch("document:doc2#owner@user:bob"),
                delete("document:doc1#owner@user:alice"),
                touch("document:doc3#viewer@group:eng"),
            ],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "updates[2].relationship");
    assert_eq!(reason(&e), "INVALID_RELATIONSHIP");
    assert_eq!(
        read_all(&s, "document", None).await,
        vec!["document:doc1#owner@user:alice"]
    );

    // A CREATE of an existing relationship: ALREADY_EXISTS, naming the update.
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![
                create("document:doc2#owner@user:bob"),
                create("document:doc1#owner@user:alice"),
            ],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(field(&e), "updates[1].relationship");
    assert_eq!(
        read_all(&s, "document", None).await,
        vec!["document:doc1#owner@user:alice"]
    );

    // A precondition that fails.
    let must_not = pb::Precondition {
        operation: pb::precondition::Operation::MustNotMatch as i32,
        filter: Some(pb::RelationshipFilter {
            resource_type: "document".into(),
            optional_resource_id: "doc1".into(),
            ..Default::default()
        }),
    };
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![touch("document:doc2#owner@user:bob")],
            optional_preconditions: vec![must_not],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "PRECONDITION_FAILED")
    );

    // Unknown type: FAILED_PRECONDITION naming the field.
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![touch("folder:f1#viewer@user:bob")],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "UNKNOWN_TYPE")
    );
    assert_eq!(field(&e), "updates[0].relationship.resource.object_type");

    // Duplicates in one write.
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![
                touch("document:doc2#owner@user:bob"),
                delete("document:doc2#owner@user:bob"),
            ],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "updates[1].relationship");
    assert_eq!(reason(&e), "DUPLICATE_RELATIONSHIP");

    // A caveat the relation does not allow is refused by the schema.
    let mut caveated = touch("document:doc2#owner@user:bob");
    caveated.relationship.as_mut().unwrap().optional_caveat = Some(pb::ContextualizedCaveat {
        caveat_name: "ip_allowed".into(),
        context: None,
    });
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![caveated],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "updates[0].relationship");
    assert_eq!(reason(&e), "INVALID_RELATIONSHIP");
    assert!(e.message().contains("caveat `ip_allowed`"), "{e:?}");

    // A node without quorum.
    s.node.set_available(false);
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![touch("document:doc2#owner@user:bob")],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    s.node.set_available(true);

    assert_eq!(
        read_all(&s, "document", fresh(&base)).await,
        vec!["document:doc1#owner@user:alice"]
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn delete_by_filter_honours_the_limit() {
    let s = TestServer::start().await;
    s.with_schema().await;
    write(
        &s,
        (0..5)
            .map(|i| touch(&format!("document:doc{i}#viewer@user:bob")))
            .collect(),
    )
    .await;
    let req = |limit, partial| pb::DeleteRequest {
        filter: Some(pb::RelationshipFilter {
            resource_type: "document".into(),
            optional_subject_filter: Some(pb::SubjectFilter {
                subject_type: "user".into(),
                optional_subject_id: "bob".into(),
                optional_relation: None,
            }),
            ..Default::default()
        }),
        optional_preconditions: vec![],
        optional_limit: limit,
        optional_allow_partial_deletions: partial,
    };
    let e = s.rel().delete(req(3, false)).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "DELETE_LIMIT_EXCEEDED")
    );
    assert_eq!(read_all(&s, "document", None).await.len(), 5);
    let r = s.rel().delete(req(3, true)).await.unwrap().into_inner();
    assert_eq!((r.deleted_count, r.partial), (3, true));
    let r = s.rel().delete(req(2, false)).await.unwrap().into_inner();
    assert_eq!((r.deleted_count, r.partial), (2, false));
    assert!(
        read_all(&s, "document", fresh(r.deleted_at.as_ref().unwrap()))
            .await
            .is_empty()
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_on_every_rpc_names_the_field() {
    let config = dhow_server::Config {
        max_updates_per_write: 3,
        ..Default::default()
    };
    let s = TestServer::start_with(config).await;
    s.with_schema().await;

    // PermissionService.
    let mut c = check_req("document:doc1", "view", "user:alice", None);
    c.resource = None;
    assert_invalid(&s.perm().check(c).await.unwrap_err(), "resource");
    let c = check_req("document:doc1", "view", "user:a b", None);
    assert_invalid(
        &s.perm().check(c).await.unwrap_err(),
        "subject.object.object_id",
    );
    let c = check_req("document:doc1", "view", "user:*", None);
    assert_invalid(
        &s.perm().check(c).await.unwrap_err(),
        "subject.object.object_id",
    );
    let c = check_req("Document:doc1", "view", "user:alice", None);
    assert_invalid(
        &s.perm().check(c).await.unwrap_err(),
        "resource.object_type",
    );
    let bulk = pb::CheckBulkRequest {
        consistency: Some(pb::Consistency {
            requirement: Some(pb::consistency::Requirement::MinimizeLatency(false)),
        }),
        items: vec![],
    };
    assert_invalid(
        &s.perm().check_bulk(bulk).await.unwrap_err(),
        "consistency.minimize_latency",
    );
    let e = s
        .perm()
        .expand(pb::ExpandRequest {
            consistency: None,
            resource: obj("document", "doc1"),
            permission: "x".into(),
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "permission");
    let e = s
        .perm()
        .lookup_resources(pb::LookupResourcesRequest {
            consistency: None,
            resource_object_type: String::new(),
            permission: "view".into(),
            subject: subj("user", "alice"),
            optional_limit: 0,
            optional_cursor: None,
            context: None,
            actors: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "resource_object_type");
    let e = s
        .perm()
        .lookup_resources(pb::LookupResourcesRequest {
            consistency: None,
            resource_object_type: "document".into(),
            permission: "view".into(),
            subject: subj("user", "alice"),
            optional_limit: 0,
            optional_cursor: Some(pb::Cursor {
                token: "%%%".into(),
            }),
            context: None,
            actors: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "optional_cursor.token");
    let e = s
        .perm()
        .lookup_subjects(pb::LookupSubjectsRequest {
            consistency: None,
            resource: obj("document", "doc1"),
            permission: "view".into(),
            subject_object_type: "u".into(),
            optional_subject_relation: String::new(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "subject_object_type");

    // RelationshipService.
    let mut bad = touch("document:doc1#viewer@user:alice");
    bad.relationship
        .as_mut()
        .unwrap()
        .subject
        .as_mut()
        .unwrap()
        .object
        .as_mut()
        .unwrap()
        .object_id = "al:ice".into();
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![touch("document:doc1#viewer@user:bob"), bad],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "updates[1].relationship.subject.object.object_id");
    let mut unspecified = touch("document:doc1#viewer@user:bob");
    unspecified.operation = 0;
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![unspecified],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "updates[0].operation");
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: (0..4)
                .map(|i| touch(&format!("document:d{i}#viewer@user:bob")))
                .collect(),
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "updates");
    assert_eq!(reason(&e), "TOO_MANY_UPDATES");
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![],
            optional_preconditions: vec![pb::Precondition {
                operation: 1,
                filter: Some(pb::RelationshipFilter::default()),
            }],
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "optional_preconditions[0].filter.resource_type");
    let e = s
        .rel()
        .delete(pb::DeleteRequest {
            filter: None,
            optional_preconditions: vec![],
            optional_limit: 0,
            optional_allow_partial_deletions: false,
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "filter");
    let e = s
        .rel()
        .read(pb::ReadRequest {
            consistency: None,
            filter: Some(pb::RelationshipFilter {
                resource_type: "document".into(),
                optional_subject_filter: Some(pb::SubjectFilter {
                    subject_type: "user".into(),
                    optional_subject_id: String::new(),
                    optional_relation: Some(pb::subject_filter::RelationFilter {
                        relation: "X".into(),
                    }),
                }),
                ..Default::default()
            }),
            optional_limit: 0,
            optional_cursor: None,
        })
        .await
        .unwrap_err();
    assert_invalid(
        &e,
        "filter.optional_subject_filter.optional_relation.relation",
    );
    let e = s
        .rel()
        .watch(pb::WatchRequest {
            optional_object_types: vec!["document".into(), "Bad!".into()],
            optional_start_cursor: None,
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "optional_object_types[1]");
    let e = s
        .rel()
        .import(tokio_stream::iter(vec![pb::ImportRequest {
            relationships: vec![
                rel("document:doc1#viewer@user:bob"),
                pb::Relationship::default(),
            ],
        }]))
        .await
        .unwrap_err();
    assert_invalid(&e, "relationships[1].resource");
    // Refused by the schema (checked after decoding): the path names the relationship's
    // index in the message and the field within it.
    let e = s
        .rel()
        .import(tokio_stream::iter(vec![pb::ImportRequest {
            relationships: vec![
                rel("document:doc1#viewer@user:bob"),
                rel("document:doc1#viewer@user:ann"),
                rel("document:doc1#no_such_relation@user:bob"),
            ],
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(field(&e), "relationships[2].relation", "{e:?}");
    assert!(
        e.message().starts_with("relationships[2].relation: "),
        "{e:?}"
    );
    let e = s
        .rel()
        .export(pb::ExportRequest {
            consistency: None,
            optional_cursor: Some(pb::Cursor {
                token: "AAAA".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "optional_cursor.token");

    // SchemaService.
    let e = s
        .schema()
        .write_schema(pb::WriteSchemaRequest {
            schema: "definition {".into(),
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "schema");
    let e = s
        .schema()
        .read_schema(pb::ReadSchemaRequest {
            consistency: exact(&pb::ConsistencyToken {
                token: String::new(),
            }),
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "consistency.at_exact_snapshot.token");

    // Nothing was written by any of them.
    assert!(read_all(&s, "document", None).await.is_empty());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let config = dhow_server::Config {
        max_message_bytes: 64 * 1024,
        ..Default::default()
    };
    let s = TestServer::start_with(config).await;
    let huge = format!("definition user {{}}\n// {}\n", "x".repeat(100 * 1024));
    let e = s
        .schema()
        .write_schema(pb::WriteSchemaRequest { schema: huge })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    // The server still answers.
    s.with_schema().await;
    s.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let s = TestServer::start().await;
    let mut h = HealthClient::new(s.channel.clone());
    for svc in [
        "",
        "dhow.v1.PermissionService",
        "dhow.v1.RelationshipService",
        "dhow.v1.SchemaService",
    ] {
        let r = h
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{svc}");
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut r = ServerReflectionClient::new(s.channel.clone());
    let reqs = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "dhow.v1.CheckRequest".into(),
            )),
        },
    ];
    let mut st = r
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    match st
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        MessageResponse::ListServicesResponse(l) => {
            let names: BTreeSet<String> = l.service.into_iter().map(|s| s.name).collect();
            for want in [
                "dhow.v1.PermissionService",
                "dhow.v1.RelationshipService",
                "dhow.v1.SchemaService",
                "grpc.health.v1.Health",
            ] {
                assert!(names.contains(want), "{want} missing from {names:?}");
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    match st
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        MessageResponse::FileDescriptorResponse(f) => assert!(!f.file_descriptor_proto.is_empty()),
        other => panic!("unexpected {other:?}"),
    }

    // v1alpha too (older grpcurl).
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaReq;
    let mut a = AlphaClient::new(s.channel.clone());
    let mut st = a
        .server_reflection_info(tokio_stream::iter(vec![AlphaReq {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    assert!(st.message().await.unwrap().is_some());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_watch_streams_and_returns() {
    let s = TestServer::start().await;
    s.with_schema().await;
    let mut st = s
        .rel()
        .watch(pb::WatchRequest {
            optional_object_types: vec![],
            optional_start_cursor: None,
        })
        .await
        .unwrap()
        .into_inner();
    let watcher = tokio::spawn(async move {
        loop {
            match st.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(e) => return Some(e.code()),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.stop().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watch did not end")
        .unwrap();
    assert!(matches!(ended, None | Some(Code::Unavailable)), "{ended:?}");
}

#[tokio::test]
async fn gc_task_expires_old_tokens() {
    let s = TestServer::start().await;
    let t0 = s.with_schema().await;
    write(&s, vec![touch("document:doc1#viewer@user:alice")]).await;
    let store: std::sync::Arc<dyn TupleStore> = s.node.mem_store().clone();
    let gc =
        dhow_node::gc::spawn_gc_every(store, Duration::from_millis(30), Duration::from_millis(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let e = s
            .perm()
            .check(check_req("document:doc1", "view", "user:alice", exact(&t0)))
            .await;
        if let Err(e) = e {
            assert_eq!(reason(&e), "TOKEN_EXPIRED");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "gc never collected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gc.stop();
    s.stop().await.unwrap();
}

/// A schema with caveats: conditions on the network, on a level, on a delegated task, and
/// one whose work grows with the square of a list in the request's context.
const CAVEATS_SCHEMA: &str = r#"
caveat on_network(user_ip ipaddress, cidr string) {
    user_ip.in_cidr(cidr)
}
caveat min_level(level int, required int) {
    level >= required
}
caveat for_task(task string, allowed_task string) {
    task == allowed_task
}
caveat ratio(a int, b int) {
    a / b > 1
}
caveat heavy(items list<int>) {
    items.all(x, items.all(y, x != y + 1000000))
}
definition user {}
definition folder {
    relation viewer: user
}
definition document {
    relation folder: folder | folder with on_network
    relation viewer: user | user with on_network | user with min_level
    relation ratio_viewer: user with ratio
    relation heavy: user with heavy
    permission view = viewer + folder->viewer
}
definition agent {
    relation delegate: user with for_task
    permission act = delegate
}
"#;

async fn with_caveats_schema(s: &TestServer) -> pb::ConsistencyToken {
    s.schema()
        .write_schema(pb::WriteSchemaRequest {
            schema: CAVEATS_SCHEMA.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .written_at
        .unwrap()
}

fn check_ctx(
    resource: &str,
    permission: &str,
    subject: &str,
    t: &pb::ConsistencyToken,
    ctx: Option<&str>,
) -> pb::CheckRequest {
    pb::CheckRequest {
        context: ctx.and_then(context),
        ..check_req(resource, permission, subject, fresh(t))
    }
}

/// The answer of a check: `has`, `no`, or `conditional [missing...]`.
async fn answer(s: &TestServer, req: pb::CheckRequest) -> String {
    let r = s.perm().check(req).await.unwrap().into_inner();
    describe(r.permissionship, r.partial_caveat_info.as_ref())
}

fn describe(p: i32, info: Option<&pb::PartialCaveatInfo>) -> String {
    match pb::Permissionship::try_from(p) {
        Ok(pb::Permissionship::HasPermission) => {
            assert!(info.is_none(), "an allowed answer waits for nothing");
            "has".into()
        }
        Ok(pb::Permissionship::NoPermission) => {
            assert!(info.is_none(), "a denied answer waits for nothing");
            "no".into()
        }
        Ok(pb::Permissionship::ConditionalPermission) => format!(
            "conditional {:?}",
            info.expect("a conditional answer says what it waits for")
                .missing_required_context
        ),
        other => panic!("unexpected permissionship {other:?}"),
    }
}

/// Caveated relationships are accepted at write (checked against the schema: the caveat the
/// relation allows, the context's parameters and types), and Read, Export and Watch carry
/// them back with their contexts.
#[tokio::test]
async fn caveated_relationships_round_trip_through_write_read_export_and_watch() {
    let s = TestServer::start().await;
    let t0 = with_caveats_schema(&s).await;
    let rels = [
        r#"document:d#folder@folder:f[on_network:{"cidr":"192.168.0.0/16"}]"#,
        r#"document:d#viewer@user:ann[min_level:{"required":3}]"#,
        r#"document:d#viewer@user:tom[on_network:{"cidr":"10.0.0.0/8"}]"#,
        "document:d#viewer@user:zed[on_network]",
    ];
    let t = write(&s, rels.iter().map(|r| create(r)).collect()).await;
    let mut want: Vec<String> = rels.iter().map(|r| r.to_string()).collect();
    want.sort();
    let mut got = read_full(&s, "document", fresh(&t)).await;
    got.sort();
    assert_eq!(got, want, "Read keeps caveats and contexts");

    // Export.
    let mut stream = s
        .rel()
        .export(pb::ExportRequest {
            consistency: fresh(&t),
            optional_cursor: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        exported.extend(m.relationships.iter().map(full_text));
    }
    exported.sort();
    assert_eq!(exported, want, "Export keeps caveats and contexts");

    // Watch, from the schema's token.
    let mut stream = s
        .rel()
        .watch(pb::WatchRequest {
            optional_object_types: vec![],
            optional_start_cursor: Some(t0),
        })
        .await
        .unwrap()
        .into_inner();
    let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("watch stalled")
        .unwrap()
        .unwrap();
    let mut watched: Vec<String> = m
        .changes
        .iter()
        .map(|c| full_text(c.relationship.as_ref().unwrap()))
        .collect();
    watched.sort();
    assert_eq!(watched, want, "Watch keeps caveats and contexts");

    // Import takes them too; TOUCH replaces a relationship's context.
    let resp = s
        .rel()
        .import(tokio_stream::iter(vec![pb::ImportRequest {
            relationships: vec![rel(
                r#"document:d#viewer@user:ann[min_level:{"required":7}]"#,
            )],
        }]))
        .await
        .unwrap()
        .into_inner();
    let after = resp.written_at.unwrap();
    assert!(read_full(&s, "document", fresh(&after))
        .await
        .contains(&r#"document:d#viewer@user:ann[min_level:{"required":7}]"#.to_string()));

    // Refused at write, naming the field: a caveat the relation does not allow, a context
    // naming an undeclared parameter, a value of the wrong type, a caveat name that is not
    // a name.
    for (text, field, what) in [
        (
            "document:d#viewer@user:bob[for_task]",
            "updates[0].relationship",
            "caveat `for_task`",
        ),
        ("document:d#viewer@user:bob", "", ""),
        (
            r#"document:d#viewer@user:bob[min_level:{"nope":1}]"#,
            "updates[0].relationship.optional_caveat.context",
            "nope",
        ),
        (
            r#"document:d#viewer@user:bob[min_level:{"required":"high"}]"#,
            "updates[0].relationship.optional_caveat.context",
            "required",
        ),
        (
            "document:d#heavy@user:bob",
            "updates[0].relationship",
            "no caveat",
        ),
    ] {
        let r = s
            .rel()
            .write(pb::WriteRequest {
                updates: vec![touch(text)],
                optional_preconditions: vec![],
            })
            .await;
        if field.is_empty() {
            r.unwrap();
            continue;
        }
        let e = r.unwrap_err();
        assert_invalid(&e, field);
        assert_eq!(reason(&e), "INVALID_RELATIONSHIP", "{text}: {e:?}");
        assert!(e.message().contains(what), "{text}: {e:?}");
    }
    let mut bad_name = touch("document:d#viewer@user:bob");
    bad_name.relationship.as_mut().unwrap().optional_caveat = Some(pb::ContextualizedCaveat {
        caveat_name: "Not A Name".into(),
        context: None,
    });
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![bad_name],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "updates[0].relationship.optional_caveat.caveat_name");
    s.stop().await.unwrap();
}

/// Check, CheckBulk, LookupResources, LookupSubjects and Expand through the API are
/// three-valued: the request's context reaches the engine, conditional answers carry their
/// missing parameters, proofs their caveat steps, expand trees their caveats; a context of
/// the wrong type is INVALID_ARGUMENT naming the parameter.
#[tokio::test]
async fn caveats_are_evaluated_with_the_request_context() {
    let s = TestServer::start().await;
    with_caveats_schema(&s).await;
    let t = write(
        &s,
        vec![
            create(r#"document:d#viewer@user:tom[on_network:{"cidr":"10.0.0.0/8"}]"#),
            create(r#"document:d#viewer@user:ann[min_level:{"required":3}]"#),
            create("document:d#viewer@user:bob"),
            create(r#"document:d#folder@folder:f[on_network:{"cidr":"192.168.0.0/16"}]"#),
            create("folder:f#viewer@user:fay"),
            create("document:e#viewer@user:tom"),
            create(r#"document:d#ratio_viewer@user:bob[ratio:{"a":4}]"#),
        ],
    )
    .await;
    let c = |sub: &str, ctx: Option<&str>| check_ctx("document:d", "view", sub, &t, ctx);

    // Check: conditional without the context, decided with it.
    assert_eq!(
        answer(&s, c("user:tom", None)).await,
        r#"conditional ["user_ip"]"#
    );
    assert_eq!(
        answer(&s, c("user:tom", Some(r#"{"user_ip":"10.1.2.3"}"#))).await,
        "has"
    );
    assert_eq!(
        answer(&s, c("user:tom", Some(r#"{"user_ip":"11.0.0.1"}"#))).await,
        "no"
    );
    // The relationship's value wins over the request's.
    assert_eq!(
        answer(
            &s,
            c(
                "user:tom",
                Some(r#"{"user_ip":"11.0.0.1","cidr":"11.0.0.0/8"}"#)
            )
        )
        .await,
        "no"
    );
    assert_eq!(
        answer(&s, c("user:ann", Some(r#"{"level":5}"#))).await,
        "has"
    );
    assert_eq!(
        answer(&s, c("user:ann", Some(r#"{"level":2}"#))).await,
        "no"
    );
    assert_eq!(answer(&s, c("user:bob", None)).await, "has");
    // Through a caveated arrow hop.
    assert_eq!(
        answer(&s, c("user:fay", None)).await,
        r#"conditional ["user_ip"]"#
    );
    assert_eq!(
        answer(&s, c("user:fay", Some(r#"{"user_ip":"192.168.1.1"}"#))).await,
        "has"
    );

    // The proof shows the caveat step: its context, its result, the missing parameter.
    let mut req = c("user:tom", None);
    req.explain = true;
    let r = s.perm().check(req).await.unwrap().into_inner();
    let proof = r.proof.unwrap();
    assert_eq!(proof.missing_required_context, vec!["user_ip"]);
    let decoded = dhow_wire::proof(&proof, "proof").unwrap();
    // Both caveats on the way: tom's relationship and the folder hop's.
    let caveats = decoded.caveats();
    assert_eq!(caveats.len(), 2, "{decoded}");
    assert!(
        caveats.iter().all(|c| c.missing == vec!["user_ip"]),
        "{decoded}"
    );
    assert!(
        decoded
            .to_string()
            .contains(r#"? caveat on_network with {"cidr":"10.0.0.0/8"}"#),
        "{decoded}"
    );
    let mut req = c("user:tom", Some(r#"{"user_ip":"10.1.2.3"}"#));
    req.explain = true;
    let r = s.perm().check(req).await.unwrap().into_inner();
    let decoded = dhow_wire::proof(r.proof.as_ref().unwrap(), "proof").unwrap();
    assert!(decoded.allowed);
    assert!(
        decoded
            .to_string()
            .contains(r#"✓ caveat on_network with {"cidr":"10.0.0.0/8","user_ip":"10.1.2.3"}"#),
        "{decoded}"
    );

    // A value of the wrong type for a parameter that is evaluated: INVALID_ARGUMENT naming
    // the field and, in the metadata, the parameter.
    let e = s
        .perm()
        .check(c("user:ann", Some(r#"{"level":"high"}"#)))
        .await
        .unwrap_err();
    assert_invalid(&e, "context");
    assert_eq!(reason(&e), "INVALID_CAVEAT_CONTEXT");
    assert_eq!(metadata(&e, "parameter"), "level");
    // Too large a context (past 64 KiB): the same reason, without a parameter.
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(70_000));
    let e = s.perm().check(c("user:bob", Some(&big))).await.unwrap_err();
    assert_invalid(&e, "context");
    assert_eq!(reason(&e), "INVALID_CAVEAT_CONTEXT");
    assert_eq!(metadata(&e, "parameter"), "");
    // An expression that fails at run time names its caveat.
    let e = s
        .perm()
        .check(check_ctx(
            "document:d",
            "ratio_viewer",
            "user:bob",
            &t,
            Some(r#"{"b":0}"#),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(reason(&e), "CAVEAT_EVALUATION_ERROR");
    assert_eq!(metadata(&e, "caveat"), "ratio");
    assert_eq!(
        answer(
            &s,
            check_ctx(
                "document:d",
                "ratio_viewer",
                "user:bob",
                &t,
                Some(r#"{"b":2}"#)
            )
        )
        .await,
        "has"
    );

    // CheckBulk: each item with its own context, and its own error.
    let item = |sub: &str, ctx: Option<&str>| {
        let (st, sid) = sub.split_once(':').unwrap();
        pb::CheckBulkRequestItem {
            resource: obj("document", "d"),
            permission: "view".into(),
            subject: subj(st, sid),
            explain: false,
            actors: vec![],
            context: ctx.and_then(context),
        }
    };
    let r = s
        .perm()
        .check_bulk(pb::CheckBulkRequest {
            consistency: fresh(&t),
            items: vec![
                item("user:tom", None),
                item("user:tom", Some(r#"{"user_ip":"10.9.9.9"}"#)),
                item("user:ann", Some(r#"{"level":3}"#)),
                item("user:ann", Some(r#"{"level":"x"}"#)),
                item("user:ann", None),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<String> = r
        .items
        .iter()
        .map(|i| match i.response.as_ref().unwrap() {
            pb::check_bulk_response_item::Response::Result(r) => {
                describe(r.permissionship, r.partial_caveat_info.as_ref())
            }
            pb::check_bulk_response_item::Response::Error(e) => {
                format!("error {} {} {}", e.code, e.reason, e.message)
            }
        })
        .collect();
    assert_eq!(got[0], r#"conditional ["user_ip"]"#);
    assert_eq!(got[1], "has");
    assert_eq!(got[2], "has");
    assert!(
        got[3].starts_with("error 3 INVALID_CAVEAT_CONTEXT items[3].context: "),
        "{got:?}"
    );
    assert_eq!(got[4], r#"conditional ["level"]"#);

    // LookupResources streams conditional results with their missing parameters.
    let lookup = |ctx: Option<&str>| pb::LookupResourcesRequest {
        consistency: fresh(&t),
        resource_object_type: "document".into(),
        permission: "view".into(),
        subject: subj("user", "tom"),
        optional_limit: 0,
        optional_cursor: None,
        context: ctx.and_then(context),
        actors: Vec::new(),
    };
    let found = |req: pb::LookupResourcesRequest| {
        let s = &s;
        async move {
            let mut st = s.perm().lookup_resources(req).await.unwrap().into_inner();
            let mut out = Vec::new();
            while let Some(m) = st.message().await.unwrap() {
                out.push(format!(
                    "{} {}",
                    m.resource_object_id,
                    describe(m.permissionship, m.partial_caveat_info.as_ref())
                ));
            }
            out
        }
    };
    assert_eq!(
        found(lookup(None)).await,
        vec![r#"d conditional ["user_ip"]"#, "e has"]
    );
    assert_eq!(
        found(lookup(Some(r#"{"user_ip":"10.0.0.1"}"#))).await,
        vec!["d has", "e has"]
    );
    assert_eq!(
        found(lookup(Some(r#"{"user_ip":"8.8.8.8"}"#))).await,
        vec!["e has"]
    );
    let e = s
        .perm()
        .lookup_resources(lookup(Some(r#"{"user_ip":7}"#)))
        .await
        .unwrap_err();
    assert_invalid(&e, "context");
    assert_eq!(metadata(&e, "parameter"), "user_ip");
    // A cursor continues the request with the same context only.
    let mut first = lookup(None);
    first.optional_limit = 1;
    let mut st = s.perm().lookup_resources(first).await.unwrap().into_inner();
    let cursor = st.message().await.unwrap().unwrap().after_result_cursor;
    let mut next = lookup(Some(r#"{"user_ip":"10.0.0.1"}"#));
    next.optional_cursor = cursor.clone();
    let e = s.perm().lookup_resources(next).await.unwrap_err();
    assert_eq!(reason(&e), "CURSOR_INVALID");
    let mut next = lookup(None);
    next.optional_cursor = cursor;
    let mut st = s.perm().lookup_resources(next).await.unwrap().into_inner();
    assert_eq!(st.message().await.unwrap().unwrap().resource_object_id, "e");

    // LookupSubjects: each subject with its value.
    let subjects = |ctx: Option<&str>| {
        let s = &s;
        let req = pb::LookupSubjectsRequest {
            consistency: fresh(&t),
            resource: obj("document", "d"),
            permission: "view".into(),
            subject_object_type: "user".into(),
            optional_subject_relation: String::new(),
            context: ctx.and_then(context),
        };
        async move {
            let mut st = s.perm().lookup_subjects(req).await.unwrap().into_inner();
            let mut out = Vec::new();
            while let Some(m) = st.message().await.unwrap() {
                let sub = m.subject.as_ref().unwrap().object.as_ref().unwrap();
                out.push(format!(
                    "{} {}",
                    sub.object_id,
                    describe(m.permissionship, m.partial_caveat_info.as_ref())
                ));
            }
            out.sort();
            out
        }
    };
    assert_eq!(
        subjects(None).await,
        vec![
            r#"ann conditional ["level"]"#,
            "bob has",
            r#"fay conditional ["user_ip"]"#,
            r#"tom conditional ["user_ip"]"#,
        ]
    );
    assert_eq!(
        subjects(Some(r#"{"level":4,"user_ip":"10.0.0.1"}"#)).await,
        vec!["ann has", "bob has", "tom has"]
    );

    // Expand shows caveats without evaluating them: on leaf subjects, aligned with them, and
    // on the arrow's child reached through a caveated relationship.
    let tree = s
        .perm()
        .expand(pb::ExpandRequest {
            consistency: fresh(&t),
            resource: obj("document", "d"),
            permission: "view".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tree
        .unwrap();
    let decoded = dhow_wire::expand_tree(&tree, "tree").unwrap();
    fn nodes<'a>(n: &'a dhow_engine::ExpandNode, out: &mut Vec<&'a dhow_engine::ExpandNode>) {
        out.push(n);
        match &n.tree {
            dhow_engine::ExpandTree::Leaf(_) => {}
            dhow_engine::ExpandTree::Union(c) | dhow_engine::ExpandTree::Intersection(c) => {
                c.iter().for_each(|c| nodes(c, out))
            }
            dhow_engine::ExpandTree::Exclusion(a, b) => {
                nodes(a, out);
                nodes(b, out);
            }
        }
    }
    let mut all = Vec::new();
    nodes(&decoded, &mut all);
    let viewers = all
        .iter()
        .find_map(|n| match &n.tree {
            dhow_engine::ExpandTree::Leaf(l)
                if n.relation == "viewer" && n.resource.object_id == "d" =>
            {
                Some(l)
            }
            _ => None,
        })
        .expect("the viewer leaf");
    let mut leaves: Vec<String> = viewers.iter().map(ToString::to_string).collect();
    leaves.sort();
    assert_eq!(
        leaves,
        vec![
            r#"user:ann[min_level:{"required":3}]"#,
            "user:bob",
            r#"user:tom[on_network:{"cidr":"10.0.0.0/8"}]"#,
        ]
    );
    let folder = all
        .iter()
        .find(|n| n.resource.object_type == "folder")
        .expect("the arrow's child");
    let cav = folder
        .caveat
        .as_ref()
        .expect("the tupleset relationship's caveat");
    assert_eq!(cav.name, "on_network");
    assert_eq!(cav.context.as_deref(), Some(r#"{"cidr":"192.168.0.0/16"}"#));
    s.stop().await.unwrap();
}

/// A caveat whose work grows with the request's context is stopped by the caveat cost budget
/// (RESOURCE_EXHAUSTED naming the budget), and the server goes on serving.
#[tokio::test]
async fn an_expensive_caveat_exhausts_its_budget_and_the_server_keeps_serving() {
    let s = TestServer::start().await;
    with_caveats_schema(&s).await;
    let t = write(
        &s,
        vec![
            create("document:d#heavy@user:tom[heavy]"),
            create("document:d#viewer@user:bob"),
        ],
    )
    .await;
    // 5,000 items (under the 64 KiB context limit): 25,000,000 comparisons, more than the
    // 10,000,000 units a request may spend.
    let items: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let ctx = format!(r#"{{"items":[{}]}}"#, items.join(","));
    let t0 = std::time::Instant::now();
    let e = s
        .perm()
        .check(check_ctx("document:d", "heavy", "user:tom", &t, Some(&ctx)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(reason(&e), "BUDGET_EXHAUSTED");
    assert_eq!(metadata(&e, "budget"), "caveat_cost");
    assert_eq!(metadata(&e, "limit"), "10000000");
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "stopped at the budget, not after 25M steps: {:?}",
        t0.elapsed()
    );
    // A small list is fine, and other requests are served.
    assert_eq!(
        answer(
            &s,
            check_ctx(
                "document:d",
                "heavy",
                "user:tom",
                &t,
                Some(r#"{"items":[1,2,3]}"#)
            )
        )
        .await,
        "has"
    );
    assert_eq!(
        answer(&s, check_ctx("document:d", "view", "user:bob", &t, None)).await,
        "has"
    );
    s.stop().await.unwrap();
}

/// Agents preparation: a delegation guarded by a caveat allows only the task the request
/// names (the relationship's value wins), is conditional without it, and is revoked at once
/// by deleting the delegation.
#[tokio::test]
async fn a_delegation_guarded_by_a_caveat_allows_only_its_task() {
    let s = TestServer::start().await;
    with_caveats_schema(&s).await;
    let delegation =
        r#"agent:summariser#delegate@user:alice[for_task:{"allowed_task":"summarise"}]"#;
    let t = write(&s, vec![create(delegation)]).await;
    let c = |t: &pb::ConsistencyToken, ctx: Option<&str>| {
        check_ctx("agent:summariser", "act", "user:alice", t, ctx)
    };
    assert_eq!(
        answer(&s, c(&t, Some(r#"{"task":"summarise"}"#))).await,
        "has"
    );
    assert_eq!(answer(&s, c(&t, Some(r#"{"task":"delete"}"#))).await, "no");
    assert_eq!(answer(&s, c(&t, None)).await, r#"conditional ["task"]"#);
    // The request cannot widen the delegation: the relationship's allowed_task wins.
    assert_eq!(
        answer(
            &s,
            c(&t, Some(r#"{"task":"delete","allowed_task":"delete"}"#))
        )
        .await,
        "no"
    );
    // Another user was never delegated.
    assert_eq!(
        answer(
            &s,
            check_ctx(
                "agent:summariser",
                "act",
                "user:bob",
                &t,
                Some(r#"{"task":"summarise"}"#)
            )
        )
        .await,
        "no"
    );
    // Revoked: with the delete's token, the next check is denied.
    let t2 = write(&s, vec![delete(delegation)]).await;
    assert_eq!(
        answer(&s, c(&t2, Some(r#"{"task":"summarise"}"#))).await,
        "no"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn health_follows_the_node_fault_not_serving_then_serving_again() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let s = TestServer::start().await;
    let mut h = HealthClient::new(s.channel.clone());
    async fn all(h: &mut HealthClient<tonic::transport::Channel>) -> Vec<i32> {
        let mut out = Vec::new();
        for svc in [
            "",
            "dhow.v1.PermissionService",
            "dhow.v1.RelationshipService",
        ] {
            let r = h
                .check(HealthCheckRequest {
                    service: svc.into(),
                })
                .await
                .unwrap()
                .into_inner();
            out.push(r.status);
        }
        out
    }
    async fn wait_for(h: &mut HealthClient<tonic::transport::Channel>, want: ServingStatus) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = all(h).await;
            if now.iter().all(|s| *s == want as i32) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "health {now:?}, waiting for {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_for(&mut h, ServingStatus::Serving).await;
    s.node.set_fault(Some(
        "the Raft loop stopped: raft entry 7: unknown tag".into(),
    ));
    wait_for(&mut h, ServingStatus::NotServing).await;
    s.node.set_fault(None);
    wait_for(&mut h, ServingStatus::Serving).await;
    s.stop().await.unwrap();
}

#[tokio::test]
async fn delete_by_filter_is_chunked_by_max_updates_per_write() {
    // Before: a delete matching more than max_updates_per_write became one write of every
    // match (70,000 relationships in one Raft entry deposed the leader).
    let config = dhow_server::Config {
        max_updates_per_write: 4,
        ..Default::default()
    };
    let s = TestServer::start_with(config).await;
    s.with_schema().await;
    for chunk in (0..10).collect::<Vec<u32>>().chunks(4) {
        write(
            &s,
            chunk
                .iter()
                .map(|i| touch(&format!("document:doc{i}#viewer@user:bob")))
                .collect(),
        )
        .await;
    }
    let req = |limit, partial| pb::DeleteRequest {
        filter: Some(pb::RelationshipFilter {
            resource_type: "document".into(),
            ..Default::default()
        }),
        optional_preconditions: vec![],
        optional_limit: limit,
        optional_allow_partial_deletions: partial,
    };
    // Without partial deletions: refused, naming the limit, nothing deleted.
    let e = s.rel().delete(req(0, false)).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "DELETE_LIMIT_EXCEEDED")
    );
    assert!(e.message().contains("max_updates_per_write"), "{e:?}");
    assert_eq!(read_all(&s, "document", None).await.len(), 10);
    // With them: chunks of 4 (a larger limit is capped), partial until none remain.
    let mut counts = Vec::new();
    let mut last = None;
    for limit in [0, 100, 0] {
        let r = s.rel().delete(req(limit, true)).await.unwrap().into_inner();
        counts.push((r.deleted_count, r.partial));
        last = r.deleted_at;
    }
    assert_eq!(counts, vec![(4, true), (4, true), (2, false)]);
    assert!(read_all(&s, "document", fresh(last.as_ref().unwrap()))
        .await
        .is_empty());
    s.stop().await.unwrap();
}
