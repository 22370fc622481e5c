//! Bounded evaluation against hostile input: schemas that nest deeply across permissions,
//! cliques of groups, exponential expansions. Every API returns an answer or a budget error
//! (never a crash, even on a 2 MiB thread in a debug build), cycles cost polynomial work
//! (asserted through the dispatch budget, not the clock), and a cancelled request stops.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dhow_engine::{Budget, Cancel, CheckRequest, Engine, Error, Options};
use dhow_tuples::{parse_relationship, MemStore, ObjectRef, Subject, WriteOp};

/// The smallest stack a caller runs the engine on (tokio's blocking pool, test threads).
const SMALL_STACK: usize = 2 * 1024 * 1024;

fn load(schema: &str, rels: &[String]) -> (Engine, MemStore) {
    let engine = Engine::new(Arc::new(
        dhow_schema::compile(schema).expect("schema compiles"),
    ));
    let mut store = MemStore::new();
    let ops: Vec<WriteOp> = rels
        .iter()
        .map(|r| {
            let r = parse_relationship(r).expect("relationship");
            engine.validate_relationship(&r).expect("valid");
            WriteOp::Touch(r)
        })
        .collect();
    store.write(&ops).expect("write");
    (engine, store)
}

/// Runs `f` on a thread with a 2 MiB stack and returns what it returned (a stack overflow
/// aborts the whole test binary, so getting here at all is the point).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic")
}

/// `permission ppp{i} = ppp{i+1} - xxx - xxx ...` with `terms` terms, `perms` permissions.
fn hostile_schema(perms: usize, terms: usize) -> String {
    let mut s = String::from(
        "definition user {}\ndefinition doc {\n  relation xxx: user\n  relation base: user\n",
    );
    for i in 0..perms {
        let first = if i + 1 == perms {
            "base".to_string()
        } else {
            format!("ppp{}", i + 1)
        };
        let rest = vec!["xxx"; terms - 1].join(" - ");
        s.push_str(&format!("  permission ppp{i} = {first} - {rest}\n"));
    }
    s.push_str("}\n");
    s
}

/// Every API over the hostile schema, with `opts`: each must answer or run out of a budget.
fn every_api(
    engine: &Engine,
    store: &MemStore,
    opts: &Options,
) -> Vec<(&'static str, Result<String, Error>)> {
    let reader = store.latest();
    let doc = ObjectRef::new("doc", "d");
    let user = Subject::object("user", "u");
    let req = CheckRequest::new(doc.clone(), "ppp0", user.clone());
    let out = vec![
        (
            "check",
            engine
                .check(&reader, &req, opts.clone().with_explain())
                .map(|r| r.allowed.to_string()),
        ),
        (
            "check_bulk",
            engine
                .check_bulk(&reader, &[req.clone(), req.clone()], opts.clone())
                .into_iter()
                .next()
                .expect("one result")
                .map(|r| r.allowed.to_string()),
        ),
        (
            "lookup_resources",
            engine
                .lookup_resources(&reader, "doc", "ppp0", &user, opts.clone())
                .map(|r| format!("{r:?}")),
        ),
        (
            "lookup_subjects",
            engine
                .lookup_subjects(&reader, &doc, "ppp0", "user", None, opts.clone())
                .map(|r| format!("{} subjects", r.len())),
        ),
        (
            "expand",
            engine
                .expand(&reader, &doc, "ppp0", opts.clone())
                .map(|t| t.relation),
        ),
    ];
    out
}

fn assert_answer_or_budget(results: &[(&str, Result<String, Error>)], want_answer: bool) {
    for (api, r) in results {
        match r {
            Ok(_) => assert!(want_answer, "{api}: answered where a budget should run out"),
            Err(Error::BudgetExhausted { budget, at, .. }) => {
                assert!(!want_answer, "{api}: {budget} budget ran out at {at}");
            }
            Err(e) => panic!("{api}: unexpected error {e}"),
        }
    }
}

#[test]
fn deep_rewrites_across_permissions_never_overflow_the_stack() {
    for (perms, terms) in [(6, 120), (48, 120), (500, 120)] {
        let schema = hostile_schema(perms, terms);
        let (engine, store) = load(&schema, &["doc:d#base@user:u".to_string()]);
        let results = on_small_stack({
            let (engine, store) = (engine.clone(), store.clone());
            move || every_api(&engine, &store, &Options::now())
        });
        // The default depth budget stops it, naming the budget and where.
        assert_answer_or_budget(&results, false);
        let (_, first) = &results[0];
        let msg = first.as_ref().unwrap_err().to_string();
        assert!(
            msg.contains("depth budget") && msg.contains("doc:d"),
            "{msg}"
        );
    }
}

