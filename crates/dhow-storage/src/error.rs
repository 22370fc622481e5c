//! The one error type of the storage crate, and its mapping into `dhow_tuples::Error`.

use std::path::Path;

/// What went wrong in the store. Every variant names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// RocksDB reported an error while doing `what`.
    #[error("RocksDB failed while {what}: {message}")]
    Rocks { what: String, message: String },
    /// Stored bytes could not be decoded.
    #[error("corrupt data in column family `{cf}`: {message}")]
    Corrupt { cf: &'static str, message: String },
    /// The store was written by a newer Dhow with a format this build does not know.
    #[error(
        "the store at {path} has format version {found}, newer than the {supported} this \
         build understands: run a newer Dhow, or restore from a backup made by this version"
    )]
    NewerFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    /// The store's format version is not one this build can read.
    #[error(
        "the store at {path} has unknown format version {found} (this build reads version \
         {supported})"
    )]
    UnknownFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    /// A caller passed something the store cannot accept.
    #[error("{0}")]
    Invalid(String),
    /// A Raft log read asked for an index removed by compaction.
    #[error("raft log index {index} is compacted (the log starts at {first})")]
    LogCompacted { index: u64, first: u64 },
    /// A Raft log read asked for an index past the end of the log.
    #[error("raft log index {index} is not available (the log ends at {last})")]
    LogUnavailable { index: u64, last: u64 },
    /// A file-system operation (checkpoint copy, directory creation) failed.
    #[error("{what}: {message}")]
    Io { what: String, message: String },
    /// An error of the tuple model (e.g. a revision outside the readable window).
    #[error(transparent)]
    Tuples(#[from] dhow_tuples::Error),
}

impl From<StorageError> for dhow_tuples::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Tuples(e) => e,
            StorageError::Invalid(m) => dhow_tuples::Error::Invalid(m),
            other => dhow_tuples::Error::Storage(other.to_string()),
        }
    }
}

/// Maps a RocksDB error, naming what was being done.
pub(crate) fn rocks(what: impl Into<String>) -> impl FnOnce(rocksdb::Error) -> StorageError {
    let what = what.into();
    move |e| StorageError::Rocks {
        what,
        message: e.into_string(),
    }
}

/// Maps a decoding failure in column family `cf`.
pub(crate) fn corrupt(cf: &'static str) -> impl FnOnce(String) -> StorageError {
    move |message| StorageError::Corrupt { cf, message }
}

/// Maps an IO error, naming the operation and path.
pub(crate) fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let what = format!("{what} {}", path.display());
    move |e| StorageError::Io {
        what,
        message: e.to_string(),
    }
}
