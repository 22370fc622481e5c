//! Dhow's replication: a raft-rs node (used even for a one-node cluster) whose log lives on
//! the node's store and whose state machine is a `TupleStore`. Revision = the index of the
//! last applied entry. raft-rs's protobuf types stay inside this crate; peers exchange them
//! as bytes.

mod apply;
mod codec;
mod config;
mod core;
mod error;
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
mod stats;
mod thread;
mod transport;

pub use codec::{DecodeError, Payload, Problem};
pub use config::{RaftConfig, DEFAULT_MAX_ENTRY_BYTES};
pub use error::{RaftError, StorageError, StorageKind};
pub use handle::RaftHandle;
pub use log::{LogStore, MemLog, Membership, RaftStorage, RawEntry, Syncer};
pub use membership::{Leadership, Member, MemberChange, Role, Status, MAX_LAG_ENTRIES};
pub use snapshot::{
    FileStage, MemStage, SnapshotBuilder, SnapshotSource, SnapshotStage, StagedSnapshot,
    CHUNK_RELATIONSHIPS,
};
pub use stats::{LatencyHistogram, RaftStats, LATENCY_BOUNDS};
pub use transport::{message_sender, NoTransport, Reporter, Transport};
