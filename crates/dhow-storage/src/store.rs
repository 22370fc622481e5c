//! `RocksStore`: the `TupleStore` implementation on the database of [`crate::db`] (apply in one WriteBatch, durable with the synced Raft log, MVCC readers, changes, schema history,
//! GC driven by the change log), cluster id, checkpoints and restore.

use std::collections::btree_map::Entry;
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use dhow_tuples::{
    check_preconditions, Batch, BoxedReader, Change, Error, Revision, TupleStore, WriteOp,
};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ReadOptions, WriteBatch};

use crate::db::{
    read_window, Db, CF_BY_SUBJECT, CF_CHANGES, CF_META, CF_SCHEMAS, CF_TUPLES, META_CLUSTER,
    META_HEAD, META_NODE, META_OLDEST,
};
use crate::error::{corrupt, io, rocks, StorageError};
use crate::keys::{
    be_u64, change_key, change_key_revision, changes_from, decode_change, decode_u64_key,
    encode_change_keyed, encode_version, encode_version_into, forward_key, prefix_end, reverse_key,
    split_version_key, u64_key, version_deleted, version_key, version_key_into, with_deleted,
    KeyFields, ALIVE, KEY_FORMAT,
};
use crate::raftlog::RaftLogStore;
use crate::reader::{OverlayReader, RocksReader, Staged, StagedOp};

/// How many distinct relationship keys one GC WriteBatch handles at most (at revision
/// boundaries), so collecting a long window does not build one huge batch.
const GC_CHUNK: usize = 10_000;

/// Options for [`RocksStore::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Create the database if the directory holds none (default true).
    pub create_if_missing: bool,
    /// Sync every write (apply, GC, Raft log and state) to disk before it returns (default
    /// true). Turning it off loses acknowledged writes on a machine crash: tests only.
    pub sync_writes: bool,
    /// The free space the disk keeps (default [`DEFAULT_MIN_FREE_BYTES`]): below it the Raft
    /// loop pauses its writes ([`RaftLogStore::check_space`]) instead of letting RocksDB hit
    /// a full disk, which it does not recover from without a reopen.
    pub min_free_bytes: u64,
    /// Memory for writes not yet flushed to files: RocksDB's memtables, all column families
    /// together (default [`DEFAULT_MEMTABLE_BYTES`]); one column family may use half of it.
    pub memtable_bytes: usize,
}

/// The default free-space reserve of a data dir's disk: 64 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// The default memtable budget: 512 MiB. An import of 1M relationships (about 250 MB of
/// versions, index entries and change records) then fits before a flush, which would take
/// the second core from the thread applying it (`docs/benchmarks.md`).
pub const DEFAULT_MEMTABLE_BYTES: usize = 512 * 1024 * 1024;

/// The least memtable budget accepted: 8 MiB.
pub const MIN_MEMTABLE_BYTES: usize = 8 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            create_if_missing: true,
            sync_writes: true,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            memtable_bytes: DEFAULT_MEMTABLE_BYTES,
        }
    }
}