#[test]
fn results_as_deep_as_the_ceiling_are_safe_on_a_small_stack() {
    // Two permissions of 120 terms: about 243 steps, within the ceiling; every API answers,
    // and the explained proof (one level per step) is cloned, printed and dropped.
    let schema = hostile_schema(2, 120);
    let (engine, store) = load(&schema, &["doc:d#base@user:u".to_string()]);
    let results = on_small_stack({
        let (engine, store) = (engine.clone(), store.clone());
        move || {
            let opts = Options {
                max_depth: u32::MAX,
                ..Options::now()
            };
            every_api(&engine, &store, &opts)
        }
    });
    assert_answer_or_budget(&results, true);
    assert_eq!(results[0].1.as_ref().unwrap(), "true");
    // Three permissions are past the ceiling, whatever the options ask for.
    let schema = hostile_schema(3, 120);
    let (engine, store) = load(&schema, &["doc:d#base@user:u".to_string()]);
    let results = on_small_stack(move || {
        let opts = Options {
            max_depth: u32::MAX,
            ..Options::now()
        };
        every_api(&engine, &store, &opts)
    });
    assert_answer_or_budget(&results, false);
    let msg = results[0].1.as_ref().unwrap_err().to_string();
    assert!(msg.contains("depth budget of 250"), "{msg}");

    // 240 nested groups: two proof levels per step.
    let mut rels: Vec<String> = (0..240)
        .map(|i| format!("group:g{i}#member@group:g{}#member", i + 1))
        .collect();
    rels.push("group:g240#member@user:deep".to_string());
    let (engine, store) = load(
        "definition user {}\ndefinition group { relation member: user | group#member }",
        &rels,
    );
    let text = on_small_stack(move || {
        let opts = Options {
            max_depth: 250,
            ..Options::now()
        }
        .with_explain();
        let req = CheckRequest::new(
            ObjectRef::new("group", "g0"),
            "member",
            Subject::object("user", "deep"),
        );
        let r = engine.check(&store.latest(), &req, opts).expect("check");
        assert!(r.allowed);
        let proof = r.proof.expect("proof");
        let copy = proof.clone();
        assert_eq!(copy.relationships().len(), 241);
        let text = format!("{proof}");
        drop(copy);
        drop(proof);
        text
    });
    assert!(text.contains("user:deep"), "{text}");
}

/// `n` groups, each a member of all the others.
fn clique(n: usize, member: Option<usize>) -> (Engine, MemStore) {
    let mut rels = Vec::new();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                rels.push(format!("group:g{i}#member@group:g{j}#member"));
            }
        }
        rels.push(format!("group:g{i}#member@user:own{i}"));
    }
    if let Some(m) = member {
        rels.push(format!("group:g{m}#member@user:alice"));
    }
    load(
        "definition user {}\ndefinition group { relation member: user | group#member }\n\
         definition doc { relation viewer: group#member\n permission view = viewer }",
        &rels,
    )
}

fn check_with(
    engine: &Engine,
    store: &MemStore,
    rel: &str,
    subject: &str,
    opts: Options,
) -> Result<bool, Error> {
    let (res, perm) = rel.split_once('#').expect("#");
    let (t, id) = res.split_once(':').expect(":");
    let req = CheckRequest::new(
        ObjectRef::new(t, id),
        perm,
        dhow_tuples::parse_subject(subject).expect("subject"),
    );
    engine.check(&store.latest(), &req, opts).map(|r| r.allowed)
}

#[test]
fn a_clique_of_groups_costs_linear_work_for_a_non_member() {
    for n in [10, 20, 30] {
        let (engine, store) = clique(n, None);
        // Each group is evaluated once: a dispatch and three reads. (Before, a result touched
        // by a cycle cut was never kept: about 10× more work per extra group, 8.7 s for 10.)
        let opts = Options {
            max_dispatches: 4 * n as u64 + 4,
            ..Options::now()
        };
        let started = Instant::now();
        let allowed = check_with(
            &engine,
            &store,
            "group:g0#member",
            "user:mallory",
            opts.clone(),
        );
        assert_eq!(allowed, Ok(false), "{n} groups");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{n} groups: {:?}",
            started.elapsed()
        );
        // Members are found through any path, and every group's own user is in every group.
        let (engine, store) = clique(n, Some(n - 1));
        assert_eq!(
            check_with(
                &engine,
                &store,
                "group:g0#member",
                "user:alice",
                Options::now()
            ),
            Ok(true)
        );
        assert_eq!(
            check_with(
                &engine,
                &store,
                "group:g3#member",
                "user:own7",
                Options::now()
            ),
            Ok(true)
        );
        let reqs: Vec<CheckRequest> = (0..n)
            .map(|i| {
                CheckRequest::new(
                    ObjectRef::new("group", format!("g{i}")),
                    "member",
                    Subject::object("user", "nobody"),
                )
            })
            .collect();
        // CheckBulk shares the memo: n checks cost what one did.
        let bulk = engine.check_bulk(&store.latest(), &reqs, opts);
        assert!(
            bulk.iter().all(|r| r.as_ref().is_ok_and(|r| !r.allowed)),
            "{bulk:?}"
        );
    }
}

