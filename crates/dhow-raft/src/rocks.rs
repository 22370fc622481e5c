//! The RocksDB Raft log of `dhow-storage` as a `LogStore` (bytes in, bytes out), its errors
//! mapped to [`StorageError`]s of the same kind.

use dhow_storage::{ErrorKind, RaftLogStore};

use crate::error::{StorageError, StorageKind};
use crate::log::{LogStore, RawEntry, Syncer};

impl From<dhow_storage::StorageError> for StorageError {
    fn from(e: dhow_storage::StorageError) -> Self {
        let kind = match e.kind() {
            ErrorKind::NoSpace => StorageKind::NoSpace,
            ErrorKind::Corruption => StorageKind::Corruption,
            ErrorKind::Io => StorageKind::Io,
            ErrorKind::Busy => StorageKind::Busy,
            ErrorKind::Closed => StorageKind::Closed,
            ErrorKind::Invalid => StorageKind::Invalid,
            ErrorKind::Format => StorageKind::Format,
            ErrorKind::Compacted => StorageKind::Compacted,
            ErrorKind::Unavailable => StorageKind::Unavailable,
            ErrorKind::Tuples | ErrorKind::Other => StorageKind::Other,
        };
        StorageError::new(kind, e.to_string())
    }
}

impl LogStore for RaftLogStore {
    fn append(&mut self, entries: &[RawEntry]) -> Result<(), StorageError> {
        Ok(RaftLogStore::append(self, entries)?)
    }
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<RawEntry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        Ok(RaftLogStore::entries(self, lo, hi, None)?)
    }
    fn term(&self, index: u64) -> Result<Option<u64>, StorageError> {
        Ok(RaftLogStore::term(self, index)?)
    }
    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(RaftLogStore::first_index(self))
    }
    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(RaftLogStore::last_index(self))
    }
    fn hard_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(RaftLogStore::hard_state(self)?)
    }
    fn set_hard_state(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        Ok(RaftLogStore::set_hard_state(self, bytes)?)
    }
    fn conf_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(RaftLogStore::conf_state(self)?)
    }
    fn set_conf_state(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        Ok(RaftLogStore::set_conf_state(self, bytes)?)
    }
    fn compact(&mut self, index: u64, _term: u64) -> Result<(), StorageError> {
        Ok(RaftLogStore::compact(self, index)?)
    }
    fn snapshot_meta(&self) -> Result<(u64, u64), StorageError> {
        Ok(RaftLogStore::snapshot_meta(self))
    }
    fn install_snapshot(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        Ok(RaftLogStore::install_snapshot(self, index, term)?)
    }
    fn check_space(&self) -> Result<(), StorageError> {
        Ok(RaftLogStore::check_space(self)?)
    }
    fn persist_unsynced(
        &mut self,
        entries: &[RawEntry],
        hard_state: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        Ok(RaftLogStore::persist_unsynced(self, entries, hard_state)?)
    }
    fn syncer(&self) -> Syncer {
        let log = self.clone();
        Box::new(move || Ok(log.sync()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_kinds_carry_over() {
        let e: StorageError =
            dhow_storage::StorageError::LogCompacted { index: 3, first: 5 }.into();
        assert_eq!(e.kind, StorageKind::Compacted);
        assert!(e.message.contains("index 3 is compacted"), "{e}");
        let e: StorageError = dhow_storage::StorageError::Corrupt {
            cf: "raft_log",
            message: "bad".into(),
        }
        .into();
        assert_eq!(e.kind, StorageKind::Corruption);
    }
}
