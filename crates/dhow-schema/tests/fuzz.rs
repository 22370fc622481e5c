//! Property tests: the compiler never panics (on arbitrary strings, token soup, and mutated valid
//! schemas), and whatever compiles round-trips: `compile(print(s)) == s`. Randomly generated
//! valid schemas must compile and round-trip too.

use std::path::Path;

use dhow_schema::{compile, Schema};
use proptest::prelude::*;

/// Valid schemas to mutate: the `ok_*` golden inputs plus a few inline ones.
fn seeds() -> Vec<String> {
    let dir = Path::new(&manifest_dir()).join("tests/golden");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()) == Some("zed")
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("ok_"))
                })
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.push(
        "use expiration\ncaveat cav(a int) { a > {'x': 1}['x'] }\ndefinition user {}\n\
         definition doc {\n  relation parent: doc\n  relation viewer: user with cav and expiration | user:*\n  \
         permission view = viewer + parent.all(view) - (viewer & nil)\n}\n"
            .to_string(),
    );
    out
}

/// Checks the round-trip property for one compiled schema.
fn assert_round_trip(schema: &Schema, origin: &str) {
    let printed = schema.to_string();
    match compile(&printed) {
        Ok(again) => {
            assert_eq!(
                &again, schema,
                "printed schema compiles differently\norigin:\n{origin}\nprinted:\n{printed}"
            );
            assert_eq!(again.to_string(), printed, "printing is not a fixed point");
        }
        Err(e) => {
            panic!("printed schema does not compile: {e}\norigin:\n{origin}\nprinted:\n{printed}")
        }
    }
}

fn check_input(src: &str) {
    match compile(src) {
        Ok(schema) => assert_round_trip(&schema, src),
        Err(e) => {
            // Errors are well-formed: non-empty, 1-based positions inside the text.
            let lines = src.split('\n').count().max(1) + src.matches('\r').count();
            for d in e.diagnostics() {
                assert!(d.line >= 1 && d.column >= 1, "{d}");
                assert!(
                    d.line <= lines,
                    "line {} beyond {} lines: {d}",
                    d.line,
                    lines
                );
                assert!(d.offset <= src.len());
                assert!(!d.message.is_empty());
            }
            assert!(!e.to_string().is_empty());
        }
    }
}

const TOKENS: &[&str] = &[
    " ",
    " ",
    " ",
    "\n",
    "\n",
    "\t",
    "\r\n",
    "{",
    "}",
    "(",
    ")",
    "<",
    ">",
    ",",
    "->",
    ".",
    ".any(",
    ".all(",
    "+",
    "-",
    "&",
    "|",
    "#",
    ":",
    ":*",
    "*",
    "=",
    ";",
    "...",
    "/",
    "//",
    "/*",
    "*/",
    "/**",
    "///",
    "\"",
    "'",
    "with",
    "and",
    "expiration",
    "nil",
    "any",
    "all",
    "use",
    "relation",
    "permission",
    "definition",
    "caveat",
    "user",
    "doc",
    "viewer",
    "view",
    "parent",
    "org/user",
    "int",
    "list<string>",
    "map<any>",
    "é",
    "@",
    "Z",
    "ab",
    "x1_",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|t| t.concat())
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: &'static str },
    Duplicate { from: usize, len: usize, to: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::sample::select(TOKENS))
            .prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), 1usize..40, any::<usize>())
            .prop_map(|(from, len, to)| Mutation::Duplicate { from, len, to }),
    ]
}

/// The nearest char boundary at or below `i % (len + 1)`.
fn boundary(s: &str, i: usize) -> usize {
    let mut i = i % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(src: &str, mutations: &[Mutation]) -> String {
    let mut s = src.to_string();
    for m in mutations {
        match *m {
            Mutation::Delete { at, len } => {
                let a = boundary(&s, at);
                let b = boundary(&s, a.saturating_add(len).min(s.len()));
                if b > a {
                    s.replace_range(a..b, "");
                }
            }
            Mutation::Insert { at, token } => {
                let a = boundary(&s, at);
                s.insert_str(a, token);
            }
            Mutation::Duplicate { from, len, to } => {
                let a = boundary(&s, from);
                let b = boundary(&s, a.saturating_add(len).min(s.len()));
                let piece = s[a..b].to_string();
                let t = boundary(&s, to);
                s.insert_str(t, &piece);
            }
        }
    }
    s
}

/// A tiny deterministic PRNG (xorshift64*), so one `u64` drives a whole generated schema.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len()))
        }
    }
}

struct GenDef {
    name: String,
    /// `relN`: never admit wildcards, so they may be used in subject sets and arrows.
    rels: Vec<(String, Vec<String>)>,
    /// `pubN`: may admit wildcards; never used in subject sets or arrows.
    pubs: Vec<(String, Vec<String>)>,
    perms: Vec<String>,
    /// Type index of each allowed type of each `relN`, for arrows.
    rel_types: Vec<Vec<usize>>,
}