#[test]
fn lookups_over_a_clique_cost_linear_work() {
    for n in [10, 20, 30] {
        let (engine, store) = clique(n, None);
        let reader = store.latest();
        let n64 = n as u64;
        // Linear too: three passes over the clique (the second finds what the first cut, the
        // third confirms it).
        let opts = Options {
            max_dispatches: 8 * n64,
            ..Options::now()
        };
        let subjects = engine
            .lookup_subjects(
                &reader,
                &ObjectRef::new("group", "g0"),
                "member",
                "user",
                None,
                opts.clone(),
            )
            .expect("lookup_subjects");
        assert_eq!(subjects.len(), n, "every group's own user");
        let groups = engine
            .lookup_resources(
                &reader,
                "group",
                "member",
                &Subject::object("user", "own0"),
                opts.clone(),
            )
            .expect("lookup_resources");
        assert_eq!(groups.len(), n);
        let tree = engine
            .expand(&reader, &ObjectRef::new("group", "g0"), "member", opts)
            .expect("expand");
        assert_eq!(tree.relation, "member");
    }
}

#[test]
fn the_dispatch_budget_names_where_it_ran_out() {
    let (engine, store) = clique(10, None);
    let opts = Options {
        max_dispatches: 7,
        ..Options::now()
    };
    let err = check_with(&engine, &store, "group:g0#member", "user:mallory", opts).unwrap_err();
    match &err {
        Error::BudgetExhausted {
            budget: Budget::Dispatches,
            limit: 7,
            at,
        } => assert!(at.starts_with("group:g"), "{at}"),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("dispatches budget of 7"), "{err}");
}

/// `p{i} = p{i+1} + p{i+1}`: an expansion with 2^40 leaves, which only a budget or a
/// cancellation ends.
fn exponential() -> (Engine, MemStore) {
    let mut schema = String::from("definition user {}\ndefinition doc {\n  relation rrr: user\n");
    for i in 0..40 {
        schema.push_str(&format!(
            "  permission ppp{i} = ppp{} + ppp{}\n",
            i + 1,
            i + 1
        ));
    }
    schema.push_str("  permission ppp40 = rrr\n}\n");
    load(&schema, &["doc:d#rrr@user:u".to_string()])
}

#[test]
fn a_cancelled_request_stops() {
    let (engine, store) = exponential();
    let cancel = Cancel::new();
    let opts = Options {
        max_depth: 1_000,
        // A backstop: without cancellation this runs for minutes, then fails differently.
        max_dispatches: 500_000_000,
        ..Options::now()
    }
    .with_cancel(cancel.clone());
    let worker = thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let started = Instant::now();
            let r = engine.expand(&store.latest(), &ObjectRef::new("doc", "d"), "ppp0", opts);
            (r.map(|t| t.relation), started.elapsed())
        })
        .expect("spawn");
    thread::sleep(Duration::from_millis(100));
    let set_at = Instant::now();
    cancel.cancel();
    let (result, ran) = worker.join().expect("no panic");
    assert_eq!(result, Err(Error::Cancelled));
    eprintln!(
        "ran {ran:?}; stopped {:?} after the flag was set",
        set_at.elapsed()
    );

    // Set before the call: every API stops at once.
    let (engine, store) = exponential();
    let cancel = Cancel::new();
    cancel.cancel();
    let opts = Options::now().with_cancel(cancel);
    for (api, r) in every_api_named(&engine, &store, &opts) {
        assert_eq!(r, Err(Error::Cancelled), "{api}");
    }
}

fn every_api_named(
    engine: &Engine,
    store: &MemStore,
    opts: &Options,
) -> Vec<(&'static str, Result<(), Error>)> {
    let reader = store.latest();
    let doc = ObjectRef::new("doc", "d");
    let user = Subject::object("user", "u");
    let req = CheckRequest::new(doc.clone(), "ppp0", user.clone());
    vec![
        (
            "check",
            engine.check(&reader, &req, opts.clone()).map(|_| ()),
        ),
        (
            "check_bulk",
            engine
                .check_bulk(&reader, std::slice::from_ref(&req), opts.clone())
                .remove(0)
                .map(|_| ()),
        ),
        (
            "lookup_resources",
            engine
                .lookup_resources(&reader, "doc", "ppp0", &user, opts.clone())
                .map(|_| ()),
        ),
        (
            "lookup_subjects",
            engine
                .lookup_subjects(&reader, &doc, "ppp0", "user", None, opts.clone())
                .map(|_| ()),
        ),
        (
            "expand",
            engine
                .expand(&reader, &doc, "ppp0", opts.clone())
                .map(|_| ()),
        ),
    ]
}

#[test]
fn an_exponential_expansion_runs_out_of_its_budget() {
    let (engine, store) = exponential();
    let opts = Options {
        max_depth: 1_000,
        ..Options::now()
    };
    let r = on_small_stack(move || {
        engine
            .expand(&store.latest(), &ObjectRef::new("doc", "d"), "ppp0", opts)
            .map(|t| t.relation)
    });
    assert!(
        matches!(
            r,
            Err(Error::BudgetExhausted {
                budget: Budget::Dispatches,
                ..
            })
        ),
        "{r:?}"
    );
}
