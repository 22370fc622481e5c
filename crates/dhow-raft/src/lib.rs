//! Dhow's replication: a raft-rs node (used even for a one-node cluster) whose log lives on
//! the node's store and whose state machine is a `TupleStore`. Revision = the index of the
//! last applied entry. raft-rs's protobuf types stay inside this crate; peers exchange them
//! as bytes.

mod apply;
mod codec;
mod config;
mod core;
#[cfg(test)]
mod golden;
mod handle;
mod log;
mod membership;
mod propose;
mod repair;
mod restore;
#[cfg(feature = "rocks")]
mod rocks;
#[doc(hidden)]
pub mod sim;
mod snapshot;
mod thread;
mod transport;

pub use config::RaftConfig;
pub use handle::RaftHandle;
pub use log::{LogStore, MemLog, Membership, RaftStorage, RawEntry};
pub use membership::{Member, MemberChange, Role, Status};
pub use snapshot::{
    FileStage, MemStage, SnapshotBuilder, SnapshotSource, SnapshotStage, StagedSnapshot,
    CHUNK_RELATIONSHIPS,
};
pub use transport::{NoTransport, Reporter, Transport};

/// The one error type of the replication crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// The state machine refused the write (precondition, duplicate, existing relationship).
    #[error(transparent)]
    Rejected(dhow_tuples::Error),
    /// No leader, not the leader, or leadership changed: the write may be retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Waited too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The node's storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// raft-rs refused something.
    #[error("raft: {0}")]
    Raft(String),
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The node has stopped.
    #[error("the raft node has stopped")]
    Stopped,
}
