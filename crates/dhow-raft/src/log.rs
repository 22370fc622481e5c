//! The Raft log as raft-rs sees it (`raft::Storage`), over a byte-level `LogStore`: entries,
//! hard state and membership (conf state plus peer addresses) as bytes, so the store
//! underneath never sees raft-rs types. `MemLog` is the in-memory `LogStore` for tests; the
//! RocksDB one lives in dhow-storage and is adapted in `rocks.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

use crate::codec::{self, DecodeError};
use crate::error::{RaftError, StorageError, StorageKind};

/// One stored log entry: index, term, the protobuf-encoded `Entry`.
pub type RawEntry = (u64, u64, Vec<u8>);

/// Makes the writes made before it durable; runs on another thread than the loop's (see
/// [`LogStore::syncer`]).
pub type Syncer = Box<dyn FnOnce() -> Result<(), StorageError> + Send>;

/// Durable storage of the Raft log and state, as bytes. Appends and state writes are synced
/// before they return, but those of [`LogStore::persist_unsynced`], which are durable once
/// a [`LogStore::syncer`] made after them has run.
pub trait LogStore: Send + 'static {
    /// Appends entries (consecutive indexes); existing entries at or after the first index are
    /// replaced.
    fn append(&mut self, entries: &[RawEntry]) -> Result<(), StorageError>;
    /// Entries with `lo <= index < hi`, in order.
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<RawEntry>, StorageError>;
    /// The term of the entry at `index`, if stored.
    fn term(&self, index: u64) -> Result<Option<u64>, StorageError>;
    /// The first stored index (snapshot index + 1 when the log is empty).
    fn first_index(&self) -> Result<u64, StorageError>;
    /// The last stored index (the snapshot index when the log is empty).
    fn last_index(&self) -> Result<u64, StorageError>;
    fn hard_state(&self) -> Result<Option<Vec<u8>>, StorageError>;
    fn set_hard_state(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    fn conf_state(&self) -> Result<Option<Vec<u8>>, StorageError>;
    fn set_conf_state(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    /// Drops entries up to and including `index` (which had `term`), remembering both.
    fn compact(&mut self, index: u64, term: u64) -> Result<(), StorageError>;
    /// Index and term of the last compaction (0, 0 if none).
    fn snapshot_meta(&self) -> Result<(u64, u64), StorageError>;
    /// The node's state now comes from a snapshot at `index`/`term`: drop the whole log, which
    /// continues at `index + 1`.
    fn install_snapshot(&mut self, index: u64, term: u64) -> Result<(), StorageError>;
    /// Whether a round of writes may start now: an error of kind `NoSpace` while the disk is
    /// below its free-space reserve (the loop then pauses its writes and retries). A log
    /// with nothing to watch says yes.
    fn check_space(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Appends `entries` (as [`append`](Self::append), none for none) and, if given, sets
    /// the hard state, without waiting for the disk: durable once a [`syncer`](Self::syncer)
    /// made after this call has run. By default, synced at once.
    fn persist_unsynced(
        &mut self,
        entries: &[RawEntry],
        hard_state: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        if !entries.is_empty() {
            self.append(entries)?;
        }
        match hard_state {
            Some(hs) => self.set_hard_state(hs),
            None => Ok(()),
        }
    }
    /// What makes every write made before this call durable, to run on any thread (the loop
    /// applies committed entries meanwhile). By default nothing: every write is synced.
    fn syncer(&self) -> Syncer {
        Box::new(|| Ok(()))
    }
}

/// A log shared with whoever else holds the `Arc` (a test that restarts a node on the same
/// log, like a file on disk).
impl<L: LogStore> LogStore for Arc<Mutex<L>> {
    fn append(&mut self, e: &[RawEntry]) -> Result<(), StorageError> {
        lock(self)?.append(e)
    }
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<RawEntry>, StorageError> {
        lock(self)?.entries(lo, hi)
    }
    fn term(&self, i: u64) -> Result<Option<u64>, StorageError> {
        lock(self)?.term(i)
    }
    fn first_index(&self) -> Result<u64, StorageError> {
        lock(self)?.first_index()
    }
    fn last_index(&self) -> Result<u64, StorageError> {
        lock(self)?.last_index()
    }
    fn hard_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        lock(self)?.hard_state()
    }
    fn set_hard_state(&mut self, b: &[u8]) -> Result<(), StorageError> {
        lock(self)?.set_hard_state(b)
    }
    fn conf_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        lock(self)?.conf_state()
    }
    fn set_conf_state(&mut self, b: &[u8]) -> Result<(), StorageError> {
        lock(self)?.set_conf_state(b)
    }
    fn compact(&mut self, i: u64, t: u64) -> Result<(), StorageError> {
        lock(self)?.compact(i, t)
    }
    fn snapshot_meta(&self) -> Result<(u64, u64), StorageError> {
        lock(self)?.snapshot_meta()
    }
    fn install_snapshot(&mut self, i: u64, t: u64) -> Result<(), StorageError> {
        lock(self)?.install_snapshot(i, t)
    }
    fn check_space(&self) -> Result<(), StorageError> {
        lock(self)?.check_space()
    }
    fn persist_unsynced(&mut self, e: &[RawEntry], hs: Option<&[u8]>) -> Result<(), StorageError> {
        lock(self)?.persist_unsynced(e, hs)
    }
    fn syncer(&self) -> Syncer {
        match lock(self) {
            Ok(l) => l.syncer(),
            Err(e) => Box::new(move || Err(e)),
        }
    }
}

