//! Caveats in the engine: conditional results and their missing parameters, proofs that
//! show each caveat with its context and result, every bad input (wrong types, unknown
//! parameters, oversize contexts, an expensive comprehension), CheckBulk with per-item
//! contexts, and a delegation guarded by a caveat (the agents feature builds on it).

use std::sync::Arc;

use dhow_engine::{
    Budget, CaveatContext, CheckRequest, Engine, Error, Options, Permissionship, Step,
};
use dhow_tuples::{parse_relationship, parse_subject, MemStore, ObjectRef, WriteOp};

const SCHEMA: &str = r#"
definition user {}
definition agent {
    relation delegate: user with for_task
    permission act = delegate
}
caveat for_task(task string, allowed_task string) {
    task == allowed_task
}
caveat min_level(level int, required int) {
    level >= required
}
caveat on_network(ip ipaddress, cidr string) {
    ip.in_cidr(cidr)
}
caveat many(items list<int>) {
    items.all(x, items.all(y, x != y + 1000000))
}
definition group {
    relation member: user | user with min_level | group#member with on_network
}
definition document {
    relation viewer: user | group#member | user with min_level
    relation banned: user with on_network | user:* with min_level
    relation heavy: user with many
    permission view = viewer - banned
    permission both = viewer & viewer_too
    relation viewer_too: user | user with on_network
    permission work = heavy
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
            engine
                .validate_relationship(&r)
                .unwrap_or_else(|e| panic!("{r}: {e}"));
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

fn ctx(json: &str) -> CaveatContext {
    CaveatContext::from_json(json).unwrap()
}

fn check(engine: &Engine, store: &MemStore, s: &str, context: &str) -> Permissionship {
    let opts = Options::now().with_context(ctx(context));
    engine
        .check(&store.latest(), &req(s), opts)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .permissionship
}

fn conditional(missing: &[&str]) -> Permissionship {
    Permissionship::Conditional {
        missing: missing.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn a_delegation_with_a_caveat_allows_only_the_named_task() {
    let (engine, store) =
        setup(&["agent:summariser#delegate@user:alice[for_task:{\"allowed_task\":\"summarise\"}]"]);
    let s = "agent:summariser#act@user:alice";
    assert_eq!(
        check(&engine, &store, s, "{\"task\":\"summarise\"}"),
        Permissionship::Allowed
    );
    assert_eq!(
        check(&engine, &store, s, "{\"task\":\"delete_everything\"}"),
        Permissionship::Denied
    );
    // Without the task the answer is conditional on it, never allowed.
    assert_eq!(check(&engine, &store, s, "{}"), conditional(&["task"]));
    // The relationship's value wins over the request's.
    assert_eq!(
        check(
            &engine,
            &store,
            s,
            "{\"task\":\"summarise\",\"allowed_task\":\"delete_everything\"}"
        ),
        Permissionship::Allowed
    );
    // Nobody else is a delegate.
    assert_eq!(
        check(
            &engine,
            &store,
            "agent:summariser#act@user:bob",
            "{\"task\":\"summarise\"}"
        ),
        Permissionship::Denied
    );
}

#[test]
fn conditional_branches_combine_three_valued() {
    let (engine, store) = setup(&[
        "document:d#viewer@user:tom[min_level:{\"required\":3}]",
        "document:d#viewer@user:ann",
        "document:d#banned@user:ann[on_network:{\"cidr\":\"10.0.0.0/8\"}]",
        "document:d#banned@user:*[min_level:{\"required\":9}]",
        "document:d#viewer_too@user:ann[on_network:{\"cidr\":\"10.0.0.0/8\"}]",
        "document:d#viewer_too@user:tom",
    ]);
    // tom: viewer if level >= 3, banned (through the wildcard) if level >= 9.
    assert_eq!(
        check(&engine, &store, "document:d#view@user:tom", "{}"),
        conditional(&["level"])
    );
    assert_eq!(
        check(
            &engine,
            &store,
            "document:d#view@user:tom",
            "{\"level\": 5}"
        ),
        Permissionship::Allowed
    );
    assert_eq!(
        check(
            &engine,
            &store,
            "document:d#view@user:tom",
            "{\"level\": 10}"
        ),
        Permissionship::Denied
    );
    // ann: viewer; banned if on the network or level >= 9: conditional on both.
    assert_eq!(
        check(&engine, &store, "document:d#view@user:ann", "{}"),
        conditional(&["ip", "level"])
    );
    // A denied excluded part leaves the base.
    assert_eq!(
        check(
            &engine,
            &store,
            "document:d#view@user:ann",
            "{\"ip\": \"1.2.3.4\", \"level\": 1}"
        ),
        Permissionship::Allowed
    );
    // Either ban decided true denies, whatever the other needs.
    assert_eq!(
        check(
            &engine,
            &store,
            "document:d#view@user:ann",
            "{\"ip\": \"10.1.1.1\"}"
        ),
        Permissionship::Denied
    );
    // An intersection: conditional & allowed is conditional; conditional & denied denied.
    assert_eq!(
        check(&engine, &store, "document:d#both@user:ann", "{}"),
        conditional(&["ip"])
    );
    assert_eq!(
        check(
            &engine,
            &store,
            "document:d#both@user:tom",
            "{\"level\": 1}"
        ),
        Permissionship::Denied
    );
    // A union with a granted branch is allowed without the missing value.
    let (engine, store) = setup(&[
        "group:g#member@user:tom[min_level:{\"required\":3}]",
        "document:e#viewer@group:g#member",
        "document:e#viewer@user:tom",
    ]);
    assert_eq!(
        check(&engine, &store, "document:e#viewer@user:tom", "{}"),
        Permissionship::Allowed
    );
}

#[test]
fn a_proof_shows_each_caveat_its_context_and_result() {
    let (engine, store) = setup(&[
        "group:net#member@user:tom",
        "group:eng#member@group:net#member[on_network:{\"cidr\":\"10.0.0.0/8\"}]",
        "document:d#viewer@group:eng#member",
        "document:d#viewer@user:tom[min_level:{\"required\":3}]",
    ]);
    let opts = Options::now()
        .with_explain()
        .with_context(ctx("{\"ip\":\"10.1.2.3\",\"level\":1,\"unrelated\":true}"));
    let r = engine
        .check(&store.latest(), &req("document:d#viewer@user:tom"), opts)
        .unwrap();
    assert_eq!(r.permissionship, Permissionship::Allowed);
    let proof = r.proof.expect("proof");
    let caveats: Vec<(String, String, Permissionship)> = proof
        .caveats()
        .into_iter()
        .map(|p| match &p.step {
            Step::Caveat { name, context } => (name.clone(), context.to_json(), p.permissionship()),
            _ => unreachable!(),
        })
        .collect();
    // An allowed union keeps only its granting branch: the network caveat.
    assert_eq!(
        caveats,
        vec![(
            "on_network".to_string(),
            "{\"cidr\":\"10.0.0.0/8\",\"ip\":\"10.1.2.3\"}".to_string(),
            Permissionship::Allowed
        )]
    );
    let text = proof.to_string();
    assert!(
        text.contains("✓ caveat on_network with {\"cidr\":\"10.0.0.0/8\",\"ip\":\"10.1.2.3\"}"),
        "{text}"
    );

    // A denied proof shows every caveat that failed, with what it saw.
    let opts = Options::now()
        .with_explain()
        .with_context(ctx("{\"ip\":\"1.2.3.4\",\"level\":1}"));
    let r = engine
        .check(&store.latest(), &req("document:d#viewer@user:tom"), opts)
        .unwrap();
    assert_eq!(r.permissionship, Permissionship::Denied);
    let text = r.proof.expect("proof").to_string();
    assert!(
        text.contains("✗ caveat min_level with {\"level\":1,\"required\":3}"),
        "{text}"
    );
    assert!(
        text.contains("✗ caveat on_network with {\"cidr\":\"10.0.0.0/8\",\"ip\":\"1.2.3.4\"}"),
        "{text}"
    );

    // A conditional proof says what is missing, at the caveat and at the root.
    let opts = Options::now().with_explain();
    let r = engine
        .check(&store.latest(), &req("document:d#viewer@user:tom"), opts)
        .unwrap();
    let proof = r.proof.expect("proof");
    assert_eq!(proof.permissionship(), conditional(&["ip", "level"]));
    let text = proof.to_string();
    assert!(
        text.contains("? caveat min_level with {\"required\":3} (conditional: missing level)"),
        "{text}"
    );
}

#[test]
fn check_bulk_items_carry_their_own_contexts() {
    let (engine, store) =
        setup(&["agent:a#delegate@user:alice[for_task:{\"allowed_task\":\"read\"}]"]);
    let base = req("agent:a#act@user:alice");
    let reqs = vec![
        base.clone().with_context(ctx("{\"task\":\"read\"}")),
        base.clone().with_context(ctx("{\"task\":\"write\"}")),
        base.clone(),
    ];
    let out = engine.check_bulk(
        &store.latest(),
        &reqs,
        Options::now().with_context(ctx("{\"task\":\"read\"}")),
    );
    let got: Vec<Permissionship> = out.into_iter().map(|r| r.unwrap().permissionship).collect();
    assert_eq!(
        got,
        vec![
            Permissionship::Allowed,
            Permissionship::Denied,
            // No context of its own: the request's.
            Permissionship::Allowed,
        ]
    );
}

#[test]
fn lookups_return_conditional_results() {
    let (engine, store) = setup(&[
        "document:a#viewer@user:tom[min_level:{\"required\":3}]",
        "document:b#viewer@user:tom",
        "document:c#viewer@user:ann",
    ]);
    let found = engine
        .lookup_found_resources(
            &store.latest(),
            "document",
            "view",
            &parse_subject("user:tom").unwrap(),
            Options::now(),
        )
        .unwrap();
    let got: Vec<(String, Permissionship)> = found
        .into_iter()
        .map(|f| (f.id, f.permissionship))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), conditional(&["level"])),
            ("b".to_string(), Permissionship::Allowed)
        ]
    );
    let ids = engine
        .lookup_resources(
            &store.latest(),
            "document",
            "view",
            &parse_subject("user:tom").unwrap(),
            Options::now().with_context(ctx("{\"level\": 1}")),
        )
        .unwrap();
    assert_eq!(ids, vec!["b".to_string()]);
    let subjects = engine
        .lookup_subjects(
            &store.latest(),
            &ObjectRef::new("document", "a"),
            "view",
            "user",
            None,
            Options::now(),
        )
        .unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].missing, vec!["level".to_string()]);
    // Expand shows the caveat on the leaf.
    let tree = engine
        .expand(
            &store.latest(),
            &ObjectRef::new("document", "a"),
            "viewer",
            Options::now(),
        )
        .unwrap();
    let dhow_engine::ExpandTree::Leaf(leaves) = &tree.tree else {
        panic!("{tree:?}")
    };
    assert_eq!(
        leaves[0].to_string(),
        "user:tom[min_level:{\"required\":3}]"
    );
}

