//! Compiling and evaluating caveats: SpiceDB's conformance caveats, partial results, type
//! errors with positions, limits and the cost budget.

use dhow_caveat::{CaveatError, Context, Limits, Outcome, Program, Type};

fn program(params: &[(&str, &str)], src: &str) -> Result<Program, CaveatError> {
    let params: Vec<(String, Type)> = params
        .iter()
        .map(|(n, t)| (n.to_string(), Type::parse(t).unwrap()))
        .collect();
    Program::compile("c", &params, src, &Limits::default())
}

/// Parameter names and types.
type Params = &'static [(&'static str, &'static str)];

fn ctx(json: &str) -> Context {
    Context::from_json(json).unwrap()
}

fn eval(p: &Program, rel: &str, req: &str) -> Result<Outcome, CaveatError> {
    let mut budget = 1_000_000;
    p.evaluate(Some(&ctx(rel)), Some(&ctx(req)), &mut budget)
}

fn missing(names: &[&str]) -> Outcome {
    Outcome::Missing(names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn conformance_caveats() {
    let p = program(&[("somecondition", "int")], "somecondition == 42").unwrap();
    assert_eq!(eval(&p, "{}", "{\"somecondition\": 42}"), Ok(Outcome::True));
    assert_eq!(
        eval(&p, "{}", "{\"somecondition\": 41.0}"),
        Ok(Outcome::False)
    );
    assert_eq!(eval(&p, "{}", "{}"), Ok(missing(&["somecondition"])));
    // The relationship's values win.
    assert_eq!(
        eval(&p, "{\"somecondition\": 42}", "{\"somecondition\": 1}"),
        Ok(Outcome::True)
    );

    let p = program(
        &[("current_time", "timestamp"), ("expiration", "timestamp")],
        "current_time < expiration",
    )
    .unwrap();
    assert_eq!(
        eval(
            &p,
            "{\"expiration\":\"2024-10-03T07:16:28.068632-07:00\"}",
            "{\"current_time\":\"2023-01-01T00:00:00Z\"}"
        ),
        Ok(Outcome::True)
    );
    assert_eq!(
        eval(&p, "{\"expiration\":\"2023-12-01T00:00:00Z\"}", "{}"),
        Ok(missing(&["current_time"]))
    );

    let p = program(
        &[("user_ip", "ipaddress"), ("cidr", "string")],
        "user_ip.in_cidr(cidr)",
    )
    .unwrap();
    assert_eq!(
        eval(
            &p,
            "{\"cidr\":\"10.0.0.0/8\"}",
            "{\"user_ip\":\"10.2.3.4\"}"
        ),
        Ok(Outcome::True)
    );
    assert_eq!(
        eval(
            &p,
            "{\"cidr\":\"10.1.0.0/16\"}",
            "{\"user_ip\":\"10.2.3.4\"}"
        ),
        Ok(Outcome::False)
    );
    let p = program(
        &[("user_ip", "ipaddress"), ("cidr", "string")],
        "!user_ip.in_cidr(cidr)",
    )
    .unwrap();
    assert_eq!(
        eval(&p, "{\"cidr\":\"1.2.3.0/24\"}", "{}"),
        Ok(missing(&["user_ip"]))
    );

    let p = program(&[("somelist", "list<int>")], "somelist.all(i, i >= 42)").unwrap();
    assert_eq!(eval(&p, "{\"somelist\":[42, 43]}", "{}"), Ok(Outcome::True));
    assert_eq!(
        eval(&p, "{\"somelist\":[42, 41]}", "{}"),
        Ok(Outcome::False)
    );

    let p = program(
        &[("somemap", "map<any>")],
        "somemap.foo == 42 && somemap.bar < 56",
    )
    .unwrap();
    assert_eq!(
        eval(&p, "{\"somemap\":{\"foo\":42,\"bar\":10}}", "{}"),
        Ok(Outcome::True)
    );
    assert_eq!(
        eval(&p, "{}", "{\"somemap\":{\"foo\":41}}"),
        Ok(Outcome::False)
    );
    assert_eq!(
        eval(&p, "{}", "{\"somemap\":{\"foo\":42,\"bar\":56}}"),
        Ok(Outcome::False)
    );
    assert!(matches!(
        eval(&p, "{}", "{\"somemap\":{\"foo\":42}}"),
        Err(CaveatError::Evaluation { .. })
    ));

    let p = program(
        &[("admin_teams", "list<string>"), ("me", "string")],
        "me in admin_teams",
    )
    .unwrap();
    assert_eq!(
        eval(&p, "{\"me\":\"a\"}", "{\"admin_teams\":[\"b\",\"a\"]}"),
        Ok(Outcome::True)
    );

    let p = program(&[("limit", "uint"), ("count", "uint")], "count < limit").unwrap();
    assert_eq!(
        eval(&p, "{\"limit\":4}", "{\"count\":3}"),
        Ok(Outcome::True)
    );
    assert_eq!(
        eval(&p, "{\"limit\":2}", "{\"count\":3}"),
        Ok(Outcome::False)
    );

    let p = program(&[("thirdcondition", "bool")], "thirdcondition").unwrap();
    assert_eq!(eval(&p, "{}", "{}"), Ok(missing(&["thirdcondition"])));
}

#[test]
fn partial_evaluation_is_three_valued() {
    let p = program(&[("a", "bool"), ("b", "bool")], "a || b").unwrap();
    assert_eq!(eval(&p, "{}", "{\"a\": true}"), Ok(Outcome::True));
    assert_eq!(eval(&p, "{}", "{\"b\": true}"), Ok(Outcome::True));
    assert_eq!(eval(&p, "{}", "{\"a\": false}"), Ok(missing(&["b"])));
    assert_eq!(eval(&p, "{}", "{}"), Ok(missing(&["a", "b"])));
    let p = program(&[("a", "bool"), ("b", "bool")], "a && b").unwrap();
    assert_eq!(eval(&p, "{}", "{\"b\": false}"), Ok(Outcome::False));
    assert_eq!(eval(&p, "{}", "{\"a\": true}"), Ok(missing(&["b"])));
    let p = program(&[("x", "int"), ("y", "int")], "x > 1 ? y == 2 : false").unwrap();
    assert_eq!(eval(&p, "{}", "{\"x\": 0}"), Ok(Outcome::False));
    assert_eq!(eval(&p, "{}", "{\"x\": 5}"), Ok(missing(&["y"])));
    assert_eq!(eval(&p, "{}", "{}"), Ok(missing(&["x"])));
}

#[test]
fn delegation_caveat() {
    let p = program(
        &[("task", "string"), ("allowed_task", "string")],
        "task == allowed_task",
    )
    .unwrap();
    assert_eq!(
        eval(
            &p,
            "{\"allowed_task\":\"summarise\"}",
            "{\"task\":\"summarise\"}"
        ),
        Ok(Outcome::True)
    );
    assert_eq!(
        eval(
            &p,
            "{\"allowed_task\":\"summarise\"}",
            "{\"task\":\"delete\"}"
        ),
        Ok(Outcome::False)
    );
}

#[test]
fn more_of_the_language() {
    let cases: &[(Params, &str, &str, Outcome)] = &[
        (
            &[("d", "duration")],
            "d > duration('1h')",
            "{\"d\":\"90m\"}",
            Outcome::True,
        ),
        (
            &[("t", "timestamp"), ("d", "duration")],
            "t + d > timestamp('2024-01-01T00:00:00Z')",
            "{\"t\":\"2023-12-31T23:00:00Z\",\"d\":\"2h\"}",
            Outcome::True,
        ),
        (
            &[("s", "string")],
            "s.startsWith('ab') && s.endsWith('z') && s.contains('c')",
            "{\"s\":\"abcz\"}",
            Outcome::True,
        ),
        (
            &[("l", "list<int>")],
            "l.exists(x, x == 3) && size(l) == 3 && l.size() == 3",
            "{\"l\":[1,2,3]}",
            Outcome::True,
        ),
        (
            &[("l", "list<int>")],
            "l.exists_one(x, x > 2)",
            "{\"l\":[1,2,3]}",
            Outcome::True,
        ),
        (
            &[("l", "list<int>")],
            "l.map(x, x * 2) == [2, 4, 6]",
            "{\"l\":[1,2,3]}",
            Outcome::True,
        ),
        (
            &[("l", "list<int>")],
            "l.filter(x, x % 2 == 1) == [1, 3]",
            "{\"l\":[1,2,3]}",
            Outcome::True,
        ),
        (
            &[("m", "map<int>")],
            "'a' in m && m['a'] == 1 && has(m.a) && !has(m.b)",
            "{\"m\":{\"a\":1}}",
            Outcome::True,
        ),
        (
            &[("x", "double")],
            "x == 1 && x < 2u && int(x) == 1",
            "{\"x\":1.0}",
            Outcome::True,
        ),
        (
            &[("x", "int")],
            "string(x) == '7' && double(x) == 7.0 && uint(x) == 7u",
            "{\"x\":7}",
            Outcome::True,
        ),
        (
            &[("b", "bytes")],
            "b == b'hi' && size(b) == 2",
            "{\"b\":\"hi\"}",
            Outcome::True,
        ),
        (
            &[("a", "any")],
            "a.x.y == 'z'",
            "{\"a\":{\"x\":{\"y\":\"z\"}}}",
            Outcome::True,
        ),
        (
            &[("ip", "ipaddress")],
            "ip.in_cidr('2001:db8::/32')",
            "{\"ip\":\"2001:db8::1\"}",
            Outcome::True,
        ),
        (
            &[("ip", "ipaddress")],
            "ip.in_cidr('10.0.0.0/8')",
            "{\"ip\":\"2001:db8::1\"}",
            Outcome::False,
        ),
    ];
    for (params, src, req, want) in cases {
        let p = program(params, src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(eval(&p, "{}", req).as_ref(), Ok(want), "{src}");
    }
}

#[test]
fn type_errors_have_positions() {
    let cases: &[(Params, &str, usize, &str)] = &[
        (
            &[("a", "int")],
            "a == 'x'",
            2,
            "no matching overload for `==` on (int, string)",
        ),
        (&[("a", "int")], "b == 1", 0, "undeclared reference to `b`"),
        (&[("a", "int")], "a + 1", 0, "must be a boolean"),
        (
            &[("a", "string")],
            "a.matches('x')",
            9,
            "function `matches` is not supported",
        ),
        (&[("a", "int")], "a.foo == 1", 1, "type `int` has no fields"),
        (
            &[("a", "list<int>")],
            "a.all(x, x == 'y')",
            11,
            "no matching overload",
        ),
        (&[("a", "int")], "a ==", 4, "invalid CEL expression"),
        (
            &[("a", "ipaddress")],
            "a.in_cidr(1)",
            9,
            "no matching overload for `in_cidr`",
        ),
    ];
    for (params, src, offset, msg) in cases {
        match program(params, src) {
            Err(CaveatError::Compile {
                offset: got,
                message,
                ..
            }) => {
                assert!(message.contains(msg), "{src}: {message}");
                assert_eq!(got, *offset, "{src}: {message}");
            }
            other => panic!("{src}: expected a compile error, got {other:?}"),
        }
    }
}

#[test]
fn context_checks() {
    let p = program(
        &[("a", "int"), ("l", "list<string>")],
        "a > 0 && size(l) > 0",
    )
    .unwrap();
    assert!(p.check_context(&ctx("{\"a\": 1}")).is_ok());
    assert!(matches!(
        p.check_context(&ctx("{\"b\": 1}")),
        Err(CaveatError::Parameter { parameter, .. }) if parameter == "b"
    ));
    assert!(matches!(
        p.check_context(&ctx("{\"a\": \"x\"}")),
        Err(CaveatError::Parameter { parameter, .. }) if parameter == "a"
    ));
    assert!(matches!(
        p.check_context(&ctx("{\"l\": [1]}")),
        Err(CaveatError::Parameter { parameter, .. }) if parameter == "l"
    ));
    // A request value of the wrong type names the parameter.
    assert!(matches!(
        eval(&p, "{}", "{\"a\": true}"),
        Err(CaveatError::Parameter { parameter, from_request: true, .. }) if parameter == "a"
    ));
}

#[test]
fn limits() {
    let long = format!("a == 1{}", " || a == 1".repeat(2000));
    assert!(matches!(
        program(&[("a", "int")], &long),
        Err(CaveatError::Compile { message, .. }) if message.contains("limit")
    ));
    let deep = format!("{}a{}", "(".repeat(300), ")".repeat(300));
    assert!(program(&[("a", "bool")], &deep).is_err());
}

#[test]
fn an_expensive_comprehension_stops_at_the_budget() {
    let p = program(
        &[("l", "list<int>")],
        "l.all(x, l.all(y, x != y + 1000000))",
    )
    .unwrap();
    let list: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let req = ctx(&format!("{{\"l\":[{}]}}", list.join(",")));
    let start = std::time::Instant::now();
    let mut budget = 1_000_000;
    let r = p.evaluate(None, Some(&req), &mut budget);
    assert!(
        matches!(
            r,
            Err(CaveatError::CostExceeded {
                limit: 1_000_000,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(budget, 0);
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
    // Building a list in a loop costs its length each time.
    let p = program(&[("l", "list<int>")], "size(l.map(x, x)) > 0").unwrap();
    let mut budget = 1_000_000;
    assert!(matches!(
        p.evaluate(None, Some(&req), &mut budget),
        Err(CaveatError::CostExceeded { .. })
    ));
}

#[test]
fn runtime_errors() {
    let p = program(&[("a", "int")], "a / 0 == 1").unwrap();
    assert!(matches!(
        eval(&p, "{}", "{\"a\":1}"),
        Err(CaveatError::Evaluation { .. })
    ));
    let p = program(&[("a", "int")], "a + 1 > 0").unwrap();
    assert!(matches!(
        eval(&p, "{}", "{\"a\":9223372036854775807}"),
        Err(CaveatError::Evaluation { .. })
    ));
    // `false && error` is false, `true || error` is true.
    let p = program(&[("a", "int")], "a > 5 && 1 / (a - a) == 1").unwrap();
    assert_eq!(eval(&p, "{}", "{\"a\":1}"), Ok(Outcome::False));
}
