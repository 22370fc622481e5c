//! The repair at start: brings the Raft log in line with the store after a crash between the
//! two. Entries the store has applied were committed (the hard state's commit is raised to
//! the store's head); a store that missed a snapshot the log recorded is restored from the
//! durable stage (keeping every log position), or, if its data was never staged, the log is
//! reset to the store's head to wait for a new snapshot.

use dhow_tuples::{Revision, TupleStore};

use crate::error::{RaftError, StorageError, StorageKind};
use crate::log::{LogStore, RaftStorage};
use crate::snapshot::SnapshotStage;

/// Brings the log in line with the store after a crash between the two: entries the store
/// has applied were committed, and a store that missed a snapshot the log recorded is
/// restored from the stage (or, if its data was never staged, must be given a new one).
pub(crate) fn repair<L: LogStore>(
    storage: &RaftStorage<L>,
    store: &dyn TupleStore,
    stage: &dyn SnapshotStage,
) -> Result<(), RaftError> {
    let mut head = store.head();
    let (snap_index, _) = storage.with(|l| l.snapshot_meta())?;
    let mut hs = storage.hard_state()?;
    if head.0 < snap_index {
        // The log installed a snapshot whose restore into the store did not finish: finish it
        // from the stage, keeping every log position the node may have acknowledged.
        if let Some(data) = stage.load(snap_index)? {
            tracing::warn!(
                head = head.0,
                snap_index,
                "the store is behind the log's snapshot (crash while restoring it): restoring it from the stage"
            );
            store
                .restore(
                    Revision(snap_index),
                    data.schema.as_deref(),
                    &mut data.relationships.into_iter(),
                )
                .map_err(RaftError::state_machine(format_args!(
                    "restoring the staged snapshot at {snap_index}"
                )))?;
            // The hard state may predate the snapshot: its commit is raised below.
            head = store.head();
        } else {
            tracing::warn!(
                head = head.0,
                snap_index,
                "the store is behind the log's snapshot and its data is not staged: waiting for a new snapshot"
            );
            storage.with(|l| l.install_snapshot(head.0, 0))?;
            hs.commit = head.0;
            storage.set_hard_state(&hs)?;
            return Ok(stage.retain(None)?);
        }
    }
    if head.0 > hs.commit {
        let last = storage.with(|l| l.last_index())?;
        if head.0 > last {
            return Err(StorageError::new(
                StorageKind::Corruption,
                format!(
                    "the store is at revision {head} but the Raft log ends at {last}: the data dir is damaged"
                ),
            )
            .into());
        }
        hs.commit = head.0;
        storage.set_hard_state(&hs)?;
    }
    // Nothing staged is needed any more: a snapshot received before the crash but never
    // installed will be sent again.
    Ok(stage.retain(None)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{MemLog, Membership};
    use crate::snapshot::{MemStage, StagedSnapshot};
    use dhow_tuples::{parse_relationship, Batch, SharedMemStore};
    use raft::eraftpb::{Entry, HardState};

    fn storage_with_entries(last: u64) -> RaftStorage<MemLog> {
        let s = RaftStorage::new(MemLog::default());
        let entries: Vec<Entry> = (1..=last)
            .map(|i| Entry {
                index: i,
                term: 1,
                ..Default::default()
            })
            .collect();
        s.append(&entries).unwrap();
        s
    }

    fn store_at(rev: u64) -> SharedMemStore {
        let store = SharedMemStore::new();
        for r in 1..=rev {
            store.apply(Revision(r), &Batch::default()).unwrap();
        }
        store
    }

    fn staged() -> StagedSnapshot {
        StagedSnapshot {
            schema: Some("definition user {}".into()),
            relationships: vec![parse_relationship("doc:a#viewer@user:b").unwrap()],
        }
    }

    #[test]
    fn entries_the_store_applied_count_as_committed() {
        let storage = storage_with_entries(5);
        let store = store_at(4);
        repair(&storage, &store, &MemStage::default()).unwrap();
        assert_eq!(storage.hard_state().unwrap().commit, 4);
        // A commit already ahead of the store stays.
        let hs = HardState {
            commit: 5,
            ..Default::default()
        };
        storage.set_hard_state(&hs).unwrap();
        repair(&storage, &store, &MemStage::default()).unwrap();
        assert_eq!(storage.hard_state().unwrap().commit, 5);
    }

    #[test]
    fn a_store_ahead_of_the_log_is_a_damaged_data_dir() {
        let storage = storage_with_entries(2);
        let e = repair(&storage, &store_at(3), &MemStage::default()).unwrap_err();
        assert_eq!(e.storage_kind(), Some(StorageKind::Corruption));
        let text = e.to_string();
        assert!(
            text.contains("revision 3") && text.contains("ends at 2"),
            "{e}"
        );
    }

    #[test]
    fn a_staged_snapshot_the_store_missed_is_restored_keeping_the_log() {
        let storage = storage_with_entries(0);
        storage
            .install_snapshot(8, 2, &Membership::default())
            .unwrap();
        storage
            .append(&[Entry {
                index: 9,
                term: 2,
                ..Default::default()
            }])
            .unwrap();
        let store = store_at(3);
        let stage = MemStage::default();
        stage.save(8, &staged()).unwrap();
        stage.save(5, &staged()).unwrap();
        repair(&storage, &store, &stage).unwrap();
        assert_eq!(store.head(), Revision(8));
        assert_eq!(
            store.schema_at(Revision(8)).unwrap().map(|(_, s)| s),
            Some("definition user {}".to_string())
        );
        assert_eq!(storage.with(|l| l.last_index()).unwrap(), 9);
        assert_eq!(storage.hard_state().unwrap().commit, 8);
        // Nothing staged is kept once the store holds it.
        assert_eq!(stage.load(8).unwrap(), None);
        assert_eq!(stage.load(5).unwrap(), None);
    }

    #[test]
    fn without_a_staged_copy_the_log_is_reset_to_the_store() {
        let storage = storage_with_entries(0);
        storage
            .install_snapshot(8, 2, &Membership::default())
            .unwrap();
        let store = store_at(3);
        repair(&storage, &store, &MemStage::default()).unwrap();
        assert_eq!(store.head(), Revision(3));
        assert_eq!(storage.with(|l| l.snapshot_meta()).unwrap(), (3, 0));
        assert_eq!(storage.with(|l| l.last_index()).unwrap(), 3);
        assert_eq!(storage.hard_state().unwrap().commit, 3);
    }
}
