//! `MemNode`: the in-memory, single-process implementation of [`Node`] over a
//! [`SharedMemStore`]. Each write is applied under a mutex at `head + 1` (as a one-node Raft
//! would apply one entry), a `watch` channel publishes the applied revision, and ReadIndex is
//! the current head. It is the second implementation of the boundary and what the service
//! tests run against.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhow_tuples::{Batch, Revision, SharedMemStore, TupleStore, WriteRequest};
use tokio::sync::watch;

use crate::node::{ClusterStatus, Leadership, Member, MemberChange, Node, NodeError, Role};
use crate::schema::SchemaCache;

/// An in-memory node. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemNode {
    store: Arc<SharedMemStore>,
    cluster_id: u64,
    apply_lock: Mutex<()>,
    applied: watch::Sender<Revision>,
    available: AtomicBool,
    schemas: SchemaCache,
    fault: watch::Sender<Option<String>>,
    /// Always led by itself (node 1), with its term's entry committed.
    leadership: watch::Sender<Leadership>,
}

impl MemNode {
    /// A node over a new, empty store.
    pub fn new(cluster_id: u64) -> Self {
        MemNode::with_store(Arc::new(SharedMemStore::new()), cluster_id)
    }

    /// A node over an existing store (its head is the applied revision).
    pub fn with_store(store: Arc<SharedMemStore>, cluster_id: u64) -> Self {
        let (applied, _) = watch::channel(store.head());
        MemNode {
            store,
            cluster_id,
            apply_lock: Mutex::new(()),
            applied,
            available: AtomicBool::new(true),
            schemas: SchemaCache::new(),
            fault: watch::channel(None).0,
            leadership: watch::channel(Leadership {
                leader: 1,
                committed_in_term: true,
                ..Leadership::default()
            })
            .0,
        }
    }

    /// The store, typed (for tests and tools).
    pub fn mem_store(&self) -> &Arc<SharedMemStore> {
        &self.store
    }

    /// Makes writes and ReadIndex fail with `Unavailable` (as a node without quorum), or
    /// succeed again. For tests.
    pub fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::SeqCst);
    }

    /// Reports a fault (health NOT_SERVING), or none. For tests.
    pub fn set_fault(&self, fault: Option<String>) {
        self.fault.send_replace(fault);
    }

    fn check_available(&self) -> Result<(), NodeError> {
        if self.available.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(NodeError::Unavailable(
                "no quorum (MemNode set unavailable)".into(),
            ))
        }
    }

    /// Applies `batch` at the next revision; returns the revision and the outcome of its one
    /// client write, if any.
    fn apply(&self, batch: Batch) -> Result<Revision, NodeError> {
        self.check_available()?;
        let _guard = self
            .apply_lock
            .lock()
            .map_err(|_| NodeError::Internal("MemNode apply lock poisoned".into()))?;
        let rev = Revision(self.store.head().0 + 1);
        let outcomes = self
            .store
            .apply(rev, &batch)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        // The revision is consumed even when the write is refused, as a Raft entry would be.
        self.applied.send_replace(rev);
        match outcomes.into_iter().next() {
            Some(Err(e)) => Err(NodeError::Rejected(e)),
            _ => Ok(rev),
        }
    }
}

impl Node for MemNode {
    fn write(
        &self,
        write: WriteRequest,
    ) -> impl std::future::Future<Output = Result<Revision, NodeError>> + Send {
        // Applied now (see `Node::write`).
        std::future::ready(self.apply(Batch {
            writes: vec![write],
            schema: None,
        }))
    }

    async fn write_schema(&self, text: String) -> Result<Revision, NodeError> {
        self.apply(Batch {
            writes: Vec::new(),
            schema: Some(text),
        })
    }

    fn applied(&self) -> Revision {
        *self.applied.borrow()
    }

    async fn wait_applied(&self, rev: Revision, timeout: Duration) -> Result<(), NodeError> {
        let mut rx = self.applied.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|r| *r >= rev).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Unavailable("node shutting down".into())),
            Err(_) => Err(NodeError::Timeout(format!(
                "revision {rev} not applied within {timeout:?} (applied: {})",
                self.applied()
            ))),
        }
    }

    async fn read_index(&self) -> Result<Revision, NodeError> {
        self.check_available()?;
        Ok(self.store.head())
    }

    fn store(&self) -> Arc<dyn TupleStore> {
        self.store.clone()
    }

    fn schemas(&self) -> &SchemaCache {
        &self.schemas
    }

    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    async fn cluster_status(&self) -> Result<ClusterStatus, NodeError> {
        let applied = self.applied().0;
        Ok(ClusterStatus {
            id: 1,
            role: Role::Leader,
            leader: 1,
            term: 1,
            commit: applied,
            applied,
            members: vec![Member {
                id: 1,
                addr: String::new(),
                learner: false,
                matched: Some(applied),
            }],
        })
    }

    async fn change_membership(
        &self,
        _change: MemberChange,
        _force: bool,
    ) -> Result<Revision, NodeError> {
        Err(NodeError::FailedPrecondition(
            "an in-memory node is a cluster of one: it has no membership to change".into(),
        ))
    }

    async fn transfer_leader(&self, to: u64) -> Result<(), NodeError> {
        if to == 1 {
            Ok(())
        } else {
            Err(NodeError::FailedPrecondition(format!(
                "node {to} is not a voter of this cluster"
            )))
        }
    }

    fn fault(&self) -> watch::Receiver<Option<String>> {
        self.fault.subscribe()
    }

    fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    fn election_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{parse_relationship, WriteOp};

    #[tokio::test]
    async fn writes_advance_and_wake_waiters() {
        let node = Arc::new(MemNode::new(1));
        assert_eq!(node.applied(), Revision(0));
        let n2 = node.clone();
        let waiter =
            tokio::spawn(async move { n2.wait_applied(Revision(2), Duration::from_secs(5)).await });
        let r = parse_relationship("document:1#viewer@user:alice").unwrap();
        let w = WriteRequest {
            preconditions: vec![],
            ops: vec![WriteOp::Create(r.clone())],
        };
        assert_eq!(node.write(w.clone()).await.unwrap(), Revision(1));
        // A refused write still consumes its revision.
        assert!(matches!(node.write(w).await, Err(NodeError::Rejected(_))));
        assert_eq!(node.applied(), Revision(2));
        waiter.await.unwrap().unwrap();
        assert!(matches!(
            node.wait_applied(Revision(9), Duration::from_millis(20))
                .await,
            Err(NodeError::Timeout(_))
        ));
        node.set_available(false);
        assert!(matches!(
            node.read_index().await,
            Err(NodeError::Unavailable(_))
        ));
    }
}