fn lock<L>(m: &Mutex<L>) -> Result<std::sync::MutexGuard<'_, L>, StorageError> {
    m.lock()
        .map_err(|_| StorageError::new(StorageKind::Other, "raft log lock poisoned"))
}

/// An in-memory `LogStore`.
#[derive(Debug, Default, Clone)]
pub struct MemLog {
    entries: Vec<RawEntry>,
    hard: Option<Vec<u8>>,
    conf: Option<Vec<u8>>,
    snap: (u64, u64),
    full: bool,
}

impl MemLog {
    /// Makes [`LogStore::check_space`] say the disk is full (or not). For tests.
    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }
}

impl LogStore for MemLog {
    fn append(&mut self, entries: &[RawEntry]) -> Result<(), StorageError> {
        if let Some(first) = entries.first() {
            self.entries.retain(|e| e.0 < first.0);
            self.entries.extend(entries.iter().cloned());
        }
        Ok(())
    }
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<RawEntry>, StorageError> {
        Ok(self
            .entries
            .iter()
            .filter(|e| e.0 >= lo && e.0 < hi)
            .cloned()
            .collect())
    }
    fn term(&self, index: u64) -> Result<Option<u64>, StorageError> {
        if index == self.snap.0 {
            return Ok(Some(self.snap.1));
        }
        Ok(self.entries.iter().find(|e| e.0 == index).map(|e| e.1))
    }
    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.entries.first().map(|e| e.0).unwrap_or(self.snap.0 + 1))
    }
    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.entries.last().map(|e| e.0).unwrap_or(self.snap.0))
    }
    fn hard_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.hard.clone())
    }
    fn set_hard_state(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.hard = Some(bytes.to_vec());
        Ok(())
    }
    fn conf_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.conf.clone())
    }
    fn set_conf_state(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.conf = Some(bytes.to_vec());
        Ok(())
    }
    fn compact(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        self.entries.retain(|e| e.0 > index);
        self.snap = (index, term);
        Ok(())
    }
    fn snapshot_meta(&self) -> Result<(u64, u64), StorageError> {
        Ok(self.snap)
    }
    fn install_snapshot(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        self.entries.clear();
        self.snap = (index, term);
        Ok(())
    }
    fn check_space(&self) -> Result<(), StorageError> {
        if self.full {
            return Err(StorageError::new(
                StorageKind::NoSpace,
                "the disk is full (MemLog::set_full)",
            ));
        }
        Ok(())
    }
}

/// Who is in the cluster: raft-rs's conf state and every member's peer address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Membership {
    pub conf: ConfState,
    pub peers: BTreeMap<u64, String>,
}

