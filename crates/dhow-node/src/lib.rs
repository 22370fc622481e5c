//! A Dhow node: everything below the public API. The [`Node`] boundary the services use (a
//! write through consensus, waiting for a revision, ReadIndex, the local store and compiled
//! schemas, cluster status and membership) with its two implementations, [`RaftNode`] (the
//! Raft node of dhow-raft over the RocksDB store of dhow-storage) and [`MemNode`] (in memory,
//! for tests); the state machine's schema check ([`SchemaGuard`]); the node-to-node transport
//! and service (`dhow.internal.v1`); the GC task; the node's configuration; and [`start`],
//! which wires them from a [`NodeConfig`].

pub mod config;
pub mod gc;
pub mod listen;
pub mod mem_node;
pub mod node;
pub mod peer;
pub mod raft_node;
pub mod schema;
pub mod schema_guard;
pub mod start;

pub use config::{parse_cluster_state, parse_initial_cluster, ClusterState, NodeConfig, PeerTls};
pub use gc::{spawn_gc, GcHandle};
pub use mem_node::MemNode;
pub use node::{
    ClusterStatus, LatencyHistogram, Leadership, Member, MemberChange, Node, NodeError, NodeStats,
    PeerLinkStats, RaftStats, Role, StorageStats, LATENCY_BOUNDS,
};
pub use peer::{discover_cluster_id, serve_peers, PeerService, PeerTransport};
pub use raft_node::RaftNode;
pub use schema::{CompiledSchema, SchemaCache, SchemaCacheError};
pub use schema_guard::SchemaGuard;
pub use start::{start, RunningNode, StartError};
