//! The one error type of the storage crate ([`StorageError`]), the [`ErrorKind`] a caller
//! matches on (a full disk, damaged data, another IO failure, a busy or closing database, a
//! bad request, another format, a Raft log position outside the log), how RocksDB and file
//! system errors are classified, and the mapping into `dhow_tuples::Error`.

use std::path::Path;

/// What kind of failure a [`StorageError`] is: what a caller acts on, without reading text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The disk is full (ENOSPC; RocksDB's "No space left on device").
    NoSpace,
    /// Stored data is damaged: a RocksDB Corruption status, a key or value that does not
    /// decode, a missing column family or log entry.
    Corruption,
    /// Another IO failure of RocksDB or the file system.
    Io,
    /// RocksDB is busy, timed out or asks to try again: the operation may succeed later.
    Busy,
    /// The database is shutting down (or a column family was dropped).
    Closed,
    /// The caller asked something the store refuses (a bad argument, an unsupported or
    /// inconsistent request, a database that does not exist).
    Invalid,
    /// The data dir was written in a storage format this build does not read.
    Format,
    /// A Raft log index removed by compaction.
    Compacted,
    /// A Raft log index past the end of the log.
    Unavailable,
    /// An error of the tuple model (e.g. a revision outside the readable window).
    Tuples,
    /// Anything else RocksDB reports.
    Other,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::NoSpace => "no space left",
            ErrorKind::Corruption => "corruption",
            ErrorKind::Io => "IO error",
            ErrorKind::Busy => "busy",
            ErrorKind::Closed => "closed",
            ErrorKind::Invalid => "invalid request",
            ErrorKind::Format => "unknown storage format",
            ErrorKind::Compacted => "compacted",
            ErrorKind::Unavailable => "not available",
            ErrorKind::Tuples => "tuple model",
            ErrorKind::Other => "other",
        })
    }
}

/// What went wrong in the store. Every variant names what failed; [`StorageError::kind`]
/// says what kind of failure it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// RocksDB reported an error of `kind` while doing `what`.
    #[error("RocksDB failed while {what}: {message}")]
    Rocks {
        kind: ErrorKind,
        what: String,
        message: String,
    },
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
    /// A file-system operation (checkpoint copy, directory creation) failed; `kind` is
    /// [`ErrorKind::NoSpace`] or [`ErrorKind::Io`].
    #[error("{what}: {message}")]
    Io {
        kind: ErrorKind,
        what: String,
        message: String,
    },
    /// An error of the tuple model (e.g. a revision outside the readable window).
    #[error(transparent)]
    Tuples(#[from] dhow_tuples::Error),
}

impl StorageError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::Rocks { kind, .. } | StorageError::Io { kind, .. } => *kind,
            StorageError::Corrupt { .. } => ErrorKind::Corruption,
            StorageError::NewerFormat { .. } | StorageError::UnknownFormat { .. } => {
                ErrorKind::Format
            }
            StorageError::Invalid(_) => ErrorKind::Invalid,
            StorageError::LogCompacted { .. } => ErrorKind::Compacted,
            StorageError::LogUnavailable { .. } => ErrorKind::Unavailable,
            StorageError::Tuples(_) => ErrorKind::Tuples,
        }
    }
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

/// The kind of a RocksDB status: its code, and for an IO error whether it says the disk is
/// full (RocksDB reports ENOSPC as an IO error whose text names it: the C API passes the
/// status only as text, and this is the one place that reads it).
pub(crate) fn rocks_kind(kind: rocksdb::ErrorKind, message: &str) -> ErrorKind {
    use rocksdb::ErrorKind as K;
    match kind {
        K::IOError if message.contains("No space left on device") => ErrorKind::NoSpace,
        K::IOError => ErrorKind::Io,
        K::Corruption => ErrorKind::Corruption,
        K::Busy
        | K::TimedOut
        | K::TryAgain
        | K::Incomplete
        | K::MergeInProgress
        | K::Aborted
        | K::Expired => ErrorKind::Busy,
        K::ShutdownInProgress | K::ColumnFamilyDropped => ErrorKind::Closed,
        K::InvalidArgument | K::NotSupported | K::NotFound => ErrorKind::Invalid,
        K::CompactionTooLarge | K::Unknown => ErrorKind::Other,
    }
}

/// The kind of a file-system error.
pub(crate) fn io_kind(e: &std::io::Error) -> ErrorKind {
    if e.kind() == std::io::ErrorKind::StorageFull {
        ErrorKind::NoSpace
    } else {
        ErrorKind::Io
    }
}

/// Maps a RocksDB error, naming what was being done.
pub(crate) fn rocks(what: impl Into<String>) -> impl FnOnce(rocksdb::Error) -> StorageError {
    let what = what.into();
    move |e| {
        let kind = rocks_kind(e.kind(), e.as_ref());
        StorageError::Rocks {
            kind,
            what,
            message: e.into_string(),
        }
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
        kind: io_kind(&e),
        what,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_statuses_are_classified() {
        use rocksdb::ErrorKind as K;
        let enospc = "IO error: No space left on device: While appending to file: /data/000012.log: No space left on device";
        assert_eq!(rocks_kind(K::IOError, enospc), ErrorKind::NoSpace);
        assert_eq!(
            rocks_kind(K::IOError, "IO error: /data/LOCK: Permission denied"),
            ErrorKind::Io
        );
        assert_eq!(
            rocks_kind(K::Corruption, "Corruption: block checksum mismatch"),
            ErrorKind::Corruption
        );
        assert_eq!(
            rocks_kind(K::TryAgain, "Operation failed. Try again.: "),
            ErrorKind::Busy
        );
        assert_eq!(rocks_kind(K::ShutdownInProgress, ""), ErrorKind::Closed);
        assert_eq!(rocks_kind(K::InvalidArgument, ""), ErrorKind::Invalid);
    }

    #[test]
    fn file_system_errors_are_classified() {
        let full = std::io::Error::from_raw_os_error(28); // ENOSPC
        assert_eq!(io_kind(&full), ErrorKind::NoSpace);
        let e = io("copying", Path::new("/x"))(full);
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert!(e.to_string().contains("copying /x"), "{e}");
        let denied = std::io::Error::from_raw_os_error(13); // EACCES
        assert_eq!(io_kind(&denied), ErrorKind::Io);
    }

    #[test]
    fn every_variant_has_its_kind() {
        assert_eq!(
            corrupt("tuples")("bad".into()).kind(),
            ErrorKind::Corruption
        );
        assert_eq!(StorageError::Invalid("x".into()).kind(), ErrorKind::Invalid);
        assert_eq!(
            StorageError::LogCompacted { index: 1, first: 2 }.kind(),
            ErrorKind::Compacted
        );
        assert_eq!(
            StorageError::LogUnavailable { index: 9, last: 2 }.kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            StorageError::NewerFormat {
                path: "p".into(),
                found: 2,
                supported: 1
            }
            .kind(),
            ErrorKind::Format
        );
    }
}
