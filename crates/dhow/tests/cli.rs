//! Tests of the built `dhow` binary that need no server: help texts, argument errors caught
//! before connecting, unreachable endpoints, and `dhow validate` in-process.

use std::path::PathBuf;
use std::process::{Command, Output};

/// An endpoint on which nothing listens (port 1 on loopback): connections are refused.
const DEAD: &str = "http://127.0.0.1:1";

fn dhow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dhow"))
        .args(args)
        .env_remove("DHOW_ENDPOINT")
        .output()
        .expect("run dhow")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo_root() -> PathBuf {
    dhow_tests::repo_root()
}

#[test]
fn help_of_every_command() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &[
                "schema",
                "rel",
                "check",
                "expand",
                "lookup-resources",
                "lookup-subjects",
                "watch",
                "validate",
            ],
        ),
        (&["schema", "--help"], &["write", "read"]),
        (
            &["schema", "write", "--help"],
            &["--endpoint", "DHOW_ENDPOINT"],
        ),
        (
            &["schema", "read", "--help"],
            &["--endpoint", "--consistency"],
        ),
        (
            &["rel", "--help"],
            &["create", "touch", "delete", "read", "import", "export"],
        ),
        (
            &["rel", "create", "--help"],
            &["RELATIONSHIP", "--endpoint"],
        ),
        (&["rel", "touch", "--help"], &["RELATIONSHIP"]),
        (&["rel", "delete", "--help"], &["RELATIONSHIP"]),
        (
            &["rel", "read", "--help"],
            &["--subject", "--at-least-as-fresh"],
        ),
        (&["rel", "import", "--help"], &["--batch-size"]),
        (&["rel", "export", "--help"], &["--at-exact-snapshot"]),
        (
            &["check", "--help"],
            &[
                "--explain",
                "--json",
                "--consistency",
                "--at-least-as-fresh",
                "--at-exact-snapshot",
                "minimize-latency",
                "fully-consistent",
            ],
        ),
        (&["expand", "--help"], &["--endpoint"]),
        (&["lookup-resources", "--help"], &["--limit", "--endpoint"]),
        (&["lookup-subjects", "--help"], &["--subject-relation"]),
        (&["watch", "--help"], &["--from", "--count"]),
        (&["validate", "--help"], &["--endpoint", "--verbose"]),
    ];
    for (args, wanted) in cases {
        let o = dhow(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let text = stdout(&o);
        for w in *wanted {
            assert!(text.contains(w), "{args:?} help lacks {w}:\n{text}");
        }
    }
}

#[test]
fn bad_relationship_fails_before_connecting() {
    // The dead endpoint would give a connection error: a parse error proves nothing was sent.
    for cmd in ["create", "touch", "delete"] {
        let o = dhow(&[
            "rel",
            cmd,
            "document:1#viewer@user:a",
            "document:1#viewer",
            "--endpoint",
            DEAD,
        ]);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(
                "error: invalid relationship `document:1#viewer`: column 18: expected `@`"
            ),
            "{err}"
        );
        assert!(stdout(&o).is_empty());
    }
    let o = dhow(&["check", "document:1#view", "--endpoint", DEAD]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid relationship"),
        "{}",
        stderr(&o)
    );
    let o = dhow(&["rel", "read", "Document", "--endpoint", DEAD]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid filter `Document`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_import_line_is_named() {
    let dir = std::env::temp_dir().join(format!("dhow-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rels.txt");
    std::fs::write(
        &file,
        "// c\ndocument:1#viewer@user:a\nnot a relationship\n",
    )
    .unwrap();
    let o = dhow(&["rel", "import", file.to_str().unwrap(), "--endpoint", DEAD]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("rels.txt:3: invalid relationship"), "{err}");
}

#[test]
fn unreachable_endpoint_is_named() {
    let cases: &[&[&str]] = &[
        &["check", "document:1#view@user:alice"],
        &["schema", "read"],
        &["rel", "create", "document:1#viewer@user:alice"],
        &["rel", "export"],
        &["lookup-subjects", "document:1", "view", "user"],
        &["watch"],
    ];
    for args in cases {
        let mut a = args.to_vec();
        a.extend(["--endpoint", DEAD]);
        let o = dhow(&a);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.starts_with("error: cannot reach the server at http://127.0.0.1:1"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // The environment variable sets the endpoint too; a bare host:port means http.
    let o = Command::new(env!("CARGO_BIN_EXE_dhow"))
        .args(["schema", "read"])
        .env("DHOW_ENDPOINT", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("cannot reach the server at http://127.0.0.1:1"),
        "{}",
        stderr(&o)
    );
    let o = dhow(&["validate", "examples/quickstart.yaml", "--endpoint", DEAD]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach the server at http://127.0.0.1:1"));
}

#[test]
fn conflicting_consistency_flags_are_refused() {
    let o = dhow(&[
        "check",
        "document:1#view@user:a",
        "--consistency",
        "fully-consistent",
        "--at-least-as-fresh",
        "abc",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

#[test]
fn validate_quickstart_in_process() {
    let o = Command::new(env!("CARGO_BIN_EXE_dhow"))
        .current_dir(repo_root())
        .args(["validate", "examples/quickstart.yaml"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" passed, 0 failed"), "{}", stdout(&o));
}
