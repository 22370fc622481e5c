//! Accepting connections for Dhow's gRPC servers (the public API and the node-to-node port):
//! every accepted socket gets TCP_NODELAY before tonic sees it. tonic applies its own
//! `tcp_nodelay` setting only to listeners it binds itself, not to an incoming stream, and
//! without NODELAY a grpc-go client waits for its delayed ACK (about 40 ms) on every answer.

use std::io;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};

/// The connections `listener` accepts, each with TCP_NODELAY set.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let mut accepted = Box::pin(incoming(listener));
        let stream = accepted.next().await.unwrap().unwrap();
        assert!(stream.nodelay().unwrap());
        drop(client.await.unwrap());
    }
}
