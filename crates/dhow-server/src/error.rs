//! The one place where errors become gRPC statuses: every error of the engine, the tuple
//! store, the schema compiler, the node and request validation maps here to a status code
//! and a stable machine-readable reason (a `google.rpc.ErrorInfo` detail, domain `dhow.dev`).

use std::collections::HashMap;
use std::fmt;

use tonic::{Code, Status};
use tonic_types::{BadRequest, ErrorDetail, ErrorInfo, StatusExt};

use dhow_node::{NodeError, SchemaCacheError};
use dhow_wire::WireError;

/// The `google.rpc.ErrorInfo` domain of every reason below.
pub const DOMAIN: &str = "dhow.dev";

/// The stable reasons, in `google.rpc.ErrorInfo.reason`. Clients branch on these, never on
/// messages. Adding a reason is fine; renaming one is a breaking change. Retired (nothing
/// sends them since caveats are evaluated): `CAVEAT_UNSUPPORTED` (a write of a caveated
/// relationship), `CAVEAT_EVALUATION_UNSUPPORTED` (an evaluation that met one) and
/// `DELEGATION_UNSUPPORTED` (a request with `actors`, before delegated checks).
pub mod reason {
    use crate::auth::reason as auth;

    /// INVALID_ARGUMENT: a request field is missing or malformed (metadata `field`).
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// INVALID_ARGUMENT: the request's bytes do not decode as its protobuf message (nested
    /// past the decoder's recursion limit, or not the message at all).
    pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";
    /// INVALID_ARGUMENT: the schema text does not compile (metadata `line`, `column`, and `errors`: how many diagnostics).
    pub const SCHEMA_PARSE_ERROR: &str = "SCHEMA_PARSE_ERROR";
    /// INVALID_ARGUMENT: a relationship the schema does not allow (subject type, caveat,
    /// expiration), or whose caveat context does not fit the caveat's parameters.
    pub const INVALID_RELATIONSHIP: &str = "INVALID_RELATIONSHIP";
    /// INVALID_ARGUMENT: a relationship appears twice in one write.
    pub const DUPLICATE_RELATIONSHIP: &str = "DUPLICATE_RELATIONSHIP";
    /// INVALID_ARGUMENT: more updates in one write than the server allows.
    pub const TOO_MANY_UPDATES: &str = "TOO_MANY_UPDATES";
    /// INVALID_ARGUMENT: more preconditions in one write than the server allows (metadata
    /// `max_preconditions_per_write`).
    pub const TOO_MANY_PRECONDITIONS: &str = "TOO_MANY_PRECONDITIONS";
    /// More items in one CheckBulk than `max_check_bulk_items` (metadata
    /// `max_check_bulk_items`).
    pub const TOO_MANY_ITEMS: &str = "TOO_MANY_ITEMS";
    /// A lookup found more results than the server returns in one call (metadata `limit`).
    pub const TOO_MANY_RESULTS: &str = "TOO_MANY_RESULTS";
    /// INVALID_ARGUMENT: the write or schema is larger than one Raft entry may be.
    pub const ENTRY_TOO_LARGE: &str = "ENTRY_TOO_LARGE";
    /// INVALID_ARGUMENT: the request's caveat context has a value of the wrong type for a
    /// caveat parameter (metadata `parameter`), or is larger than the limit (no `parameter`).
    pub const INVALID_CAVEAT_CONTEXT: &str = "INVALID_CAVEAT_CONTEXT";
    /// INVALID_ARGUMENT (as SpiceDB): a caveat's expression failed while it was evaluated (a
    /// missing map key, an overflow, a division by zero), or a stored relationship's caveat
    /// no longer fits the schema (metadata `caveat`).
    pub const CAVEAT_EVALUATION_ERROR: &str = "CAVEAT_EVALUATION_ERROR";
    /// INVALID_ARGUMENT: a consistency token that cannot be decoded.
    pub const TOKEN_MALFORMED: &str = "TOKEN_MALFORMED";
    /// INVALID_ARGUMENT: a consistency token issued by another cluster.
    pub const TOKEN_WRONG_CLUSTER: &str = "TOKEN_WRONG_CLUSTER";
    /// INVALID_ARGUMENT: a cursor that cannot be decoded or belongs to another request.
    pub const CURSOR_INVALID: &str = "CURSOR_INVALID";
    /// FAILED_PRECONDITION: the token's revision is older than the GC window.
    pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
    /// FAILED_PRECONDITION: the object type is not defined in the schema.
    pub const UNKNOWN_TYPE: &str = "UNKNOWN_TYPE";
    /// FAILED_PRECONDITION: the relation or permission is not defined on the type.
    pub const UNKNOWN_RELATION: &str = "UNKNOWN_RELATION";
    /// FAILED_PRECONDITION: no schema has been written yet.
    pub const NO_SCHEMA: &str = "NO_SCHEMA";
    /// FAILED_PRECONDITION: a new schema would orphan stored relationships.
    pub const SCHEMA_ORPHANS_RELATIONSHIPS: &str = "SCHEMA_ORPHANS_RELATIONSHIPS";
    /// FAILED_PRECONDITION: a write's precondition did not hold.
    pub const PRECONDITION_FAILED: &str = "PRECONDITION_FAILED";
    /// FAILED_PRECONDITION: a Delete matched more than its limit, without partial deletes.
    pub const DELETE_LIMIT_EXCEEDED: &str = "DELETE_LIMIT_EXCEEDED";
    /// FAILED_PRECONDITION: a membership or leadership request that does not fit the
    /// cluster (unknown member, learner as leader, a node started without a peer address).
    pub const CLUSTER: &str = "CLUSTER";
    /// ALREADY_EXISTS: a CREATE of a relationship that exists.
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    /// RESOURCE_EXHAUSTED (as SpiceDB): the evaluation went deeper than the limit
    /// (metadata `maximum_depth_allowed`).
    pub const MAX_DEPTH_EXCEEDED: &str = "MAX_DEPTH_EXCEEDED";
    /// RESOURCE_EXHAUSTED: the evaluation needed more than one of its per-request budgets
    /// (metadata `budget`, `limit`): `dispatches` (reader calls and unmemoised evaluations)
    /// or `caveat_cost` (the work of caveat expressions on the request's and the
    /// relationships' contexts).
    pub const BUDGET_EXHAUSTED: &str = "BUDGET_EXHAUSTED";
    /// CANCELLED: the evaluation stopped because its client went away or its deadline passed.
    pub const CANCELLED: &str = "CANCELLED";
    /// UNAVAILABLE: no quorum, no leader, shutting down.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// UNAVAILABLE: the node did not apply the asked revision in time.
    pub const REVISION_NOT_APPLIED: &str = "REVISION_NOT_APPLIED";
    /// UNAVAILABLE: a write or read index did not complete in time; DEADLINE_EXCEEDED: an
    /// Import stream sent no message within `request_timeout` (metadata `loaded`).
    pub const TIMEOUT: &str = "TIMEOUT";
    /// INVALID_ARGUMENT: a delegation chain longer than the limit, with a repeated actor, a
    /// wildcard, or the principal as an actor (metadata `field`: `actors[i]`, absent for the
    /// length; docs/agents.md).
    pub const INVALID_DELEGATION_CHAIN: &str = "INVALID_DELEGATION_CHAIN";
    /// PERMISSION_DENIED: the request's principal or actors differ from those the caller's
    /// token carries (docs/agents.md).
    pub const DELEGATION_CHAIN_MISMATCH: &str = "DELEGATION_CHAIN_MISMATCH";
    /// PERMISSION_DENIED: the caller's token names a principal or actor its issuer's
    /// `delegation` settings do not map to an object.
    pub const DELEGATION_CLAIMS_INVALID: &str = "DELEGATION_CLAIMS_INVALID";
    /// FAILED_PRECONDITION: an audit query to a node whose `[audit]` mode is off.
    pub const AUDIT_OFF: &str = "AUDIT_OFF";
    /// INTERNAL: the server or its storage failed.
    pub const INTERNAL: &str = "INTERNAL";

