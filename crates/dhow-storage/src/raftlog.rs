//! The Raft log and Raft state on the store's database, as plain bytes (the raft crate
//! encodes and decodes its own types): `raft_log` holds entries by index, `raft_state` the
//! hard state, the conf state and the index and term of the last compaction or snapshot.
//! Every write is one WriteBatch, synced before it returns.

use std::sync::{Arc, MutexGuard};

use rocksdb::{ReadOptions, WriteBatch};

use crate::db::{Db, CF_RAFT_LOG, CF_RAFT_STATE};
use crate::error::{corrupt, rocks, StorageError};
use crate::keys::{
    be_u64, decode_log_entry, decode_u64_key, encode_log_entry, u64_key, KEY_FORMAT,
};

const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";

/// One log entry: index, term and the entry's bytes.
pub type RaftEntry = (u64, u64, Vec<u8>);

/// The log's bounds, cached in memory and updated after each successful write.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RaftBounds {
    snap_index: u64,
    snap_term: u64,
    /// The last stored index, or `snap_index` when the log is empty.
    last: u64,
}

impl RaftBounds {
    pub(crate) fn load(sh: &Db) -> Result<RaftBounds, StorageError> {
        let (snap_index, snap_term) = match sh
            .db
            .get_cf(sh.cf(CF_RAFT_STATE)?, SNAPSHOT_META)
            .map_err(rocks("reading the Raft snapshot index"))?
        {
            Some(b) if b.len() == 16 => (
                be_u64(&b[..8]).map_err(corrupt(CF_RAFT_STATE))?,
                be_u64(&b[8..]).map_err(corrupt(CF_RAFT_STATE))?,
            ),
            Some(b) => {
                return Err(StorageError::Corrupt {
                    cf: CF_RAFT_STATE,
                    message: format!("snapshot meta of {} bytes (expected 16)", b.len()),
                })
            }
            None => (0, 0),
        };
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(vec![KEY_FORMAT]);
        opts.set_iterate_upper_bound(vec![KEY_FORMAT + 1]);
        let mut it = sh.db.raw_iterator_cf_opt(sh.cf(CF_RAFT_LOG)?, opts);
        it.seek_to_last();
        let last = match it.key() {
            Some(k) => decode_u64_key(k).map_err(corrupt(CF_RAFT_LOG))?,
            None => snap_index,
        };
        it.status()
            .map_err(rocks("finding the end of the Raft log"))?;
        Ok(RaftBounds {
            snap_index,
            snap_term,
            last: last.max(snap_index),
        })
    }
}

/// The Raft log store of one node, on the same database as its tuples. Cloning is cheap;
/// all clones share the log. Writes are serialised internally.
#[derive(Clone)]
pub struct RaftLogStore {
    shared: Arc<Db>,
}

impl std::fmt::Debug for RaftLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLogStore")
            .field("bounds", &*self.bounds())
            .finish()
    }
}

impl RaftLogStore {
    pub(crate) fn new(shared: Arc<Db>) -> Self {
        RaftLogStore { shared }
    }

    fn bounds(&self) -> MutexGuard<'_, RaftBounds> {
        // Bounds change only after a successful write, so a poisoned lock holds valid data.
        self.shared.raft.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the disk still has its free-space reserve (`StoreOptions::min_free_bytes`):
    /// an error of kind `NoSpace` when it does not. The Raft loop asks before each round of
    /// writes and pauses while it fails.
    pub fn check_space(&self) -> Result<(), StorageError> {
        self.shared.check_space()
    }

    /// Appends consecutive entries; stored entries at or after the first new index are
    /// replaced (a conflicting suffix from an old leader is dropped). Synced.
    pub fn append(&self, entries: &[RaftEntry]) -> Result<(), StorageError> {
        self.persist(entries, None)
    }

    /// Appends `entries` (as [`append`](Self::append)) and, if given, sets the hard state, in
    /// one synced write: what a Raft `Ready` asks to persist.
    pub fn persist(
        &self,
        entries: &[RaftEntry],
        hard_state: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        self.persist_with(entries, hard_state, true)
    }

    /// As [`persist`](Self::persist), but without waiting for the disk: the write is in the
    /// database's WAL (the operating system's page cache) and becomes durable with the next
    /// [`sync`](Self::sync) or synced write. The Raft loop syncs on another thread while it
    /// applies committed entries, and reports the entries persisted only after the sync.
    pub fn persist_unsynced(
        &self,
        entries: &[RaftEntry],
        hard_state: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        self.persist_with(entries, hard_state, false)
    }

