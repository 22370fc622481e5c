//! Criterion micro-benchmarks of the engine on the synthetic graph of about 100k relationships
//! (check allowed through the deepest path, denied, direct hit, with explain, check_bulk of 100,
//! lookup_resources for one user), of caveats (a check through one and through three caveated
//! relationships against the same without caveats), of delegated checks (an agent chain of 1,
//! 3 and 8 hops against the plain check, explain on and off) and of schema compilation (a
//! realistic schema and every schema of the SpiceDB conformance suite).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dhow_benches::{
    allowed_deep, denied, direct_hit, synthetic_graph, target_owner, CountingReader,
    REALISTIC_SCHEMA,
};
use dhow_engine::{Engine, Options};

/// Size of the synthetic graph.
const RELATIONSHIPS: usize = 100_000;

fn engine_benches(c: &mut Criterion) {
    let s = synthetic_graph(RELATIONSHIPS);
    let store = s.store();
    let reader = store.latest();
    let schema = dhow_schema::compile(&s.schema).expect("synthetic schema compiles");
    let engine = Engine::new(Arc::new(schema));

    let mut g = c.benchmark_group("check");
    for (name, req, opts) in [
        ("allowed_deep", allowed_deep(), Options::now()),
        ("denied", denied(), Options::now()),
        ("direct_hit", direct_hit(), Options::now()),
        (
            "allowed_deep_explain",
            allowed_deep(),
            Options::now().with_explain(),
        ),
    ] {
        let expected = name != "denied";
        let counting = CountingReader::new(reader);
        let got = engine
            .check(&counting, &req, opts.clone())
            .expect("check succeeds")
            .allowed;
        report(&format!("check/{name}"), &counting);
        assert_eq!(
            got,
            expected,
            "{name} must be {}",
            if expected { "allowed" } else { "denied" }
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                engine
                    .check(&reader, black_box(&req), opts.clone())
                    .unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("check_bulk");
    let reqs = s.bulk_requests(100);
    let counting = CountingReader::new(reader);
    let allowed = engine
        .check_bulk(&counting, &reqs, Options::now())
        .into_iter()
        .filter(|r| r.as_ref().expect("check succeeds").allowed)
        .count();
    eprintln!("check_bulk/100: {allowed} of 100 allowed");
    report("check_bulk/100", &counting);
    g.throughput(Throughput::Elements(reqs.len() as u64));
    g.bench_function("100", |b| {
        b.iter(|| engine.check_bulk(&reader, black_box(&reqs), Options::now()))
    });
    g.finish();

    let mut g = c.benchmark_group("lookup_resources");
    let user = target_owner();
    let counting = CountingReader::new(reader);
    let found = engine
        .lookup_resources(&counting, "document", "view", &user, Options::now())
        .unwrap();
    report("lookup_resources/one_user", &counting);
    eprintln!(
        "lookup_resources/one_user: {user} views {} documents",
        found.len()
    );
    g.bench_function("one_user", |b| {
        b.iter(|| {
            engine
                .lookup_resources(
                    &reader,
                    "document",
                    "view",
                    black_box(&user),
                    Options::now(),
                )
                .unwrap()
        })
    });
    g.finish();
}

/// The caveat benchmark's schema: every relation takes plain and caveated subjects.
const CAVEAT_SCHEMA: &str = r#"
definition user {}
caveat level(level int, required int) {
    level >= required
}
definition group {
    relation member: user | user with level | group#member | group#member with level
}
definition document {
    relation viewer: user | user with level | group#member | group#member with level
    permission view = viewer
}
"#;

/// A check through one and through three caveated relationships, against the same paths
/// without caveats: what evaluating a caveat (parse the relationship's context, convert
/// values, run the expression, merge with the request's context) adds to a check.
fn caveat_benches(c: &mut Criterion) {
    let schema = dhow_schema::compile(CAVEAT_SCHEMA).expect("caveat schema compiles");
    let engine = Engine::new(Arc::new(schema));
    let cav = r#"[level:{"required":1}]"#;
    let one = |caveat: &str| vec![format!("document:d#viewer@user:tom{caveat}")];
    let three = |caveat: &str| {
        vec![
            format!("document:d#viewer@group:a#member{caveat}"),
            format!("group:a#member@group:b#member{caveat}"),
            format!("group:b#member@user:tom{caveat}"),
        ]
    };
    let context = dhow_engine::CaveatContext::from_json(r#"{"level": 5}"#).expect("context");
    let req = dhow_engine::CheckRequest::new(
        dhow_tuples::ObjectRef::new("document", "d"),
        "view",
        dhow_tuples::Subject::object("user", "tom"),
    );
    let mut g = c.benchmark_group("caveats");
    for (name, rels) in [
        ("one_plain", one("")),
        ("one_caveated", one(cav)),
        ("three_plain", three("")),
        ("three_caveated", three(cav)),
    ] {
        let store = load(&engine, &rels);
        let reader = store.latest();
        let opts = Options::now().with_context(context.clone());
        assert!(
            engine
                .check(&reader, &req, opts.clone())
                .expect("check")
                .allowed,
            "{name} must be allowed"
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                engine
                    .check(&reader, black_box(&req), opts.clone())
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// The agents example's schema (docs/agents.md).
const AGENTS_SCHEMA: &str = include_str!("../../examples/agents/schema.zed");

/// A delegated check through a chain of 1, 3 and 8 agents against the plain check of the
/// user, each without and with explain (a proof per hop): what a hop costs.
fn delegation_benches(c: &mut Criterion) {
    use dhow_engine::{CheckRequest, DelegatedCheck};
    use dhow_tuples::{ObjectRef, Subject};
    let schema = dhow_schema::compile(AGENTS_SCHEMA).expect("agents schema compiles");
    let engine = Engine::new(Arc::new(schema));
    // document:d in folder:f, which user:u may view; agent:a1 acts for u, a{i+1} for a{i}.
    let mut rels = vec![
        "document:d#folder@folder:f".to_string(),
        "folder:f#viewer@user:u".to_string(),
        "agent:a1#delegator@user:u".to_string(),
    ];
    for i in 1..8 {
        rels.push(format!("agent:a{}#delegator@agent:a{i}", i + 1));
    }
    let store = load(&engine, &rels);
    let reader = store.latest();
    let check = CheckRequest::new(
        ObjectRef::new("document", "d"),
        "view",
        Subject::object("user", "u"),
    );
    // Outermost first: a{hops} made the request, a1 acts for the user.
    let chain = |hops: usize| -> DelegatedCheck {
        DelegatedCheck::new(
            check.clone(),
            (1..=hops)
                .rev()
                .map(|i| ObjectRef::new("agent", format!("a{i}")))
                .collect(),
        )
    };
    let mut g = c.benchmark_group("delegation");
    for hops in [0, 1, 3, 8] {
        let req = chain(hops);
        for (explain, opts) in [
            (false, Options::now()),
            (true, Options::now().with_explain()),
        ] {
            let got = engine
                .check_delegated(&reader, &req, opts.clone())
                .expect("delegated check");
            assert!(got.allowed, "{hops} hops must be allowed");
            assert_eq!(got.actor_proofs.len(), if explain { hops } else { 0 });
            let name = match (hops, explain) {
                (0, false) => "plain".to_string(),
                (0, true) => "plain_explain".to_string(),
                (h, false) => format!("hops_{h}"),
                (h, true) => format!("hops_{h}_explain"),
            };
            g.bench_function(name, |b| {
                b.iter(|| {
                    engine
                        .check_delegated(&reader, black_box(&req), opts.clone())
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

/// An in-memory store of `rels` (text form), each checked against the engine's schema.
fn load(engine: &Engine, rels: &[String]) -> dhow_tuples::MemStore {
    let mut store = dhow_tuples::MemStore::new();
    let ops: Vec<dhow_tuples::WriteOp> = rels
        .iter()
        .map(|r| {
            let r = dhow_tuples::parse_relationship(r).expect("relationship parses");
            engine.validate_relationship(&r).expect("relationship fits");
            dhow_tuples::WriteOp::Touch(r)
        })
        .collect();
    store.write(&ops).expect("write");
    store
}

/// Prints the reader work one engine call did, once, outside timing.
fn report<R>(name: &str, r: &CountingReader<R>) {
    eprintln!(
        "{name}: {} finds, {} scans returning {} relationships",
        r.finds.get(),
        r.scans.get(),
        r.returned.get()
    );
}

/// The `schema:` text of every conformance file, sorted by file name.
fn conformance_schemas() -> Vec<(String, String)> {
    let dir = PathBuf::from(manifest_dir()).join("../../shared/conformance/spicedb");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable conformance file");
            let doc: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
            let schema = doc.get("schema")?.as_str()?.to_string();
            Some((p.file_name()?.to_string_lossy().into_owned(), schema))
        })
        .collect()
}

fn schema_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("schema_compile");
    dhow_schema::compile(REALISTIC_SCHEMA).expect("realistic schema compiles");
    g.bench_function("realistic_40_lines", |b| {
        b.iter(|| dhow_schema::compile(black_box(REALISTIC_SCHEMA)))
    });

    let schemas = conformance_schemas();
    let ok = schemas
        .iter()
        .filter(|(_, s)| dhow_schema::compile(s).is_ok())
        .count();
    eprintln!(
        "schema_compile/conformance_all: {} schemas, {ok} compile",
        schemas.len()
    );
    g.throughput(Throughput::Elements(schemas.len() as u64));
    g.bench_function("conformance_all", |b| {
        b.iter(|| {
            for (_, s) in &schemas {
                let _ = black_box(dhow_schema::compile(black_box(s)));
            }
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = engine_benches, caveat_benches, delegation_benches, schema_benches
}
criterion_main!(benches);

/// The package's directory: cargo's value at run time (right even when a build from another
/// checkout shares the target dir), else the one compiled in.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
