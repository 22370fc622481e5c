//! Membership changes that would leave the cluster without a quorum of reachable voters are
//! refused unless forced. Before, one `dhow cluster add 2 127.0.0.1:50299` against a one-node
//! server added a voter that does not exist, and from then on every write failed.

use std::process::Command;

use dhow_tests::process::{dhow_bin, Server};

fn dhow(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(dhow_bin())
        .args(args)
        .env_remove("DHOW_ENDPOINT")
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_voter_that_cannot_be_reached_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        0,
        &["--peer-addr", "127.0.0.1:0"],
        &[],
    );
    let ep = server.endpoint();
    let schema = dhow_tests::repo_root().join("examples/schema.zed");
    // The node elects itself first.
    let mut ok = false;
    for _ in 0..100 {
        if dhow(&[
            "schema",
            "write",
            schema.to_str().unwrap(),
            "--endpoint",
            &ep,
        ])
        .0 == Some(0)
        {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ok, "the node never took a write");
    let (code, _, err) = dhow(&["cluster", "add", "2", "127.0.0.1:50299", "--endpoint", &ep]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("refused") && err.contains("quorum"),
        "{err}"
    );
    // Writes still work.
    let (code, _, err) = dhow(&[
        "rel",
        "create",
        "document:readme#viewer@user:alice",
        "--endpoint",
        &ep,
    ]);
    assert_eq!(code, Some(0), "{err}");
    // A learner never counts toward the quorum: adding it is fine.
    let (code, _, err) = dhow(&[
        "cluster",
        "add",
        "3",
        "127.0.0.1:50298",
        "--learner",
        "--endpoint",
        &ep,
    ]);
    assert_eq!(code, Some(0), "{err}");
    // Removing the only voter is refused too.
    let (code, _, err) = dhow(&["cluster", "remove", "1", "--endpoint", &ep]);
    assert_eq!(code, Some(2), "{err}");
    // Forced, the unreachable voter is added (the operator's explicit choice).
    let (code, _, err) = dhow(&[
        "cluster",
        "add",
        "2",
        "127.0.0.1:50299",
        "--force",
        "--endpoint",
        &ep,
    ]);
    assert_eq!(code, Some(0), "{err}");
}
