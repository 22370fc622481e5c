//! The error types of the replication crate: [`RaftError`], what every public operation
//! returns, and [`StorageError`], what the node's storage (the Raft log behind [`LogStore`],
//! the snapshot stage) reports, with a [`StorageKind`] a caller matches on: a full disk, damaged
//! data, another IO failure, a log position outside the log.
//!
//! [`LogStore`]: crate::LogStore

use crate::codec::DecodeError;

/// What kind of storage failure a [`StorageError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    /// The disk is full.
    NoSpace,
    /// Stored data is damaged (a corrupt file, bytes that do not decode, a missing entry).
    Corruption,
    /// Another IO failure.
    Io,
    /// The storage is busy or asks to try again: the operation may succeed later.
    Busy,
    /// The storage is closing.
    Closed,
    /// The storage refused a request (a bug of the caller: an append with a gap, say).
    Invalid,
    /// The data dir was written in a storage format this build does not read.
    Format,
    /// A Raft log index removed by compaction.
    Compacted,
    /// A Raft log index past the end of the log.
    Unavailable,
    /// Anything else (a poisoned lock, a lost worker thread).
    Other,
}

impl std::fmt::Display for StorageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageKind::NoSpace => "no space left",
            StorageKind::Corruption => "corruption",
            StorageKind::Io => "IO error",
            StorageKind::Busy => "busy",
            StorageKind::Closed => "closed",
            StorageKind::Invalid => "invalid request",
            StorageKind::Format => "unknown storage format",
            StorageKind::Compacted => "compacted",
            StorageKind::Unavailable => "not available",
            StorageKind::Other => "other",
        })
    }
}

/// A failure of the node's storage: its kind, and a message naming what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StorageError {
    pub kind: StorageKind,
    pub message: String,
}

impl StorageError {
    pub fn new(kind: StorageKind, message: impl Into<String>) -> Self {
        StorageError {
            kind,
            message: message.into(),
        }
    }

    /// A failure of a file-system operation `what` (ENOSPC is [`StorageKind::NoSpace`]).
    pub fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        let kind = if e.kind() == std::io::ErrorKind::StorageFull {
            StorageKind::NoSpace
        } else {
            StorageKind::Io
        };
        StorageError::new(kind, format!("{what}: {e}"))
    }
}

/// The one error type of the replication crate's operations.
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
    /// A proposal larger than one Raft entry may be: refused before it reached the log.
    #[error(
        "the {what} encodes to {size} bytes, over the {limit} bytes one Raft entry may hold \
         (max_entry_bytes): split it into smaller writes"
    )]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The node's storage (Raft log, snapshot stage) failed. Once the Raft loop met one, the
    /// node serves no more writes and answers each with this error.
    #[error("storage: {0}")]
    Storage(StorageError),
    /// The state machine (the `TupleStore`) failed while doing `what` (applying an entry,
    /// restoring or reading a snapshot).
    #[error("state machine: {what}: {error}")]
    StateMachine {
        what: String,
        error: dhow_tuples::Error,
    },
    /// Bytes from the log, a peer or the stage could not be decoded; `what` says where they
    /// came from (`raft entry 12`).
    #[error("{what}: {error}")]
    Codec { what: String, error: DecodeError },
    /// A snapshot stream was malformed (chunks out of order, no schema chunk).
    #[error("snapshot: {0}")]
    Snapshot(String),
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

impl From<StorageError> for RaftError {
    fn from(e: StorageError) -> Self {
        RaftError::Storage(e)
    }
}

impl RaftError {
    /// Bytes from `what` that did not decode.
    pub(crate) fn codec(what: impl std::fmt::Display) -> impl FnOnce(DecodeError) -> RaftError {
        move |error| RaftError::Codec {
            what: what.to_string(),
            error,
        }
    }

    /// The state machine failed while doing `what`.
    pub(crate) fn state_machine(
        what: impl std::fmt::Display,
    ) -> impl FnOnce(dhow_tuples::Error) -> RaftError {
        move |error| RaftError::StateMachine {
            what: what.to_string(),
            error,
        }
    }

    /// The kind of storage failure, if this is one.
    pub fn storage_kind(&self) -> Option<StorageKind> {
        match self {
            RaftError::Storage(e) => Some(e.kind),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_damage_and_a_stopped_node() {
        let full = RaftError::from(StorageError::io(
            "appending to the log",
            &std::io::Error::from_raw_os_error(28),
        ));
        assert_eq!(full.storage_kind(), Some(StorageKind::NoSpace));
        assert!(matches!(
            &full,
            RaftError::Storage(StorageError {
                kind: StorageKind::NoSpace,
                ..
            })
        ));
        assert!(
            full.to_string()
                .starts_with("storage: no space left: appending to the log"),
            "{full}"
        );
        let damaged = RaftError::from(StorageError::new(StorageKind::Corruption, "bad block"));
        assert_eq!(damaged.storage_kind(), Some(StorageKind::Corruption));
        assert_eq!(RaftError::Stopped.storage_kind(), None);
    }
}