/// Dhow's durable store on RocksDB. Cloning is cheap and shares the database.
///
/// Relationships are kept as MVCC versions: each version's key ends with the revision that
/// created it, and its value records the revision that deleted it (`u64::MAX` while alive),
/// rewritten in place when a later revision deletes or replaces it. A reader at revision r
/// sees the version with `created <= r < deleted`; readers hold a RocksDB snapshot, so a
/// concurrent apply (which rewrites deleted revisions) or GC (which removes versions) never
/// changes what they see. See [`crate::keys`] for the byte layout.
#[derive(Clone)]
pub struct RocksStore {
    shared: Arc<Db>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.shared.path)
            .field("head", &self.shared.head.load(Ordering::Acquire))
            .field("oldest", &self.shared.oldest.load(Ordering::Acquire))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is only updated after a successful write, so a panic elsewhere
    // cannot leave it inconsistent: recover instead of wedging the store.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RocksStore {
    /// Opens (or creates) the store at `path`, creating missing column families, and checks
    /// the storage format version.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<RocksStore, StorageError> {
        Ok(RocksStore {
            shared: Arc::new(Db::open(path, &opts)?),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// What RocksDB reports of the database's size, compaction backlog and write stalls.
    pub fn stats(&self) -> crate::StorageStats {
        self.shared.stats()
    }

    /// A full compaction of every column family (see `dhow compact`): the data dir then
    /// holds only live data, compressed.
    pub fn compact(&self) -> Result<(), StorageError> {
        self.shared.compact_all()
    }

    /// A handle to the Raft log and state kept in the same database.
    pub fn raft_log(&self) -> RaftLogStore {
        RaftLogStore::new(self.shared.clone())
    }

    /// A reader at `rev` with its concrete type (the trait's `reader` boxes it).
    pub fn snapshot_reader(&self, rev: Revision) -> Result<RocksReader<'_>, StorageError> {
        RocksReader::new(&self.shared, rev)
    }

    /// The cluster id recorded in this store, if any.
    pub fn cluster_id(&self) -> Result<Option<u64>, StorageError> {
        self.meta_u64(META_CLUSTER, "cluster id")
    }

    /// The node id recorded in this store, if any: the node this data dir belongs to.
    pub fn node_id(&self) -> Result<Option<u64>, StorageError> {
        self.meta_u64(META_NODE, "node id")
    }

    /// Records the node id this data dir belongs to (synced).
    pub fn set_node_id(&self, id: u64) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put_cf(self.shared.cf(CF_META)?, META_NODE, id.to_be_bytes());
        self.shared.write(b, "writing the node id")
    }

    fn meta_u64(&self, key: &[u8], what: &str) -> Result<Option<u64>, StorageError> {
        let meta = self.shared.cf(CF_META)?;
        match self
            .shared
            .db
            .get_cf(meta, key)
            .map_err(rocks(format!("reading the {what}")))?
        {
            Some(b) => be_u64(&b).map(Some).map_err(|m| StorageError::Corrupt {
                cf: CF_META,
                message: format!("{what}: {m}"),
            }),
            None => Ok(None),
        }
    }

    /// Records the cluster id (synced).
    pub fn set_cluster_id(&self, id: u64) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put_cf(self.shared.cf(CF_META)?, META_CLUSTER, id.to_be_bytes());
        self.shared.write(b, "writing the cluster id")
    }

    /// Writes a RocksDB checkpoint of the whole database into `dir` (which must not exist)
    /// and returns the applied revision it holds. Applies wait while it is taken.
    pub fn checkpoint(&self, dir: &Path) -> Result<Revision, StorageError> {
        let _g = lock(&self.shared.apply_lock);
        let cp = Checkpoint::new(&self.shared.db).map_err(rocks("preparing a checkpoint"))?;
        cp.create_checkpoint(dir)
            .map_err(rocks(format!("writing a checkpoint to {}", dir.display())))?;
        Ok(Revision(self.shared.head.load(Ordering::Acquire)))
    }

    /// Creates a store at `path` (absent or an empty directory) from the checkpoint in
    /// `checkpoint` and opens it. The checkpoint's Raft log and state belong to the node that
    /// made it, so they are cleared: the caller then records its own hard state, conf state
    /// and the snapshot's index and term (`RaftLogStore::install_snapshot`).
    pub fn restore_from_checkpoint(
        checkpoint: &Path,
        path: &Path,
        opts: StoreOptions,
    ) -> Result<RocksStore, StorageError> {
        if path.exists() {
            let mut entries = std::fs::read_dir(path).map_err(io("listing", path))?;
            if entries.next().is_some() {
                return Err(StorageError::Invalid(format!(
                    "refusing to restore a checkpoint into {}: the directory is not empty",
                    path.display()
                )));
            }
        }
        copy_dir(checkpoint, path)?;
        let store = RocksStore::open(
            path,
            StoreOptions {
                create_if_missing: false,
                ..opts
            },
        )?;
        store.raft_log().clear()?;
        Ok(store)
    }

    fn apply_inner(
        &self,
        rev: Revision,
        batch: &Batch,
    ) -> Result<Vec<Result<(), Error>>, StorageError> {
        let sh = &*self.shared;
        let _g = lock(&sh.apply_lock);
        let head = sh.head.load(Ordering::Acquire);
        if rev.0 <= head {
            return Err(StorageError::Invalid(format!(
                "apply at revision {rev}, but the store is already at {head}"
            )));
        }
        let base = RocksReader::at_head(sh, head);
        let mut staged = Staged::new();
        // The change records, encoded as each op is staged (the forward key at hand).
        let mut changes: Vec<Vec<u8>> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.writes.len());
        for w in &batch.writes {
            let view = OverlayReader {
                base: &base,
                staged: &staged,
                rev,
            };
            let outcome = validate_write(&view, w);
            match outcome {
                Ok(keys) => {
                    for (op, (key, absent)) in w.ops.iter().zip(keys) {
                        let (r, alive) = match op {
                            WriteOp::Create(r) | WriteOp::Touch(r) => (r, true),
                            WriteOp::Delete(r) => (r, false),
                        };
                        changes.push(
                            encode_change_keyed(!alive, &key, r).map_err(StorageError::Invalid)?,
                        );
                        // A key staged again keeps what an earlier Create found at the head.
                        match staged.entry(key) {
                            Entry::Occupied(mut e) => {
                                let s = e.get_mut();
                                s.rel = r;
                                s.alive = alive;
                                s.absent_at_head |= absent;
                            }
                            Entry::Vacant(e) => {
                                e.insert(StagedOp {
                                    rel: r,
                                    alive,
                                    absent_at_head: absent,
                                });
                            }
                        }
                    }
                    outcomes.push(Ok(()));
                }
                // The store failing is not the write's fault: nothing of the batch applies.
                Err(Error::Storage(m)) => return Err(Error::Storage(m).into()),
                Err(e) => outcomes.push(Err(e)),
            }
        }

        let tuples = sh.cf(CF_TUPLES)?;
        let by_subject = sh.cf(CF_BY_SUBJECT)?;
        // Sized for the batch by a generous guess (320 bytes per relationship for its
        // version, index entry and change record, keys and values), so that it is not
        // copied as it grows; capped at 64 MiB, past which the batch grows if it must.
        let guess = 1024usize.saturating_add(changes.len().saturating_mul(320));
        let mut wb = WriteBatch::with_capacity_bytes(guess.min(64 << 20));
        let mut reverse = Vec::with_capacity(staged.len());
        // Buffers reused for every version written (the batch copies what it is given).
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for (fwd, s) in &staged {
            // A Create that found the key absent at the head already looked: nothing to end.
            if !s.absent_at_head {
                if let Some((created, old)) = base.alive_raw(fwd)? {
                    let ended = with_deleted(&old, rev.0).map_err(corrupt(CF_TUPLES))?;
                    version_key_into(fwd, created, &mut key);
                    wb.put_cf(tuples, &key, ended);
                }
            }
            if s.alive {
                value.clear();
                encode_version_into(ALIVE, s.rel, &mut value).map_err(StorageError::Invalid)?;
                version_key_into(fwd, rev.0, &mut key);
                wb.put_cf(tuples, &key, &value);
                reverse.push(reverse_key(s.rel));
            }
        }
        // In key order, as the forward keys already are (`staged` is sorted): RocksDB then
        // inserts each key into its memtable next to the one before, instead of searching
        // the memtable from the top for every key of a large import.
        reverse.sort_unstable();
        for key in &reverse {
            wb.put_cf(by_subject, key, b"");
        }
        let changes_cf = sh.cf(CF_CHANGES)?;
        for (seq, value) in changes.iter().enumerate() {
            let seq = u32::try_from(seq).map_err(|_| {
                StorageError::Invalid(format!("revision {rev} has more than 2^32 changes"))
            })?;
            wb.put_cf(changes_cf, change_key(rev.0, seq), value);
        }
        if let Some(s) = &batch.schema {
            wb.put_cf(sh.cf(CF_SCHEMAS)?, u64_key(rev.0), s.as_bytes());
        }
        wb.put_cf(sh.cf(CF_META)?, META_HEAD, rev.0.to_be_bytes());
        drop(base);
        // Not synced: the entry is in the synced Raft log of this database (see
        // `Db::write_after_log`).
        sh.write_after_log(wb, &format!("writing revision {rev}"))?;
        sh.head.store(rev.0, Ordering::Release);
        Ok(outcomes)
    }

    /// Replaces all relationship data with a snapshot at `rev`, in one synced batch.
    fn restore_inner(
        &self,
        rev: Revision,
        schema: Option<&str>,
        relationships: &mut dyn Iterator<Item = dhow_tuples::Relationship>,
    ) -> Result<(), StorageError> {
        let sh = &*self.shared;
        let _g = lock(&sh.apply_lock);
        let mut wb = WriteBatch::default();
        // Every data key starts with the key format byte; clear the whole keyspace anyway.
        let everything = (Vec::new(), vec![0xffu8; 64]);
        for name in [CF_TUPLES, CF_BY_SUBJECT, CF_CHANGES, CF_SCHEMAS] {
            wb.delete_range_cf(sh.cf(name)?, &everything.0, &everything.1);
        }
        let tuples = sh.cf(CF_TUPLES)?;
        let by_subject = sh.cf(CF_BY_SUBJECT)?;
        let mut seen = HashSet::new();
        for r in relationships {
            let fwd = forward_key(&r);
            if !seen.insert(fwd.clone()) {
                return Err(StorageError::Invalid(format!(
                    "snapshot holds relationship `{r}` twice"
                )));
            }
            let value = encode_version(ALIVE, &r).map_err(StorageError::Invalid)?;
            wb.put_cf(tuples, version_key(&fwd, rev.0), value);
            wb.put_cf(by_subject, reverse_key(&r), b"");
        }
        if let Some(s) = schema {
            wb.put_cf(sh.cf(CF_SCHEMAS)?, u64_key(rev.0), s.as_bytes());
        }
        let meta = sh.cf(CF_META)?;
        wb.put_cf(meta, META_HEAD, rev.0.to_be_bytes());
        wb.put_cf(meta, META_OLDEST, rev.0.to_be_bytes());
        sh.write(wb, &format!("restoring a snapshot at revision {rev}"))?;
        sh.head.store(rev.0, Ordering::Release);
        sh.oldest.store(rev.0, Ordering::Release);
        Ok(())
    }

    fn changes_inner(&self, after: Revision, limit: usize) -> Result<Vec<Change>, StorageError> {
        let sh = &*self.shared;
        let snap = sh.db.snapshot();
        let (oldest, head) = read_window(sh, |cf, k| snap.get_cf(cf, k))?;
        if after.0 < oldest {
            return Err(Error::RevisionUnavailable {
                asked: after.0,
                oldest,
                newest: head,
            }
            .into());
        }
        let mut out: Vec<Change> = Vec::new();
        let Some(start) = after.0.checked_add(1) else {
            return Ok(out);
        };
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(vec![KEY_FORMAT + 1]);
        let mut it = snap.raw_iterator_cf_opt(sh.cf(CF_CHANGES)?, opts);
        it.seek(changes_from(start));
        while let Some((k, v)) = it.item() {
            let rev = Revision(change_key_revision(k).map_err(corrupt(CF_CHANGES))?);
            if out.len() >= limit && out.last().is_some_and(|l| l.revision != rev) {
                break;
            }
            let (deleted, _, relationship) = decode_change(v).map_err(corrupt(CF_CHANGES))?;
            out.push(Change {
                revision: rev,
                deleted,
                relationship,
            });
            it.next();
        }
        it.status()
            .map_err(rocks(format!("reading changes after revision {after}")))?;
        Ok(out)
    }

    fn schema_inner(&self, rev: Revision) -> Result<Option<(Revision, String)>, StorageError> {
        let sh = &*self.shared;
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(vec![KEY_FORMAT]);
        let mut it = sh.db.raw_iterator_cf_opt(sh.cf(CF_SCHEMAS)?, opts);
        it.seek_for_prev(u64_key(rev.0));
        let found = match it.item() {
            Some((k, v)) => {
                let at = decode_u64_key(k).map_err(corrupt(CF_SCHEMAS))?;
                let text = String::from_utf8(v.to_vec()).map_err(|e| StorageError::Corrupt {
                    cf: CF_SCHEMAS,
                    message: format!("schema of revision {at} is not UTF-8: {e}"),
                })?;
                Some((Revision(at), text))
            }
            None => None,
        };
        it.status()
            .map_err(rocks(format!("reading the schema at revision {rev}")))?;
        Ok(found)
    }

    fn gc_inner(&self, before: Revision) -> Result<(), StorageError> {
        let sh = &*self.shared;
        // On a disk below its reserve GC waits too: a write that fills the disk would stop
        // RocksDB until a reopen.
        sh.check_space()?;
        let _g = lock(&sh.apply_lock);
        let head = sh.head.load(Ordering::Acquire);
        let oldest = sh.oldest.load(Ordering::Acquire);
        let before = before.0.min(head);
        if before <= oldest {
            return Ok(());
        }
        // Every version deleted in (oldest, before] was deleted by a change recorded at that
        // revision, so the change log names exactly the keys to clean.
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(match before.checked_add(1) {
            Some(end) => changes_from(end),
            None => vec![KEY_FORMAT + 1],
        });
        let mut it = sh.db.raw_iterator_cf_opt(sh.cf(CF_CHANGES)?, opts);
        it.seek(changes_from(oldest + 1));
        let mut keys = BTreeSet::new();
        let mut change_keys = Vec::new();
        let mut current: Option<u64> = None;
        while let Some((k, v)) = it.item() {
            let rev = change_key_revision(k).map_err(corrupt(CF_CHANGES))?;
            if let Some(cur) = current.filter(|c| *c != rev && keys.len() >= GC_CHUNK) {
                self.gc_commit(cur, &keys, &change_keys)?;
                keys.clear();
                change_keys.clear();
            }
            current = Some(rev);
            let (_, fwd, _) = decode_change(v).map_err(corrupt(CF_CHANGES))?;
            keys.insert(fwd);
            change_keys.push(k.to_vec());
            it.next();
        }
        it.status()
            .map_err(rocks(format!("reading changes up to revision {before}")))?;
        drop(it);
        self.gc_commit(before, &keys, &change_keys)
    }

    /// Removes the versions of `keys` deleted at or before `upto` (and index entries left
    /// pointing at nothing), the given change entries, and records `upto` as the oldest
    /// readable revision, in one synced batch.
    fn gc_commit(
        &self,
        upto: u64,
        keys: &BTreeSet<Vec<u8>>,
        change_keys: &[Vec<u8>],
    ) -> Result<(), StorageError> {
        let sh = &*self.shared;
        let tuples = sh.cf(CF_TUPLES)?;
        let mut wb = WriteBatch::default();
        for fwd in keys {
            let mut opts = ReadOptions::default();
            if let Some(end) = prefix_end(fwd) {
                opts.set_iterate_upper_bound(end);
            }
            let mut it = sh.db.raw_iterator_cf_opt(tuples, opts);
            it.seek(fwd);
            let mut remaining = 0usize;
            while let Some((k, v)) = it.item() {
                let (kf, _) = split_version_key(k).map_err(corrupt(CF_TUPLES))?;
                if kf == fwd.as_slice() {
                    if version_deleted(v).map_err(corrupt(CF_TUPLES))? <= upto {
                        wb.delete_cf(tuples, k);
                    } else {
                        remaining += 1;
                    }
                }
                it.next();
            }
            it.status()
                .map_err(rocks("reading versions to collect garbage"))?;
            if remaining == 0 {
                let fields = KeyFields::decode_forward(fwd).map_err(corrupt(CF_CHANGES))?;
                wb.delete_cf(sh.cf(CF_BY_SUBJECT)?, fields.reverse());
            }
        }
        let changes_cf = sh.cf(CF_CHANGES)?;
        for k in change_keys {
            wb.delete_cf(changes_cf, k);
        }
        wb.put_cf(sh.cf(CF_META)?, META_OLDEST, upto.to_be_bytes());
        sh.write(wb, &format!("collecting garbage up to revision {upto}"))?;
        sh.oldest.store(upto, Ordering::Release);
        Ok(())
    }
}

