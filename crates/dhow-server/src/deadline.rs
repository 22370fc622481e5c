//! The server's deadline of a call (`request_timeout`), for every method but Import: an
//! Import stream of millions of relationships runs as long as its client sends, so its bound
//! is the wait for each next message (the same `request_timeout`, in the handler), not the
//! whole stream. A client's own `grpc-timeout` still bounds any call (tonic applies it).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

/// The one method without a whole-call deadline: the client stream of Import.
pub const IMPORT_PATH: &str = "/dhow.v1.RelationshipService/Import";

/// The server's deadline of a call to `path`: `timeout`, except for Import.
pub fn server_deadline(path: &str, timeout: Option<Duration>) -> Option<Duration> {
    if path == IMPORT_PATH {
        None
    } else {
        timeout
    }
}

/// Ends a call that runs past its server deadline with CANCELLED "Timeout expired" (what
/// tonic's own server timeout answers, which this replaces so that Import can go without).
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    pub fn new(timeout: Duration) -> Self {
        DeadlineLayer { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service [`DeadlineLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let deadline = server_deadline(req.uri().path(), Some(self.timeout));
        let fut = self.inner.call(req);
        Box::pin(async move {
            match deadline {
                None => fut.await,
                Some(d) => match tokio::time::timeout(d, fut).await {
                    Ok(r) => r,
                    Err(_) => Ok(Status::cancelled("Timeout expired").into_http()),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_alone_has_no_whole_call_deadline() {
        let t = Some(Duration::from_secs(30));
        assert_eq!(server_deadline(IMPORT_PATH, t), None);
        // The path is the generated service's, so a renamed service or method shows here.
        let service = dhow_proto::v1::relationship_service_server::SERVICE_NAME;
        assert_eq!(IMPORT_PATH, format!("/{service}/Import"));
        assert_eq!(server_deadline("/dhow.v1.RelationshipService/Write", t), t);
        assert_eq!(server_deadline("/dhow.v1.PermissionService/Check", t), t);
    }
}
