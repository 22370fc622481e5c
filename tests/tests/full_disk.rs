//! A full disk under a real `dhow serve`, on a small tmpfs (mounting one needs root; without
//! it the test says so and does nothing): the node's disk is filled to the last block (below
//! its free-space reserve of 64 MiB, so the node pauses before RocksDB sees a failed write);
//! the write in flight is answered UNAVAILABLE "may or may not have been
//! applied", later writes UNAVAILABLE "not applied", health says NOT_SERVING; once the
//! filler is removed the node serves again without a restart, and the paused write was
//! applied, not lost. Before, the write that hit the full disk was answered "the node is
//! shutting down", writes kept failing after space was freed until a restart, and health
//! stayed SERVING.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dhow_tests::cluster::{fully_consistent, Client, SCHEMA};
use dhow_tests::damage::write_many;
use dhow_tests::process::Server;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Unmounts the tmpfs when the test ends, whatever happens.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df's available bytes")
}

async fn health(client: &Client) -> i32 {
    HealthClient::new(client.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn wait_health(client: &Client, want: ServingStatus, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = health(client).await;
        if now == want as i32 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health {now}, waiting for {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_writes_and_the_node_recovers_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=160m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("cannot mount a tmpfs (not root?): full-disk test not run");
        return;
    }
    let _mount = Mount(mnt.clone());
    let data = mnt.join("node");
    let server = Server::start(&data, 0);
    let client = Client::connect(&server.endpoint()).await;
    let mut c = Client::connect(&server.endpoint()).await;
    c.write_schema(SCHEMA).await.unwrap();
    write_many(&client, "a", 10).await.unwrap();
    wait_health(&client, ServingStatus::Serving, Duration::from_secs(5)).await;

    // Fill the disk: a filler file takes every free block.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    eprintln!(
        "filled {} MiB, {} KiB left",
        std::fs::metadata(&filler).unwrap().len() >> 20,
        free_bytes(&mnt) >> 10
    );

    // Write until a write fails (RocksDB preallocates its WAL, so a node without the
    // reserve takes writes for a while on a full disk before one fails).
    let mut failed = None;
    for w in 0..1000 {
        if let Err(e) = write_many(&client, &format!("b{w}"), 500).await {
            failed = Some((w, e));
            break;
        }
    }
    let (w, e) = failed.expect("no write failed on a full disk");
    eprintln!("write {w} on the full disk: {e}");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert!(
        e.message().contains("may or may not have been applied"),
        "{e}"
    );
    wait_health(&client, ServingStatus::NotServing, Duration::from_secs(5)).await;
    let e = write_many(&client, "c", 10).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert!(e.message().contains("not applied"), "{e}");

    // Space is freed: the node serves again by itself.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    wait_health(&client, ServingStatus::Serving, Duration::from_secs(10)).await;
    let (_, _token) = write_many(&client, "d", 10).await.unwrap();
    eprintln!("writing again {:?} after space was freed", freed.elapsed());
    let all = c.export(fully_consistent()).await.unwrap();
    let paused = format!("b{w}");
    for (prefix, want) in [
        ("a", true),
        (paused.as_str(), true),
        ("c", false),
        ("d", true),
    ] {
        let key = format!("document:{prefix}_9#viewer@user:u");
        assert_eq!(
            all.contains_key(&key),
            want,
            "{key}: the paused write must be applied, the refused one not"
        );
    }
    drop(server);
}
