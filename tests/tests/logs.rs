//! Logs an operator can use, from the real `dhow serve` binary: with `DHOW_LOG_FORMAT=json`
//! every line of its stderr is a JSON object, each refused call (a Check of an unknown type,
//! a Check with a wrong bearer token) leaves exactly one line with its method, gRPC code and
//! `ErrorInfo` reason, successful calls leave none, and neither the configured key nor the
//! wrong token appears anywhere in the log. The text format has no ANSI colour codes when
//! stderr is not a terminal.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dhow_proto::v1 as pb;
use dhow_proto::v1::permission_service_client::PermissionServiceClient;
use dhow_proto::v1::schema_service_client::SchemaServiceClient;
use dhow_tests::cluster::{Client, SCHEMA};
use dhow_tests::process::dhow_bin;
use tonic::Request;
use tonic_types::StatusExt;

const KEY: &str = "the-configured-key-e3b0c44298fc1c14";
const WRONG: &str = "a-wrong-token-9a271f2a916b0b6ee6cecb2426f0b320";
const CHECK: &str = "/dhow.v1.PermissionService/Check";

/// `dhow serve` with its stderr in a file; killed when dropped.
struct Logged {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Logged {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Logged {
        let log = dir.join("stderr.log");
        let mut child = Command::new(dhow_bin())
            .args(["serve", "--grpc-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .env_remove("DHOW_LOG_FORMAT")
            .env_remove("DHOW_PRESHARED_KEY")
            .env("RUST_LOG", "info,raft=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start dhow serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains(" listening on "))
            .expect("dhow serve exited before it listened");
        let addr = first
            .split(" listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("an address")
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        Logged {
            child,
            endpoint: format!("http://{addr}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("read the log")
    }

    /// The log once it holds `n` lines that `pick` selects (at most 10 s), and a moment
    /// more, so that a second line for the same call would be there too.
    fn wait_for(&self, n: usize, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.lines().filter(|l| pick(l)).count() >= n {
                std::thread::sleep(Duration::from_millis(300));
                return self.log();
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} matching lines in:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn check_request(resource_type: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        resource: Some(pb::ObjectReference {
            object_type: resource_type.into(),
            object_id: "readme".into(),
        }),
        permission: "view".into(),
        subject: Some(pb::SubjectReference {
            object: Some(pb::ObjectReference {
                object_type: "user".into(),
                object_id: "alice".into(),
            }),
            optional_relation: String::new(),
        }),
        ..Default::default()
    }
}

/// The code name and the `ErrorInfo` reason of a refusal, as the client sees them.
fn code_and_reason(s: &tonic::Status) -> (&'static str, String) {
    let code = dhow_server::calllog::code_name(s.code());
    let reason = s
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"));
    (code, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_one_json_line_without_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let server = Logged::start(
        dir.path(),
        &[("DHOW_LOG_FORMAT", "json"), ("DHOW_PRESHARED_KEY", KEY)],
    );
    let channel = Client::connect(&server.endpoint).await.channel;

    // Successful calls: no line.
    SchemaServiceClient::new(channel.clone())
        .write_schema(with(
            pb::WriteSchemaRequest {
                schema: SCHEMA.into(),
            },
            KEY,
        ))
        .await
        .expect("schema written");
    PermissionServiceClient::new(channel.clone())
        .check(with(check_request("document"), KEY))
        .await
        .expect("a check of a known type");

    // A Check of a type the schema does not define.
    let unknown = PermissionServiceClient::new(channel.clone())
        .check(with(check_request("folder"), KEY))
        .await
        .expect_err("an unknown type is refused");
    assert_eq!(
        unknown.code(),
        tonic::Code::FailedPrecondition,
        "{unknown:?}"
    );
    // A Check with a wrong bearer token.
    let refused = PermissionServiceClient::new(channel.clone())
        .check(with(check_request("document"), WRONG))
        .await
        .expect_err("a wrong token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let log = server.wait_for(2, |l| l.contains("call refused"));
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    let refusals: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["message"] == "call refused")
        .collect();
    assert_eq!(
        refusals.len(),
        2,
        "one line per refusal, none for successes:\n{log}"
    );
    for (line, status) in refusals.iter().zip([&unknown, &refused]) {
        let (code, reason) = code_and_reason(status);
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["method"], CHECK, "{line}");
        assert_eq!(line["code"], code, "{line}");
        assert_eq!(line["reason"], reason.as_str(), "{line}");
        assert_eq!(line["error"], status.message(), "{line}");
        assert!(
            line["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{line}"
        );
    }
    assert!(
        !log.contains(KEY),
        "the configured key is in the log:\n{log}"
    );
    assert!(
        !log.contains(WRONG),
        "the wrong token is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_in_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Logged::start(dir.path(), &[]);
    let channel = Client::connect(&server.endpoint).await.channel;
    // No schema yet: FAILED_PRECONDITION NO_SCHEMA.
    let e = PermissionServiceClient::new(channel)
        .check(check_request("document"))
        .await
        .expect_err("no schema");
    let (code, reason) = code_and_reason(&e);
    let log = server.wait_for(1, |l| l.contains("call refused"));
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log file:\n{log}");
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("call refused")).collect();
    assert_eq!(refusals.len(), 1, "{log}");
    let line = refusals[0];
    assert!(
        line.contains(" INFO ")
            && line.contains(&format!("method={CHECK}"))
            && line.contains(&format!("code={code}"))
            && line.contains(&format!("reason={reason}")),
        "{line}"
    );
}
