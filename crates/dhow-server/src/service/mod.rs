//! The `dhow.v1` gRPC services and the state they share. Handlers stay thin: validate the
//! request, resolve the revision, call the engine, store or node (store reads in
//! `spawn_blocking`), map the error in `error.rs`, attach the token.

mod audit;
mod cluster;
mod permission;
mod relationship;
mod schema;
mod watching;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dhow_proto::v1::{Consistency, ConsistencyToken};
use dhow_tuples::{Revision, WriteRequest};
use tokio::sync::{watch, RwLock};
use tokio_stream::Stream;
use tonic::Status;

use crate::consistency;
use crate::cursor::ResumePoint;
use crate::error::{ApiError, ApiResult};
use crate::telemetry;
use crate::token;
use dhow_node::{CompiledSchema, Node, NodeError};
use tracing::Instrument;

pub use audit::AuditSvc;
pub use cluster::ClusterSvc;
pub use permission::PermissionSvc;
pub use relationship::RelationshipSvc;
pub use schema::SchemaSvc;
pub use watching::WatchHub;

/// A boxed response stream.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Limits the handlers enforce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_updates_per_write: usize,
    pub max_preconditions_per_write: usize,
    pub max_check_bulk_items: usize,
    pub max_lookup_subjects_results: usize,
    pub consistency_timeout: Duration,
    /// The longest wait for the next message of an Import stream (`request_timeout`).
    pub request_timeout: Duration,
}

/// What every service shares.
pub struct State<N: Node> {
    pub node: Arc<N>,
    pub limits: Limits,
    /// Relationship writes hold it shared, schema writes exclusively: a write is validated
    /// against the schema that is in force when it commits (on this server).
    pub write_gate: RwLock<()>,
    /// Becomes true when the server shuts down; long streams (Watch) end then.
    pub stop: watch::Receiver<bool>,
    /// The one reader of the change log that every Watch shares.
    pub watch: Arc<WatchHub>,
    /// This node's id (audit records name it).
    pub node_id: u64,
    /// The decision audit log, when `[audit]` turns it on.
    pub audit: Option<Arc<dhow_audit::AuditLog>>,
    /// The check cache (`checkcache.rs`), unless `check_cache_bytes` is 0.
    pub check_cache: Option<dhow_engine::Shared>,
}

impl<N: Node> State<N> {
    pub fn new(node: Arc<N>, limits: Limits, stop: watch::Receiver<bool>) -> Self {
        State {
            node,
            limits,
            write_gate: RwLock::new(()),
            stop,
            watch: Arc::new(WatchHub::default()),
            node_id: 0,
            audit: None,
            check_cache: None,
        }
    }

    /// The schema in force at `rev`, compiled (through the node's cache, which the state
    /// machine shares), or `None` if none was written by then. Reads the store: call from a
    /// blocking context.
    pub fn schema_at(&self, rev: Revision) -> ApiResult<Option<Arc<CompiledSchema>>> {
        Ok(self.node.schemas().get(&*self.node.store(), rev)?)
    }

    /// The schema in force at `rev`; FAILED_PRECONDITION `NO_SCHEMA` if there is none.
    pub fn require_schema(&self, rev: Revision) -> ApiResult<Arc<CompiledSchema>> {
        self.schema_at(rev)?.ok_or_else(ApiError::no_schema)
    }

    /// The token of `rev`.
    pub fn token(&self, rev: Revision) -> ConsistencyToken {
        token::to_proto(self.node.cluster_id(), rev)
    }

    /// The revision a request is evaluated at (a traced call: under a `consistency` span).
    pub async fn resolve(&self, c: Option<&Consistency>) -> ApiResult<Revision> {
        let span = telemetry::child(|| tracing::info_span!("consistency"));
        telemetry::span_attr(&span, "dhow.consistency", requirement_name(c));
        let resolved = consistency::resolve(
            &*self.node,
            c,
            self.limits.consistency_timeout,
            "consistency",
        )
        .instrument(span.clone())
        .await;
        if let Ok(rev) = &resolved {
            telemetry::span_attr(&span, "dhow.revision", rev.0 as i64);
            telemetry::rpc_attrs(|| [("dhow.revision", (rev.0 as i64).into())]);
        }
        resolved
    }