/// Generates a valid schema from a seed: random definitions, relations (objects, wildcards,
/// subject sets, caveats, expiration), permissions over every operator with random
/// parenthesization, docs, comments and separators, members in random order.
fn generate(seed: u64) -> String {
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
    let use_expiration = rng.chance(40);
    let n_caveats = rng.below(3);
    let n_defs = 1 + rng.below(5);
    let mut out = String::new();
    if use_expiration {
        out.push_str("use expiration\n\n");
    }
    let caveats: Vec<String> = (0..n_caveats).map(|i| format!("cav{i}")).collect();
    for c in &caveats {
        out.push_str(&format!(
            "caveat {c}(num int, names list<string>) {{\n  num > 1 && \"}}\" in names\n}}\n\n"
        ));
    }
    // Phase 1: names.
    let mut defs: Vec<GenDef> = (0..n_defs)
        .map(|i| {
            let name = if rng.chance(30) {
                format!("org/team_{i}/ty{i}")
            } else {
                format!("ty{i}")
            };
            GenDef {
                name,
                rels: (0..rng.below(4))
                    .map(|j| (format!("rel{j}"), Vec::new()))
                    .collect(),
                pubs: (0..rng.below(2))
                    .map(|j| (format!("pub{j}"), Vec::new()))
                    .collect(),
                perms: (0..rng.below(5)).map(|j| format!("prm{j}")).collect(),
                rel_types: Vec::new(),
            }
        })
        .collect();
    // Phase 2: allowed types.
    let suffix = |rng: &mut Rng| -> String {
        let cav = if !caveats.is_empty() && rng.chance(25) {
            rng.pick(&caveats).cloned()
        } else {
            None
        };
        let exp = use_expiration && rng.chance(30);
        match (cav, exp) {
            (Some(c), true) => format!(" with {c} and expiration"),
            (Some(c), false) => format!(" with {c}"),
            (None, true) => " with expiration".to_string(),
            (None, false) => String::new(),
        }
    };
    for d in 0..n_defs {
        for r in 0..defs[d].rels.len() {
            let mut types = Vec::new();
            let mut type_idx = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let t = rng.below(n_defs);
                let target_rels: Vec<String> =
                    defs[t].rels.iter().map(|(n, _)| n.clone()).collect();
                let mut text = defs[t].name.clone();
                if !target_rels.is_empty() && rng.chance(30) {
                    text.push('#');
                    text.push_str(rng.pick(&target_rels).map_or("", |s| s.as_str()));
                } else if rng.chance(10) {
                    text.push_str("#...");
                }
                text.push_str(&suffix(&mut rng));
                // `user` and `user#...` are the same type.
                let key = text.replace("#...", "");
                if !types.iter().any(|t: &String| t.replace("#...", "") == key) {
                    types.push(text);
                    type_idx.push(t);
                }
            }
            defs[d].rels[r].1 = types;
            defs[d].rel_types.push(type_idx);
        }
        for p in 0..defs[d].pubs.len() {
            let mut types: Vec<String> = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let t = rng.below(n_defs);
                let mut text = defs[t].name.clone();
                if rng.chance(50) {
                    text.push_str(":*");
                }
                text.push_str(&suffix(&mut rng));
                if !types.contains(&text) {
                    types.push(text);
                }
            }
            defs[d].pubs[p].1 = types;
        }
    }
    // Phase 3: text.
    for d in 0..n_defs {
        let def = &defs[d];
        let mut members: Vec<String> = Vec::new();
        for (name, types) in def.rels.iter().chain(def.pubs.iter()) {
            let sep = if rng.chance(20) {
                " |\n        "
            } else {
                " | "
            };
            members.push(format!("relation {name}: {}", types.join(sep)));
        }
        for (k, perm) in def.perms.iter().enumerate() {
            let expr = gen_expr(&mut rng, &defs, d, k, 3);
            members.push(format!("permission {perm} = {expr}"));
        }
        // Shuffle.
        for i in (1..members.len()).rev() {
            let j = rng.below(i + 1);
            members.swap(i, j);
        }
        if rng.chance(30) {
            out.push_str(&format!("/** Definition {d}. */\n"));
        }
        out.push_str(&format!("definition {} {{\n", def.name));
        for m in members {
            if rng.chance(20) {
                out.push_str("    /// Member doc\n    /// second line\n");
            }
            if rng.chance(10) {
                out.push_str("    // a comment\n");
            }
            let end = if rng.chance(15) { ";\n" } else { "\n" };
            out.push_str(&format!("    {m}{end}"));
        }
        out.push_str("}\n\n");
    }
    out
}

