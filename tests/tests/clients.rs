//! Dhow as clients in other languages call it: real `dhow serve` processes driven by programs
//! built here with their own gRPC libraries (Go's grpc-go under `tests/go/`), not by our Rust
//! client, whose write pattern hides some server faults.

use std::path::{Path, PathBuf};
use std::process::Command;

use dhow_tests::process::Server;
use dhow_tests::repo_root;

/// Builds the Go program in `tests/go/NAME` into `out` (modules come from the Go module proxy
/// the first time; the build is cached afterwards) and returns its path.
fn go_build(name: &str, out: &Path) -> PathBuf {
    let src = repo_root().join("tests/go").join(name);
    let bin = out.join(name);
    let o = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `go` (install Go to run this test): {e}"));
    assert!(
        o.status.success(),
        "go build in {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

/// grpc-go answers wait for the client's delayed ACK (about 40 ms) when the server sends its
/// response without TCP_NODELAY: 100 sequential calls then take 4 s or more. With NODELAY on
/// every accepted socket they take a few milliseconds each at worst, even on a loaded
/// machine; 2 s leaves a wide margin on both sides.
#[test]
fn grpc_go_calls_do_not_wait_for_delayed_acks() {
    let dir = tempfile::tempdir().unwrap();
    let ping = go_build("grpcping", dir.path());
    let server = Server::start(&dir.path().join("data"), 0);
    let o = Command::new(&ping)
        .args(["-addr", &server.addr, "-n", "100"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "grpcping failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ms: u64 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("grpcping prints milliseconds");
    assert!(
        ms < 2000,
        "100 sequential grpc-go health checks took {ms} ms: the server is waiting for delayed ACKs (TCP_NODELAY not set on accepted sockets?)"
    );
}
