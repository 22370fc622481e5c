//! LookupResources by pages: a page checks only the candidates it needs (after its cursor,
//! in id order, until it is full), so a page of one out of thousands of results costs a few
//! dispatches, not thousands; and the pages, followed cursor to cursor, are the whole result,
//! plain and delegated alike. Before, every page computed (and the server sorted) the whole
//! set, then cut it.

use std::sync::Arc;

use dhow_engine::{Budget, Engine, Error, LookupPage, Options};
use dhow_tuples::{parse_relationship, MemStore, ObjectRef, Subject, WriteOp};

const SCHEMA: &str = r#"
definition user {}
definition agent {
    relation delegator: user
    permission view = delegator
}
definition document {
    relation viewer: user
    relation banned: user
    permission view = viewer - banned
}
"#;

/// `n` documents user:u may view (every seventh also banned, so not all candidates are
/// results), and agent:a acting for u.
fn load(n: usize) -> (Engine, MemStore) {
    let engine = Engine::new(Arc::new(dhow_schema::compile(SCHEMA).expect("schema")));
    let mut rels = vec!["agent:a#delegator@user:u".to_string()];
    for i in 0..n {
        rels.push(format!("document:d{i:05}#viewer@user:u"));
        if i % 7 == 3 {
            rels.push(format!("document:d{i:05}#banned@user:u"));
        }
    }
    let mut store = MemStore::new();
    let ops: Vec<WriteOp> = rels
        .iter()
        .map(|r| WriteOp::Touch(parse_relationship(r).expect("relationship")))
        .collect();
    store.write(&ops).expect("write");
    (engine, store)
}

fn user() -> Subject {
    Subject::object("user", "u")
}

fn ids(found: &[dhow_engine::FoundResource]) -> Vec<String> {
    found.iter().map(|f| f.id.clone()).collect()
}

#[test]
fn a_small_page_checks_only_what_it_returns() {
    let (engine, store) = load(5_000);
    let reader = store.latest();
    let tight = || Options {
        max_dispatches: 200,
        ..Options::now()
    };
    // The whole lookup checks 5,000 candidates: over a budget of 200 dispatches.
    let whole = engine.lookup_found_resources(&reader, "document", "view", &user(), tight());
    assert!(
        matches!(
            whole,
            Err(Error::BudgetExhausted {
                budget: Budget::Dispatches,
                ..
            })
        ),
        "{whole:?}"
    );
    // A page of ten, from the start and from a cursor in the middle, fits in it.
    for after in [None, Some("d02500".to_string())] {
        let page = LookupPage {
            after: after.clone(),
            limit: 10,
        };
        let got = engine
            .lookup_found_resources_page(&reader, "document", "view", &user(), &page, tight())
            .expect("a page of ten fits the budget");
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|f| after.as_ref().is_none_or(|a| f.id > *a)));
        let delegated = engine
            .lookup_resources_delegated_page(
                &reader,
                "document",
                "view",
                &user(),
                &[ObjectRef::new("agent", "a")],
                &page,
                tight(),
            )
            .expect("a delegated page of ten fits the budget");
        assert_eq!(ids(&delegated), ids(&got));
    }
}

#[test]
fn pages_followed_cursor_to_cursor_are_the_whole_result() {
    let (engine, store) = load(300);
    let reader = store.latest();
    let whole = engine
        .lookup_found_resources(&reader, "document", "view", &user(), Options::now())
        .expect("lookup");
    assert_eq!(whole.len(), 300 - 300 / 7 - usize::from(300 % 7 > 3));
    let actors = [ObjectRef::new("agent", "a")];
    for limit in [1, 7, 64, 1000] {
        for delegated in [false, true] {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let page = LookupPage { after, limit };
                let p = if delegated {
                    engine.lookup_resources_delegated_page(
                        &reader,
                        "document",
                        "view",
                        &user(),
                        &actors,
                        &page,
                        Options::now(),
                    )
                } else {
                    engine.lookup_found_resources_page(
                        &reader,
                        "document",
                        "view",
                        &user(),
                        &page,
                        Options::now(),
                    )
                }
                .expect("page");
                assert!(p.len() <= limit);
                got.extend(p.iter().cloned());
                if p.len() < limit {
                    break;
                }
                after = p.last().map(|f| f.id.clone());
            }
            assert_eq!(got, whole, "limit {limit}, delegated {delegated}");
        }
    }
}