/// Validates one write against `view` (head plus earlier writes of the batch) and returns
/// the forward key of each op, and whether the op found that key absent at the head (a
/// Create that looked). Mirrors `MemStore::stage`.
fn validate_write(
    view: &OverlayReader<'_, '_>,
    w: &dhow_tuples::WriteRequest,
) -> Result<Vec<(Vec<u8>, bool)>, Error> {
    check_preconditions(view, &w.preconditions)?;
    // A seeded fast hash: the keys are a client's, the set lives for one write.
    let mut seen =
        HashSet::with_capacity_and_hasher(w.ops.len(), foldhash::fast::RandomState::default());
    let mut keys = Vec::with_capacity(w.ops.len());
    for op in &w.ops {
        let (WriteOp::Create(r) | WriteOp::Touch(r) | WriteOp::Delete(r)) = op;
        let key = forward_key(r);
        if !seen.insert(key.clone()) {
            return Err(Error::Invalid(format!(
                "relationship `{r}` appears more than once in one write"
            )));
        }
        let mut absent = false;
        if let WriteOp::Create(r) = op {
            let exists = match view.staged.get(&key) {
                Some(s) => s.alive,
                None => {
                    absent = view.base.alive_raw(&key)?.is_none();
                    !absent
                }
            };
            if exists {
                return Err(Error::AlreadyExists(r.to_string()));
            }
        }
        keys.push((key, absent));
    }
    Ok(keys)
}

