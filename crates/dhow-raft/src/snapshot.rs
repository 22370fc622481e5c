//! Raft snapshots as Dhow sends them: raft-rs's snapshot message carries only metadata (index,
//! term, conf state) and a small header (peer addresses); the data, the whole store at the
//! snapshot's revision, travels beside it as a sequence of opaque chunks (the schema, then
//! pages of relationships) that the transport streams and the receiver stages before the
//! message is stepped into raft-rs.

use std::collections::BTreeMap;

use crate::codec::{self, Chunk};
use crate::error::{RaftError, StorageError, StorageKind};
use dhow_tuples::{Relationship, RelationshipFilter, Revision, TupleStore};

/// Relationships per chunk.
pub const CHUNK_RELATIONSHIPS: usize = 5_000;

/// Produces the data chunks of a snapshot of `store` at `revision`, in order. Reads page by
/// page, so the store is never locked for the whole transfer.
pub struct SnapshotSource<'a> {
    store: &'a dyn TupleStore,
    revision: Revision,
    schema_sent: bool,
    after: Option<Relationship>,
    done: bool,
}

impl<'a> SnapshotSource<'a> {
    pub fn new(store: &'a dyn TupleStore, revision: Revision) -> Self {
        SnapshotSource {
            store,
            revision,
            schema_sent: false,
            after: None,
            done: false,
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, RaftError> {
        if !self.schema_sent {
            self.schema_sent = true;
            let schema = self
                .store
                .schema_at(self.revision)
                .map_err(RaftError::state_machine(format_args!(
                    "reading the snapshot at {}",
                    self.revision
                )))?
                .map(|(_, s)| s);
            return Ok(Some(codec::encode_chunk(&Chunk::Schema(schema))));
        }
        if self.done {
            return Ok(None);
        }
        let page = {
            let reader = self
                .store
                .reader(self.revision)
                .map_err(RaftError::state_machine(format_args!(
                    "reading the snapshot at {}",
                    self.revision
                )))?;
            reader
                .read(
                    &RelationshipFilter::default(),
                    self.after.as_ref(),
                    CHUNK_RELATIONSHIPS,
                )
                .map_err(RaftError::state_machine(format_args!(
                    "reading the snapshot at {}",
                    self.revision
                )))?
        };
        if page.len() < CHUNK_RELATIONSHIPS {
            self.done = true;
        }
        if page.is_empty() {
            return Ok(None);
        }
        self.after = page.last().cloned();
        Ok(Some(codec::encode_chunk(&Chunk::Relationships(page))))
    }
}

impl Iterator for SnapshotSource<'_> {
    type Item = Result<Vec<u8>, RaftError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                self.schema_sent = true;
                Some(Err(e))
            }
        }
    }
}

/// A snapshot's data received in full, waiting for its message to be stepped into raft-rs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StagedSnapshot {
    pub(crate) schema: Option<String>,
    pub(crate) relationships: Vec<Relationship>,
}

/// Where a received snapshot's data is kept durably from before its message is stepped until
/// the store holds it. The log installs a snapshot before the store is restored from it (off
/// the loop, see the driver); a node that crashes in between restores the store from here at
/// start, so the log never has to give back positions it already acknowledged.
pub trait SnapshotStage: Send + Sync + std::fmt::Debug + 'static {
    /// Keeps `data` for the snapshot at `index`, synced, before returning.
    fn save(&self, index: u64, data: &StagedSnapshot) -> Result<(), StorageError>;
    /// The data kept for `index`, if any.
    fn load(&self, index: u64) -> Result<Option<StagedSnapshot>, StorageError>;
    /// Forgets everything kept except the snapshot at `keep`.
    fn retain(&self, keep: Option<u64>) -> Result<(), StorageError>;
}

/// A stage in memory: survives what the memory survives. The default of a node given none
/// (then a crash during a restore costs a new snapshot); the simulation keeps one per node
/// across its simulated crashes, as a disk would.
#[derive(Debug, Default, Clone)]
pub struct MemStage(std::sync::Arc<std::sync::Mutex<BTreeMap<u64, StagedSnapshot>>>);

