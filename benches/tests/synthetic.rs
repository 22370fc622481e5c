//! Checks that the synthetic generator gives the requested size, is deterministic, and that the
//! designated checks answer as the benchmarks claim (allowed deep, denied, direct hit).

use std::sync::Arc;

use dhow_benches::{allowed_deep, denied, direct_hit, synthetic, synthetic_graph, Synthetic};
use dhow_engine::{Engine, Options};

fn engine(s: &Synthetic) -> Engine {
    Engine::new(Arc::new(
        dhow_schema::compile(&s.schema).expect("synthetic schema compiles"),
    ))
}

#[test]
fn sizes_are_exact_and_deterministic() {
    for n in [2_000, 10_000, 100_000] {
        let (schema, rels) = synthetic(n);
        assert_eq!(rels.len(), n);
        assert!(!schema.is_empty());
        assert_eq!(synthetic(n).1, rels, "same size, same data");
    }
}

#[test]
fn designated_checks_answer_as_claimed() {
    for n in [2_000, 100_000] {
        let s = synthetic_graph(n);
        let store = s.store();
        let reader = store.latest();
        let e = engine(&s);
        let check = |req| {
            e.check(&reader, &req, Options::now())
                .expect("check succeeds")
                .allowed
        };
        assert!(check(allowed_deep()), "deep path allowed at n={n}");
        assert!(!check(denied()), "outsider denied at n={n}");
        assert!(check(direct_hit()), "owner allowed at n={n}");
        let explained = e
            .check(&reader, &allowed_deep(), Options::now().with_explain())
            .unwrap();
        assert!(explained.allowed && explained.proof.is_some());
    }
}

#[test]
fn deep_path_needs_every_level() {
    // Removing the deep user's only membership must deny the deep check.
    let s = synthetic_graph(10_000);
    let mut store = s.store();
    let membership = s
        .relationships
        .iter()
        .find(|r| r.subject == dhow_benches::deep_user())
        .expect("the deep user has a membership")
        .clone();
    assert_eq!(
        s.relationships
            .iter()
            .filter(|r| r.subject == dhow_benches::deep_user())
            .count(),
        1,
        "the deep user is in exactly one group"
    );
    store
        .write(&[dhow_tuples::WriteOp::Delete(membership)])
        .unwrap();
    let reader = store.latest();
    let allowed = engine(&s)
        .check(&reader, &allowed_deep(), Options::now())
        .unwrap()
        .allowed;
    assert!(!allowed);
}

#[test]
fn realistic_schema_compiles() {
    dhow_schema::compile(dhow_benches::REALISTIC_SCHEMA).expect("realistic schema compiles");
    assert!((35..=50).contains(&dhow_benches::REALISTIC_SCHEMA.lines().count()));
}
