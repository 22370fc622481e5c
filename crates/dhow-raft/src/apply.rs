//! Applying committed entries to the state machine: each entry is decoded into what it
//! carries ([`Command`]: nothing, a proposal of writes or a schema, a membership change),
//! applied to the `TupleStore` at its index in one batch, the revision published, then the
//! proposer answered by the proposal id the entry carries (see `propose.rs`). Entries the
//! store already holds (applied before a restart) are skipped. Also the log's compaction
//! behind the applied index. An entry whose context carries trace parents (`propose.rs`) is
//! applied under a `raft.apply` span in each of their traces, on every node, the leader of a
//! forwarded write included.

use dhow_tuples::{Batch, Revision};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, Entry, EntryType};

use crate::codec::{self, Body, Proposal};
use crate::core::Core;
use crate::error::{RaftError, StorageError, StorageKind};
use crate::log::LogStore;
use crate::stats::Counters;
use crate::transport::Transport;

/// What a committed entry asks of the state machine.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// An empty entry (a new leader's): only the revision advances.
    Empty,
    /// Client writes or a schema, proposed under an id.
    Proposal(Proposal),
    /// A membership change, proposed under `id`, naming the new member's peer address.
    Change {
        id: u64,
        change: ConfChange,
        addr: String,
    },
}

impl Command {
    /// Decodes the committed entry at `entry.index`.
    pub(crate) fn decode(entry: &Entry) -> Result<Command, RaftError> {
        let index = entry.index;
        match entry.get_entry_type() {
            EntryType::EntryNormal if entry.data.is_empty() => Ok(Command::Empty),
            EntryType::EntryNormal => codec::decode(&entry.data)
                .map(Command::Proposal)
                .map_err(RaftError::codec(format_args!("raft entry {index}"))),
            EntryType::EntryConfChange => {
                let change = ConfChange::parse_from_bytes(&entry.data).map_err(|e| {
                    StorageError::new(
                        StorageKind::Corruption,
                        format!("raft entry {index}: its conf change does not decode: {e}"),
                    )
                })?;
                let (id, addr) = codec::decode_change_context(&entry.context, &change.context)
                    .map_err(RaftError::codec(format_args!("raft entry {index}")))?;
                Ok(Command::Change { id, change, addr })
            }
            EntryType::EntryConfChangeV2 => Err(RaftError::Raft(format!(
                "raft entry {index} is a joint membership change, which Dhow never proposes"
            ))),
        }
    }
}

impl<L: LogStore, T: Transport> Core<L, T> {
    /// Applies committed entries in order (or keeps them for later while a snapshot is being
    /// restored into the store).
    pub(crate) fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        if let Some(r) = &mut self.restoring {
            r.deferred.extend(entries);
            return Ok(());
        }
        for entry in entries {
            self.apply_one(&entry)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, entry: &Entry) -> Result<(), RaftError> {
        let index = entry.index;
        if index <= self.store.head().0 {
            self.applied_index = index;
            return Ok(()); // applied before a restart
        }
        let mut batch = Batch::default();
        let mut waiter = None;
        let mut change_outcome = None;
        match Command::decode(entry)? {
            Command::Empty => {}
            Command::Proposal(p) => {
                waiter = self.proposals.take(p.id);
                match p.body {
                    Body::Writes(w) => batch.writes = w,
                    Body::Schema(s) => batch.schema = Some(s),
                }
            }
            Command::Change { id, change, addr } => {
                waiter = self.proposals.take(id);
                change_outcome = Some(self.apply_change(&change, addr)?);
            }
        }
        let started = self.stats.now();
        // Dropped once the entry is applied and its proposers answered.
        let _spans = self.apply_spans(entry, waiter.is_some());
        let outcomes =
            self.store
                .apply(Revision(index), &batch)
                .map_err(RaftError::state_machine(format_args!(
                    "applying entry {index}"
                )))?;
        Counters::since(&self.stats.apply, started);
        self.storage.set_applied(index);
        self.applied_index = index;
        // Publish the revision before answering: whoever holds an acknowledgement must
        // find `applied()` at least at its revision.
        let _ = self.applied_tx.send(Revision(index));
        if let Some(Ok(true)) = change_outcome {
            // A new member needs the log from the start, which holds no record of the first
            // members: compact it so that the newcomer is sent a snapshot instead.
            self.storage.with(|l| l.compact(index, entry.term))?;
        }
        match (waiter, change_outcome) {
            (Some(crate::propose::Waiter::One(tx)), Some(outcome)) => {
                let _ = tx.send(outcome.map(|_| Revision(index)));
            }
            // Ids are unique: a membership change is never awaited as writes.
            (Some(_), Some(_)) | (None, _) => {}
            (Some(w), None) => w.applied(index, outcomes),
        }
        Ok(())
    }

