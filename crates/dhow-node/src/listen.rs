//! Accepting connections for Dhow's gRPC servers (the public API and the node-to-node port),
//! with a budget that no client can exhaust: at most `max_connections` open at once (past it
//! the server stops accepting, so the kernel's backlog holds the rest instead of the node's
//! descriptors), a connection that sends nothing for `idle_timeout` is closed, and a failed
//! accept (out of descriptors) backs off instead of spinning. Every accepted socket gets
//! TCP_NODELAY before tonic sees it: tonic applies its own `tcp_nodelay` setting only to
//! listeners it binds itself, and without NODELAY a grpc-go client waits for its delayed ACK
//! (about 40 ms) on every answer.
//!
//! Invariant: a live client is never idle for `idle_timeout`, because the server pings every
//! connection it has not heard from (HTTP/2 keepalive, `keepalive_interval` <
//! `idle_timeout`) and the client's acknowledgement is a read. What the idle timeout closes is
//! a socket that does not speak HTTP/2 at all or a peer that is gone.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How many connections a server keeps and how long it keeps a silent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; past it, accepting waits until one closes.
    pub max_connections: usize,
    /// A connection on which nothing was received for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (as Go's runtime does at
/// start), and returns the limit in force. `None` where it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// The default connection budget: half the descriptors this process may open (the rest are
/// for RocksDB's files, peers and logs), at most 10,000, at least 16.
pub fn default_max_connections() -> usize {
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    (nofile / 2).clamp(16, 10_000) as usize
}

/// How long a failed accept waits before the next one: out of descriptors, accepting again
/// at once would fail again at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connections `listener` accepts within `limits`, with their peer addresses. Accepting
/// runs on a task of its own and stops when the stream is dropped.
pub fn accept(
    listener: TcpListener,
    limits: Limits,
) -> impl Stream<Item = (Conn, SocketAddr)> + Send + 'static {
    let (tx, rx) = mpsc::channel(16);
    let budget = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        let mut warned_full = false;
        loop {
            let permit = tokio::select! {
                p = budget.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
            if budget.available_permits() == 0 && !warned_full {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached: new connections wait until one closes"
                );
            }
            warned_full = budget.available_permits() == 0;
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    drop(permit);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
            }
            let conn = Conn::new(stream, permit, limits.idle_timeout);
            if tx.send((conn, peer)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// [`accept`] as tonic's plaintext `incoming`.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    accept(listener, limits).map(|(conn, _)| Ok(conn))
}

/// An accepted connection: the socket, its place in the connection budget (given back when
/// the connection is dropped), and its idle deadline.
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    last_read: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl Conn {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Conn {
        let now = Instant::now();
        Conn {
            stream,
            _permit: permit,
            idle_timeout,
            last_read: now,
            deadline: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
        }
    }

    /// Whether the idle deadline has passed; re-arms it (without touching the timer on every
    /// read) when something was read since it was set.
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_read + self.idle_timeout;
            if due <= Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.idle(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing received for {:?}", this.idle_timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let (l, addr) = listener().await;
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let mut accepted = Box::pin(incoming(l, Limits::default()));
        let conn = accepted.next().await.unwrap().unwrap();
        assert!(conn.stream.nodelay().unwrap());
        drop(client.await.unwrap());
    }

    #[tokio::test]
    async fn past_the_limit_accepting_waits_until_a_connection_closes() {
        let (l, addr) = listener().await;
        let limits = Limits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(60),
        };
        let mut accepted = Box::pin(accept(l, limits));
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let first = accepted.next().await.unwrap();
        let _second = accepted.next().await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(300), accepted.next()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted past a limit of 2"
        );
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), accepted.next()).await;
        assert!(
            third.is_ok(),
            "closing a connection did not let the next one in"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_a_talking_one_is_not() {
        let (l, addr) = listener().await;
        let limits = Limits {
            max_connections: 8,
            idle_timeout: Duration::from_millis(300),
        };
        let mut accepted = Box::pin(accept(l, limits));
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut talking = TcpStream::connect(addr).await.unwrap();
        let (mut s_conn, _) = accepted.next().await.unwrap();
        let (mut t_conn, _) = accepted.next().await.unwrap();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let silent = s_conn.read(&mut buf).await;
            let mut talked = 0;
            let talking = loop {
                match t_conn.read(&mut buf).await {
                    Ok(0) => break Ok(talked),
                    Ok(n) => talked += n,
                    Err(e) => break Err(e),
                }
            };
            (silent, talking)
        });
        for _ in 0..10 {
            talking.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(talking);
        let (silent_read, talking_read) = server.await.unwrap();
        let e = silent_read.expect_err("the silent connection was not closed");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            talking_read.expect("the talking connection was closed while it talked"),
            10
        );
        let mut buf = [0u8; 1];
        // The server side was dropped with the task: the client sees the end.
        assert_eq!(silent.read(&mut buf).await.unwrap_or(0), 0);
    }
}