impl Membership {
    /// The membership in the current format (see `codec`).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_membership(self)
    }

    /// Reads a membership in any format Dhow ever wrote.
    pub fn decode(bytes: &[u8]) -> Result<Membership, DecodeError> {
        codec::decode_membership(bytes)
    }
}

/// A failure as raft-rs's storage reports it: a compacted or missing index as such (raft-rs
/// acts on those), anything else as `Other`, keeping the error.
fn store_err(e: impl Into<RaftError>) -> raft::Error {
    use raft::StorageError as S;
    match e.into() {
        RaftError::Storage(StorageError {
            kind: StorageKind::Compacted,
            ..
        }) => raft::Error::Store(S::Compacted),
        RaftError::Storage(StorageError {
            kind: StorageKind::Unavailable,
            ..
        }) => raft::Error::Store(S::Unavailable),
        other => raft::Error::Store(S::Other(Box::new(other))),
    }
}

/// `raft::Storage` over a shared `LogStore`. The driver writes through the same handle and
/// keeps `applied` current, so that a snapshot can be described when raft-rs asks for one,
/// and says when the store is being restored from a snapshot (none can be described then).
pub struct RaftStorage<L: LogStore> {
    pub(crate) log: Arc<Mutex<L>>,
    applied: Arc<AtomicU64>,
    restoring: Arc<AtomicBool>,
}

/// Entries as the `LogStore` stores them: index, term, the protobuf encoding.
fn encode_entries(entries: &[Entry]) -> Result<Vec<RawEntry>, RaftError> {
    entries
        .iter()
        .map(|e| {
            e.write_to_bytes()
                .map(|bytes| (e.index, e.term, bytes))
                .map_err(|err| RaftError::Raft(format!("encode raft entry: {err}")))
        })
        .collect()
}

impl<L: LogStore> Clone for RaftStorage<L> {
    fn clone(&self) -> Self {
        RaftStorage {
            log: self.log.clone(),
            applied: self.applied.clone(),
            restoring: self.restoring.clone(),
        }
    }
}

impl<L: LogStore> RaftStorage<L> {
    pub fn new(log: L) -> Self {
        RaftStorage {
            log: Arc::new(Mutex::new(log)),
            applied: Arc::new(AtomicU64::new(0)),
            restoring: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records the index applied to the state machine.
    pub fn set_applied(&self, index: u64) {
        self.applied.store(index, Ordering::Release);
    }

    /// Records that the store is (or no longer is) being restored from a snapshot: while it
    /// is, `snapshot` answers `SnapshotTemporarilyUnavailable` (raft-rs tries again later).
    pub(crate) fn set_restoring(&self, restoring: bool) {
        self.restoring.store(restoring, Ordering::Release);
    }

    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut L) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        f(&mut *lock(&self.log)?)
    }

    /// Persists entries from a Ready.
    pub fn append(&self, entries: &[Entry]) -> Result<(), RaftError> {
        let raw = encode_entries(entries)?;
        Ok(self.with(|l| l.append(&raw))?)
    }

    /// Writes new entries and the hard state of a Ready without waiting for the disk; they
    /// are persisted once [`RaftStorage::syncer`]'s sync has run.
    pub fn persist_unsynced(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<(), RaftError> {
        let raw = encode_entries(entries)?;
        let hs = hs
            .map(|hs| hs.write_to_bytes())
            .transpose()
            .map_err(|e| RaftError::Raft(format!("encode hard state: {e}")))?;
        Ok(self.with(|l| l.persist_unsynced(&raw, hs.as_deref()))?)
    }

    /// The sync of what was written before this call, to run on another thread; the log's
    /// lock is not held while it runs.
    pub fn syncer(&self) -> Result<Syncer, RaftError> {
        Ok(self.with(|l| Ok(l.syncer()))?)
    }

    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), RaftError> {
        let bytes = hs
            .write_to_bytes()
            .map_err(|e| RaftError::Raft(format!("encode hard state: {e}")))?;
        Ok(self.with(|l| l.set_hard_state(&bytes))?)
    }