    /// Every reason the server sends: the constants above, then the refusals of
    /// authentication (`crate::auth::reason`). Each is a value of the public enum
    /// `dhow.v1.ErrorReason` (proto/dhow/v1/error_reason.proto) with the prefix
    /// `ERROR_REASON_`; a test checks the three lists against each other, so a new reason
    /// goes in its module, here and in the enum.
    pub const ALL: &[&str] = &[
        INVALID_FIELD,
        SCHEMA_PARSE_ERROR,
        INVALID_RELATIONSHIP,
        DUPLICATE_RELATIONSHIP,
        TOO_MANY_UPDATES,
        TOO_MANY_PRECONDITIONS,
        TOO_MANY_ITEMS,
        TOO_MANY_RESULTS,
        ENTRY_TOO_LARGE,
        INVALID_CAVEAT_CONTEXT,
        CAVEAT_EVALUATION_ERROR,
        TOKEN_MALFORMED,
        TOKEN_WRONG_CLUSTER,
        CURSOR_INVALID,
        TOKEN_EXPIRED,
        UNKNOWN_TYPE,
        UNKNOWN_RELATION,
        NO_SCHEMA,
        SCHEMA_ORPHANS_RELATIONSHIPS,
        PRECONDITION_FAILED,
        DELETE_LIMIT_EXCEEDED,
        CLUSTER,
        ALREADY_EXISTS,
        MAX_DEPTH_EXCEEDED,
        BUDGET_EXHAUSTED,
        CANCELLED,
        UNAVAILABLE,
        REVISION_NOT_APPLIED,
        TIMEOUT,
        INVALID_DELEGATION_CHAIN,
        DELEGATION_CHAIN_MISMATCH,
        DELEGATION_CLAIMS_INVALID,
        AUDIT_OFF,
        INTERNAL,
        MALFORMED_REQUEST,
        auth::CREDENTIALS_MISSING,
        auth::CREDENTIALS_MALFORMED,
        auth::KEY_UNKNOWN,
        auth::JWT_MALFORMED,
        auth::JWT_TOO_LARGE,
        auth::JWT_ALGORITHM_NOT_ALLOWED,
        auth::JWT_ISSUER_UNKNOWN,
        auth::JWT_KEY_UNKNOWN,
        auth::JWT_SIGNATURE_INVALID,
        auth::JWT_EXPIRED,
        auth::JWT_NOT_YET_VALID,
        auth::JWT_ISSUED_IN_FUTURE,
        auth::JWT_AUDIENCE_INVALID,
        auth::JWT_CLAIM_MISSING,
        auth::CERTIFICATE_UNKNOWN,
        auth::ROLE_MISSING,
    ];
}

