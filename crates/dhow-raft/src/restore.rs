//! Installing a snapshot received from the leader: its message is stepped only with its data
//! (already kept in the durable stage), the log installs it at once, and the store restore is
//! handed to the [`crate::core::Runner`] so the loop goes on; until the restore has ended the
//! node applies nothing (committed entries wait, in order), acknowledges nothing past the
//! snapshot and does not stand for election. See [`Core::install_snapshot`].

use dhow_tuples::Revision;
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};

use crate::codec;
use crate::core::{Core, Request};
use crate::log::{LogStore, Membership};
use crate::snapshot::StagedSnapshot;
use crate::stats::Counters;
use crate::transport::Transport;
use crate::RaftError;

/// A snapshot installed in the log whose data is being restored into the store.
pub(crate) struct Restoring {
    pub(crate) index: u64,
    /// The outcome, once the job reported it.
    pub(crate) done: Option<Result<(), RaftError>>,
    /// Entries committed meanwhile, in order: applied once the store holds the snapshot.
    pub(crate) deferred: Vec<Entry>,
}

/// The index of the snapshot a raft-rs snapshot message carries.
pub(crate) fn snapshot_index(message: &[u8]) -> Option<u64> {
    Message::parse_from_bytes(message)
        .ok()
        .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
        .map(|m| m.get_snapshot().get_metadata().index)
}

impl<L: LogStore, T: Transport> Core<L, T> {
    /// The index of the snapshot whose store restore is running, if any.
    pub(crate) fn restoring(&self) -> Option<u64> {
        self.restoring.as_ref().map(|r| r.index)
    }

    /// Steps a snapshot message whose data the transport received in full (and staged): the
    /// data waits in `staged` for the Ready that installs it. Refused while another snapshot
    /// is being restored (the sender's transport reports a failure; raft-rs retries later).
    pub(crate) fn step_snapshot(
        &mut self,
        bytes: &[u8],
        data: StagedSnapshot,
    ) -> Result<(), RaftError> {
        if let Some(r) = &self.restoring {
            return Err(RaftError::Unavailable(format!(
                "this node is still restoring the snapshot at {}",
                r.index
            )));
        }
        match Message::parse_from_bytes(bytes) {
            Ok(m) if m.get_msg_type() == MessageType::MsgSnapshot => {
                let index = m.get_snapshot().get_metadata().index;
                self.staged = Some((index, data));
                self.raw
                    .step(m)
                    .map_err(|e| RaftError::Raft(e.to_string()))?;
                Counters::inc(&self.stats.snapshots_received);
                Ok(())
            }
            Ok(m) => Err(RaftError::Raft(format!(
                "expected a snapshot message, got {:?}",
                m.get_msg_type()
            ))),
            Err(e) => Err(RaftError::Raft(format!(
                "undecodable snapshot message: {e}"
            ))),
        }
    }

    /// A restore job reported its end (see [`Core::finish_restore`]).
    pub(crate) fn restored(&mut self, index: u64, outcome: Result<(), RaftError>) {
        match &mut self.restoring {
            Some(r) if r.index == index => r.done = Some(outcome),
            _ => tracing::warn!(index, "the end of a restore nobody waits for ignored"),
        }
    }

    /// Installs the snapshot of a Ready: the log at once, then its staged data into the store
    /// off the loop (a restore of millions of relationships takes seconds), through the
    /// [`crate::core::Runner`]. Until the restore has ended (`finish_restore`), the loop goes
    /// on ticking, stepping, sending, persisting entries and the hard state, but applies
    /// nothing: committed entries wait, in order, and so does the applied revision.
    ///
    /// The log first: the snapshot's data is already in the durable stage (the transport
    /// saved it before stepping the message), so a crash before the store is restored leaves
    /// a log ahead of the store that `repair` completes from the stage at start, keeping every
    /// log position. Without a staged copy (a node given no durable stage), `repair` must drop
    /// the log and wait for a new snapshot. For that case, and to stay conservative, until the
    /// restore has ended the node does not count towards any quorum with entries persisted
    /// meanwhile: it withholds its acknowledgements of entries past the snapshot (`send`), and
    /// it does not stand for election (`tick`, and a leadership transfer to it is declined),
    /// since a leader counts its own log. Its votes are safe: the vote is in the hard state.
    pub(crate) fn install_snapshot(
        &mut self,
        snap: &raft::eraftpb::Snapshot,
    ) -> Result<(), RaftError> {
        let meta = snap.get_metadata();
        let index = meta.index;
        let data = match self.staged.take() {
            Some((i, data)) if i == index => data,
            _ => {
                return Err(RaftError::Snapshot(format!(
                    "the snapshot at {index} arrived without its data"
                )))
            }
        };
        if self.restoring.is_some() {
            // `step_snapshot` refuses snapshots while a restore runs: raft-rs cannot hold a
            // second one.
            return Err(RaftError::Snapshot(format!(
                "the snapshot at {index} arrived while another is being restored"
            )));
        }
        let peers = codec::decode_snapshot_header(&snap.data).map_err(RaftError::codec(
            format_args!("the header of the snapshot at {index}"),
        ))?;
        tracing::info!(
            index,
            relationships = data.relationships.len(),
            "installing a snapshot"
        );
        let membership = Membership {
            conf: meta.get_conf_state().clone(),
            peers,
        };
        self.storage
            .install_snapshot(index, meta.term, &membership)?;
        // Older staged snapshots will never be installed now.
        self.stage.retain(Some(index))?;
        // Nobody is sent a snapshot described from this node's log while its store is between
        // two states.
        self.storage.set_restoring(true);
        self.transport.set_peers(&membership.peers);
        self.membership = membership;
        self.applied_index = index;
        self.fail_all(|| {
            RaftError::Unavailable("this node installed a snapshot; a write in flight may or may not have been applied".into())
        });
        self.restoring = Some(Restoring {
            index,
            done: None,
            deferred: Vec::new(),
        });
        let store = self.store.clone();
        let wake = self.wake.clone();
        (self.runner)(Box::new(move || {
            let outcome = store
                .restore(
                    Revision(index),
                    data.schema.as_deref(),
                    &mut data.relationships.into_iter(),
                )
                .map_err(RaftError::state_machine(format_args!(
                    "restoring the snapshot at {index}"
                )));
            let _ = wake.send(Request::Restored(index, outcome));
        }));
        Ok(())
    }

    /// Once the restore job has reported: the store holds the snapshot, so its revision is
    /// published and the entries committed meanwhile are applied, in order. A failed restore
    /// fails the node like any storage error.
    pub(crate) fn finish_restore(&mut self) -> Result<(), RaftError> {
        if !matches!(&self.restoring, Some(r) if r.done.is_some()) {
            return Ok(());
        }
        let Some(Restoring {
            index,
            done: Some(outcome),
            deferred,
        }) = self.restoring.take()
        else {
            return Ok(());
        };
        outcome?;
        Counters::inc(&self.stats.snapshots_installed);
        tracing::info!(index, deferred = deferred.len(), "snapshot restored");
        self.stage.retain(None)?;
        self.storage.set_applied(index);
        self.storage.set_restoring(false);
        let _ = self.applied_tx.send(Revision(index));
        self.apply(deferred)?;
        self.raw.advance_apply_to(self.applied_index);
        self.maybe_compact()
    }
}