/// A random expression for permission `k` of definition `d`: it may name relations, earlier
/// permissions (so no cycles) and arrows over `relN` towards members of their types.
fn gen_expr(rng: &mut Rng, defs: &[GenDef], d: usize, k: usize, depth: usize) -> String {
    if depth == 0 || rng.chance(40) {
        return gen_leaf(rng, defs, d, k);
    }
    let ops = [" + ", " & ", " - "];
    let op = ops[rng.below(3)];
    let n = 2 + rng.below(2);
    let parts: Vec<String> = (0..n)
        .map(|_| gen_expr(rng, defs, d, k, depth - 1))
        .collect();
    let joined = parts.join(op);
    if rng.chance(50) {
        format!("({joined})")
    } else {
        joined
    }
}

fn gen_leaf(rng: &mut Rng, defs: &[GenDef], d: usize, k: usize) -> String {
    let def = &defs[d];
    let choice = rng.below(10);
    if choice < 4 {
        // An arrow over a relN with at least one type that has members.
        let candidates: Vec<usize> = (0..def.rels.len())
            .filter(|&r| def.rel_types.get(r).is_some_and(|t| !t.is_empty()))
            .collect();
        if let Some(&r) = rng.pick(&candidates) {
            let t = *rng.pick(&def.rel_types[r]).unwrap_or(&0);
            let target = &defs[t];
            let names: Vec<&String> = target
                .rels
                .iter()
                .map(|(n, _)| n)
                .chain(target.pubs.iter().map(|(n, _)| n))
                .chain(target.perms.iter())
                .collect();
            if let Some(name) = rng.pick(&names) {
                let rel = &def.rels[r].0;
                return match rng.below(3) {
                    0 => format!("{rel}->{name}"),
                    1 => format!("{rel}.any({name})"),
                    _ => format!("{rel}.all({name})"),
                };
            }
        }
    }
    let mut names: Vec<&String> = def
        .rels
        .iter()
        .map(|(n, _)| n)
        .chain(def.pubs.iter().map(|(n, _)| n))
        .collect();
    names.extend(def.perms.iter().take(k));
    if choice == 9 || names.is_empty() {
        return "nil".to_string();
    }
    rng.pick(&names)
        .map_or_else(|| "nil".to_string(), |n| (*n).clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_strings(src in any::<String>()) {
        check_input(&src);
    }

    #[test]
    fn never_panics_on_schema_like_text(src in "[a-z_ {}()|:#*+&<>/.=;,\n\"'@-]{0,200}") {
        check_input(&src);
    }

    #[test]
    fn never_panics_on_token_soup(src in token_soup()) {
        check_input(&src);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_mutated_valid_schemas(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds();
        let src = pick.get(&seeds);
        prop_assert!(compile(src).is_ok(), "seed does not compile:\n{}", src);
        check_input(&apply(src, &mutations));
    }

    #[test]
    fn generated_schemas_compile_and_round_trip(seed in any::<u64>()) {
        let src = generate(seed);
        match compile(&src) {
            Ok(schema) => assert_round_trip(&schema, &src),
            Err(e) => prop_assert!(false, "generated schema fails: {}\n{}", e, src),
        }
    }
}

#[test]
fn pathological_inputs_are_errors_not_crashes() {
    let cases = [
        "(".repeat(100_000),
        format!("definition d {{ permission p = {} }}", "(".repeat(100_000)),
        format!(
            "definition doc {{ permission ppp = aaa{} }}",
            " - aaa".repeat(100_000)
        ),
        format!("caveat c(p {}) {{ p }}", "list<".repeat(100_000)),
        "{".repeat(100_000),
        format!("caveat c(p int) {{{}", "{".repeat(100_000)),
        "/**".repeat(10_000),
        "\u{0}\u{feff}\u{10ffff}".repeat(1000),
    ];
    for src in &cases {
        check_input(src);
    }
    // Long but flat inputs compile.
    let wide = format!(
        "definition doc {{\n relation aaa: doc\n permission ppp = aaa{}\n}}",
        " + aaa".repeat(100_000)
    );
    check_input(&wide);
    let chain: String = (0..2000)
        .map(|i| format!("permission p{i:04} = p{:04}\n", i + 1))
        .collect::<String>();
    let chain = format!("definition doc {{\n{chain}permission p2000 = p0000\n}}");
    // 2,001 permissions are past the default limit per definition; past a raised one, the
    // long cycle is found.
    let err = compile(&chain).unwrap_err();
    assert_eq!(err.kind(), dhow_schema::ErrorKind::TooLarge);
    let raised = dhow_schema::CompileLimits {
        max_members_per_definition: 5_000,
        ..dhow_schema::CompileLimits::default()
    };
    let err = dhow_schema::compile_with(&chain, &raised).unwrap_err();
    assert_eq!(err.kind(), dhow_schema::ErrorKind::PermissionCycle);
}

/// The package's directory: cargo's value at run time (right even when a build from another
/// checkout shares the target dir), else the one compiled in.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
