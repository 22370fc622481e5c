//! Consistency resolution: turns a request's `Consistency` into the revision it is evaluated
//! at, waiting (bounded) for this node to apply what the request asks for.
//!
//! - absent or `minimize_latency`: the node's applied revision;
//! - `at_least_as_fresh(t)`: wait until applied >= t, then evaluate at the applied revision;
//! - `at_exact_snapshot(t)`: wait until applied >= t, then exactly t, unless t is older than
//!   the GC window (`TOKEN_EXPIRED`);
//! - `fully_consistent`: ReadIndex through the leader, then wait for it to be applied.
//!
//! A wait longer than the configured timeout fails with UNAVAILABLE. Every wait (for a
//! revision this node had not applied yet, for a ReadIndex) is counted in the metrics
//! (`dhow_consistency_wait_duration_seconds`, `dhow_consistency_timeouts_total`).

use std::time::{Duration, Instant};

use dhow_proto::v1::consistency::Requirement;
use dhow_proto::v1::Consistency;
use dhow_tuples::Revision;
use tonic::Code;

use crate::error::{reason, ApiError, ApiResult};
use crate::metrics::{self, Wait};
use crate::token;
use dhow_node::{Node, NodeError};

/// Waits until `node` has applied `rev`, at most `timeout`; a timeout is UNAVAILABLE with a
/// message saying what was waited for.
pub async fn wait_for<N: Node>(node: &N, rev: Revision, timeout: Duration) -> ApiResult<()> {
    if node.applied() >= rev {
        return Ok(());
    }
    let started = Instant::now();
    let waited = node.wait_applied(rev, timeout).await;
    metrics::global().consistency_wait(
        Wait::Revision,
        started.elapsed(),
        matches!(waited, Err(NodeError::Timeout(_))),
    );
    match waited {
        Ok(()) => Ok(()),
        Err(NodeError::Timeout(_)) => Err(ApiError::new(
            Code::Unavailable,
            reason::REVISION_NOT_APPLIED,
            format!(
                "this node has not applied revision {rev} within {timeout:?} (applied: {}); \
                 retry, or ask another node",
                node.applied()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Fails with `TOKEN_EXPIRED` if `rev` is older than what the store still holds.
pub fn check_not_expired<N: Node>(node: &N, rev: Revision, field: &str) -> ApiResult<()> {
    let oldest = node.store().oldest();
    if rev < oldest {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            reason::TOKEN_EXPIRED,
            format!(
                "revision {rev} is older than the GC window (oldest readable revision: {oldest}); \
                 start again from a fresh read"
            ),
        )
        .with("revision", rev)
        .with("oldest", oldest)
        .at(field));
    }
    Ok(())
}

/// The revision to evaluate a request at. `field` names the consistency field in errors.
pub async fn resolve<N: Node>(
    node: &N,
    consistency: Option<&Consistency>,
    timeout: Duration,
    field: &str,
) -> ApiResult<Revision> {
    match consistency.and_then(|c| c.requirement.as_ref()) {
        None | Some(Requirement::MinimizeLatency(true)) => Ok(node.applied()),
        Some(Requirement::MinimizeLatency(false)) => Err(ApiError::invalid(
            format!("{field}.minimize_latency"),
            "must be true when set",
        )),
        Some(Requirement::FullyConsistent(false)) => Err(ApiError::invalid(
            format!("{field}.fully_consistent"),
            "must be true when set",
        )),
        Some(Requirement::AtLeastAsFresh(t)) => {
            let f = format!("{field}.at_least_as_fresh");
            let rev = token::decode_for(node.cluster_id(), t, &f)?;
            wait_for(node, rev, timeout).await?;
            Ok(node.applied().max(rev))
        }
        Some(Requirement::AtExactSnapshot(t)) => {
            let f = format!("{field}.at_exact_snapshot");
            let rev = token::decode_for(node.cluster_id(), t, &f)?;
            wait_for(node, rev, timeout).await?;
            check_not_expired(node, rev, &f)?;
            Ok(rev)
        }
        Some(Requirement::FullyConsistent(true)) => {
            let started = Instant::now();
            let index = tokio::time::timeout(timeout, node.read_index()).await;
            metrics::global().consistency_wait(
                Wait::ReadIndex,
                started.elapsed(),
                matches!(index, Err(_) | Ok(Err(NodeError::Timeout(_)))),
            );
            let rev = match index {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ApiError::new(
                        Code::Unavailable,
                        reason::TIMEOUT,
                        format!("no read index from the leader within {timeout:?}"),
                    ))
                }
            };
            wait_for(node, rev, timeout).await?;
            Ok(node.applied().max(rev))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_node::MemNode;
    use dhow_proto::v1::ConsistencyToken;
    use dhow_tuples::{TupleStore, WriteRequest};

    fn tok(rev: u64, cluster: u64) -> ConsistencyToken {
        token::to_proto(cluster, Revision(rev))
    }

    #[tokio::test]
    async fn modes() {
        let node = MemNode::new(5);
        for _ in 0..3 {
            node.write(WriteRequest::default()).await.unwrap();
        }
        let t = Duration::from_millis(50);
        assert_eq!(
            resolve(&node, None, t, "consistency").await.unwrap(),
            Revision(3)
        );
        let c = |r| Consistency {
            requirement: Some(r),
        };
        let exact = c(Requirement::AtExactSnapshot(tok(2, 5)));
        assert_eq!(
            resolve(&node, Some(&exact), t, "consistency")
                .await
                .unwrap(),
            Revision(2)
        );
        let fresh = c(Requirement::AtLeastAsFresh(tok(1, 5)));
        assert_eq!(
            resolve(&node, Some(&fresh), t, "consistency")
                .await
                .unwrap(),
            Revision(3)
        );
        let future = c(Requirement::AtLeastAsFresh(tok(10, 5)));
        let e = resolve(&node, Some(&future), t, "consistency")
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.reason),
            (Code::Unavailable, reason::REVISION_NOT_APPLIED)
        );
        let other = c(Requirement::AtLeastAsFresh(tok(1, 6)));
        let e = resolve(&node, Some(&other), t, "consistency")
            .await
            .unwrap_err();
        assert_eq!(e.reason, reason::TOKEN_WRONG_CLUSTER);
        node.mem_store().gc(Revision(2)).unwrap();
        let old = c(Requirement::AtExactSnapshot(tok(1, 5)));
        let e = resolve(&node, Some(&old), t, "consistency")
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.reason),
            (Code::FailedPrecondition, reason::TOKEN_EXPIRED)
        );
        let full = c(Requirement::FullyConsistent(true));
        assert_eq!(
            resolve(&node, Some(&full), t, "consistency").await.unwrap(),
            Revision(3)
        );
        let bad = c(Requirement::MinimizeLatency(false));
        let e = resolve(&node, Some(&bad), t, "consistency")
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("consistency.minimize_latency"));
    }
}