    /// Writes through consensus ([`Node::write`]: submitted now, waited for by the returned
    /// future). A traced call submits it under a `raft.write` span, from the proposal until
    /// it is applied here, whose trace context the entry carries to the leader and every
    /// node's apply.
    pub fn write(
        &self,
        w: WriteRequest,
    ) -> impl std::future::Future<Output = Result<Revision, NodeError>> + Send + '_ {
        let span = telemetry::child(|| tracing::info_span!("raft.write"));
        telemetry::span_attr(&span, "dhow.updates", w.ops.len() as i64);
        let submitted = span.in_scope(|| self.node.write(w));
        let recorded = span.clone();
        async move {
            let written = submitted.instrument(span).await;
            if let Ok(rev) = &written {
                telemetry::span_attr(&recorded, "dhow.revision", rev.0 as i64);
                telemetry::rpc_attrs(|| [("dhow.revision", (rev.0 as i64).into())]);
            }
            written
        }
    }

    /// The revision of a continued request: the cursor's, which the consistency (if set to
    /// `at_exact_snapshot`) must agree with; otherwise resolved from the consistency.
    pub async fn resolve_with_cursor(
        &self,
        c: Option<&Consistency>,
        cursor: Option<&ResumePoint>,
        cursor_field: &str,
    ) -> ApiResult<Revision> {
        let Some(cur) = cursor else {
            return self.resolve(c).await;
        };
        use dhow_proto::v1::consistency::Requirement;
        if let Some(Requirement::AtExactSnapshot(t)) = c.and_then(|c| c.requirement.as_ref()) {
            let f = "consistency.at_exact_snapshot";
            let asked = token::decode_for(self.node.cluster_id(), t, f)?;
            if asked != cur.revision {
                return Err(ApiError::invalid(
                    cursor_field,
                    format!(
                        "the cursor continues a read at revision {}, but `{f}` asks for revision {asked}",
                        cur.revision
                    ),
                ));
            }
        }
        consistency::wait_for(&*self.node, cur.revision, self.limits.consistency_timeout).await?;
        consistency::check_not_expired(&*self.node, cur.revision, cursor_field)?;
        Ok(cur.revision)
    }
}

/// The name of a consistency requirement, as traces show it.
fn requirement_name(c: Option<&Consistency>) -> &'static str {
    use dhow_proto::v1::consistency::Requirement;
    match c.and_then(|c| c.requirement.as_ref()) {
        None | Some(Requirement::MinimizeLatency(_)) => "minimize_latency",
        Some(Requirement::AtLeastAsFresh(_)) => "at_least_as_fresh",
        Some(Requirement::AtExactSnapshot(_)) => "at_exact_snapshot",
        Some(Requirement::FullyConsistent(_)) => "fully_consistent",
    }
}

/// Runs a store-reading closure on the blocking pool.
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> ApiResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

/// Runs an evaluation on the blocking pool with a cancellation flag that is set as soon as
/// the caller stops waiting for it (the client went away or the request's deadline passed,
/// and tonic dropped the handler), so the engine stops at its next dispatch instead of
/// burning a core for nobody.
pub async fn evaluate<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(dhow_engine::Cancel) -> ApiResult<T> + Send + 'static,
{
    struct CancelOnDrop(dhow_engine::Cancel);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.cancel();
        }
    }
    let cancel = dhow_engine::Cancel::new();
    let _guard = CancelOnDrop(cancel.clone());
    tokio::task::spawn_blocking(move || f(cancel)).await?
}

/// Maps an error for the client. Not logged here: the call's status is logged once, with
/// its method, by the layer around every service (`calllog.rs`).
pub fn status(e: ApiError) -> Status {
    telemetry::rpc_error(e.code, e.reason, &e.message);
    e.into_status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An evaluation whose caller stops waiting (as tonic drops a handler whose client went
    /// away or whose deadline passed) sees its cancellation flag set and can stop.
    #[tokio::test]
    async fn a_dropped_evaluation_is_cancelled() {
        let stopped = Arc::new(AtomicBool::new(false));
        let seen = stopped.clone();
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            evaluate(move |cancel| {
                let t0 = std::time::Instant::now();
                while !cancel.is_cancelled() {
                    if t0.elapsed() > Duration::from_secs(30) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                seen.store(true, Ordering::SeqCst);
                Ok(())
            }),
        )
        .await;
        assert!(waited.is_err(), "the evaluation runs until cancelled");
        let t0 = std::time::Instant::now();
        while !stopped.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(stopped.load(Ordering::SeqCst), "the flag was never set");
    }
}