/// An error on its way to the client: code, reason, message and optional field and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub reason: &'static str,
    pub message: String,
    /// The request field at fault, as a path (`updates[3].relationship.subject`).
    pub field: Option<String>,
    pub metadata: Vec<(String, String)>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a code, a reason and a message.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            field: None,
            metadata: Vec::new(),
        }
    }

    /// Marks `field` as the field at fault and prefixes the message with it.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        if !field.is_empty() {
            self.message = format!("{field}: {}", self.message);
            self.field = Some(field);
        }
        self
    }

    /// Adds one metadata entry.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }

    /// INVALID_ARGUMENT `INVALID_FIELD` naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(Code::InvalidArgument, reason::INVALID_FIELD, message).at(field)
    }

    /// INVALID_ARGUMENT `INVALID_FIELD`: a required field is absent or empty.
    pub fn missing(field: impl Into<String>) -> Self {
        ApiError::invalid(field, "required")
    }

    /// FAILED_PRECONDITION `NO_SCHEMA`.
    pub fn no_schema() -> Self {
        ApiError::new(
            Code::FailedPrecondition,
            reason::NO_SCHEMA,
            "no schema written: write one with SchemaService.WriteSchema first",
        )
    }

    /// INTERNAL.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(Code::Internal, reason::INTERNAL, message)
    }

    /// UNAVAILABLE, e.g. while shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(Code::Unavailable, reason::UNAVAILABLE, message)
    }

    /// A schema that does not compile: INVALID_ARGUMENT with line and column of the first
    /// diagnostic (every diagnostic is in the message, one a line).
    pub fn schema(e: &dhow_schema::SchemaError) -> Self {
        let all = e.diagnostics();
        // The count first: the message is cut at MAX_MESSAGE_BYTES.
        let mut message = if all.len() > MAX_DIAGNOSTICS {
            // The compiler itself stops counting at its own maximum.
            let count = if all.len() >= dhow_schema::MAX_DIAGNOSTICS {
                format!("{} or more", all.len())
            } else {
                all.len().to_string()
            };
            format!("schema does not compile: {count} errors, the first {MAX_DIAGNOSTICS} of them:")
        } else {
            String::from("schema does not compile:")
        };
        for d in all.iter().take(MAX_DIAGNOSTICS) {
            message.push('\n');
            message.push_str(&d.to_string());
        }
        ApiError::new(Code::InvalidArgument, reason::SCHEMA_PARSE_ERROR, message)
            .with("errors", all.len())
            .with("line", e.line())
            .with("column", e.column())
            .at("schema")
    }

    /// The status sent to the client, with `ErrorInfo` (and `BadRequest` when a field is
    /// known) attached.
    pub fn into_status(self) -> Status {
        let mut metadata: HashMap<String, String> = self
            .metadata
            .into_iter()
            .map(|(k, v)| (k, capped(v, MAX_METADATA_VALUE_BYTES)))
            .collect();
        let mut details: Vec<ErrorDetail> = Vec::new();
        let field = self.field.map(|f| capped(f, MAX_METADATA_VALUE_BYTES));
        let message = capped(self.message, MAX_MESSAGE_BYTES);
        if let Some(f) = &field {
            metadata.insert("field".into(), f.clone());
        }
        details.push(ErrorInfo::new(self.reason, DOMAIN, metadata).into());
        if let (Some(f), Code::InvalidArgument) = (&field, self.code) {
            details.push(BadRequest::with_violation(f.clone(), message.clone()).into());
        }
        Status::with_error_details_vec(self.code, message, details)
    }
}

