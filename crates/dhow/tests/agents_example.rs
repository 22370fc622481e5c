//! The worked example of docs/agents.md, `examples/agents/walkthrough.sh`, run end to end
//! against a `dhow serve` process whose audit log records every decision: each answer must
//! be the one the docs give (the script exits non-zero otherwise), and the proofs and audit
//! records it prints name the hops that denied.

use std::process::Command;

use dhow_tests::process::{dhow_bin, free_port, Server};

#[test]
fn the_agents_walkthrough_runs_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dhow.toml");
    std::fs::write(&cfg, "[audit]\nmode = \"all\"\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        free_port(),
        &["--config", cfg.to_str().unwrap()],
        &[],
    );
    let root = dhow_tests::repo_root();
    let out = Command::new("bash")
        .arg(root.join("examples/agents/walkthrough.sh"))
        .arg(dhow_bin())
        .env("DHOW_ENDPOINT", server.endpoint())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The sub-agent's edit: its own hop is the first that denies.
    assert!(
        stdout.contains(
            "└─ ✗ hop 2: actors[0] agent:researcher acting for agent:assistant   ← first link that denies"
        ),
        "{stdout}"
    );
    // After the revocation: the assistant's hop (acting for alice) denies.
    assert!(
        stdout.contains(
            "├─ ✗ hop 1: actors[1] agent:assistant acting for user:alice   ← first link that denies"
        ),
        "{stdout}"
    );
    // The folder-limited lookup finds the notes only.
    assert!(
        stdout.contains(
            "$ dhow lookup-resources document view user:alice --actor agent:filer\nnotes\n"
        ),
        "{stdout}"
    );
    // The audit log: every denial for alice, with the link that denied, oldest first.
    let audit: Vec<&str> = stdout
        .split("$ dhow audit --principal user:alice --outcome denied\n")
        .nth(1)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(audit.len(), 5, "{stdout}");
    assert!(audit.iter().all(|l| l.contains(" denied ")), "{stdout}");
    assert!(audit[4].ends_with("denied at actors[1]"), "{stdout}");
    drop(server);
}
