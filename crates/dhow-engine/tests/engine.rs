//! Engine behaviour beyond the conformance scenarios: cycles, depth limits, proofs,
//! expiration, reads at old revisions, errors and bulk checks.

use std::sync::Arc;

use dhow_engine::{Budget, CheckRequest, Engine, Error, Options, Step};
use dhow_tuples::{
    parse_relationship, parse_subject, MemStore, ObjectRef, Revision, Timestamp, WriteOp,
};

const SCHEMA: &str = r#"
use expiration
definition user {}
definition group {
    relation member: user | group#member
}
definition folder {
    relation parent: folder
    relation viewer: user with expiration | group#member | user:*
    permission view = viewer + parent->view
}
definition document {
    relation folder: folder
    relation owner: user
    relation banned: user
    permission view = (owner + folder->view) - banned
    permission edit = owner & folder->view
}
"#;

fn setup(rels: &[&str]) -> (Engine, MemStore) {
    let schema = dhow_schema::compile(SCHEMA).expect("schema compiles");
    let engine = Engine::new(Arc::new(schema));
    let mut store = MemStore::new();
    let ops: Vec<WriteOp> = rels
        .iter()
        .map(|r| {
            let r = parse_relationship(r).unwrap();
            engine.validate_relationship(&r).unwrap();
            WriteOp::Create(r)
        })
        .collect();
    store.write(&ops).unwrap();
    (engine, store)
}

fn req(s: &str) -> CheckRequest {
    let (left, subject) = s.split_once('@').unwrap();
    let (res, perm) = left.split_once('#').unwrap();
    let (t, id) = res.split_once(':').unwrap();
    CheckRequest::new(ObjectRef::new(t, id), perm, parse_subject(subject).unwrap())
}

fn check(engine: &Engine, store: &MemStore, s: &str) -> bool {
    engine
        .check(&store.latest(), &req(s), Options::now())
        .unwrap()
        .allowed
}

#[test]
fn group_cycles_terminate_with_the_right_answer() {
    let (e, s) = setup(&[
        "group:a#member@group:b#member",
        "group:b#member@group:c#member",
        "group:c#member@group:a#member",
        "group:c#member@user:carol",
        "folder:f#viewer@group:a#member",
        "folder:g#parent@folder:h",
        "folder:h#parent@folder:g",
    ]);
    assert!(check(&e, &s, "group:a#member@user:carol"));
    assert!(check(&e, &s, "group:b#member@user:carol"));
    assert!(!check(&e, &s, "group:a#member@user:mallory"));
    assert!(check(&e, &s, "folder:f#view@user:carol"));
    assert!(!check(&e, &s, "folder:g#view@user:carol"));
    let subjects = e
        .lookup_subjects(
            &s.latest(),
            &ObjectRef::new("group", "b"),
            "member",
            "user",
            None,
            Options::now(),
        )
        .unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].subject.to_string(), "user:carol");
}

#[test]
fn deep_chains_hit_the_depth_limit_with_a_clear_error() {
    let rels: Vec<String> = (0..30)
        .map(|i| format!("group:g{i}#member@group:g{}#member", i + 1))
        .collect();
    let mut all: Vec<&str> = rels.iter().map(String::as_str).collect();
    all.push("group:g30#member@user:deep");
    let (e, s) = setup(&all);
    assert!(check(&e, &s, "group:g0#member@user:deep"));
    let opts = Options {
        max_depth: 10,
        ..Options::now()
    };
    let err = e
        .check(&s.latest(), &req("group:g0#member@user:deep"), opts)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BudgetExhausted {
                budget: Budget::Depth,
                limit: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("depth budget of 10"), "{err}");
}

#[test]
fn proofs_name_the_relationships_that_granted() {
    let (e, s) = setup(&[
        "group:eng#member@user:alice",
        "folder:root#viewer@group:eng#member",
        "folder:plans#parent@folder:root",
        "document:roadmap#folder@folder:plans",
        "document:roadmap#banned@user:bob",
        "group:eng#member@user:bob",
    ]);
    let r = e
        .check(
            &s.latest(),
            &req("document:roadmap#view@user:alice"),
            Options::now().with_explain(),
        )
        .unwrap();
    assert!(r.allowed);
    let proof = r.proof.expect("proof requested");
    let used: Vec<String> = proof
        .relationships()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        used,
        vec![
            "document:roadmap#folder@folder:plans",
            "folder:plans#parent@folder:root",
            "folder:root#viewer@group:eng#member",
            "group:eng#member@user:alice",
        ]
    );
    let text = proof.to_string();
    assert!(text.contains("exclusion"), "{text}");
    assert!(text.contains("✗ document:roadmap#banned"), "{text}");

    // A denied check says what was missing; without explain there is no proof.
    let r = e
        .check(
            &s.latest(),
            &req("document:roadmap#view@user:bob"),
            Options::now().with_explain(),
        )
        .unwrap();
    assert!(!r.allowed);
    let p = r.proof.unwrap();
    assert!(
        p.relationships()
            .iter()
            .any(|r| r.to_string() == "document:roadmap#banned@user:bob"),
        "{p}"
    );
    let r = e
        .check(
            &s.latest(),
            &req("document:roadmap#view@user:carol"),
            Options::now().with_explain(),
        )
        .unwrap();
    assert!(!r.allowed);
    fn has_no_match(p: &dhow_engine::Proof) -> bool {
        p.step == Step::NoMatch || p.children.iter().any(has_no_match)
    }
    assert!(has_no_match(r.proof.as_ref().unwrap()));
    let r = e
        .check(
            &s.latest(),
            &req("document:roadmap#view@user:alice"),
            Options::now(),
        )
        .unwrap();
    assert!(r.proof.is_none());
}