impl MemStage {
    fn kept(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, StagedSnapshot>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SnapshotStage for MemStage {
    fn save(&self, index: u64, data: &StagedSnapshot) -> Result<(), StorageError> {
        self.kept().insert(index, data.clone());
        Ok(())
    }
    fn load(&self, index: u64) -> Result<Option<StagedSnapshot>, StorageError> {
        Ok(self.kept().get(&index).cloned())
    }
    fn retain(&self, keep: Option<u64>) -> Result<(), StorageError> {
        self.kept().retain(|i, _| Some(*i) == keep);
        Ok(())
    }
}

/// A stage on disk: one file per snapshot in `dir`, written whole to a temporary name, synced,
/// then renamed (and the directory synced), so a file that exists is complete.
#[derive(Debug)]
pub struct FileStage {
    dir: std::path::PathBuf,
}

impl FileStage {
    /// A stage in `dir` (created if missing).
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Result<FileStage, StorageError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| {
            StorageError::io(
                format_args!("cannot create the snapshot stage {}", dir.display()),
                &e,
            )
        })?;
        Ok(FileStage { dir })
    }

    fn path(&self, index: u64) -> std::path::PathBuf {
        self.dir.join(format!("snapshot-{index:020}.bin"))
    }
}

impl SnapshotStage for FileStage {
    fn save(&self, index: u64, data: &StagedSnapshot) -> Result<(), StorageError> {
        use std::io::Write;
        let path = self.path(index);
        let tmp = path.with_extension("tmp");
        let fail = |what: &str, e: &std::io::Error| {
            StorageError::io(format_args!("snapshot stage: {what} {}", tmp.display()), e)
        };
        let bytes = codec::encode_staged(data);
        let mut f = std::fs::File::create(&tmp).map_err(|e| fail("creating", &e))?;
        f.write_all(&bytes).map_err(|e| fail("writing", &e))?;
        f.sync_all().map_err(|e| fail("syncing", &e))?;
        std::fs::rename(&tmp, &path).map_err(|e| fail("renaming", &e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("syncing the directory of", &e))
    }

    fn load(&self, index: u64) -> Result<Option<StagedSnapshot>, StorageError> {
        let path = self.path(index);
        match std::fs::read(&path) {
            Ok(bytes) => codec::decode_staged(&bytes).map(Some).map_err(|e| {
                StorageError::new(
                    StorageKind::Corruption,
                    format!("snapshot stage: {} is damaged: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(
                format_args!("snapshot stage: reading {}", path.display()),
                &e,
            )),
        }
    }

    fn retain(&self, keep: Option<u64>) -> Result<(), StorageError> {
        let keep = keep.map(|i| self.path(i));
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            StorageError::io(
                format_args!("snapshot stage: listing {}", self.dir.display()),
                &e,
            )
        })?;
        for entry in entries.flatten() {
            let p = entry.path();
            if Some(&p) != keep.as_ref() {
                std::fs::remove_file(&p).map_err(|e| {
                    StorageError::io(format_args!("snapshot stage: removing {}", p.display()), &e)
                })?;
            }
        }
        Ok(())
    }
}

/// Collects the chunks of one snapshot.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    staged: StagedSnapshot,
    got_schema: bool,
    /// Chunks pushed so far.
    chunks: u64,
}