/// At most this many schema diagnostics are listed in an error message; all are counted
/// (metadata `errors`). Each is a line; gRPC clients commonly refuse trailers over 8 KiB.
pub const MAX_DIAGNOSTICS: usize = 10;
/// An error message is cut (with an ellipsis) past this many bytes: it may echo ids and
/// text the client sent, and it travels in a trailer whose size clients limit.
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// Each `ErrorInfo` metadata value (and the field name) is cut past this many bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 256;

/// `text` cut to at most `max` bytes on a character boundary, `...` (and how many bytes were
/// left out) marking the cut.
pub fn capped(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &text[..end], text.len() - end)
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.into_status()
    }
}

impl From<dhow_engine::Error> for ApiError {
    fn from(e: dhow_engine::Error) -> Self {
        use dhow_engine::Error as E;
        let message = e.to_string();
        match e {
            E::UnknownType(t) => {
                ApiError::new(Code::FailedPrecondition, reason::UNKNOWN_TYPE, message)
                    .with("type", t)
            }
            E::UnknownRelation {
                type_name,
                relation,
            } => ApiError::new(Code::FailedPrecondition, reason::UNKNOWN_RELATION, message)
                .with("type", type_name)
                .with("relation", relation),
            E::BudgetExhausted {
                budget: dhow_engine::Budget::Depth,
                limit,
                ..
            } => ApiError::new(Code::ResourceExhausted, reason::MAX_DEPTH_EXCEEDED, message)
                .with("maximum_depth_allowed", limit),
            E::BudgetExhausted { budget, limit, .. } => {
                ApiError::new(Code::ResourceExhausted, reason::BUDGET_EXHAUSTED, message)
                    .with("budget", budget.name())
                    .with("limit", limit)
            }
            E::Cancelled => ApiError::new(
                Code::Cancelled,
                reason::CANCELLED,
                "the evaluation was cancelled: its client went away or its deadline passed",
            ),
            E::InvalidContext { parameter, .. } => {
                let e = ApiError::new(
                    Code::InvalidArgument,
                    reason::INVALID_CAVEAT_CONTEXT,
                    message,
                );
                match parameter {
                    Some(p) => e.with("parameter", p),
                    None => e,
                }
            }
            E::CaveatEvaluation { caveat, .. } => ApiError::new(
                Code::InvalidArgument,
                reason::CAVEAT_EVALUATION_ERROR,
                message,
            )
            .with("caveat", caveat),
            E::InvalidRelationship(_) => {
                ApiError::new(Code::InvalidArgument, reason::INVALID_RELATIONSHIP, message)
            }
            // The handler names the field (`actors[i]`, under the item's prefix).
            E::InvalidChain { .. } => ApiError::new(
                Code::InvalidArgument,
                reason::INVALID_DELEGATION_CHAIN,
                message,
            ),
            E::Store(s) => s.into(),
        }
    }
}

