//! The check and the repair at start. First the log is read whole and refused if it is
//! damaged (an entry missing, out of place or undecodable, terms going back, a commit index
//! past its end): a node never starts from a log that lost what it acknowledged. Then the log
//! is brought in line with the store after a crash between the two: entries the store has
//! applied were committed (the hard state's commit is raised to the store's head); a store
//! that missed a snapshot the log recorded is restored from the durable stage (keeping every
//! log position), or, if its data was never staged, the log is reset to the store's head to
//! wait for a new snapshot (refused on a node that is its cluster's only voter: nobody could
//! send one, and the revisions in between would be handed out again).

use dhow_tuples::{Revision, TupleStore};
use protobuf::Message as _;
use raft::eraftpb::Entry;

use crate::apply::Command;
use crate::codec::{DecodeError, Problem};
use crate::error::{RaftError, StorageError, StorageKind};
use crate::log::{LogStore, RaftStorage};
use crate::snapshot::SnapshotStage;

/// How many entries the check at start reads at a time.
const CHECK_CHUNK: u64 = 256;

/// A damaged data dir: what was found, as a storage error of kind Corruption.
fn damaged(message: String) -> RaftError {
    StorageError::new(
        StorageKind::Corruption,
        format!("{message}: the data dir is damaged"),
    )
    .into()
}

/// Reads the whole log and refuses it if it is damaged: every index from the first to the
/// last is there, in place, decodes as an entry of the stored index and term, terms never go
/// back (nor below the snapshot's), entries the store has not applied yet decode as commands,
/// and the hard state's commit index is within the log. `head` is the store's revision.
pub(crate) fn check_log<L: LogStore>(
    storage: &RaftStorage<L>,
    head: Revision,
) -> Result<(), RaftError> {
    let hs = storage.hard_state()?;
    let (first, last, (snap_index, snap_term)) =
        storage.with(|l| Ok((l.first_index()?, l.last_index()?, l.snapshot_meta()?)))?;
    if first != snap_index.saturating_add(1) {
        return Err(damaged(format!(
            "the Raft log starts at {first}, but its last snapshot or compaction is at {snap_index}"
        )));
    }
    if hs.commit > last {
        return Err(damaged(format!(
            "the Raft hard state says entries up to {} are committed, but the log ends at {last}              (committed entries are missing)",
            hs.commit
        )));
    }
    let mut term = snap_term;
    let mut lo = first;
    while lo <= last {
        let hi = lo.saturating_add(CHECK_CHUNK).min(last.saturating_add(1));
        let raw = storage.with(|l| l.entries(lo, hi)).map_err(|e| {
            if e.kind == StorageKind::Corruption {
                damaged(format!(
                    "reading Raft log entries {lo}..{hi}: {}",
                    e.message
                ))
            } else {
                e.into()
            }
        })?;
        let mut expect = lo;
        for (index, stored_term, bytes) in &raw {
            if *index != expect {
                return Err(damaged(format!(
                    "Raft log entry {expect} is missing (found {index} in its place)"
                )));
            }
            let entry = Entry::parse_from_bytes(bytes)
                .map_err(|e| damaged(format!("Raft log entry {index} does not decode: {e}")))?;
            if entry.index != *index || entry.term != *stored_term {
                return Err(damaged(format!(
                    "Raft log entry {index} (term {stored_term}) holds entry {} of term {}",
                    entry.index, entry.term
                )));
            }
            if entry.term < term {
                return Err(damaged(format!(
                    "Raft log entry {index} has term {}, below the term {term} before it",
                    entry.term
                )));
            }
            term = entry.term;
            if *index > head.0 {
                match Command::decode(&entry) {
                    Ok(_) => {}
                    // Written by a newer build, not damaged: said as such (the version).
                    Err(
                        e @ RaftError::Codec {
                            error:
                                DecodeError {
                                    problem: Problem::UnknownVersion { .. },
                                    ..
                                },
                            ..
                        },
                    ) => return Err(e),
                    Err(e) => {
                        return Err(damaged(format!(
                            "Raft log entry {index}, not yet applied, does not decode: {e}"
                        )))
                    }
                }
            }
            expect += 1;
        }
        if expect != hi {
            return Err(damaged(format!(
                "Raft log entry {expect} is missing (the log should end at {last})"
            )));
        }
        lo = hi;
    }
    Ok(())
}

