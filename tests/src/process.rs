//! Real `dhow` processes for end-to-end tests: where the binary is, free loopback ports, and
//! one `dhow serve` started on a port it picks itself (no race with other tests for a free
//! port), killed with kill -9 on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `dhow` binary `cargo test --workspace` built next to the running test executable.
pub fn dhow_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/cluster-HASH -> target/debug/dhow
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir of the test executable");
    let bin = dir.join("dhow");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A free loopback port (bound once, then released), never one handed out before in this
/// process (the kernel may offer a released port again).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
}

/// `dhow serve` over a data dir; killed (kill -9) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data: PathBuf,
}

impl Server {
    /// Starts `dhow serve` on `port`, or with port 0 on a port the server picks itself (read
    /// back from its first line), which no other test can take in between.
    pub fn start(data: &Path, port: u16) -> Server {
        Server::start_with(data, port, &[], &[])
    }

    /// [`Server::start`] with more flags and environment variables.
    pub fn start_with(data: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Server {
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(dhow_bin())
            .args(["serve", "--data-dir"])
            .arg(data)
            .args(["--grpc-addr", &addr])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dhow serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let first = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains(" listening on "))
            .unwrap_or_else(|| panic!("dhow serve on {addr} exited before it listened"));
        let bound = first
            .split(" listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line of dhow serve: {first}"))
            .to_string();
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let s = Server {
            child,
            addr: bound,
            data: data.to_path_buf(),
        };
        s.wait_ready();
        s
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("host:port")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dhow serve did not listen on {} within 30 s", self.addr);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn restart(&mut self, port: u16) {
        self.kill9();
        *self = Server::start(&self.data.clone(), port);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