impl SnapshotBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk, in the order the source produced them.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), RaftError> {
        self.chunks += 1;
        let part = codec::decode_chunk(chunk).map_err(RaftError::codec(format_args!(
            "snapshot chunk {}",
            self.chunks
        )))?;
        match part {
            Chunk::Schema(s) if !self.got_schema => {
                self.staged.schema = s;
                self.got_schema = true;
            }
            Chunk::Schema(_) => return Err(RaftError::Snapshot("two schemas".into())),
            Chunk::Relationships(_) if !self.got_schema => {
                return Err(RaftError::Snapshot(
                    "relationships before the schema".into(),
                ))
            }
            Chunk::Relationships(mut rs) => self.staged.relationships.append(&mut rs),
        }
        Ok(())
    }

    /// The staged snapshot; refuses one that never sent its schema chunk.
    pub fn finish(self) -> Result<StagedSnapshot, RaftError> {
        if !self.got_schema {
            return Err(RaftError::Snapshot(
                "the stream ended before its first chunk".into(),
            ));
        }
        Ok(self.staged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{parse_relationship, Batch, SharedMemStore, WriteOp, WriteRequest};

    #[test]
    fn a_file_stage_keeps_whole_snapshots_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let data = |n: usize| StagedSnapshot {
            schema: Some("definition user {}".into()),
            relationships: (0..n)
                .map(|i| parse_relationship(&format!("doc:d{i}#viewer@user:u{i}")).unwrap())
                .collect(),
        };
        let stage = FileStage::new(dir.path().join("stage")).unwrap();
        assert_eq!(stage.load(7).unwrap(), None);
        stage.save(7, &data(3)).unwrap();
        stage.save(9, &data(5)).unwrap();
        // Another process (a restart) finds them.
        let again = FileStage::new(dir.path().join("stage")).unwrap();
        assert_eq!(again.load(7).unwrap(), Some(data(3)));
        assert_eq!(again.load(9).unwrap(), Some(data(5)));
        again.retain(Some(9)).unwrap();
        assert_eq!(again.load(7).unwrap(), None);
        assert_eq!(again.load(9).unwrap(), Some(data(5)));
        again.retain(None).unwrap();
        assert_eq!(again.load(9).unwrap(), None);
        // A damaged file is an error naming it, not a panic or an empty snapshot.
        std::fs::write(again.path(4), b"\x01\x02").unwrap();
        let e = again.load(4).unwrap_err();
        assert_eq!(e.kind, StorageKind::Corruption);
        assert!(
            e.message.contains("damaged") && e.message.contains("snapshot-"),
            "{e}"
        );
    }

    #[test]
    fn a_store_goes_through_chunks_and_back() {
        let store = SharedMemStore::new();
        let ops: Vec<WriteOp> = (0..(CHUNK_RELATIONSHIPS * 2 + 7))
            .map(|i| {
                WriteOp::Touch(parse_relationship(&format!("doc:d{i}#viewer@user:u{i}")).unwrap())
            })
            .collect();
        store
            .apply(
                Revision(3),
                &Batch {
                    writes: vec![WriteRequest {
                        preconditions: vec![],
                        ops,
                    }],
                    schema: Some("definition user {}".into()),
                },
            )
            .unwrap();
        // A later delete is not in a snapshot taken at revision 3.
        store
            .apply(
                Revision(4),
                &Batch {
                    writes: vec![WriteRequest {
                        preconditions: vec![],
                        ops: vec![WriteOp::Delete(
                            parse_relationship("doc:d0#viewer@user:u0").unwrap(),
                        )],
                    }],
                    schema: None,
                },
            )
            .unwrap();
        let chunks: Vec<Vec<u8>> = SnapshotSource::new(&store, Revision(3))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chunks.len(), 4, "schema + three pages");
        let mut b = SnapshotBuilder::new();
        for c in &chunks {
            b.push(c).unwrap();
        }
        let staged = b.finish().unwrap();
        assert_eq!(staged.schema.as_deref(), Some("definition user {}"));
        assert_eq!(staged.relationships.len(), CHUNK_RELATIONSHIPS * 2 + 7);

        let copy = SharedMemStore::new();
        copy.restore(
            Revision(3),
            staged.schema.as_deref(),
            &mut staged.relationships.into_iter(),
        )
        .unwrap();
        let r = copy.reader(Revision(3)).unwrap();
        assert!(r
            .find(
                &dhow_tuples::ObjectRef::new("doc", "d0"),
                "viewer",
                &parse_relationship("doc:d0#viewer@user:u0").unwrap().subject
            )
            .unwrap()
            .is_some());
    }

    #[test]
    fn malformed_streams_are_refused() {
        let mut b = SnapshotBuilder::new();
        let e = b.push(&[]).unwrap_err();
        assert!(
            matches!(&e, RaftError::Codec { what, error } if what == "snapshot chunk 1" && error.problem == codec::Problem::Empty),
            "{e}"
        );
        let e = b.push(&[9, 1, 2]).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "snapshot chunk 2: cannot decode a snapshot chunk: unknown format version 9"
            ),
            "{e}"
        );
        let rels = codec::encode_chunk(&Chunk::Relationships(vec![]));
        let e = b.push(&rels).unwrap_err();
        assert!(
            matches!(&e, RaftError::Snapshot(m) if m.contains("before the schema")),
            "{e}"
        );
        assert!(matches!(
            SnapshotBuilder::new().finish(),
            Err(RaftError::Snapshot(_))
        ));
        let schema = codec::encode_chunk(&Chunk::Schema(None));
        let mut b = SnapshotBuilder::new();
        b.push(&schema).unwrap();
        let e = b.push(&schema).unwrap_err();
        assert!(
            matches!(&e, RaftError::Snapshot(m) if m.contains("two schemas")),
            "{e}"
        );
        let h = codec::encode_snapshot_header(&BTreeMap::from([(1, "a:1".to_string())]));
        assert_eq!(codec::decode_snapshot_header(&h).unwrap()[&1], "a:1");
        assert!(codec::decode_snapshot_header(&h[..1]).is_err());
    }
}