#[test]
fn a_request_value_of_the_wrong_type_names_the_parameter() {
    let (engine, store) = setup(&["document:d#viewer@user:tom[min_level:{\"required\":3}]"]);
    let err = engine
        .check(
            &store.latest(),
            &req("document:d#view@user:tom"),
            Options::now().with_context(ctx("{\"level\": \"high\"}")),
        )
        .unwrap_err();
    match &err {
        Error::InvalidContext {
            parameter: Some(p),
            message,
        } => {
            assert_eq!(p, "level");
            assert!(
                message.contains("expected a value of type int"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("parameter `level`"), "{err}");
}

#[test]
fn an_oversize_request_context_is_refused() {
    let (engine, store) = setup(&[]);
    let big = format!("{{\"task\": \"{}\"}}", "x".repeat(70_000));
    let err = engine
        .check(
            &store.latest(),
            &req("agent:a#act@user:alice"),
            Options::now().with_context(ctx(&big)),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidContext { parameter: None, message } if message.contains("more than the limit of 65536 bytes")),
        "{err}"
    );
    // Also on a CheckBulk item, which fails alone.
    let reqs = vec![
        req("agent:a#act@user:alice").with_context(ctx(&big)),
        req("agent:a#act@user:alice"),
    ];
    let out = engine.check_bulk(&store.latest(), &reqs, Options::now());
    assert!(matches!(out[0], Err(Error::InvalidContext { .. })));
    assert!(out[1].is_ok());
}

#[test]
fn relationship_contexts_are_checked_at_write() {
    let schema = dhow_schema::compile(SCHEMA).unwrap();
    let engine = Engine::new(Arc::new(schema));
    let refused = |text: &str, want: &str| {
        let r = parse_relationship(text).unwrap();
        match engine.validate_relationship(&r) {
            Err(Error::InvalidRelationship(m)) => assert!(m.contains(want), "{text}: {m}"),
            other => panic!("{text}: {other:?}"),
        }
    };
    refused(
        "document:d#viewer@user:tom[min_level:{\"requird\":3}]",
        "parameter `requird`: no such parameter",
    );
    refused(
        "document:d#viewer@user:tom[min_level:{\"required\":\"three\"}]",
        "parameter `required`: expected a value of type int",
    );
    refused(
        "document:d#banned@user:tom[on_network:{\"cidr\":7}]",
        "parameter `cidr`",
    );
    refused(
        &format!(
            "document:d#heavy@user:tom[many:{{\"items\":[{}]}}]",
            vec!["1"; 3000].join(",")
        ),
        "more than the limit of 4096 bytes",
    );
    // Under a raised limit the same relationship is accepted.
    let raised = engine.clone().with_max_relationship_context_bytes(1 << 20);
    let r = parse_relationship(&format!(
        "document:d#heavy@user:tom[many:{{\"items\":[{}]}}]",
        vec!["1"; 3000].join(",")
    ))
    .unwrap();
    raised.validate_relationship(&r).unwrap();
}

#[test]
fn an_expensive_comprehension_runs_out_of_the_caveat_budget() {
    let (engine, store) = setup(&["document:d#heavy@user:tom[many]"]);
    let items: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let big = ctx(&format!("{{\"items\":[{}]}}", items.join(",")));
    let mut opts = Options::now().with_context(big);
    opts.max_context_bytes = 1 << 20;
    let start = std::time::Instant::now();
    let err = engine
        .check(&store.latest(), &req("document:d#work@user:tom"), opts)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BudgetExhausted {
                budget: Budget::CaveatCost,
                limit: 10_000_000,
                at
            } if at.contains("caveat `many`")
        ),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
    // A small list fits.
    let mut opts = Options::now().with_context(ctx("{\"items\":[1,2,3]}"));
    opts.max_caveat_cost = 1_000;
    let r = engine
        .check(&store.latest(), &req("document:d#work@user:tom"), opts)
        .unwrap();
    assert_eq!(r.permissionship, Permissionship::Allowed);
}

#[test]
fn a_failing_expression_is_an_evaluation_error() {
    let schema = dhow_schema::compile(
        "definition user {}\ncaveat ratio(a int, b int) { a / b > 1 }\ndefinition doc { relation viewer: user with ratio }",
    )
    .unwrap();
    let engine = Engine::new(Arc::new(schema));
    let mut store = MemStore::new();
    store
        .write(&[WriteOp::Create(
            parse_relationship("doc:d#viewer@user:tom[ratio:{\"a\":1}]").unwrap(),
        )])
        .unwrap();
    let err = engine
        .check(
            &store.latest(),
            &req("doc:d#viewer@user:tom"),
            Options::now().with_context(ctx("{\"b\": 0}")),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::CaveatEvaluation { caveat, message } if caveat == "ratio" && message.contains("division by zero")),
        "{err}"
    );
}

#[test]
fn a_cycle_through_caveats_settles_to_the_least_fixpoint() {
    let (engine, store) = setup(&[
        "group:a#member@group:b#member[on_network:{\"cidr\":\"10.0.0.0/8\"}]",
        "group:b#member@group:a#member[on_network:{\"cidr\":\"10.0.0.0/8\"}]",
        "group:b#member@user:tom[min_level:{\"required\":3}]",
    ]);
    let c = |ctx_: &str| check(&engine, &store, "group:a#member@user:tom", ctx_);
    assert_eq!(c("{}"), conditional(&["ip", "level"]));
    assert_eq!(c("{\"ip\":\"10.0.0.1\"}"), conditional(&["level"]));
    assert_eq!(
        c("{\"ip\":\"10.0.0.1\",\"level\":4}"),
        Permissionship::Allowed
    );
    assert_eq!(c("{\"ip\":\"1.0.0.1\"}"), Permissionship::Denied);
    assert_eq!(
        check(&engine, &store, "group:a#member@user:ann", "{}"),
        Permissionship::Denied
    );
}