/// Checks the log ([`check_log`]), then brings it in line with the store after a crash
/// between the two: entries the store has applied were committed, and a store that missed a
/// snapshot the log recorded is restored from the stage (or, if its data was never staged,
/// must be given a new one: refused when `sole_voter`, since no other node could give it).
pub(crate) fn repair<L: LogStore>(
    storage: &RaftStorage<L>,
    store: &dyn TupleStore,
    stage: &dyn SnapshotStage,
    sole_voter: bool,
) -> Result<(), RaftError> {
    let mut head = store.head();
    check_log(storage, head)?;
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
        } else if sole_voter {
            return Err(damaged(format!(
                "the store is at revision {head}, behind the Raft log's snapshot at {snap_index}, \
                 and this node is its cluster's only voter: no other node can send the \
                 revisions in between"
            )));
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
        repair(&storage, &store, &MemStage::default(), false).unwrap();
        assert_eq!(storage.hard_state().unwrap().commit, 4);
        // A commit already ahead of the store stays.
        let hs = HardState {
            commit: 5,
            ..Default::default()
        };
        storage.set_hard_state(&hs).unwrap();
        repair(&storage, &store, &MemStage::default(), false).unwrap();
        assert_eq!(storage.hard_state().unwrap().commit, 5);
    }

    #[test]
    fn a_store_ahead_of_the_log_is_a_damaged_data_dir() {
        let storage = storage_with_entries(2);
        let e = repair(&storage, &store_at(3), &MemStage::default(), false).unwrap_err();
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
        repair(&storage, &store, &stage, false).unwrap();
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

    fn raw(index: u64, term: u64, data: Vec<u8>) -> (u64, u64, Vec<u8>) {
        let e = Entry {
            index,
            term,
            data: data.into(),
            ..Default::default()
        };
        (index, term, e.write_to_bytes().unwrap())
    }

    fn refused(storage: &RaftStorage<MemLog>, head: u64, says: &str) {
        let e = repair(storage, &store_at(head), &MemStage::default(), false).unwrap_err();
        assert_eq!(e.storage_kind(), Some(StorageKind::Corruption), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(says) && text.contains("the data dir is damaged"),
            "{e}"
        );
    }

    #[test]
    fn a_damaged_log_is_refused_at_start() {
        // An entry missing in the middle.
        let s = storage_with_entries(2);
        s.with(|l| l.append(&[raw(4, 1, vec![])])).unwrap();
        refused(&s, 0, "entry 3 is missing");
        // Bytes that are no entry.
        let s = storage_with_entries(2);
        s.with(|l| l.append(&[(3, 1, vec![0xff; 5])])).unwrap();
        refused(&s, 0, "entry 3 does not decode");
        // An entry stored under another index or term.
        let s = storage_with_entries(2);
        let (_, _, bytes) = raw(7, 1, vec![]);
        s.with(|l| l.append(&[(3, 1, bytes)])).unwrap();
        refused(&s, 0, "entry 3 (term 1) holds entry 7");
        // Terms going back.
        let s = storage_with_entries(0);
        s.with(|l| l.append(&[raw(1, 3, vec![]), raw(2, 2, vec![])]))
            .unwrap();
        refused(&s, 0, "entry 2 has term 2, below the term 3");
        // A commit index past the end: committed entries were lost.
        let s = storage_with_entries(3);
        let hs = HardState {
            commit: 5,
            term: 1,
            ..Default::default()
        };
        s.set_hard_state(&hs).unwrap();
        refused(
            &s,
            0,
            "entries up to 5 are committed, but the log ends at 3",
        );
    }

    #[test]
    fn an_undecodable_entry_not_yet_applied_is_refused_but_an_applied_one_is_kept() {
        let s = storage_with_entries(2);
        s.with(|l| l.append(&[raw(3, 1, vec![2, 0xee, 0xee])]))
            .unwrap();
        refused(&s, 2, "entry 3, not yet applied, does not decode");
        // Applied before: the store holds its outcome already.
        repair(&s, &store_at(3), &MemStage::default(), false).unwrap();
        // A format version this build does not know: a newer build's log, said as such.
        let s = storage_with_entries(2);
        s.with(|l| l.append(&[raw(3, 1, vec![9, 9, 9])])).unwrap();
        let e = repair(&s, &store_at(2), &MemStage::default(), false).unwrap_err();
        assert!(
            matches!(&e, RaftError::Codec { what, .. } if what == "raft entry 3"),
            "{e}"
        );
        assert!(e.to_string().contains("unknown format version 9"), "{e}");
    }

    #[test]
    fn a_sole_voter_behind_its_snapshot_without_a_staged_copy_is_refused() {
        let storage = storage_with_entries(0);
        storage
            .install_snapshot(8, 2, &Membership::default())
            .unwrap();
        let e = repair(&storage, &store_at(3), &MemStage::default(), true).unwrap_err();
        assert_eq!(e.storage_kind(), Some(StorageKind::Corruption), "{e}");
        assert!(e.to_string().contains("only voter"), "{e}");
        // Nothing was reset.
        assert_eq!(storage.with(|l| l.snapshot_meta()).unwrap(), (8, 2));
    }

    #[test]
    fn without_a_staged_copy_the_log_is_reset_to_the_store() {
        let storage = storage_with_entries(0);
        storage
            .install_snapshot(8, 2, &Membership::default())
            .unwrap();
        let store = store_at(3);
        repair(&storage, &store, &MemStage::default(), false).unwrap();
        assert_eq!(store.head(), Revision(3));
        assert_eq!(storage.with(|l| l.snapshot_meta()).unwrap(), (3, 0));
        assert_eq!(storage.with(|l| l.last_index()).unwrap(), 3);
        assert_eq!(storage.hard_state().unwrap().commit, 3);
    }
}
