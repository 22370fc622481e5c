//! The limits a hostile client meets on the public API, through the real server over a
//! `MemNode`: each refused with a clear error naming the limit, and the node still serving.
//! Each test failed before its limit existed (a 1 MB id came back in a 2 MB message, a schema
//! with hundreds of errors produced a trailer larger than clients accept, CheckBulk and
//! LookupSubjects had no bound).

use dhow_proto::v1 as pb;
use dhow_server::Config;
use dhow_tests::server::*;
use tonic::Code;
use tonic_types::StatusExt;

/// What a status puts on the wire in its trailer, roughly: the message and every detail.
fn trailer_bytes(s: &tonic::Status) -> usize {
    s.message().len() + s.details().len()
}

#[tokio::test]
async fn a_huge_id_is_not_echoed_back_in_full() {
    let s = TestServer::start().await;
    s.with_schema().await;
    let id = "x".repeat(1 << 20);
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![pb::RelationshipUpdate {
                operation: pb::relationship_update::Operation::Touch as i32,
                relationship: Some(pb::Relationship {
                    resource: obj("document", &id),
                    relation: "viewer".into(),
                    subject: subj("user", "ann"),
                    ..Default::default()
                }),
            }],
            optional_preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        trailer_bytes(&e) < 8 * 1024,
        "a 1 MiB id came back in {} bytes of error",
        trailer_bytes(&e)
    );
    assert!(
        e.message().contains("..."),
        "the cut is not marked: {}",
        e.message()
    );
    let e = s
        .perm()
        .check(check_req(
            &format!("document:{id}"),
            "view",
            "user:ann",
            None,
        ))
        .await
        .unwrap_err();
    assert!(
        trailer_bytes(&e) < 8 * 1024,
        "check: {} bytes",
        trailer_bytes(&e)
    );
    // Still serving.
    assert!(!allowed(&s, check_req("document:a", "view", "user:ann", None)).await);
}

#[tokio::test]
async fn a_schema_with_many_errors_lists_some_and_counts_the_rest() {
    let s = TestServer::start().await;
    // 500 definitions, each with a relation to a type that does not exist.
    let text: String = (0..500)
        .map(|i| format!("definition doc{i} {{ relation rel: missing{i} }}\n"))
        .collect();
    let e = s
        .schema()
        .write_schema(pb::WriteSchemaRequest { schema: text })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "SCHEMA_PARSE_ERROR");
    assert_eq!(
        e.get_details_error_info().unwrap().metadata["errors"],
        "100"
    );
    assert!(
        e.message().contains("100 or more errors, the first 10"),
        "the rest is not counted: {}",
        &e.message()[..e.message().len().min(300)]
    );
    assert!(
        trailer_bytes(&e) < 8 * 1024,
        "{} bytes of error: past what gRPC clients accept in a trailer",
        trailer_bytes(&e)
    );
    s.with_schema().await;
}

#[tokio::test]
async fn check_bulk_past_its_item_limit_is_refused() {
    let config = Config {
        max_check_bulk_items: 10,
        ..Config::default()
    };
    let s = TestServer::start_with(config).await;
    s.with_schema().await;
    let item = |i: usize| pb::CheckBulkRequestItem {
        resource: obj("document", &format!("d{i}")),
        permission: "view".into(),
        subject: subj("user", "ann"),
        ..Default::default()
    };
    let e = s
        .perm()
        .check_bulk(pb::CheckBulkRequest {
            consistency: None,
            items: (0..11).map(item).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "TOO_MANY_ITEMS");
    assert_eq!(field(&e), "items");
    let ok = s
        .perm()
        .check_bulk(pb::CheckBulkRequest {
            consistency: None,
            items: (0..10).map(item).collect(),
        })
        .await
        .expect("ten items are within the limit")
        .into_inner();
    assert_eq!(ok.items.len(), 10);
}

#[tokio::test]
async fn lookup_subjects_past_its_result_limit_is_refused() {
    let config = Config {
        max_lookup_subjects_results: 5,
        ..Config::default()
    };
    let s = TestServer::start_with(config).await;
    s.with_schema().await;
    let lookup = |s: &TestServer| {
        let mut c = s.perm();
        async move {
            let mut stream = c
                .lookup_subjects(pb::LookupSubjectsRequest {
                    resource: obj("document", "a"),
                    permission: "view".into(),
                    subject_object_type: "user".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut n = 0;
            while let Some(r) = stream.message().await? {
                assert!(r.subject.is_some());
                n += 1;
            }
            Ok::<usize, tonic::Status>(n)
        }
    };
    write(
        &s,
        (0..5)
            .map(|i| touch(&format!("document:a#viewer@user:u{i}")))
            .collect(),
    )
    .await;
    assert_eq!(lookup(&s).await.expect("five subjects"), 5);
    write(&s, vec![touch("document:a#viewer@user:u5")]).await;
    let e = lookup(&s).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(reason(&e), "TOO_MANY_RESULTS");
}

/// Each precondition is a read on the apply path, where every write on the node waits: one
/// write with 1,000 of them over 100,000 relationships stalled the node for 42 s. Their number
/// is bounded, on Write and on Delete alike.
#[tokio::test]
async fn preconditions_past_their_limit_are_refused() {
    let config = Config {
        max_preconditions_per_write: 10,
        ..Config::default()
    };
    let s = TestServer::start_with(config).await;
    s.with_schema().await;
    let pre = |n: usize| -> Vec<pb::Precondition> {
        (0..n)
            .map(|i| pb::Precondition {
                operation: pb::precondition::Operation::MustNotMatch as i32,
                filter: Some(pb::RelationshipFilter {
                    resource_type: "document".into(),
                    optional_relation: "viewer".into(),
                    optional_subject_filter: Some(pb::SubjectFilter {
                        subject_type: "user".into(),
                        optional_subject_id: format!("u{i}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .collect()
    };
    let update = pb::RelationshipUpdate {
        operation: pb::relationship_update::Operation::Touch as i32,
        relationship: Some(pb::Relationship {
            resource: obj("document", "d"),
            relation: "viewer".into(),
            subject: subj("user", "ann"),
            ..Default::default()
        }),
    };
    let e = s
        .rel()
        .write(pb::WriteRequest {
            updates: vec![update.clone()],
            optional_preconditions: pre(11),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert_eq!(reason(&e), "TOO_MANY_PRECONDITIONS");
    assert_eq!(field(&e), "optional_preconditions");
    let e = s
        .rel()
        .delete(pb::DeleteRequest {
            filter: Some(pb::RelationshipFilter {
                resource_type: "document".into(),
                ..Default::default()
            }),
            optional_preconditions: pre(11),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "TOO_MANY_PRECONDITIONS");
    s.rel()
        .write(pb::WriteRequest {
            updates: vec![update],
            optional_preconditions: pre(10),
        })
        .await
        .expect("ten preconditions are allowed");
}
