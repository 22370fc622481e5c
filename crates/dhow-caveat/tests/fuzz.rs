//! No input makes compiling or evaluating a caveat panic or overflow the stack: random text,
//! random expressions over CEL's tokens, and random contexts.

use dhow_caveat::{Context, Limits, Program, Type};
use proptest::prelude::*;

fn params() -> Vec<(String, Type)> {
    [
        ("a", "int"),
        ("b", "bool"),
        ("s", "string"),
        ("l", "list<int>"),
        ("m", "map<any>"),
        ("t", "timestamp"),
        ("d", "duration"),
        ("ip", "ipaddress"),
        ("u", "uint"),
        ("x", "double"),
        ("y", "bytes"),
        ("z", "any"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), Type::parse(t).unwrap()))
    .collect()
}

const TOKENS: &[&str] = &[
    "a",
    "b",
    "s",
    "l",
    "m",
    "t",
    "d",
    "ip",
    "u",
    "x",
    "y",
    "z",
    "1",
    "0",
    "-1",
    "2u",
    "1.5",
    "'x'",
    "\"y\"",
    "b'z'",
    "true",
    "false",
    "null",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ".",
    "?",
    "+",
    "-",
    "*",
    "/",
    "%",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    " in ",
    "size",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "has",
    "in_cidr",
    "contains",
    "startsWith",
    "int",
    "uint",
    "double",
    "string",
    "duration",
    "timestamp",
    "dyn",
    "'1h'",
    "'10.0.0.0/8'",
    "'2024-01-01T00:00:00Z'",
    "foo",
    "@",
    "`",
    "\\",
    "\u{e9}",
];

const CONTEXTS: &[&str] = &[
    "{}",
    "{\"a\": 1, \"b\": true, \"s\": \"hi\", \"l\": [1, 2, 3], \"m\": {\"k\": 1}}",
    "{\"t\": \"2024-01-01T00:00:00Z\", \"d\": \"1h\", \"ip\": \"10.1.2.3\", \"u\": 3, \"x\": 0.5}",
    "{\"a\": 9223372036854775807, \"u\": 0, \"x\": -0.0, \"y\": \"\", \"z\": [null, {}]}",
    "{\"a\": -9223372036854775808, \"l\": [], \"m\": {}, \"s\": \"\"}",
];

fn check(src: &str) {
    let limits = Limits::default();
    if let Ok(p) = Program::compile("c", &params(), src, &limits) {
        for ctx in CONTEXTS {
            let ctx = Context::from_json(ctx).unwrap();
            let mut budget = 10_000;
            let _ = p.evaluate(None, Some(&ctx), &mut budget);
            let _ = p.evaluate(Some(&ctx), None, &mut budget);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_text_never_panics(src in "\\PC{0,80}") {
        check(&src);
    }

    #[test]
    fn random_token_soup_never_panics(toks in prop::collection::vec(prop::sample::select(TOKENS), 0..40)) {
        check(&toks.join(" "));
    }

    #[test]
    fn random_contexts_never_panic(json in "\\{(\"[a-z]{1,2}\": (-?[0-9]{1,20}(\\.[0-9]+)?|\"[^\"]{0,10}\"|true|null|\\[\\]|\\{\\}), ){0,4}\"a\": 1\\}") {
        if let Ok(ctx) = Context::from_json(&json) {
            let p = Program::compile("c", &params(), "a == 1 && b || s == 'x'", &Limits::default()).unwrap();
            let _ = p.check_context(&ctx);
            let mut budget = 1000;
            let _ = p.evaluate(Some(&ctx), Some(&ctx), &mut budget);
        }
    }
}

#[test]
fn deep_nesting_of_every_kind_is_refused_or_compiles() {
    for n in [10, 31, 32, 33, 100, 1000, 5000] {
        for src in [
            format!("{}a{} == 1", "(".repeat(n), ")".repeat(n)),
            format!("{}1{} == [1]", "[".repeat(n), "]".repeat(n)),
            format!("{}b", "!".repeat(n)),
            format!("{}1 == 1", "-".repeat(n)),
            format!("1{} == 1", " + 1".repeat(n)),
            format!("m{} == 1", ".k".repeat(n)),
            format!("b{}", " && b".repeat(n)),
            format!("{}b{}", "b ? ".repeat(n), " : b".repeat(n)),
            format!("{}l{}", "l.all(x, ".repeat(n), ")".repeat(n)),
        ] {
            check(&src);
        }
    }
}
