//! Damaging a stopped node's data dir and watching it refuse to start: bytes flipped in the
//! middle of its RocksDB WAL, `dhow serve` run until it exits (its status and what it
//! printed), and writes of many relationships at once (a WAL large enough that its middle is
//! well before its last block).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dhow_proto::v1 as pb;
use pb::relationship_service_client::RelationshipServiceClient;

use crate::cluster::Client;
use crate::process::dhow_bin;

/// The newest RocksDB WAL under a node's data dir (`DATA/db/*.log`).
pub fn newest_wal(data: &Path) -> PathBuf {
    let db = data.join("db");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&db)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", db.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop()
        .unwrap_or_else(|| panic!("no WAL in {}", db.display()))
}

/// Flips 8 bytes in the middle of the newest WAL of a stopped node (at least 96 KiB long,
/// so that the damage is blocks away from its end). Returns the WAL's path and length.
pub fn flip_wal_middle(data: &Path) -> (PathBuf, usize) {
    let wal = newest_wal(data);
    let mut bytes = std::fs::read(&wal).expect("read the WAL");
    assert!(
        bytes.len() >= 96 * 1024,
        "the WAL {} holds only {} bytes: write more first",
        wal.display(),
        bytes.len()
    );
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0xff;
    }
    std::fs::write(&wal, &bytes).expect("write the WAL");
    (wal, bytes.len())
}

/// Runs `dhow serve ARGS` and waits (up to 60 s) for it to exit: its exit status and
/// everything it printed (stdout, then stderr). Panics if it is still running then (it
/// started serving).
pub fn serve_until_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(dhow_bin())
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dhow serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait().expect("wait for dhow serve") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output of dhow serve");
                panic!(
                    "dhow serve {args:?} was still running after 60 s:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().expect("output of dhow serve");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// One write of `count` TOUCHes `document:{prefix}_{k}#viewer@user:u` (k in 0..count).
/// Returns the relationships as text (`document:...#viewer@user:u`) and the token.
pub async fn write_many(
    client: &Client,
    prefix: &str,
    count: usize,
) -> Result<(Vec<String>, pb::ConsistencyToken), tonic::Status> {
    let mut texts = Vec::with_capacity(count);
    let mut updates = Vec::with_capacity(count);
    for k in 0..count {
        let text = format!("document:{prefix}_{k}#viewer@user:u");
        updates.push(pb::RelationshipUpdate {
            operation: pb::relationship_update::Operation::Touch as i32,
            relationship: Some(crate::rel(&text)),
        });
        texts.push(text);
    }
    let r = RelationshipServiceClient::new(client.channel.clone())
        .write(pb::WriteRequest {
            updates,
            optional_preconditions: vec![],
        })
        .await?
        .into_inner();
    Ok((texts, r.written_at.expect("a token")))
}

/// Runs the `dhow` client with `args` (e.g. `cluster remove 3 --endpoint ...`): its exit
/// status and output.
pub fn dhow_cli(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(dhow_bin())
        .args(args)
        .output()
        .expect("run dhow");
    (
        out.status,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs the `dhow` client with `args`: its exit status, its stdout and its stderr apart (a
/// command's output, and the `token: ...` line it prints on stderr).
pub fn dhow_cli_split(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(dhow_bin())
        .args(args)
        .output()
        .expect("run dhow");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
