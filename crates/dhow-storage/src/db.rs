//! The node's one RocksDB database: the column families and what each holds, the `meta`
//! keys and the storage format version, opening the database (every column family, the
//! format check), and [`Db`], the handle shared by the store ([`crate::RocksStore`]), its
//! readers ([`crate::RocksReader`]) and the Raft log store ([`crate::RaftLogStore`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, Options, WriteBatch,
    WriteOptions, DB,
};

use crate::error::{rocks, StorageError};
use crate::keys::be_u64;
use crate::raftlog::RaftBounds;
use crate::store::{StoreOptions, MIN_MEMTABLE_BYTES};

/// Every version of every relationship, keyed by resource, subject, creating revision.
pub(crate) const CF_TUPLES: &str = "tuples";
/// The reverse index: subject, then resource.
pub(crate) const CF_BY_SUBJECT: &str = "by_subject";
/// The change log by revision and sequence.
pub(crate) const CF_CHANGES: &str = "changes";
/// Schema texts by the revision that wrote them.
pub(crate) const CF_SCHEMAS: &str = "schemas";
/// Format version, applied revision, oldest readable revision, cluster id.
pub(crate) const CF_META: &str = "meta";
/// Raft log entries by index.
pub(crate) const CF_RAFT_LOG: &str = "raft_log";
/// Hard state, conf state, the last compaction or snapshot point.
pub(crate) const CF_RAFT_STATE: &str = "raft_state";
/// Every column family this build knows.
pub(crate) const ALL_CFS: [&str; 7] = [
    CF_TUPLES,
    CF_BY_SUBJECT,
    CF_CHANGES,
    CF_SCHEMAS,
    CF_META,
    CF_RAFT_LOG,
    CF_RAFT_STATE,
];

pub(crate) const META_FORMAT: &[u8] = b"format_version";
pub(crate) const META_HEAD: &[u8] = b"applied_revision";
pub(crate) const META_OLDEST: &[u8] = b"oldest_revision";
pub(crate) const META_CLUSTER: &[u8] = b"cluster_id";
pub(crate) const META_NODE: &[u8] = b"node_id";

/// What RocksDB reports of the node's database, read at one moment (plain numbers: the
/// server turns them into metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// The size of the SST files of each column family (`tuples`, `raft_log`, ...), bytes.
    pub sst_bytes: Vec<(&'static str, u64)>,
    /// The memtables of every column family (written, not yet flushed), bytes.
    pub memtable_bytes: u64,
    /// What compaction estimates it must still rewrite, bytes (RocksDB slows writes, then
    /// stops them, past its limits).
    pub pending_compaction_bytes: u64,
    /// RocksDB stops writes now (too many memtables, L0 files or pending compaction).
    pub write_stopped: bool,
    /// The rate RocksDB slows writes to now, bytes per second (0: not slowed).
    pub delayed_write_rate: u64,
}

/// The storage format this build writes and reads (in `meta`, key `format_version`).
pub const FORMAT_VERSION: u32 = 1;

/// The database and the state every handle on it shares: the store, its readers and its
/// Raft log handles hold one `Arc<Db>`.
pub(crate) struct Db {
    pub db: DB,
    pub path: PathBuf,
    sync: bool,
    /// The free space the disk keeps: see [`Db::check_space`].
    min_free: u64,
    /// The applied revision (mirrors `meta`; readers check the snapshot's own copy).
    pub head: AtomicU64,
    /// The oldest readable revision (mirrors `meta`).
    pub oldest: AtomicU64,
    /// Serialises apply, GC and checkpoints: one writer of relationship data at a time.
    pub apply_lock: Mutex<()>,
    /// The Raft log's bounds; held across every Raft log write.
    pub raft: Mutex<RaftBounds>,
}

