//! Errors as an API: the reasons the server sends (`dhow_server::reason::ALL`, the constants
//! of every `mod reason` in the sources), the public enum `dhow.v1.ErrorReason` and the table
//! of docs/operations.md list the same reasons; no reason is a bare string literal; and
//! reflection serves the error details (`google.rpc.ErrorInfo`, ...) and the enum, so
//! grpcurl can decode them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dhow_proto::v1::ErrorReason;
use dhow_server::reason;
use dhow_tests::server::TestServer;

/// The prefix of the enum's values; the reason string is the value's name without it.
const PREFIX: &str = "ERROR_REASON_";

/// Every `.rs` file under the crate's `src`, with its text.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    assert!(out.len() > 5, "no sources found");
    out
}

/// The `&str` constants of every `mod reason { ... }` in `text`, as (name, value).
fn reason_consts(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("mod reason {") {
        let body = &rest[at + "mod reason {".len()..];
        // The module ends at the brace that closes it.
        let mut depth = 1usize;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        for line in body[..end].lines() {
            let line = line.trim();
            let Some(decl) = line.strip_prefix("pub const ") else {
                continue;
            };
            let (name, tail) = decl.split_once(':').expect("a typed const");
            if !tail.trim_start().starts_with("&str") {
                continue; // ALL
            }
            let value = tail
                .split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("the value of {name} on its line: {line}"));
            out.push((name.trim().to_string(), value.to_string()));
        }
        rest = &body[end..];
    }
    out
}

/// Every value of the generated enum but the zero one, as its name in the proto.
fn enum_names() -> BTreeSet<String> {
    // prost enums cannot be iterated: try every number up to well past the last one.
    let names: BTreeSet<String> = (1..=4096)
        .filter_map(|n| ErrorReason::try_from(n).ok())
        .map(|r| r.as_str_name().to_string())
        .collect();
    assert!(
        ErrorReason::try_from(4096).is_err() && !names.is_empty(),
        "renumber the search"
    );
    names
}

#[test]
fn every_reason_constant_is_listed_in_all() {
    let mut consts = Vec::new();
    for (path, text) in sources() {
        for (name, value) in reason_consts(&text) {
            assert_eq!(
                name,
                value,
                "{}: a reason's string is its constant's name",
                path.display()
            );
            consts.push(value);
        }
    }
    let declared: BTreeSet<&str> = consts.iter().map(String::as_str).collect();
    assert_eq!(declared.len(), consts.len(), "a reason declared twice");
    let all: BTreeSet<&str> = reason::ALL.iter().copied().collect();
    assert_eq!(
        all.len(),
        reason::ALL.len(),
        "a reason twice in reason::ALL"
    );
    let missing: Vec<_> = declared.difference(&all).collect();
    assert!(missing.is_empty(), "not in reason::ALL: {missing:?}");
    let extra: Vec<_> = all.difference(&declared).collect();
    assert!(
        extra.is_empty(),
        "in reason::ALL, declared nowhere: {extra:?}"
    );
}

#[test]
fn the_enum_lists_every_reason_and_no_other() {
    for r in reason::ALL {
        let name = format!("{PREFIX}{r}");
        let value = ErrorReason::from_str_name(&name).unwrap_or_else(|| {
            panic!("{r} has no value {name} in proto/dhow/v1/error_reason.proto")
        });
        assert_eq!(value.as_str_name(), name);
    }
    let all: BTreeSet<&str> = reason::ALL.iter().copied().collect();
    for name in enum_names() {
        let r = name
            .strip_prefix(PREFIX)
            .unwrap_or_else(|| panic!("{name} lacks the prefix {PREFIX}"));
        assert!(
            all.contains(r),
            "{name} is in the enum, but the server sends no reason {r} (reason::ALL)"
        );
    }
    assert_eq!(
        ErrorReason::try_from(0).unwrap().as_str_name(),
        "ERROR_REASON_UNSPECIFIED"
    );
    assert!(!all.contains("UNSPECIFIED"));
}

