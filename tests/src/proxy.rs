//! A fault-injecting TCP proxy for one direction of one peer link (the connections node A
//! opens to node B): pass, delay, random loss, drop (reset and refuse) and blackhole (hold
//! every byte until healed), switchable while connections are open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the link does to the bytes that cross it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Bytes cross unharmed.
    Pass,
    /// Every chunk waits this long before it crosses.
    Delay(Duration),
    /// Each chunk kills its connection with this probability (0.0 to 1.0): message loss as
    /// TCP shows it, a reset connection.
    Lossy(f64),
    /// Open connections are reset and new ones are closed at once.
    Drop,
    /// Nothing crosses and nothing is closed: bytes wait (in the kernel's buffers) until the
    /// fault changes, as in a partition TCP later retransmits across.
    Blackhole,
}

/// One proxied link: listens on `port` and forwards to `upstream`.
pub struct Link {
    pub port: u16,
    fault: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Starts a proxy on a free loopback port in front of `upstream`, never on one of
    /// `avoid` (ports chosen for the nodes that are not bound yet).
    pub async fn start(upstream: String, avoid: &[u16]) -> Link {
        let (listener, port) = loop {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
            let port = l.local_addr().expect("proxy addr").port();
            if !avoid.contains(&port) {
                break (l, port);
            }
        };
        let (fault, rx) = watch::channel(Fault::Pass);
        let seed = Arc::new(AtomicU64::new(
            u64::from(port).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        ));
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                let (rx, upstream, seed) = (rx.clone(), upstream.clone(), seed.clone());
                tokio::spawn(connection(down, upstream, rx, seed));
            }
        });
        Link { port, fault, task }
    }

    /// The address nodes dial to cross this link.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Switches the link's fault; open connections follow at once.
    pub fn set(&self, f: Fault) {
        self.fault.send_replace(f);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the fault is not a blackhole; `None` when the link drops connections.
async fn admitted(rx: &mut watch::Receiver<Fault>) -> Option<()> {
    loop {
        let f = *rx.borrow_and_update();
        match f {
            Fault::Drop => return None,
            Fault::Blackhole => {
                if rx.changed().await.is_err() {
                    return None;
                }
            }
            _ => return Some(()),
        }
    }
}

async fn connection(
    down: TcpStream,
    upstream: String,
    mut rx: watch::Receiver<Fault>,
    seed: Arc<AtomicU64>,
) {
    if admitted(&mut rx).await.is_none() {
        return; // closes `down`
    }
    let Ok(up) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    // Either direction ending (closed, reset, dropped) ends both.
    tokio::select! {
        _ = pump(dr, uw, rx.clone(), seed.clone()) => {}
        _ = pump(ur, dw, rx, seed) => {}
    }
}

/// Copies `from` to `to` chunk by chunk under the link's current fault.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<Fault>,
    seed: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Do not even read while blackholed: the sender's bytes pile up in TCP buffers.
        if admitted(&mut rx).await.is_none() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Re-evaluate when the fault changes (a Drop resets idle connections too).
            _ = rx.changed() => continue,
        };
        // A chunk read under one fault crosses under the fault in force now.
        loop {
            let fault = *rx.borrow_and_update();
            match fault {
                Fault::Pass => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Lossy(p) => {
                    if next_unit(&seed) < p {
                        return;
                    }
                    break;
                }
                Fault::Drop => return,
                Fault::Blackhole => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A uniform number in [0, 1) from a shared xorshift state.
fn next_unit(state: &AtomicU64) -> f64 {
    let mut x = state.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A proxy on every directed link of a cluster: `links[(a, b)]` carries what node `a` sends
/// to node `b` (the connections `a` opens to `b`).
pub struct Mesh {
    pub links: std::collections::BTreeMap<(u64, u64), Link>,
}

impl Mesh {
    /// Proxies for every ordered pair of `peers` (id → real peer address), on ports other
    /// than `avoid`.
    pub async fn start(peers: &std::collections::BTreeMap<u64, String>, avoid: &[u16]) -> Mesh {
        let mut links = std::collections::BTreeMap::new();
        for &a in peers.keys() {
            for (&b, addr) in peers {
                if a != b {
                    links.insert((a, b), Link::start(addr.clone(), avoid).await);
                }
            }
        }
        Mesh { links }
    }

    /// The `--initial-cluster` node `a` is given: itself at its real address, every other
    /// node at the proxy of the link from `a`.
    pub fn view_of(&self, a: u64, peers: &std::collections::BTreeMap<u64, String>) -> String {
        peers
            .iter()
            .map(|(&b, addr)| {
                if a == b {
                    format!("{b}={addr}")
                } else {
                    format!("{b}={}", self.links[&(a, b)].addr())
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Sets the fault of the link from `a` to `b`.
    pub fn set(&self, a: u64, b: u64, f: Fault) {
        self.links[&(a, b)].set(f);
    }

    /// Cuts `node` off from every other node in both directions.
    pub fn isolate(&self, node: u64, f: Fault) {
        for (&(a, b), l) in &self.links {
            if a == node || b == node {
                l.set(f);
            }
        }
    }

    /// Every link back to `f` (e.g. [`Fault::Pass`] to heal).
    pub fn set_all(&self, f: Fault) {
        for l in self.links.values() {
            l.set(f);
        }
    }
}
