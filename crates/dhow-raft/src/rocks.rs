//! The RocksDB Raft log of `dhow-storage` as a `LogStore` (bytes in, bytes out).

use dhow_storage::RaftLogStore;

use crate::log::{LogStore, RawEntry};

impl LogStore for RaftLogStore {
    fn append(&mut self, entries: &[RawEntry]) -> Result<(), String> {
        RaftLogStore::append(self, entries).map_err(|e| e.to_string())
    }
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<RawEntry>, String> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        RaftLogStore::entries(self, lo, hi, None).map_err(|e| e.to_string())
    }
    fn term(&self, index: u64) -> Result<Option<u64>, String> {
        RaftLogStore::term(self, index).map_err(|e| e.to_string())
    }
    fn first_index(&self) -> Result<u64, String> {
        Ok(RaftLogStore::first_index(self))
    }
    fn last_index(&self) -> Result<u64, String> {
        Ok(RaftLogStore::last_index(self))
    }
    fn hard_state(&self) -> Result<Option<Vec<u8>>, String> {
        RaftLogStore::hard_state(self).map_err(|e| e.to_string())
    }
    fn set_hard_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        RaftLogStore::set_hard_state(self, bytes).map_err(|e| e.to_string())
    }
    fn conf_state(&self) -> Result<Option<Vec<u8>>, String> {
        RaftLogStore::conf_state(self).map_err(|e| e.to_string())
    }
    fn set_conf_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        RaftLogStore::set_conf_state(self, bytes).map_err(|e| e.to_string())
    }
    fn compact(&mut self, index: u64, _term: u64) -> Result<(), String> {
        RaftLogStore::compact(self, index).map_err(|e| e.to_string())
    }
    fn snapshot_meta(&self) -> Result<(u64, u64), String> {
        Ok(RaftLogStore::snapshot_meta(self))
    }
    fn install_snapshot(&mut self, index: u64, term: u64) -> Result<(), String> {
        RaftLogStore::install_snapshot(self, index, term).map_err(|e| e.to_string())
    }
}