    pub fn hard_state(&self) -> Result<HardState, RaftError> {
        match self.with(|l| l.hard_state())? {
            Some(b) => HardState::parse_from_bytes(&b).map_err(|e| {
                StorageError::new(
                    StorageKind::Corruption,
                    format!("the stored hard state does not decode: {e}"),
                )
                .into()
            }),
            None => Ok(HardState::default()),
        }
    }

    pub fn set_membership(&self, m: &Membership) -> Result<(), RaftError> {
        let bytes = m.encode();
        Ok(self.with(|l| l.set_conf_state(&bytes))?)
    }

    pub fn membership(&self) -> Result<Option<Membership>, RaftError> {
        match self.with(|l| l.conf_state())? {
            Some(b) => Membership::decode(&b)
                .map(Some)
                .map_err(RaftError::codec("the stored membership")),
            None => Ok(None),
        }
    }

    /// Makes the log start after a snapshot at `index`/`term` with `membership`, and commits
    /// up to `index` in the hard state.
    pub fn install_snapshot(
        &self,
        index: u64,
        term: u64,
        membership: &Membership,
    ) -> Result<(), RaftError> {
        self.with(|l| l.install_snapshot(index, term))?;
        self.set_membership(membership)?;
        let mut hs = self.hard_state()?;
        if hs.commit < index {
            hs.commit = index;
        }
        if hs.term < term {
            hs.term = term;
        }
        self.set_hard_state(&hs)
    }

    /// Sets the commit index in the stored hard state, without waiting for the disk (as
    /// [`RaftStorage::persist_unsynced`]): a commit index that a crash takes back is learnt
    /// again (from the leader, or raised to the store's head by the repair at start).
    pub fn set_commit(&self, commit: u64) -> Result<(), RaftError> {
        let mut hs = self.hard_state()?;
        if hs.commit < commit {
            hs.commit = commit;
            self.persist_unsynced(&[], Some(&hs))?;
        }
        Ok(())
    }
}

impl<L: LogStore> raft::Storage for RaftStorage<L> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hs = self.hard_state().map_err(store_err)?;
        let cs = self
            .membership()
            .map_err(store_err)?
            .map(|m| m.conf)
            .unwrap_or_default();
        Ok(RaftState::new(hs, cs))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max = max_size.into().unwrap_or(u64::MAX);
        let first = self.with(|l| l.first_index()).map_err(store_err)?;
        if low < first {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        let last = self.with(|l| l.last_index()).map_err(store_err)?;
        if high > last + 1 {
            return Err(store_err(StorageError::new(
                StorageKind::Unavailable,
                format!("entries {low}..{high} asked, log ends at {last}"),
            )));
        }
        let raw = self.with(|l| l.entries(low, high)).map_err(store_err)?;
        let mut out = Vec::with_capacity(raw.len());
        let mut size = 0u64;
        for (_, _, bytes) in raw {
            let e = Entry::parse_from_bytes(&bytes).map_err(|e| {
                store_err(StorageError::new(
                    StorageKind::Corruption,
                    format!("a stored raft entry does not decode: {e}"),
                ))
            })?;
            size += bytes.len() as u64;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (snap_idx, snap_term) = self.with(|l| l.snapshot_meta()).map_err(store_err)?;
        if idx == snap_idx {
            return Ok(snap_term);
        }
        if idx < snap_idx {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        match self.with(|l| l.term(idx)).map_err(store_err)? {
            Some(t) => Ok(t),
            None => Err(raft::Error::Store(raft::StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.with(|l| l.first_index()).map_err(store_err)
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.with(|l| l.last_index()).map_err(store_err)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The snapshot is described here (index = the applied revision, its term, the
        // membership); its data, the store at that revision, is streamed by the transport.
        let index = self.applied.load(Ordering::Acquire);
        if index == 0 || index < request_index || self.restoring.load(Ordering::Acquire) {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let term = raft::Storage::term(self, index)?;
        let m = self.membership().map_err(store_err)?.unwrap_or_default();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = index;
        snap.mut_metadata().term = term;
        snap.mut_metadata().set_conf_state(m.conf.clone());
        snap.data = codec::encode_snapshot_header(&m.peers).into();
        Ok(snap)
    }
}