    /// One `raft.apply` span per trace parent the entry carries, each a child of its remote
    /// parent (none unless tracing is on and the entry was proposed under a sampled trace).
    fn apply_spans(&self, entry: &Entry, proposed_here: bool) -> Vec<tracing::Span> {
        if entry.context.is_empty() || entry.get_entry_type() != EntryType::EntryNormal {
            return Vec::new();
        }
        let Some(hooks) = crate::handle::trace_hooks() else {
            return Vec::new();
        };
        let leader = self.raw.raft.state == raft::StateRole::Leader;
        crate::propose::trace_parents(&entry.context)
            .map(|parent| {
                let span = tracing::info_span!(
                    parent: None,
                    "raft.apply",
                    // As i64: a trace's integer attributes are signed (a u64 would be text).
                    raft.index = entry.index as i64,
                    raft.term = entry.term as i64,
                    raft.node = self.config.id as i64,
                    raft.leader = leader,
                    raft.proposed_here = proposed_here,
                );
                (hooks.set_parent)(&span, parent);
                span
            })
            .collect()
    }

    /// Compacts the log once it holds more than twice `log_retain` applied entries, keeping
    /// the last `log_retain` (never while a snapshot is being restored).
    pub(crate) fn maybe_compact(&mut self) -> Result<(), RaftError> {
        if self.restoring.is_some() {
            return Ok(());
        }
        let applied = self.store.head().0;
        let first = self.storage.with(|l| l.first_index())?;
        if applied > first + 2 * self.config.log_retain {
            let upto = applied - self.config.log_retain;
            let term = self.storage.with(|l| l.term(upto))?.ok_or_else(|| {
                StorageError::new(
                    StorageKind::Corruption,
                    format!("the log holds no term for index {upto}"),
                )
            })?;
            self.storage.with(|l| l.compact(upto, term))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{parse_relationship, WriteOp, WriteRequest};
    use raft::eraftpb::ConfChangeType;

    fn entry(index: u64, kind: EntryType, data: Vec<u8>) -> Entry {
        let mut e = Entry {
            index,
            term: 2,
            data: data.into(),
            ..Default::default()
        };
        e.set_entry_type(kind);
        e
    }

    #[test]
    fn each_kind_of_entry_decodes_to_its_command() {
        assert_eq!(
            Command::decode(&entry(1, EntryType::EntryNormal, vec![])).unwrap(),
            Command::Empty
        );
        let p = Proposal {
            id: 42,
            body: Body::Writes(vec![WriteRequest {
                preconditions: vec![],
                ops: vec![WriteOp::Create(
                    parse_relationship("doc:a#viewer@user:b").unwrap(),
                )],
            }]),
        };
        let e = entry(2, EntryType::EntryNormal, codec::encode(&p));
        assert_eq!(Command::decode(&e).unwrap(), Command::Proposal(p));
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddLearnerNode);
        cc.node_id = 4;
        cc.context = codec::encode_change_context(7, "10.0.0.4:7001").into();
        let mut e = entry(3, EntryType::EntryConfChange, cc.write_to_bytes().unwrap());
        e.context = codec::change_entry_context().into();
        assert_eq!(
            Command::decode(&e).unwrap(),
            Command::Change {
                id: 7,
                change: cc,
                addr: "10.0.0.4:7001".into()
            }
        );
    }

    #[test]
    fn a_bad_entry_is_an_error_naming_its_index() {
        let e = Command::decode(&entry(11, EntryType::EntryNormal, vec![9, 9])).unwrap_err();
        assert!(
            matches!(&e, RaftError::Codec { what, .. } if what == "raft entry 11"),
            "{e}"
        );
        let e = Command::decode(&entry(12, EntryType::EntryConfChange, vec![0xff; 3])).unwrap_err();
        assert_eq!(e.storage_kind(), Some(StorageKind::Corruption), "{e}");
        assert!(e.to_string().contains("raft entry 12"), "{e}");
        let cc = ConfChange {
            context: vec![1].into(),
            ..Default::default()
        };
        let e = Command::decode(&entry(
            13,
            EntryType::EntryConfChange,
            cc.write_to_bytes().unwrap(),
        ))
        .unwrap_err();
        assert!(
            matches!(&e, RaftError::Codec { what, error } if what == "raft entry 13" && error.what == codec::Payload::ChangeContext),
            "{e}"
        );
        let e = Command::decode(&entry(14, EntryType::EntryConfChangeV2, vec![])).unwrap_err();
        assert!(e.to_string().contains("joint"), "{e}");
    }
}
