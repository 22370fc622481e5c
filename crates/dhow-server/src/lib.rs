//! Dhow's gRPC server: the `dhow.v1` services over a [`Node`], consistency resolution,
//! tokens and cursors, error mapping, configuration, health, reflection and the GC task; and
//! the node-to-node transport and service (`dhow.internal.v1`) of the Raft node.
//!
//! Start with [`serve`]: it takes any [`Node`] (the Raft node in production, [`MemNode`] in
//! tests), a [`Config`], a bound listener and a shutdown future.

pub mod config;
pub mod consistency;
pub mod convert;
pub mod cursor;
pub mod error;
pub mod gc;
pub mod mem_node;
pub mod node;
pub mod peer;
pub mod raft_node;
pub mod schema_cache;
pub mod schema_guard;
pub mod server;
pub mod service;
pub mod token;

pub use config::{ClusterState, Config, ConfigError, ConfigOverrides};
pub use error::{reason, ApiError, DOMAIN};
pub use gc::{spawn_gc, GcHandle};
pub use mem_node::MemNode;
pub use node::{Node, NodeError};
pub use peer::{discover_cluster_id, PeerService, PeerTransport};
pub use raft_node::RaftNode;
pub use schema_guard::SchemaGuard;
pub use server::{serve, serve_peers, ServerError};