    /// Makes every write made so far durable (the database's one WAL, synced), unless the
    /// store was opened without sync. Safe beside writes of other threads.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.shared.sync_wal()
    }

    fn persist_with(
        &self,
        entries: &[RaftEntry],
        hard_state: Option<&[u8]>,
        synced: bool,
    ) -> Result<(), StorageError> {
        let sh = &*self.shared;
        let mut b = self.bounds();
        let mut wb = WriteBatch::default();
        let mut new_last = b.last;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            for w in entries.windows(2) {
                if w[0].0.checked_add(1) != Some(w[1].0) {
                    return Err(StorageError::Invalid(format!(
                        "raft entries to append are not consecutive: {} then {}",
                        w[0].0, w[1].0
                    )));
                }
            }
            if first.0 <= b.snap_index {
                return Err(StorageError::Invalid(format!(
                    "appending at raft index {} would overwrite compacted entries (the log \
                     starts at {})",
                    first.0,
                    b.snap_index.saturating_add(1)
                )));
            }
            if first.0 > b.last.saturating_add(1) {
                return Err(StorageError::Invalid(format!(
                    "appending at raft index {} would leave a gap (the log ends at {})",
                    first.0, b.last
                )));
            }
            let log = sh.cf(CF_RAFT_LOG)?;
            if b.last > last.0 {
                // A conflicting suffix longer than the new entries: drop the rest.
                wb.delete_range_cf(log, u64_key(last.0 + 1).to_vec(), vec![KEY_FORMAT + 1]);
            }
            for (index, term, bytes) in entries {
                wb.put_cf(log, u64_key(*index), encode_log_entry(*term, bytes));
            }
            new_last = last.0;
        }
        if let Some(hs) = hard_state {
            wb.put_cf(sh.cf(CF_RAFT_STATE)?, HARD_STATE, hs);
        }
        if synced {
            sh.write(wb, "appending to the Raft log")?;
        } else {
            sh.write_unsynced(wb, "appending to the Raft log")?;
        }
        b.last = new_last;
        Ok(())
    }

    /// The term and bytes of the entry at `index`, if stored.
    pub fn entry(&self, index: u64) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let sh = &*self.shared;
        match sh
            .db
            .get_cf(sh.cf(CF_RAFT_LOG)?, u64_key(index))
            .map_err(rocks(format!("reading Raft log entry {index}")))?
        {
            Some(v) => decode_log_entry(&v).map(Some).map_err(corrupt(CF_RAFT_LOG)),
            None => Ok(None),
        }
    }

    /// The term of the entry at `index`: the snapshot's term at the snapshot index, `None`
    /// when the index is not stored (compacted or past the end).
    pub fn term(&self, index: u64) -> Result<Option<u64>, StorageError> {
        {
            let b = self.bounds();
            if index == b.snap_index {
                return Ok(Some(b.snap_term));
            }
            if index < b.snap_index || index > b.last {
                return Ok(None);
            }
        }
        Ok(self.entry(index)?.map(|(t, _)| t))
    }

    /// Entries with `lo <= index < hi`, stopping once their bytes exceed `max_bytes` (but
    /// always at least one). Fails if `lo` is compacted or `hi - 1` is past the end.
    pub fn entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: Option<u64>,
    ) -> Result<Vec<RaftEntry>, StorageError> {
        let sh = &*self.shared;
        let b = self.bounds();
        if lo <= b.snap_index {
            return Err(StorageError::LogCompacted {
                index: lo,
                first: b.snap_index.saturating_add(1),
            });
        }
        if hi > b.last.saturating_add(1) {
            return Err(StorageError::LogUnavailable {
                index: hi - 1,
                last: b.last,
            });
        }
        let mut out = Vec::new();
        if lo >= hi {
            return Ok(out);
        }
        let max = max_bytes.unwrap_or(u64::MAX);
        let mut size = 0u64;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(u64_key(hi).to_vec());
        let mut it = sh.db.raw_iterator_cf_opt(sh.cf(CF_RAFT_LOG)?, opts);
        it.seek(u64_key(lo));
        let mut expect = lo;
        while let Some((k, v)) = it.item() {
            let index = decode_u64_key(k).map_err(corrupt(CF_RAFT_LOG))?;
            if index != expect {
                return Err(StorageError::Corrupt {
                    cf: CF_RAFT_LOG,
                    message: format!("entry {expect} is missing (found {index})"),
                });
            }
            let (term, bytes) = decode_log_entry(v).map_err(corrupt(CF_RAFT_LOG))?;
            size = size.saturating_add(bytes.len() as u64);
            if !out.is_empty() && size > max {
                break;
            }
            out.push((index, term, bytes));
            expect += 1;
            it.next();
        }
        it.status()
            .map_err(rocks(format!("reading Raft log entries {lo}..{hi}")))?;
        if out.is_empty() || (expect < hi && size <= max) {
            return Err(StorageError::Corrupt {
                cf: CF_RAFT_LOG,
                message: format!(
                    "entry {expect} is missing (the log should end at {})",
                    b.last
                ),
            });
        }
        Ok(out)
    }

    /// The first index in the log (the snapshot index + 1).
    pub fn first_index(&self) -> u64 {
        self.bounds().snap_index.saturating_add(1)
    }

    /// The last index in the log (the snapshot index when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.bounds().last
    }

    /// Index and term of the last compaction or installed snapshot ((0, 0) if none).
    pub fn snapshot_meta(&self) -> (u64, u64) {
        let b = self.bounds();
        (b.snap_index, b.snap_term)
    }

    fn get_state(&self, key: &[u8], what: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let sh = &*self.shared;
        sh.db
            .get_cf(sh.cf(CF_RAFT_STATE)?, key)
            .map_err(rocks(format!("reading the Raft {what}")))
    }

    fn put_state(&self, key: &[u8], value: &[u8], what: &str) -> Result<(), StorageError> {
        let sh = &*self.shared;
        let _b = self.bounds();
        let mut wb = WriteBatch::default();
        wb.put_cf(sh.cf(CF_RAFT_STATE)?, key, value);
        sh.write(wb, &format!("writing the Raft {what}"))
    }

    /// The stored hard state bytes.
    pub fn hard_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_state(HARD_STATE, "hard state")
    }

    /// Stores the hard state (synced).
    pub fn set_hard_state(&self, bytes: &[u8]) -> Result<(), StorageError> {
        self.put_state(HARD_STATE, bytes, "hard state")
    }

    /// The stored conf state bytes.
    pub fn conf_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_state(CONF_STATE, "conf state")
    }

    /// Stores the conf state (synced).
    pub fn set_conf_state(&self, bytes: &[u8]) -> Result<(), StorageError> {
        self.put_state(CONF_STATE, bytes, "conf state")
    }

    /// Drops entries with index <= `up_to` and remembers `up_to` and its term as the
    /// snapshot point. Compacting at or below the current snapshot index does nothing.
    pub fn compact(&self, up_to: u64) -> Result<(), StorageError> {
        let sh = &*self.shared;
        let mut b = self.bounds();
        if up_to <= b.snap_index {
            return Ok(());
        }
        if up_to > b.last {
            return Err(StorageError::LogUnavailable {
                index: up_to,
                last: b.last,
            });
        }
        let term = match sh
            .db
            .get_cf(sh.cf(CF_RAFT_LOG)?, u64_key(up_to))
            .map_err(rocks(format!("reading Raft log entry {up_to}")))?
        {
            Some(v) => decode_log_entry(&v).map_err(corrupt(CF_RAFT_LOG))?.0,
            None => {
                return Err(StorageError::Corrupt {
                    cf: CF_RAFT_LOG,
                    message: format!("entry {up_to} is missing"),
                })
            }
        };
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(
            sh.cf(CF_RAFT_LOG)?,
            vec![KEY_FORMAT],
            match up_to.checked_add(1) {
                Some(end) => u64_key(end).to_vec(),
                None => vec![KEY_FORMAT + 1],
            },
        );
        wb.put_cf(sh.cf(CF_RAFT_STATE)?, SNAPSHOT_META, snap_meta(up_to, term));
        sh.write(wb, &format!("compacting the Raft log up to {up_to}"))?;
        b.snap_index = up_to;
        b.snap_term = term;
        Ok(())
    }

    /// Records that the node's state now comes from a snapshot at `index`/`term`: the whole
    /// log is dropped and the log continues at `index + 1`.
    pub fn install_snapshot(&self, index: u64, term: u64) -> Result<(), StorageError> {
        let sh = &*self.shared;
        let mut b = self.bounds();
        if index < b.snap_index {
            return Err(StorageError::Invalid(format!(
                "snapshot at raft index {index} is older than the current one at {}",
                b.snap_index
            )));
        }
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(sh.cf(CF_RAFT_LOG)?, vec![KEY_FORMAT], vec![KEY_FORMAT + 1]);
        wb.put_cf(sh.cf(CF_RAFT_STATE)?, SNAPSHOT_META, snap_meta(index, term));
        sh.write(wb, &format!("installing a Raft snapshot at {index}"))?;
        *b = RaftBounds {
            snap_index: index,
            snap_term: term,
            last: index,
        };
        Ok(())
    }

    /// Forgets the whole log and state (after restoring another node's checkpoint).
    pub(crate) fn clear(&self) -> Result<(), StorageError> {
        let sh = &*self.shared;
        let mut b = self.bounds();
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(sh.cf(CF_RAFT_LOG)?, vec![KEY_FORMAT], vec![KEY_FORMAT + 1]);
        let state = sh.cf(CF_RAFT_STATE)?;
        for k in [HARD_STATE, CONF_STATE, SNAPSHOT_META] {
            wb.delete_cf(state, k);
        }
        sh.write(wb, "clearing the Raft log and state")?;
        *b = RaftBounds::default();
        Ok(())
    }
}

fn snap_meta(index: u64, term: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&index.to_be_bytes());
    m[8..].copy_from_slice(&term.to_be_bytes());
    m
}
