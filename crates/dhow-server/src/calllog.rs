//! The one log line of every refused or failed call: a tower layer around every service
//! (outside authentication, so that its refusals pass here too) that reads the gRPC status a
//! call ends with and, unless it is OK, logs it once with the method, the code, the
//! `google.rpc.ErrorInfo` reason, the message the client got and the peer address. Client
//! errors at info, UNAVAILABLE at warn, INTERNAL (and UNKNOWN, DATA_LOSS) at error; successful
//! calls leave no line. Every call that ends with a status, OK included, is also counted once
//! in the metrics (`dhow_grpc_requests_total` and `dhow_grpc_request_duration_seconds`, see
//! `metrics.rs`).
//!
//! A call ends in exactly one of these ways, so it is logged at most once:
//! - a status in the response headers (a "trailers-only" answer: every unary error, a stream
//!   refused before its first message, an authentication refusal);
//! - a status in the trailers at the end of the body (a unary success, or a stream's end or
//!   its error);
//! - the response future dropped before it answered: past the call's deadline (tonic answers
//!   CANCELLED "Timeout expired" outside this layer), logged as that; before it, the client
//!   went away, logged as CANCELLED.
//!
//! A stream whose body is dropped midway (a client that stops watching) is not a failure and
//! is not logged. Nothing of the request is logged but its path and peer: never a header, so
//! never a credential; the message is the one the client receives, which names no secret.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{HeaderMap, Request, Response};
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Layer, Service};

/// Logs every call that does not end OK, once (see the module's documentation).
#[derive(Clone, Debug)]
pub struct CallLogLayer {
    /// The server's deadline of a call (`request_timeout`); a shorter `grpc-timeout` wins.
    timeout: Option<Duration>,
}

impl CallLogLayer {
    pub fn new(timeout: Option<Duration>) -> Self {
        CallLogLayer { timeout }
    }
}

impl<S> Layer<S> for CallLogLayer {
    type Service = CallLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallLog {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service [`CallLogLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct CallLog<S> {
    inner: S,
    timeout: Option<Duration>,
}

/// What is known of a call before it ends.
struct Call {
    method: http::Uri,
    peer: Option<SocketAddr>,
    started: Instant,
    deadline: Option<Duration>,
}

impl Call {
    fn new<B>(req: &Request<B>, timeout: Option<Duration>) -> Call {
        let peer = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .or_else(|| {
                req.extensions()
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|i| i.get_ref().remote_addr())
            });
        let asked = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let timeout = crate::deadline::server_deadline(req.uri().path(), timeout);
        let deadline = match (asked, timeout) {
            (Some(a), Some(t)) => Some(a.min(t)),
            (a, t) => a.or(t),
        };
        Call {
            method: req.uri().clone(),
            peer,
            started: Instant::now(),
            deadline,
        }
    }

    /// Logs the status in `headers` (headers of a trailers-only answer, or trailers), if it
    /// is not OK.
    fn ended(self, headers: &HeaderMap) {
        let Some(code) = headers.get("grpc-status") else {
            return;
        };
        let code = Code::from_bytes(code.as_bytes());
        if code == Code::Ok {
            self.count(code);
            return;
        }
        // Only the status and message headers: `from_header_map` would panic on details that
        // are not base64, so those are decoded here.
        let mut plain = HeaderMap::new();
        for name in ["grpc-status", "grpc-message"] {
            if let Some(v) = headers.get(name) {
                plain.insert(name, v.clone());
            }
        }
        let message = Status::from_header_map(&plain)
            .map(|s| s.message().to_string())
            .unwrap_or_default();
        let details = headers
            .get("grpc-status-details-bin")
            .and_then(|v| DETAILS.decode(v.as_bytes()).ok())
            .unwrap_or_default();
        let reason = Status::with_details(code, message.clone(), details.into())
            .get_details_error_info()
            .map(|i| i.reason);
        self.log(code, reason.as_deref(), &message);
    }

    /// Counts the call in the metrics (`dhow_grpc_requests_total` and its duration).
    fn count(&self, code: Code) {
        crate::metrics::global().grpc_call(
            self.method.path(),
            code_name(code),
            self.started.elapsed(),
        );
    }

    /// Logs (and counts) a call that did not end OK.
    fn log(self, code: Code, reason: Option<&str>, message: &str) {
        use tracing::field::display;
        self.count(code);
        let method = display(self.method.path());
        let peer = self.peer.map(display);
        let reason = reason.map(display);
        let code_name = display(code_name(code));
        match code {
            Code::Internal | Code::Unknown | Code::DataLoss => tracing::error!(
                method,
                code = code_name,
                reason,
                peer,
                error = message,
                "call failed"
            ),
            Code::Unavailable => tracing::warn!(
                method,
                code = code_name,
                reason,
                peer,
                error = message,
                "call failed"
            ),
            _ => tracing::info!(
                method,
                code = code_name,
                reason,
                peer,
                error = message,
                "call refused"
            ),
        }
    }
}

/// Logs the call if it is dropped before it answered (its deadline passed, or the client
/// went away).
struct Unanswered(Option<Call>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(call) = self.0.take() else {
            return;
        };
        // tonic's timer starts just before this layer's clock: a few milliseconds of slack.
        let past_deadline = call
            .deadline
            .is_some_and(|d| call.started.elapsed() + Duration::from_millis(5) >= d);
        if past_deadline {
            let d = call.deadline.unwrap_or_default();
            call.log(
                Code::Cancelled,
                None,
                &format!(
                    "Timeout expired: the deadline ({}) passed",
                    humantime::format_duration(d)
                ),
            );
        } else {
            call.log(
                Code::Cancelled,
                None,
                "the client cancelled the call before it was answered",
            );
        }
    }
}

impl<S, B> Service<Request<B>> for CallLog<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let call = Call::new(&req, self.timeout);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut pending = Unanswered(Some(call));
            let result = answer.await;
            let call = pending.0.take().expect("taken once");
            match result {
                Ok(response) => {
                    if response.headers().contains_key("grpc-status") {
                        call.ended(response.headers());
                        Ok(response)
                    } else {
                        Ok(response.map(|body| {
                            Body::new(Watched {
                                body,
                                call: Some(call),
                            })
                        }))
                    }
                }
                Err(e) => {
                    call.log(Code::Unknown, None, "the service failed");
                    Err(e)
                }
            }
        })
    }
}

/// A response body whose trailers (the call's status) are looked at on their way out.
struct Watched {
    body: Body,
    call: Option<Call>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(call) = this.call.take() {
                        call.ended(trailers);
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(call) = this.call.take() {
                    let reason = status.get_details_error_info().map(|i| i.reason);
                    call.log(status.code(), reason.as_deref(), status.message());
                }
            }
            Poll::Ready(None) => this.call = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `grpc-status-details-bin` is base64, with or without padding.
const DETAILS: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The canonical name of a gRPC code, as the protocol spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"S"), None);
        assert_eq!(parse_grpc_timeout(b"123456789S"), None);
        assert_eq!(parse_grpc_timeout(b"5x"), None);
    }

    #[test]
    fn the_reason_is_read_from_the_status_headers() {
        let status: Status = crate::ApiError::invalid("resource.object_type", "unknown").into();
        let response = status.into_http::<()>();
        let headers = response.headers();
        let details = headers.get("grpc-status-details-bin").unwrap();
        let bytes = DETAILS.decode(details.as_bytes()).unwrap();
        let back = Status::with_details(Code::InvalidArgument, "", bytes.into());
        assert_eq!(
            back.get_details_error_info().unwrap().reason,
            crate::reason::INVALID_FIELD
        );
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
