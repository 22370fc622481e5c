//! A request the server cannot decode is the client's error. tonic answers one INTERNAL
//! ("failed to decode Protobuf message: ...", as gRPC's status-code guide says of a server
//! that cannot parse a request) with no `ErrorInfo`: a request nested past the decoder's
//! recursion limit, or bytes that are not the message, then look like a server failure and
//! page an operator. [`rewrite`], mapped over every response, turns exactly those answers
//! into INVALID_ARGUMENT `MALFORMED_REQUEST`, naming what could not be decoded.

use http::{HeaderMap, Response};
use tonic::body::Body;
use tonic::{Code, Status};

use crate::error::{reason, ApiError};

/// What tonic's protobuf codec puts in front of a decode error's message.
const DECODE_FAILED: &str = "failed to decode Protobuf message";

/// The response itself, or INVALID_ARGUMENT `MALFORMED_REQUEST` in place of tonic's INTERNAL
/// answer to a request it could not decode.
pub fn rewrite(response: Response<Body>) -> Response<Body> {
    let headers = response.headers();
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"13") {
        return response;
    }
    // Only the status and the message: nothing else of the answer is kept.
    let mut plain = HeaderMap::new();
    for name in ["grpc-status", "grpc-message"] {
        if let Some(v) = headers.get(name) {
            plain.insert(name, v.clone());
        }
    }
    let Some(status) = Status::from_header_map(&plain) else {
        return response;
    };
    let Some(what) = status.message().strip_prefix(DECODE_FAILED) else {
        return response;
    };
    let what = what.trim_start_matches(':').trim();
    ApiError::new(
        Code::InvalidArgument,
        reason::MALFORMED_REQUEST,
        format!("the request could not be decoded as its protobuf message: {what}"),
    )
    .into_status()
    .into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn answer(status: Status) -> Response<Body> {
        status.into_http()
    }

    fn status_of(r: &Response<Body>) -> Status {
        Status::from_header_map(r.headers()).expect("a status")
    }

    #[test]
    fn a_decode_failure_becomes_invalid_argument_with_a_reason() {
        let r = rewrite(answer(Status::internal(
            "failed to decode Protobuf message: ListValue.values: Value.kind: recursion limit reached",
        )));
        let s = status_of(&r);
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert_eq!(
            s.get_details_error_info().map(|i| i.reason).as_deref(),
            Some("MALFORMED_REQUEST")
        );
        assert!(s.message().contains("recursion limit reached"), "{s:?}");
    }

    #[test]
    fn other_answers_pass_unchanged() {
        for st in [
            Status::internal("the store failed"),
            Status::invalid_argument("failed to decode Protobuf message: but not INTERNAL"),
            Status::ok(""),
        ] {
            let r = rewrite(answer(st.clone()));
            let s = status_of(&r);
            assert_eq!((s.code(), s.message()), (st.code(), st.message()));
        }
    }
}
