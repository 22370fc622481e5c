//! `dhow-bench` against the real server (a `dhow serve` process): `load` imports the synthetic
//! data set (the server then holds exactly it), `check` and `health` report nonzero
//! throughput with both answers; bad flags are refused before anything is sent.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dhow_tests::process::{dhow_bin, Server};

const BENCH: &str = env!("CARGO_BIN_EXE_dhow-bench");
const N: usize = 2_000;

/// Runs `program` with `args`, without the caller's DHOW_ENDPOINT.
fn run(program: &std::path::Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("DHOW_ENDPOINT")
        .output()
        .expect("run the program")
}

/// Runs `dhow-bench`.
fn bench(args: &[&str]) -> Output {
    run(std::path::Path::new(BENCH), args)
}

/// Runs `dhow-bench` and returns its stdout, asserting success.
fn ok_stdout(args: &[&str]) -> String {
    ok(bench(args), args)
}

/// Runs `dhow` and returns its stdout, asserting success.
fn dhow_stdout(args: &[&str]) -> String {
    ok(run(&dhow_bin(), args), args)
}

fn ok(o: Output, args: &[&str]) -> String {
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn bench_load_then_check_and_health_against_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 0);
    let endpoint = server.endpoint();
    let ep = endpoint.as_str();
    let n = N.to_string();

    // load: the schema, then exactly N relationships through Import.
    let out = json(&ok_stdout(&["load", "-n", &n, "--json", "--endpoint", ep]));
    assert_eq!(out["imported"], N, "{out}");
    assert_eq!(out["relationships"], N, "{out}");
    assert!(out["relationships_per_second"].as_f64().unwrap() > 0.0);
    assert!(!out["token"].as_str().unwrap().is_empty());

    // The server holds them: the designated deep check is allowed, an outsider is denied,
    // and an export has exactly N lines.
    let check = |c: &str| {
        dhow_stdout(&[
            "check",
            c,
            "--consistency",
            "fully-consistent",
            "--endpoint",
            ep,
        ])
        .trim()
        .to_string()
    };
    assert_eq!(check("document:target#view@user:deep"), "true");
    assert_eq!(check("document:target#view@user:u000000"), "true");
    assert_eq!(check("document:target#view@user:nobody"), "false");
    let exported = dhow_stdout(&["rel", "export", "--endpoint", ep]);
    assert_eq!(exported.lines().count(), N);

    // check: about a second, both answers seen.
    let out = json(&ok_stdout(&[
        "check",
        "-n",
        &n,
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "-c",
        "4",
        "--json",
        "--endpoint",
        ep,
    ]));
    let requests = out["requests"].as_u64().unwrap();
    let allowed = out["allowed"].as_u64().unwrap();
    let denied = out["denied"].as_u64().unwrap();
    assert!(requests > 0, "{out}");
    assert!(allowed > 0 && denied > 0, "{out}");
    assert_eq!(allowed + denied, requests, "{out}");
    assert_eq!(out["connections"], 1, "{out}");
    assert_eq!(out["consistency"], "minimize_latency", "{out}");
    let ms = |k: &str| out["latency_ms"][k].as_f64().unwrap();
    assert!(ms("p50") > 0.0 && ms("p50") <= ms("p99") && ms("p99") <= ms("max"));

    // The other consistencies and the text output.
    let text = ok_stdout(&[
        "check",
        "-n",
        &n,
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "-c",
        "8",
        "--consistency",
        "at-least-as-fresh",
        "--endpoint",
        ep,
    ]);
    assert!(
        text.starts_with("check: 8 in flight on 2 connection(s)"),
        "{text}"
    );
    assert!(text.contains("consistency at_least_as_fresh"), "{text}");
    assert!(text.contains(" allowed, ") && text.contains("latency: p50 "));
    let out = json(&ok_stdout(&[
        "check",
        "-n",
        &n,
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--consistency",
        "fully-consistent",
        "--client-threads",
        "2",
        "--json",
        "--endpoint",
        ep,
    ]));
    assert!(out["requests"].as_u64().unwrap() > 0, "{out}");

    // health: the bare round trip.
    let out = json(&ok_stdout(&[
        "health",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "-c",
        "2",
        "--json",
        "--endpoint",
        ep,
    ]));
    assert!(out["requests"].as_u64().unwrap() > 0, "{out}");
    assert!(out.get("allowed").is_none());

    // write, each followed by a check at its token: every check sees its write.
    let text = ok_stdout(&[
        "write",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "-c",
        "2",
        "--updates",
        "3",
        "--then-check",
        ep,
        "--json",
        "--endpoint",
        ep,
    ]);
    let mut lines = text.lines();
    let w = json(lines.next().expect("the write line"));
    let c = json(lines.next().expect("the then-check line"));
    assert_eq!(w["command"], "write", "{w}");
    let writes = w["requests"].as_u64().unwrap();
    assert!(writes > 0, "{w}");
    assert_eq!(c["command"], "write.then_check", "{c}");
    assert_eq!(c["consistency"], "at_least_as_fresh", "{c}");
    assert_eq!(c["checks"].as_u64(), Some(writes), "{c}");
    assert_eq!(c["saw_the_write"].as_u64(), Some(writes), "{c}");
    assert_eq!(c["missed_the_write"].as_u64(), Some(0), "{c}");
}

#[test]
fn bench_check_without_a_loaded_schema_fails_with_the_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = bench(&[
            "check",
            "-n",
            "2000",
            "--duration",
            "200ms",
            "--warmup",
            "0s",
            "--endpoint",
            &server.endpoint(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success());
        if err.contains("UNAVAILABLE") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.starts_with("error: FAILED_PRECONDITION"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        return;
    }
}

#[test]
fn bench_flags_are_checked_before_connecting() {
    let dead = "http://127.0.0.1:1";
    for (args, msg) in [
        (&["load", "-n", "10"][..], "between 2000 and 50000000"),
        (&["load", "-n", "many"][..], "not a number"),
        (&["check", "--duration", "0s"][..], "more than 0"),
        (&["check", "--duration", "soon"][..], "not a duration"),
        (&["health", "-c", "0"][..], "0 is not in 1..=10000"),
        (&["write", "--updates", "0"][..], "0 is not in 1..=1000"),
        (&["check", "--consistency", "exact"][..], "invalid value"),
    ] {
        let mut a = args.to_vec();
        a.extend(["--endpoint", dead]);
        let o = bench(&a);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Unreachable server: a local error naming the endpoint.
    let o = bench(&["health", "--duration", "100ms", "--endpoint", dead]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("cannot reach the server at http://127.0.0.1:1"));
}
