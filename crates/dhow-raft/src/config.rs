//! The settings of a Raft node ([`RaftConfig`]) and their defaults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::snapshot::SnapshotStage;

/// The default bound on one Raft entry's data: 8 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 8 * 1024 * 1024;

/// Settings of the Raft loop.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's id (non-zero).
    pub id: u64,
    /// The members of a new cluster and their peer addresses (used only when the log holds no
    /// membership yet). With `join`, the addresses of the running cluster instead.
    pub initial_peers: BTreeMap<u64, String>,
    /// Join a running cluster (after `add` there): start with no membership and wait for a
    /// snapshot from the leader.
    pub join: bool,
    /// How often the loop ticks raft-rs.
    pub tick: Duration,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// At most this many client writes go into one entry.
    pub max_writes_per_entry: usize,
    /// The most bytes one entry's data may hold: writes batched together past it are split
    /// into several entries, and a single write or schema past it is refused
    /// ([`crate::RaftError::TooLarge`]) before it reaches the log.
    pub max_entry_bytes: usize,
    /// Applied entries kept in the log behind the applied index before compaction.
    pub log_retain: u64,
    /// Where received snapshots are kept until the store holds them (none: in memory, so a
    /// crash during a restore costs a new snapshot from the leader).
    pub stage: Option<Arc<dyn SnapshotStage>>,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            id: 1,
            initial_peers: BTreeMap::from([(1, String::new())]),
            join: false,
            tick: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 3,
            max_writes_per_entry: 1000,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            log_retain: 50_000,
            stage: None,
        }
    }
}