/// Copies the files of a checkpoint directory (recursively) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(to).map_err(io("creating", to))?;
    for entry in std::fs::read_dir(from).map_err(io("listing", from))? {
        let entry = entry.map_err(io("listing", from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(io("inspecting", &src))?;
        if kind.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io("copying", &src))?;
        }
    }
    Ok(())
}

impl TupleStore for RocksStore {
    fn head(&self) -> Revision {
        Revision(self.shared.head.load(Ordering::Acquire))
    }

    fn oldest(&self) -> Revision {
        Revision(self.shared.oldest.load(Ordering::Acquire))
    }

    fn apply(&self, rev: Revision, batch: &Batch) -> Result<Vec<Result<(), Error>>, Error> {
        Ok(self.apply_inner(rev, batch)?)
    }

    fn reader(&self, rev: Revision) -> Result<BoxedReader<'_>, Error> {
        Ok(Box::new(RocksReader::new(&self.shared, rev)?))
    }

    fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>, Error> {
        Ok(self.changes_inner(after, limit)?)
    }

    fn schema_at(&self, rev: Revision) -> Result<Option<(Revision, String)>, Error> {
        Ok(self.schema_inner(rev)?)
    }

    fn gc(&self, before: Revision) -> Result<(), Error> {
        Ok(self.gc_inner(before)?)
    }

    fn restore(
        &self,
        rev: Revision,
        schema: Option<&str>,
        relationships: &mut dyn Iterator<Item = dhow_tuples::Relationship>,
    ) -> Result<(), Error> {
        Ok(self.restore_inner(rev, schema, relationships)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{ALL_CFS, FORMAT_VERSION, META_FORMAT};
    use rocksdb::{Options, DB};

    #[test]
    fn newer_or_unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let set_format = |v: u32| {
            let s = RocksStore::open(&path, StoreOptions::default()).unwrap();
            let mut b = WriteBatch::default();
            b.put_cf(s.shared.cf(CF_META).unwrap(), META_FORMAT, v.to_be_bytes());
            s.shared.write(b, "test").unwrap();
        };
        set_format(FORMAT_VERSION + 1);
        let err = RocksStore::open(&path, StoreOptions::default()).unwrap_err();
        assert!(
            matches!(err, StorageError::NewerFormat { found, .. } if found == FORMAT_VERSION + 1),
            "{err}"
        );
        assert!(err.to_string().contains("newer"), "{err}");

        // Write version 0 through a raw handle (the store itself refuses to open now).
        {
            let mut o = Options::default();
            o.create_missing_column_families(true);
            let db = DB::open_cf(&o, &path, ALL_CFS).unwrap();
            db.put_cf(
                db.cf_handle(CF_META).unwrap(),
                META_FORMAT,
                0u32.to_be_bytes(),
            )
            .unwrap();
        }
        let err = RocksStore::open(&path, StoreOptions::default()).unwrap_err();
        assert!(
            matches!(err, StorageError::UnknownFormat { found: 0, .. }),
            "{err}"
        );

        // Garbage in the format slot is corruption, not a panic.
        {
            let db = DB::open_cf(&Options::default(), &path, ALL_CFS).unwrap();
            db.put_cf(db.cf_handle(CF_META).unwrap(), META_FORMAT, b"x")
                .unwrap();
        }
        let err = RocksStore::open(&path, StoreOptions::default()).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        let as_tuples: Error = err.into();
        assert!(matches!(as_tuples, Error::Storage(_)));
    }

    #[test]
    fn stats_name_every_column_family_and_grow_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(&dir.path().join("db"), StoreOptions::default()).unwrap();
        let before = s.stats();
        let cfs: Vec<&str> = before.sst_bytes.iter().map(|(cf, _)| *cf).collect();
        assert_eq!(cfs, ALL_CFS);
        assert!(!before.write_stopped);
        assert_eq!(before.delayed_write_rate, 0);
        let mut b = WriteBatch::default();
        b.put_cf(s.shared.cf(CF_META).unwrap(), b"x", vec![7u8; 4096]);
        s.shared.write(b, "test").unwrap();
        let after = s.stats();
        assert!(
            after.memtable_bytes > before.memtable_bytes,
            "{before:?} {after:?}"
        );
        s.shared.db.flush_cf(s.shared.cf(CF_META).unwrap()).unwrap();
        let flushed = s.stats();
        let meta = |st: &crate::StorageStats| {
            st.sst_bytes
                .iter()
                .find(|(cf, _)| *cf == CF_META)
                .map(|(_, b)| *b)
                .unwrap()
        };
        assert!(meta(&flushed) > meta(&before), "{before:?} {flushed:?}");
    }

    #[test]
    fn opening_a_missing_store_without_create_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let err = RocksStore::open(
            &dir.path().join("nope"),
            StoreOptions {
                create_if_missing: false,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("opening the store"), "{err}");
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        let r = dhow_tuples::parse_relationship("document:a#viewer@user:x").unwrap();
        s.apply(
            Revision(1),
            &Batch {
                writes: vec![dhow_tuples::WriteRequest {
                    preconditions: vec![],
                    ops: vec![WriteOp::Create(r.clone())],
                }],
                schema: None,
            },
        )
        .unwrap();
        let mut b = WriteBatch::default();
        b.put_cf(
            s.shared.cf(CF_TUPLES).unwrap(),
            version_key(&forward_key(&r), 1),
            [9u8, 9],
        );
        b.put_cf(s.shared.cf(CF_CHANGES).unwrap(), change_key(1, 0), [1u8]);
        s.shared.write(b, "test").unwrap();
        let reader = s.reader(Revision(1)).unwrap();
        let err = reader.by_resource(&r.resource, "viewer").unwrap_err();
        assert!(
            matches!(&err, Error::Storage(m) if m.contains("tuples")),
            "{err}"
        );
        assert!(reader.find(&r.resource, "viewer", &r.subject).is_err());
        assert!(s.changes(Revision(0), 10).is_err());
    }
}