impl From<dhow_tuples::Error> for ApiError {
    fn from(e: dhow_tuples::Error) -> Self {
        use dhow_tuples::Error as E;
        let message = e.to_string();
        match e {
            E::Parse { .. } | E::Invalid(_) => {
                if message.contains("more than once") {
                    ApiError::new(
                        Code::InvalidArgument,
                        reason::DUPLICATE_RELATIONSHIP,
                        message,
                    )
                } else {
                    ApiError::new(Code::InvalidArgument, reason::INVALID_FIELD, message)
                }
            }
            E::AlreadyExists(r) => {
                ApiError::new(Code::AlreadyExists, reason::ALREADY_EXISTS, message)
                    .with("relationship", r)
            }
            E::PreconditionFailed(_) => ApiError::new(
                Code::FailedPrecondition,
                reason::PRECONDITION_FAILED,
                message,
            ),
            E::Storage(_) => ApiError::internal(message),
            E::RevisionUnavailable { asked, oldest, .. } if asked < oldest => ApiError::new(
                Code::FailedPrecondition,
                reason::TOKEN_EXPIRED,
                format!("revision {asked} is older than the GC window (oldest readable: {oldest})"),
            ),
            E::RevisionUnavailable { .. } => {
                ApiError::new(Code::Unavailable, reason::REVISION_NOT_APPLIED, message)
            }
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Rejected(t) => t.into(),
            NodeError::Unavailable(m) => ApiError::new(
                Code::Unavailable,
                reason::UNAVAILABLE,
                format!("unavailable: {m}"),
            ),
            NodeError::Timeout(m) => ApiError::new(
                Code::Unavailable,
                reason::TIMEOUT,
                format!("timed out: {m}"),
            ),
            NodeError::FailedPrecondition(m) => {
                ApiError::new(Code::FailedPrecondition, reason::CLUSTER, m)
            }
            NodeError::TooLarge { message, limit } => {
                ApiError::new(Code::InvalidArgument, reason::ENTRY_TOO_LARGE, message)
                    .with("max_entry_bytes", limit)
            }
            NodeError::Internal(m) => ApiError::internal(m),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        let mut out = ApiError::new(e.code, e.reason, e.message);
        if let Some(r) = e.required_role {
            out = out.with("required_role", r.name());
        }
        out
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<SchemaCacheError> for ApiError {
    fn from(e: SchemaCacheError) -> Self {
        match e {
            SchemaCacheError::Store(e) => e.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("request task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_reason_and_field() {
        let s = ApiError::invalid("updates[3].relationship", "bad").into_status();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "updates[3].relationship: bad");
        let info = s.get_details_error_info().unwrap();
        assert_eq!(info.reason, reason::INVALID_FIELD);
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(info.metadata["field"], "updates[3].relationship");
        assert!(s.get_details_bad_request().is_some());
    }

    #[test]
    fn long_messages_and_values_are_cut_on_a_character_boundary() {
        let id = "é".repeat(100_000);
        let s = ApiError::invalid("resource.object_id", format!("invalid id `{id}`"))
            .with("id", &id)
            .into_status();
        assert!(
            s.message().len() <= MAX_MESSAGE_BYTES,
            "{}",
            s.message().len()
        );
        assert!(s.message().starts_with("resource.object_id: invalid id `é"));
        assert!(s.message().contains("more bytes)"));
        let info = s.get_details_error_info().unwrap();
        assert!(info.metadata["id"].len() <= MAX_METADATA_VALUE_BYTES);
        assert_eq!(capped("short".into(), 10), "short");
    }

    #[test]
    fn engine_errors_map() {
        let e: ApiError = dhow_engine::Error::BudgetExhausted {
            budget: dhow_engine::Budget::Depth,
            limit: 50,
            at: "doc:x#view".into(),
        }
        .into();
        assert_eq!(e.code, Code::ResourceExhausted);
        assert_eq!(e.reason, reason::MAX_DEPTH_EXCEEDED);
        assert!(e
            .metadata
            .contains(&("maximum_depth_allowed".into(), "50".into())));
        let e: ApiError = dhow_engine::Error::BudgetExhausted {
            budget: dhow_engine::Budget::Dispatches,
            limit: 9,
            at: "doc:x#view".into(),
        }
        .into();
        assert_eq!(e.reason, reason::BUDGET_EXHAUSTED);
        assert!(e.metadata.contains(&("budget".into(), "dispatches".into())));
        let e: ApiError = dhow_engine::Error::BudgetExhausted {
            budget: dhow_engine::Budget::CaveatCost,
            limit: 7,
            at: "caveat `c`".into(),
        }
        .into();
        assert_eq!(e.code, Code::ResourceExhausted);
        assert_eq!(e.reason, reason::BUDGET_EXHAUSTED);
        assert!(e
            .metadata
            .contains(&("budget".into(), "caveat_cost".into())));
        let e: ApiError = dhow_engine::Error::InvalidContext {
            parameter: Some("level".into()),
            message: "expected int".into(),
        }
        .into();
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(e.reason, reason::INVALID_CAVEAT_CONTEXT);
        assert!(e.metadata.contains(&("parameter".into(), "level".into())));
        let e: ApiError = dhow_engine::Error::InvalidContext {
            parameter: None,
            message: "too large".into(),
        }
        .into();
        assert_eq!(e.reason, reason::INVALID_CAVEAT_CONTEXT);
        assert!(e.metadata.is_empty());
        let e: ApiError = dhow_engine::Error::CaveatEvaluation {
            caveat: "ratio".into(),
            message: "division by zero".into(),
        }
        .into();
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(e.reason, reason::CAVEAT_EVALUATION_ERROR);
        assert!(e.metadata.contains(&("caveat".into(), "ratio".into())));
        let e: ApiError = dhow_engine::Error::Cancelled.into();
        assert_eq!(e.code, Code::Cancelled);
        let e: ApiError = dhow_engine::Error::UnknownType("x".into()).into();
        assert_eq!(e.code, Code::FailedPrecondition);
        let e: ApiError = dhow_tuples::Error::RevisionUnavailable {
            asked: 1,
            oldest: 5,
            newest: 9,
        }
        .into();
        assert_eq!(e.reason, reason::TOKEN_EXPIRED);
        let e: ApiError = NodeError::Unavailable("no leader".into()).into();
        assert_eq!(e.code, Code::Unavailable);
    }
}
