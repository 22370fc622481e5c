//! The boundary between the API and replication: what a node offers the services. The Raft
//! node (crate dhow-raft, adapted in `raft_node.rs`) is the real implementation; `MemNode` is
//! the in-memory second implementation the service tests also run against.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use dhow_raft::{
    LatencyHistogram, Leadership, Member, MemberChange, RaftStats, Role, Status as ClusterStatus,
    LATENCY_BOUNDS,
};
pub use dhow_storage::StorageStats;

pub use crate::peer::PeerLinkStats;
use dhow_tuples::{Revision, TupleStore, WriteRequest};

use crate::schema::SchemaCache;

/// Why a node could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The write was refused by the state machine (precondition, CREATE of an existing
    /// relationship, duplicate in one write): nothing of it was applied.
    #[error(transparent)]
    Rejected(#[from] dhow_tuples::Error),
    /// No quorum / no leader / shutting down: try again.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Waited too long (for a revision to be applied, or for a write to commit).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The write or schema is larger than one Raft entry may be; nothing was applied.
    #[error("{message}")]
    TooLarge { message: String, limit: usize },
    /// The request does not fit the cluster's state (e.g. transfer leadership to a learner).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The node itself failed (storage error): the process should be restarted.
    #[error("internal: {0}")]
    Internal(String),
}

/// What a node counted and measured, read at one moment without asking the Raft loop: plain
/// numbers the server turns into metrics. A node without Raft, RocksDB or peers (`MemNode`)
/// reports zeros and no peers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    /// The Raft loop's counters: proposals waiting, log size, snapshots, latencies.
    pub raft: RaftStats,
    /// RocksDB's size, compaction backlog and stall state.
    pub storage: StorageStats,
    /// The link to each peer, by peer id.
    pub peers: Vec<PeerLinkStats>,
}

/// What the services need from a node. Every write goes through consensus (even on one
/// node); reads happen on the local store at a revision the caller picked.
pub trait Node: Send + Sync + 'static {
    /// Applies one client write atomically; returns the revision it was applied at. The
    /// write is submitted when `write` is called, not when the future is first polled: writes
    /// submitted one after the other apply in that order, so a caller may keep several in
    /// flight (Import does) and wait for them later.
    fn write(
        &self,
        write: WriteRequest,
    ) -> impl Future<Output = Result<Revision, NodeError>> + Send;
    /// Replaces the schema (already validated by the caller); returns the revision.
    fn write_schema(
        &self,
        text: String,
    ) -> impl Future<Output = Result<Revision, NodeError>> + Send;
    /// The newest revision applied on this node.
    fn applied(&self) -> Revision;
    /// Waits until this node has applied `rev`, at most `timeout`.
    fn wait_applied(
        &self,
        rev: Revision,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// A revision that includes every write acknowledged anywhere before the call (Raft
    /// ReadIndex through the leader). The caller then waits for it to be applied.
    fn read_index(&self) -> impl Future<Output = Result<Revision, NodeError>> + Send;
    /// The local store, for reads at a revision: the store itself, not the state machine's
    /// write-side wrapper around it.
    fn store(&self) -> Arc<dyn TupleStore>;
    /// The node's compiled schemas, shared with its state machine: a schema is compiled once
    /// per revision that wrote it.
    fn schemas(&self) -> &SchemaCache;
    /// This cluster's id (consistency tokens carry it).
    fn cluster_id(&self) -> u64;
    /// What this node knows of the cluster.
    fn cluster_status(&self) -> impl Future<Output = Result<ClusterStatus, NodeError>> + Send;
    /// Adds or removes a member; returns the revision of the change. Unless `force`, a
    /// change after which the voters the leader can reach would not be a quorum is refused.
    fn change_membership(
        &self,
        change: MemberChange,
        force: bool,
    ) -> impl Future<Output = Result<Revision, NodeError>> + Send;
    /// Asks the leader to hand leadership to voter `to`.
    fn transfer_leader(&self, to: u64) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// What is wrong with this node, as it changes: `None` while it serves, or why it
    /// cannot (health reports NOT_SERVING meanwhile).
    fn fault(&self) -> tokio::sync::watch::Receiver<Option<String>>;
    /// What this node knows of its leader, as it changes: whether one is known and has
    /// committed an entry of its term (until then writes and fully consistent reads fail or
    /// wait), and whether a snapshot is being restored. Health reports NOT_SERVING while no
    /// leader is established (past [`Node::election_timeout`] once one was) or a snapshot is
    /// being restored.
    fn leadership(&self) -> tokio::sync::watch::Receiver<Leadership>;
    /// One election timeout: how long a normal election may leave the node without a leader
    /// before health says so.
    fn election_timeout(&self) -> Duration;
    /// What the node counted and measured (for the metrics): cheap, no round trip through the
    /// Raft loop.
    fn stats(&self) -> NodeStats {
        NodeStats::default()
    }
}