#[test]
fn expired_relationships_are_invisible() {
    let (e, s) = setup(&[
        "folder:f#viewer@user:old[expiration:2020-01-01T00:00:00Z]",
        "folder:f#viewer@user:new[expiration:2300-01-01T00:00:00Z]",
    ]);
    assert!(!check(&e, &s, "folder:f#view@user:old"));
    assert!(check(&e, &s, "folder:f#view@user:new"));
    // At an evaluation time before 2020 the old one is visible.
    let then = Options {
        now: Timestamp::parse_rfc3339("2019-06-01T00:00:00Z").unwrap(),
        ..Options::now()
    };
    assert!(
        e.check(&s.latest(), &req("folder:f#view@user:old"), then)
            .unwrap()
            .allowed
    );
}

#[test]
fn a_check_at_an_old_revision_sees_the_old_state() {
    let (e, mut s) = setup(&["folder:f#viewer@user:alice"]);
    let before = s.head();
    let rev = s
        .write(&[WriteOp::Delete(
            parse_relationship("folder:f#viewer@user:alice").unwrap(),
        )])
        .unwrap();
    assert!(rev > before);
    let old = e
        .check(
            &s.snapshot(before).unwrap(),
            &req("folder:f#view@user:alice"),
            Options::now(),
        )
        .unwrap();
    assert!(old.allowed);
    assert_eq!(old.revision, before);
    let new = e
        .check(
            &s.latest(),
            &req("folder:f#view@user:alice"),
            Options::now(),
        )
        .unwrap();
    assert!(!new.allowed);
    assert_eq!(new.revision, rev);
    assert!(s.snapshot(Revision(rev.0 + 1)).is_err());
}

#[test]
fn wildcards_and_exclusions() {
    let (e, s) = setup(&[
        "folder:pub#viewer@user:*",
        "document:d#folder@folder:pub",
        "document:d#banned@user:bob",
    ]);
    assert!(check(&e, &s, "document:d#view@user:anyone"));
    assert!(!check(&e, &s, "document:d#view@user:bob"));
    let found = e
        .lookup_subjects(
            &s.latest(),
            &ObjectRef::new("document", "d"),
            "view",
            "user",
            None,
            Options::now(),
        )
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].subject.to_string(), "user:*");
    assert_eq!(
        found[0]
            .excluded
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        vec!["user:bob"]
    );
    let docs = e
        .lookup_resources(
            &s.latest(),
            "document",
            "view",
            &parse_subject("user:zed").unwrap(),
            Options::now(),
        )
        .unwrap();
    assert_eq!(docs, vec!["d".to_string()]);
}

#[test]
fn unknown_names_are_errors_not_denials() {
    let (e, s) = setup(&[]);
    let err = e
        .check(&s.latest(), &req("nosuch:x#view@user:a"), Options::now())
        .unwrap_err();
    assert_eq!(err, Error::UnknownType("nosuch".into()));
    let err = e
        .check(
            &s.latest(),
            &req("document:x#nosuch@user:a"),
            Options::now(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::UnknownRelation { .. }), "{err}");
    let err = e
        .check(
            &s.latest(),
            &req("document:x#view@group:g#nosuch"),
            Options::now(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::UnknownRelation { .. }), "{err}");
}

#[test]
fn relationships_are_validated_against_the_schema() {
    let (e, _) = setup(&[]);
    let bad = [
        ("document:d#view@user:a", "is a permission"),
        ("document:d#owner@group:g", "not allowed"),
        ("document:d#owner@user:*", "not allowed"),
        ("folder:f#viewer@group:g", "not allowed"),
        (
            "document:d#owner@user:a[expiration:2030-01-01T00:00:00Z]",
            "expiration",
        ),
        ("nosuch:d#owner@user:a", "not defined"),
        ("document:d#owner@nosuch:a", "not defined"),
        ("document:d#nosuch@user:a", "not a relation"),
    ];
    for (r, msg) in bad {
        let err = e
            .validate_relationship(&parse_relationship(r).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains(msg), "{r}: {err}");
    }
    e.validate_relationship(&parse_relationship("folder:f#viewer@group:g#member").unwrap())
        .unwrap();
}

#[test]
fn check_bulk_answers_each_in_order() {
    let (e, s) = setup(&[
        "document:a#owner@user:alice",
        "folder:f#viewer@user:alice",
        "document:a#folder@folder:f",
    ]);
    let reqs = vec![
        req("document:a#edit@user:alice"),
        req("document:a#edit@user:bob"),
        req("nosuch:a#edit@user:bob"),
    ];
    let out = e.check_bulk(&s.latest(), &reqs, Options::now());
    assert!(out[0].as_ref().unwrap().allowed);
    assert!(!out[1].as_ref().unwrap().allowed);
    assert!(out[2].is_err());
}
