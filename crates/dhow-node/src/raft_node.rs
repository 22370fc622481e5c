//! `RaftNode`: the Raft node of crate dhow-raft as the services see it ([`Node`]): writes and
//! membership changes bounded by the request timeout, replication errors mapped to
//! [`NodeError`].

use std::sync::Arc;
use std::time::Duration;

use dhow_raft::{RaftError, RaftHandle};
use dhow_tuples::{Revision, TupleStore, WriteRequest};

use dhow_storage::RocksStore;

use crate::node::{ClusterStatus, Leadership, MemberChange, Node, NodeError, NodeStats};
use crate::peer::PeerTransport;
use crate::schema::SchemaCache;

/// A running Raft node, the store it applies to, and the cluster id its tokens carry.
pub struct RaftNode {
    handle: Arc<RaftHandle>,
    /// The store itself (reads), not the state machine's wrapper (writes).
    store: Arc<dyn TupleStore>,
    /// Shared with the state machine's `SchemaGuard`.
    schemas: Arc<SchemaCache>,
    cluster_id: u64,
    write_timeout: Duration,
    /// False when the node was started without a peer address: it cannot add members.
    has_peer_addr: bool,
    /// The RocksDB store and the peer transport, for [`Node::stats`] (none in tests that
    /// start a node by hand).
    stats_of: Option<(RocksStore, PeerTransport)>,
}

impl RaftNode {
    pub fn new(
        handle: Arc<RaftHandle>,
        store: Arc<dyn TupleStore>,
        schemas: Arc<SchemaCache>,
        cluster_id: u64,
        write_timeout: Duration,
        has_peer_addr: bool,
    ) -> Self {
        RaftNode {
            handle,
            store,
            schemas,
            cluster_id,
            write_timeout,
            has_peer_addr,
            stats_of: None,
        }
    }

    /// Reports the statistics of `store` (its RocksDB) and `peers` (its links) in
    /// [`Node::stats`].
    pub fn with_stats_of(mut self, store: RocksStore, peers: PeerTransport) -> Self {
        self.stats_of = Some((store, peers));
        self
    }

    /// The Raft handle (for the peer service).
    pub fn handle(&self) -> &Arc<RaftHandle> {
        &self.handle
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, RaftError>>,
    ) -> Result<T, NodeError> {
        bounded(self.write_timeout, what, f).await
    }
}

/// Waits for `f` at most `limit`; a timeout says the operation may or may not be applied.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, RaftError>>,
) -> Result<T, NodeError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(node_error),
        Err(_) => Err(NodeError::Timeout(format!(
            "{what} not committed within {limit:?}; it may or may not be applied"
        ))),
    }
}

/// Maps a replication error to what the services report.
pub fn node_error(e: RaftError) -> NodeError {
    match e {
        RaftError::Rejected(e) => NodeError::Rejected(e),
        RaftError::Unavailable(m) => NodeError::Unavailable(m),
        RaftError::Timeout(m) => NodeError::Timeout(m),
        e @ RaftError::TooLarge { limit, .. } => NodeError::TooLarge {
            message: e.to_string(),
            limit,
        },
        RaftError::Stopped => NodeError::Unavailable("the node is shutting down".into()),
        RaftError::Config(m) => NodeError::FailedPrecondition(m),
        other => NodeError::Internal(other.to_string()),
    }
}

impl Node for RaftNode {
    fn write(
        &self,
        write: WriteRequest,
    ) -> impl std::future::Future<Output = Result<Revision, NodeError>> + Send {
        // Submitted now (see `Node::write`); only the wait is deferred.
        let submitted = self.handle.submit_write(write);
        bounded(self.write_timeout, "write", submitted)
    }
    async fn write_schema(&self, text: String) -> Result<Revision, NodeError> {
        self.bounded("schema write", self.handle.write_schema(text))
            .await
    }
    fn applied(&self) -> Revision {
        self.handle.applied()
    }
    async fn wait_applied(&self, rev: Revision, timeout: Duration) -> Result<(), NodeError> {
        self.handle
            .wait_applied(rev, timeout)
            .await
            .map_err(node_error)
    }
    async fn read_index(&self) -> Result<Revision, NodeError> {
        self.bounded("read index", self.handle.read_index()).await
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
        self.handle.status().await.map_err(node_error)
    }
    async fn change_membership(
        &self,
        change: MemberChange,
        force: bool,
    ) -> Result<Revision, NodeError> {
        if !self.has_peer_addr && !matches!(change, MemberChange::Remove { .. }) {
            return Err(NodeError::FailedPrecondition(
                "this node was started without --peer-addr, so other nodes could not reach it: restart it with --peer-addr HOST:PORT before adding members".into(),
            ));
        }
        self.bounded(
            "membership change",
            self.handle.change_membership(change, force),
        )
        .await
    }
    async fn transfer_leader(&self, to: u64) -> Result<(), NodeError> {
        self.bounded("leader transfer", self.handle.transfer_leader(to))
            .await
    }

    fn fault(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.handle.fault()
    }

    fn leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.handle.leadership()
    }

    fn election_timeout(&self) -> Duration {
        self.handle.election_timeout()
    }

    fn stats(&self) -> NodeStats {
        let (storage, peers) = match &self.stats_of {
            Some((store, peers)) => (store.stats(), peers.stats()),
            None => Default::default(),
        };
        NodeStats {
            raft: self.handle.stats(),
            storage,
            peers,
        }
    }
}
