//! Dhow's durable store on RocksDB: MVCC relationships with a reverse index, the change log
//! for Watch, schema history and metadata ([`RocksStore`], a `dhow_tuples::TupleStore`), the
//! Raft log and state as bytes ([`RaftLogStore`]), and checkpoints for snapshots.
//!
//! One RocksDB database, column families:
//!
//! - `tuples`: every version of every relationship, keyed by resource then subject then the
//!   revision that created it; the value holds the revision that deleted it (`u64::MAX`
//!   while alive), the caveat and the expiration;
//! - `by_subject`: the reverse index (subject, then resource), one pointer per relationship
//!   key that has at least one stored version;
//! - `changes`: the change log by revision and sequence (also drives GC);
//! - `schemas`: schema texts by the revision that wrote them;
//! - `meta`: format version, applied revision, oldest readable revision, cluster id;
//! - `raft_log`, `raft_state`: the Raft log, hard state, conf state and snapshot point.
//!
//! Key encoding: see [`keys`](crate::keys) (order-preserving, prefix-exact, versioned by a
//! leading format byte).
//!
//! Durability: `apply` writes all of a batch (new versions, ended versions, index entries,
//! changes, schema, the new applied revision) in one WriteBatch, synced before it returns;
//! Raft appends and state writes are synced too. Consistency of reads: a reader holds a
//! RocksDB snapshot and checks the readable window recorded in that same snapshot.

mod db;
mod error;
mod keys;
mod raftlog;
mod reader;
mod store;

pub use db::{StorageStats, FORMAT_VERSION};
pub use error::{ErrorKind, StorageError};
pub use raftlog::{RaftEntry, RaftLogStore};
pub use reader::RocksReader;
pub use store::{
    RocksStore, StoreOptions, DEFAULT_MEMTABLE_BYTES, DEFAULT_MIN_FREE_BYTES, MIN_MEMTABLE_BYTES,
};