/// The table of docs/operations.md ("Errors") names every reason, and no other.
#[test]
fn the_docs_list_every_reason() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("\n## Errors\n").expect("a section `## Errors`");
    let section = &text[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    let mut documented = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap();
        for name in first.split('`').skip(1).step_by(2) {
            documented.insert(name.to_string());
        }
    }
    let all: BTreeSet<String> = reason::ALL.iter().map(|r| r.to_string()).collect();
    let missing: Vec<_> = all.difference(&documented).collect();
    assert!(missing.is_empty(), "not in the docs' table: {missing:?}");
    let extra: Vec<_> = documented.difference(&all).collect();
    assert!(
        extra.is_empty(),
        "in the docs' table, sent by no one: {extra:?}"
    );
}

/// A reason is one of the constants, never a literal at the call: the calls that take a
/// reason get `reason::...` (or pass one on), so every reason sent is a listed constant.
#[test]
fn no_reason_is_a_string_literal() {
    let all: BTreeSet<&str> = reason::ALL.iter().copied().collect();
    for (path, text) in sources() {
        let file = path.display();
        // The reason is the first argument of these, the second of `ApiError::new`.
        for (call, arg) in [
            ("ApiError::new(", 1),
            ("unauthenticated(", 0),
            ("fail(", 0),
            ("ErrorInfo::new(", 0),
        ] {
            for (at, _) in text.match_indices(call) {
                let args = &text[at + call.len()..];
                let Some(a) = args.split(',').nth(arg) else {
                    continue;
                };
                let a = a.trim();
                assert!(
                    !a.starts_with('"'),
                    "{file}: a reason given as a literal, `{call}... {a}`: add it to a reason \
                     module, reason::ALL and the ErrorReason enum"
                );
            }
        }
        assert!(
            !text.contains("reason: \""),
            "{file}: a reason given as a literal, `reason: \"...\"`"
        );
        // Every constant used by name is listed (a `reason` module not scanned would show).
        for (at, _) in text.match_indices("reason::") {
            let name: String = text[at + "reason::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.len() > 1 && name != "ALL" {
                assert!(
                    all.contains(name.as_str()),
                    "{file}: reason::{name} not listed"
                );
            }
        }
    }
}

/// Reflection serves the error details and the enum: grpcurl resolves the `Any` type URLs
/// of a status's details (`type.googleapis.com/google.rpc.ErrorInfo`) through it.
#[tokio::test]
async fn reflection_serves_error_details_and_the_enum() {
    use prost::Message as _;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let s = TestServer::start().await;
    let mut r = ServerReflectionClient::new(s.channel.clone());
    let asks = [
        MessageRequest::FileContainingSymbol("google.rpc.ErrorInfo".into()),
        MessageRequest::FileContainingSymbol("google.rpc.BadRequest".into()),
        MessageRequest::FileContainingSymbol("google.rpc.Status".into()),
        MessageRequest::FileContainingSymbol("dhow.v1.ErrorReason".into()),
        // The dependencies of error_details.proto and status.proto.
        MessageRequest::FileByFilename("google/protobuf/duration.proto".into()),
        MessageRequest::FileByFilename("google/protobuf/any.proto".into()),
    ];
    let reqs: Vec<ServerReflectionRequest> = asks
        .iter()
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m.clone()),
        })
        .collect();
    let mut st = r
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    for ask in &asks {
        let answer = st
            .message()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap();
        let MessageResponse::FileDescriptorResponse(f) = answer else {
            panic!("{ask:?}: {answer:?}");
        };
        let files: Vec<prost_types::FileDescriptorProto> = f
            .file_descriptor_proto
            .iter()
            .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
            .collect();
        let symbol = match ask {
            MessageRequest::FileContainingSymbol(s) => s.rsplit('.').next().unwrap(),
            MessageRequest::FileByFilename(n) => {
                assert!(files.iter().any(|f| f.name() == n), "{n}");
                continue;
            }
            other => panic!("{other:?}"),
        };
        let found = files.iter().any(|f| {
            f.message_type.iter().any(|m| m.name() == symbol)
                || f.enum_type.iter().any(|e| e.name() == symbol)
        });
        assert!(found, "{ask:?}: {symbol} in none of {files:?}");
    }
    s.stop().await.unwrap();
}