impl Db {
    /// Opens (or creates) the database at `path` with every column family (creating missing
    /// ones, opening unknown ones so that the format check can refuse a newer store), checks
    /// the storage format version and loads the readable window and the Raft log's bounds.
    ///
    /// A database that lost synced writes is refused, never opened behind what it
    /// acknowledged (see [`db_options`]): the error is of kind
    /// [`ErrorKind::Corruption`](crate::ErrorKind::Corruption).
    pub(crate) fn open(path: &Path, opts: &StoreOptions) -> Result<Db, StorageError> {
        let mut db_opts = db_options(opts.memtable_bytes);
        db_opts.create_if_missing(opts.create_if_missing);
        db_opts.create_missing_column_families(true);
        let mut names: Vec<String> = ALL_CFS.iter().map(|s| s.to_string()).collect();
        // Every existing column family must be opened too (a newer format may have more;
        // the format check below then refuses the store with a clear message).
        if let Ok(existing) = DB::list_cf(&db_opts, path) {
            for n in existing {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, cf_options(opts.memtable_bytes)));
        let db = DB::open_cf_descriptors(&db_opts, path, descriptors)
            .map_err(rocks(format!("opening the store at {}", path.display())))?;
        let mut shared = Db {
            db,
            path: path.to_path_buf(),
            sync: opts.sync_writes,
            min_free: opts.min_free_bytes,
            head: AtomicU64::new(0),
            oldest: AtomicU64::new(0),
            apply_lock: Mutex::new(()),
            raft: Mutex::new(RaftBounds::default()),
        };
        check_format(&shared)?;
        let (oldest, head) = read_window(&shared, |cf, k| shared.db.get_cf(cf, k))?;
        shared.head = AtomicU64::new(head);
        shared.oldest = AtomicU64::new(oldest);
        shared.raft = Mutex::new(RaftBounds::load(&shared)?);
        Ok(shared)
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Corrupt {
                cf: "(column families)",
                message: format!("column family `{name}` is missing"),
            })
    }

    /// Whether the disk of the database still has its reserve of free space: an error of
    /// kind [`ErrorKind::NoSpace`](crate::ErrorKind::NoSpace) when less is left.
    pub(crate) fn check_space(&self) -> Result<(), StorageError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let st = rustix::fs::statvfs(&self.path).map_err(|e| StorageError::Io {
            kind: crate::ErrorKind::Io,
            what: format!("reading the free space of {}", self.path.display()),
            message: e.to_string(),
        })?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.min_free {
            return Err(StorageError::Io {
                kind: crate::ErrorKind::NoSpace,
                what: format!("the disk of {}", self.path.display()),
                message: format!(
                    "{} KiB free, below the reserve of {} KiB: writes pause until space is freed",
                    free / 1024,
                    self.min_free / 1024
                ),
            });
        }
        Ok(())
    }

    /// What RocksDB reports of its size, compaction backlog and write stalls now (its
    /// in-memory properties: cheap, no IO). A property RocksDB does not give counts 0.
    pub(crate) fn stats(&self) -> StorageStats {
        let int = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let mut stats = StorageStats {
            write_stopped: int("rocksdb.is-write-stopped") != 0,
            delayed_write_rate: int("rocksdb.actual-delayed-write-rate"),
            ..StorageStats::default()
        };
        for name in ALL_CFS {
            let Ok(cf) = self.cf(name) else { continue };
            let int = |prop: &str| {
                self.db
                    .property_int_value_cf(cf, prop)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            stats
                .sst_bytes
                .push((name, int("rocksdb.total-sst-files-size")));
            stats.memtable_bytes += int("rocksdb.cur-size-all-mem-tables");
            stats.pending_compaction_bytes += int("rocksdb.estimate-pending-compaction-bytes");
        }
        stats
    }

    /// Flushes every column family and rewrites all its files into the last level (a full
    /// compaction): what remains is the live data, compressed, without overwritten or
    /// deleted versions and without the WAL files the memtables held on to.
    pub(crate) fn compact_all(&self) -> Result<(), StorageError> {
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        opts.set_exclusive_manual_compaction(true);
        for name in ALL_CFS {
            let cf = self.cf(name)?;
            self.db
                .flush_cf(cf)
                .map_err(rocks(format!("flushing column family {name}")))?;
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        }
        Ok(())
    }

    /// Writes `batch` atomically, synced unless the store was opened without sync.
    pub(crate) fn write(&self, batch: WriteBatch, what: &str) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(batch, &wo).map_err(rocks(what))
    }

    /// Syncs the WAL: every write made before it is durable when it returns (nothing when
    /// the store was opened without sync). RocksDB lets other threads write meanwhile.
    pub(crate) fn sync_wal(&self) -> Result<(), StorageError> {
        if !self.sync {
            return Ok(());
        }
        self.db.flush_wal(true).map_err(rocks("syncing the WAL"))
    }

    /// Writes `batch` to the WAL and the memtables without waiting for the disk: for what
    /// can be written again from a record that is already synced in this database (the
    /// application of a Raft entry, which the synced Raft log holds). This database has one
    /// WAL, written in order, and a sync makes everything before it durable: the next synced
    /// write (the next Raft log append or hard state) carries this one too. A power loss
    /// before it loses a tail of applications that the log still holds, and the node applies
    /// them again at restart from the revision the store holds (the applied index is the
    /// store's head, written in the same batch). A killed process loses nothing: the WAL
    /// is in the operating system's page cache.
    pub(crate) fn write_after_log(
        &self,
        batch: WriteBatch,
        what: &str,
    ) -> Result<(), StorageError> {
        self.write_unsynced(batch, what)
    }

    /// Writes `batch` to the WAL and the memtables without waiting for the disk: durable with
    /// the next [`Db::sync_wal`] or synced write (the Raft log's appends, synced by the loop
    /// on another thread while it applies).
    pub(crate) fn write_unsynced(&self, batch: WriteBatch, what: &str) -> Result<(), StorageError> {
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(rocks(what))
    }
}

