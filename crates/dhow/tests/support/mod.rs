//! The `dhow serve` process the binary's end-to-end tests run against: started on a port it
//! picks itself (no race with other tests for a free port), killed with kill -9 on drop.
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dhow");

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
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(data)
            .args(["--grpc-addr", &addr])
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