/// The database's options: how it recovers after a crash, and what it verifies.
///
/// Every write is synced before it is acknowledged, so after a crash the WAL may end in one
/// torn record (the write in flight, never acknowledged) and nothing else may be missing.
/// RocksDB's default recovery (`kPointInTimeRecovery`) stops replaying the WAL at the first
/// damaged record and opens the database as of that point: damage in the middle of the WAL
/// silently dropped every later write (relationships, Raft log entries, hard state), and the
/// node then handed out revisions it had already acknowledged. Instead:
///
/// - `TolerateCorruptedTailRecords`: an incomplete record at the very end of the WAL (the torn
///   write of a crash) is dropped; a damaged record anywhere before it (a checksum mismatch, a
///   bad length or header away from the end) fails the open with a Corruption status;
/// - `track_and_verify_wals_in_manifest`: the MANIFEST records the WALs and their synced
///   sizes, so a missing or truncated older WAL fails the open too;
/// - `paranoid_checks`: damage found in files (at open, in compactions) stops the database
///   instead of being skipped; reads verify block checksums (RocksDB's default), so a damaged
///   SST file is an error of kind Corruption, never wrong data.
///
/// What RocksDB cannot tell from a torn write: damage to a record header within the last
/// 32 KiB block of the newest WAL that makes the record look longer than the file (a torn
/// write looks the same). Only the records after it in that block are then lost.
fn db_options(memtable_bytes: usize) -> Options {
    let mut o = cf_options(memtable_bytes);
    // The memtables of all column families together: past it RocksDB flushes the largest.
    o.set_db_write_buffer_size(memtable_bytes);
    o.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    o.set_track_and_verify_wals_in_manifest(true);
    o.set_paranoid_checks(true);
    o
}

/// A column family's options: LZ4, and a memtable of up to half the budget (RocksDB's default
/// is 64 MiB: a 1M import then flushed under itself several times, and the flushes and
/// compactions took the second core from the thread applying it).
fn cf_options(memtable_bytes: usize) -> Options {
    let mut o = Options::default();
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_write_buffer_size((memtable_bytes / 2).max(MIN_MEMTABLE_BYTES / 2));
    o
}

/// Reads (oldest, head) from `meta` through `get` (a snapshot's or the database's).
pub(crate) fn read_window(
    shared: &Db,
    get: impl Fn(&ColumnFamily, &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>,
) -> Result<(u64, u64), StorageError> {
    let meta = shared.cf(CF_META)?;
    let read = |key: &[u8], name: &str| -> Result<u64, StorageError> {
        match get(meta, key).map_err(rocks(format!("reading the {name}")))? {
            Some(b) => be_u64(&b).map_err(|m| StorageError::Corrupt {
                cf: CF_META,
                message: format!("{name}: {m}"),
            }),
            None => Ok(0),
        }
    };
    Ok((
        read(META_OLDEST, "oldest revision")?,
        read(META_HEAD, "applied revision")?,
    ))
}

/// Checks (or, for a new database, records) the storage format version.
fn check_format(sh: &Db) -> Result<(), StorageError> {
    let meta = sh.cf(CF_META)?;
    let path = sh.path.display().to_string();
    match sh
        .db
        .get_cf(meta, META_FORMAT)
        .map_err(rocks("reading the format version"))?
    {
        Some(b) => {
            let found = <[u8; 4]>::try_from(b.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| StorageError::Corrupt {
                    cf: CF_META,
                    message: format!("format version of {} bytes (expected 4)", b.len()),
                })?;
            if found > FORMAT_VERSION {
                Err(StorageError::NewerFormat {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                })
            } else if found != FORMAT_VERSION {
                Err(StorageError::UnknownFormat {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                })
            } else {
                Ok(())
            }
        }
        None => {
            let has_head = sh
                .db
                .get_cf(meta, META_HEAD)
                .map_err(rocks("reading the applied revision"))?
                .is_some();
            if has_head {
                return Err(StorageError::Corrupt {
                    cf: CF_META,
                    message: format!("the store at {path} has data but no format version"),
                });
            }
            let mut b = WriteBatch::default();
            b.put_cf(meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
            sh.write(b, "recording the format version")
        }
    }
}
