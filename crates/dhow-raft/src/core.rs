//! The Raft loop's body as a steppable [`Core`], with no thread and no clock: `serve` takes a
//! batch of [`Request`]s (client writes collected into one entry, every other request a method
//! of its own), `tick` advances raft-rs's logical clock, and `ready` handles a Ready in
//! raft-rs's documented order (send messages, install a snapshot, apply committed entries,
//! persist entries and hard state, answer read states, send persisted messages, advance and
//! apply what the light ready commits). [`crate::thread`] drives it on real time in
//! production, [`crate::sim::SimNode`] step by step in the simulation.
//!
//! In production (`overlap_sync`) the persisting of a Ready (its entries and hard state
//! written, then synced) runs on a thread of its own while the loop applies the committed
//! entries, when they carry at least [`OVERLAP_MIN_BYTES`]; what the light ready commits
//! waits to be applied with the next Ready (or at once, when no Ready follows). The applier,
//! which sets the rate of a large import, no longer waits for the disk. raft-rs still hears
//! of the persistence, and the messages that wait for it still go out, only after the sync.
//!
//! The rest of the core's work lives beside it: proposing (`propose.rs`), applying committed
//! entries (`apply.rs`), membership (`membership.rs`), installing snapshots (`restore.rs`) and
//! the repair at start (`repair.rs`).

use std::sync::mpsc::Sender;
use std::sync::Arc;

use dhow_tuples::{Revision, TupleStore};
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{oneshot, watch};

use crate::codec::{Body, EncodedWrite};
use crate::config::RaftConfig;
use crate::error::{StorageError, StorageKind};
use crate::log::{LogStore, Membership, RaftStorage};
use crate::membership::{initial_membership, Leadership, MemberChange, Status, MAX_LAG_ENTRIES};
use crate::propose::{Proposals, Waiter};
use crate::repair::repair;
use crate::restore::Restoring;
use crate::snapshot::{MemStage, SnapshotStage, StagedSnapshot};
use crate::stats::Counters;
use crate::transport::{Report, Reporter, Transport};
use crate::RaftError;

/// What the loop is asked to do: the commands a [`crate::RaftHandle`] (or a
/// [`crate::sim::SimNode`]) sends, the transport's reports, and the end of a restore job.
pub(crate) enum Request {
    /// A client write, encoded by the submitter (`EncodedWrite::new`).
    Write(EncodedWrite, oneshot::Sender<Result<Revision, RaftError>>),
    /// A write submitted under a sampled trace: its W3C `traceparent` rides in the entry's
    /// context (see `propose.rs`).
    TracedWrite(
        EncodedWrite,
        String,
        oneshot::Sender<Result<Revision, RaftError>>,
    ),
    Schema(String, oneshot::Sender<Result<Revision, RaftError>>),
    ReadIndex(oneshot::Sender<Result<Revision, RaftError>>),
    Step(Vec<u8>),
    Snapshot(
        Vec<u8>,
        StagedSnapshot,
        oneshot::Sender<Result<(), RaftError>>,
    ),
    /// A membership change; `true`: forced past the reachable-quorum check.
    Change(
        MemberChange,
        bool,
        oneshot::Sender<Result<Revision, RaftError>>,
    ),
    TransferLeader(u64, oneshot::Sender<Result<(), RaftError>>),
    Status(oneshot::Sender<Status>),
    Report(Report),
    /// A store restore handed to the [`Runner`] ended: the snapshot's index and the outcome.
    Restored(u64, Result<(), RaftError>),
    Shutdown,
}

/// The least data of committed entries whose application overlaps the log's sync on a
/// thread of its own (see [`Core::on_ready`]): below it, starting the thread costs more than
/// the overlap saves (small writes at 16 in flight ran 10% slower with a thread per Ready).
pub(crate) const OVERLAP_MIN_BYTES: usize = 64 * 1024;

/// Work the Raft loop hands off: restoring a snapshot's data into the store.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Runs [`Job`]s off the Raft loop, so that the [`Core`] itself spawns nothing: a worker
/// thread in production ([`crate::thread`]), the simulation's hand in a
/// [`crate::sim::SimNode`]. A job reports its end to the loop as [`Request::Restored`].
pub(crate) type Runner = Box<dyn FnMut(Job) + Send>;

/// The state of the Raft loop and everything one iteration does, with no thread and no clock:
/// [`crate::thread`] runs it on real time, [`crate::sim::SimNode`] step by step in a
/// simulation.
pub(crate) struct Core<L: LogStore, T: Transport> {
    pub(crate) raw: RawNode<RaftStorage<L>>,
    pub(crate) storage: RaftStorage<L>,
    pub(crate) store: Arc<dyn TupleStore>,
    pub(crate) transport: T,
    pub(crate) applied_tx: watch::Sender<Revision>,
    pub(crate) config: RaftConfig,
    pub(crate) membership: Membership,
    /// Proposals and ReadIndex requests waiting for their answer, by id.
    pub(crate) proposals: Proposals,
    /// Data of a snapshot whose message was stepped and is not installed yet: (index, data).
    pub(crate) staged: Option<(u64, StagedSnapshot)>,
    /// Where staged snapshots are kept durably until the store holds them.
    pub(crate) stage: Arc<dyn SnapshotStage>,
    /// Runs snapshot restores off the loop.
    pub(crate) runner: Runner,
    /// Where a restore job reports its end.
    pub(crate) wake: Sender<Request>,
    /// The snapshot whose store restore is running, if any.
    pub(crate) restoring: Option<Restoring>,
    /// The applied index as raft-rs is told it: the last entry applied to the store, or the
    /// index of a snapshot installed in the log (its conf state is raft-rs's already).
    pub(crate) applied_index: u64,
    was_leader: bool,
    /// The leader known at the last check (0: none).
    leader: u64,
    /// Why the loop stopped serving writes, once it met a failure.
    pub(crate) failed: Option<RaftError>,
    /// What is wrong with this node while it cannot apply (its health: `None` when fine),
    /// published for the health service.
    pub(crate) fault_tx: watch::Sender<Option<String>>,
    /// What this node knows of its leader, published at the end of every iteration (for
    /// readiness: health NOT_SERVING while no leader is established).
    leadership_tx: watch::Sender<Leadership>,
    /// ReadIndex requests that came while this node leads but has not yet committed an entry
    /// of its term (raft-rs would drop them): asked once it has.
    deferred_reads: Vec<oneshot::Sender<Result<Revision, RaftError>>>,
    /// The disk is below its free-space reserve: the loop writes nothing until it is not.
    pub(crate) paused: bool,
    /// What the loop counts for the metrics (see `stats.rs`).
    pub(crate) stats: Arc<Counters>,
    /// The highest commit index the leader announced in an append (for `Leadership::behind`).
    leader_commit: u64,
    /// Ticks since the last message from the leader this node knows (for
    /// `Leadership::out_of_touch`).
    ticks_since_leader: usize,
    /// Whether the log's sync overlaps the application of large committed entries (on a
    /// thread of its own: production's loop; the simulation applies in line). See
    /// [`Core::on_ready`].
    overlap_sync: bool,
    /// Entries committed by the last light ready, applied beside the next Ready's sync, or
    /// at once when no Ready follows (only while `overlap_sync`).
    pending: Vec<Entry>,
}

impl<L: LogStore, T: Transport> Core<L, T> {
    /// Prepares a node over `log` and `store` (membership, repair after a crash, raft-rs),
    /// with `reporter` given to the transport and proposal ids counting from `first_id`.
    /// Returns the receiver of applied revisions. (Called from two places, the production
    /// thread and the simulation, each naming every part: a struct would only rename them.)
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: RaftConfig,
        log: L,
        store: Arc<dyn TupleStore>,
        transport: T,
        reporter: Reporter,
        first_id: u64,
        runner: Runner,
        stats: Arc<Counters>,
    ) -> Result<(Self, watch::Receiver<Revision>), RaftError> {
        if config.id == 0 {
            return Err(RaftError::Config("node id must be non-zero".into()));
        }
        let storage = RaftStorage::new(log);
        let membership = initial_membership(&config, &storage)?;
        let stage = config
            .stage
            .clone()
            .unwrap_or_else(|| Arc::new(MemStage::default()));
        let sole_voter = membership.conf.voters == [config.id];
        repair(&storage, &*store, &*stage, sole_voter)?;
        let applied = store.head();
        storage.set_applied(applied.0);
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied: applied.0,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config
            .validate()
            .map_err(|e| RaftError::Config(e.to_string()))?;
        let logger = slog::Logger::root(
            tracing_slog::TracingSlogDrain,
            slog::o!("raft_id" => config.id),
        );
        let mut raw = RawNode::new(&raft_config, storage.clone(), &logger)
            .map_err(|e| RaftError::Raft(e.to_string()))?;
        if membership.conf.voters == [config.id] {
            raw.campaign().map_err(|e| RaftError::Raft(e.to_string()))?;
        }
        let (applied_tx, applied_rx) = watch::channel(applied);
        let wake = reporter.tx.clone();
        transport.attach(reporter);
        transport.set_peers(&membership.peers);
        // What raft-rs already knows (a sole voter elected itself above): no change of leader
        // to report at the first iteration.
        let (was_leader, leader) = (raw.raft.state == StateRole::Leader, raw.raft.leader_id);
        let core = Core {
            raw,
            storage,
            store,
            transport,
            applied_tx,
            proposals: Proposals::new(config.id, first_id, stats.clone()),
            config,
            membership,
            staged: None,
            stage,
            runner,
            wake,
            restoring: None,
            applied_index: applied.0,
            was_leader,
            leader,
            failed: None,
            fault_tx: watch::channel(None).0,
            leadership_tx: watch::channel(Leadership {
                leader,
                ..Leadership::default()
            })
            .0,
            deferred_reads: Vec::new(),
            paused: false,
            stats,
            leader_commit: 0,
            ticks_since_leader: 0,
            overlap_sync: false,
            pending: Vec::new(),
        };
        core.count_log();
        Ok((core, applied_rx))
    }

    /// The node's settings.
    pub(crate) fn config(&self) -> &RaftConfig {
        &self.config
    }

    /// Where this node keeps staged snapshots.
    pub(crate) fn stage(&self) -> &Arc<dyn SnapshotStage> {
        &self.stage
    }

    /// Handles `first` and the requests `more` yields at once, as one batch: writes are
    /// collected (at most `max_writes_per_entry`) and proposed as one entry, every other
    /// request is handled in turn. False when a shutdown was asked.
    pub(crate) fn serve(
        &mut self,
        first: Request,
        mut more: impl FnMut() -> Option<Request>,
    ) -> bool {
        let mut writes: Vec<(EncodedWrite, oneshot::Sender<Result<Revision, RaftError>>)> =
            Vec::new();
        let mut traces: Vec<String> = Vec::new();
        let mut stop = false;
        let mut pending = Some(first);
        while let Some(req) = pending.take() {
            match req {
                Request::Shutdown => stop = true,
                Request::Write(w, tx) => writes.push((w, tx)),
                Request::TracedWrite(w, trace, tx) => {
                    traces.push(trace);
                    writes.push((w, tx))
                }
                Request::Schema(text, tx) => self.propose(Body::Schema(text), Waiter::One(tx)),
                Request::ReadIndex(tx) => self.read_index(tx),
                Request::Step(bytes) => self.step(&bytes),
                Request::Snapshot(bytes, data, tx) => {
                    let _ = tx.send(self.step_snapshot(&bytes, data));
                }
                Request::Change(change, force, tx) => self.propose_change(change, force, tx),
                Request::TransferLeader(to, tx) => {
                    let _ = tx.send(self.transfer_leader(to));
                }
                Request::Status(tx) => {
                    let _ = tx.send(self.status());
                }
                Request::Report(report) => self.report(report),
                Request::Restored(index, outcome) => self.restored(index, outcome),
            }
            if stop || writes.len() >= self.config.max_writes_per_entry {
                break;
            }
            pending = more();
        }
        self.propose_writes(writes, &traces);
        !stop
    }

    /// One tick of raft-rs's logical clock. While a snapshot is being restored the node does
    /// not stand for election (see [`Core::install_snapshot`]): a follower's tick only advances
    /// the election clock (so that its leader lease still expires and it votes for others),
    /// which is all raft-rs's tick does short of campaigning.
    pub(crate) fn tick(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            self.ticks_since_leader = self.ticks_since_leader.saturating_add(1);
        }
        if self.restoring.is_some() && self.raw.raft.state != StateRole::Leader {
            self.raw.raft.election_elapsed += 1;
        } else {
            self.raw.tick();
        }
    }

    /// The end of every iteration: handles the Ready (a failure stops the node serving
    /// writes, loudly: an error in the log and a fault its health reports), then answers
    /// waiters if the leader changed.
    pub(crate) fn ready(&mut self) {
        self.ready_once();
        if self.ask_deferred_reads() {
            self.ready_once();
        }
    }

    fn ready_once(&mut self) {
        if let Err(e) = self.on_ready() {
            tracing::error!(
                error = %e,
                "raft loop failed; this node stops applying and serving writes (health NOT_SERVING)"
            );
            self.fault_tx
                .send_replace(Some(format!("the Raft loop stopped: {e}")));
            self.failed = Some(e.clone());
            // Committed entries the loop did not apply are applied after a restart: whoever
            // waits cannot be told either way.
            self.fail_all(|| {
                RaftError::Unavailable(format!(
                    "this node stopped applying ({e}): the write may or may not have been applied"
                ))
            });
        }
        self.check_leadership();
    }

    /// Whether the disk has room for a round of writes ([`LogStore::check_space`]). While it
    /// has not, the loop writes nothing (raft-rs keeps its Ready, nothing is skipped or
    /// reordered), answers whoever waits UNAVAILABLE (their writes may still be applied once
    /// space is back), refuses new writes, and reports a fault; it asks again every
    /// iteration and resumes by itself once space is freed.
    fn space_ok(&mut self) -> bool {
        if !self.paused && !self.raw.has_ready() && self.restoring.is_none() {
            return true;
        }
        match self.storage.with(|l| l.check_space()) {
            Ok(()) => {
                if self.paused {
                    self.paused = false;
                    tracing::warn!("the disk has room again: this node resumes its writes");
                    self.fault_tx.send_replace(None);
                }
                true
            }
            Err(e) if e.kind == StorageKind::NoSpace => {
                if !self.paused {
                    self.paused = true;
                    tracing::error!(
                        error = %e.message,
                        "the disk is full: this node pauses its writes until space is freed (health NOT_SERVING)"
                    );
                    self.fault_tx
                        .send_replace(Some(format!("writes paused: {}", e.message)));
                    let why = e.message.clone();
                    self.fail_all(|| {
                        RaftError::Unavailable(format!(
                            "this node's disk is full ({why}): the write may or may not have been applied"
                        ))
                    });
                }
                false
            }
            Err(e) => {
                // Cannot tell: go on; a write that fails says so itself.
                tracing::warn!(error = %e.message, "cannot read the disk's free space");
                true
            }
        }
    }

    /// What is wrong with this node (`None`: nothing), as it changes.
    pub(crate) fn fault(&self) -> watch::Receiver<Option<String>> {
        self.fault_tx.subscribe()
    }

    /// The loop ended: committed entries still pending are applied (their writers answered),
    /// then whoever still waits is told.
    pub(crate) fn stop(&mut self) {
        if self.failed.is_none() && !self.paused {
            let pending = std::mem::take(&mut self.pending);
            if let Err(e) = self.apply(pending) {
                tracing::error!(error = %e, "applying committed entries at shutdown failed; they are applied at the next start");
            }
        }
        self.fail_all(|| RaftError::Stopped);
    }

    /// Makes the log's sync overlap the application of committed entries (see
    /// [`Core::on_ready`]): the production loop's setting.
    pub(crate) fn overlap_sync(&mut self) {
        self.overlap_sync = true;
    }

    /// Committed entries wait for the next Ready (or for a `ready` with none) to be applied:
    /// the loop should not sleep before its next `ready`.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty() && self.failed.is_none() && !self.paused
    }

    /// Starts a ReadIndex round; its read state answers `tx` (see [`Core::on_ready`]).
    fn read_index(&mut self, tx: oneshot::Sender<Result<Revision, RaftError>>) {
        if self.raw.raft.leader_id == 0 {
            let _ = tx.send(Err(RaftError::Unavailable(
                "no leader is known to this node (election in progress, or cut off from the majority)".into(),
            )));
            return;
        }
        if self.raw.raft.state == StateRole::Leader && !self.raw.raft.commit_to_current_term() {
            // raft-rs drops a ReadIndex on a leader that has not committed an entry of its
            // term yet: ask once it has (see `ask_deferred_reads`).
            self.deferred_reads.push(tx);
            return;
        }
        let id = self.proposals.next_id();
        self.raw.read_index(id.to_be_bytes().to_vec());
        self.proposals.wait_read(id, tx);
    }

    /// Steps a raft-rs message from a peer. A snapshot message comes only with its data
    /// ([`Core::step_snapshot`]); a leadership transfer is declined while restoring one.
    fn step(&mut self, bytes: &[u8]) {
        match Message::parse_from_bytes(bytes) {
            Ok(m) if m.get_msg_type() == MessageType::MsgSnapshot => {
                tracing::warn!(from = m.from, "snapshot message without its data dropped");
            }
            Ok(m) if m.get_msg_type() == MessageType::MsgTimeoutNow && self.restoring.is_some() => {
                tracing::info!(
                    from = m.from,
                    "restoring a snapshot: leadership transfer declined"
                );
            }
            Ok(m) => {
                if let Some(why) = self.refusal(&m) {
                    tracing::warn!(from = m.from, to = m.to, kind = ?m.get_msg_type(), "raft message dropped: {why}");
                    return;
                }
                let (from, append, commit) =
                    (m.from, m.get_msg_type() == MessageType::MsgAppend, m.commit);
                if let Err(e) = self.raw.step(m) {
                    tracing::debug!(error = %e, "raft step refused a message");
                }
                // Heard from the leader (as raft-rs knows it after this message): an append
                // also says how far it committed.
                if from != 0 && from == self.raw.raft.leader_id {
                    self.ticks_since_leader = 0;
                    if append {
                        self.leader_commit = self.leader_commit.max(commit);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "undecodable raft message dropped"),
        }
    }

    /// Why a message from a peer must not reach raft-rs, if it must not: it is addressed to
    /// another node, comes from a node that is not a member (while this node knows its
    /// members), or carries a commit index past this node's log in a heartbeat (raft-rs would
    /// panic on it; a real leader never sends one, it sends the follower's matched index).
    fn refusal(&self, m: &Message) -> Option<String> {
        let me = self.raw.raft.id;
        if m.to != me {
            return Some(format!("addressed to node {}, this is node {me}", m.to));
        }
        let conf = &self.membership.conf;
        let known = !conf.voters.is_empty() || !conf.learners.is_empty();
        if known && !conf.voters.contains(&m.from) && !conf.learners.contains(&m.from) {
            return Some(format!("node {} is not a member of this cluster", m.from));
        }
        if m.get_msg_type() == MessageType::MsgHeartbeat {
            let last = self.raw.raft.raft_log.last_index();
            if m.commit > last {
                return Some(format!(
                    "heartbeat commit index {} is past this node's log (last index {last})",
                    m.commit
                ));
            }
        }
        None
    }

    /// What the transport tells about a delivery.
    fn report(&mut self, report: Report) {
        match report {
            Report::Unreachable(to) => self.raw.report_unreachable(to),
            Report::Snapshot(to, ok) => {
                Counters::inc(if ok {
                    &self.stats.snapshots_sent
                } else {
                    &self.stats.snapshot_send_failures
                });
                self.raw.report_snapshot(
                    to,
                    if ok {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    },
                )
            }
        }
    }

    /// Publishes the log's bounds for the metrics (nothing if the log cannot tell).
    fn count_log(&self) {
        if let Ok((first, last)) = self
            .storage
            .with(|l| Ok((l.first_index()?, l.last_index()?)))
        {
            self.stats.set_log(first, last);
        }
    }

    fn check_leadership(&mut self) {
        let leader = self.raw.raft.state == StateRole::Leader;
        let known = self.raw.raft.leader_id;
        if (self.was_leader && !leader) || known != self.leader {
            // Entries proposed here (or forwarded to the old leader) may still commit under
            // the next leader, or not: the outcome is unknown, and the callers are told exactly
            // that. Reads through the old leader are simply retried by the caller.
            self.fail_all(|| {
                RaftError::Unavailable("the leader changed before the request completed; a write may or may not have been applied".into())
            });
        }
        self.was_leader = leader;
        self.leader = known;
        let committed_in_term = self.raw.raft.commit_to_current_term();
        let follows = !leader && known != 0;
        let now = Leadership {
            leader: known,
            committed_in_term,
            restoring: self.restoring.as_ref().map(|r| r.index),
            behind: follows
                && self.leader_commit.saturating_sub(self.applied_index) > MAX_LAG_ENTRIES,
            out_of_touch: follows && self.ticks_since_leader > 2 * self.config.election_tick,
        };
        self.leadership_tx.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
    }

    /// Asks the ReadIndex requests deferred until this leader committed an entry of its term,
    /// once it has; true if it asked any (their read states come with the next Ready).
    fn ask_deferred_reads(&mut self) -> bool {
        if self.deferred_reads.is_empty()
            || self.raw.raft.state != StateRole::Leader
            || !self.raw.raft.commit_to_current_term()
        {
            return false;
        }
        for tx in std::mem::take(&mut self.deferred_reads) {
            self.read_index(tx);
        }
        true
    }

    /// What this node knows of its leader, as it changes.
    pub(crate) fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership_tx.subscribe()
    }

    /// Answers every waiting proposal and read with `err`.
    pub(crate) fn fail_all(&mut self, err: impl Fn() -> RaftError) {
        self.proposals.fail_all(&err);
        for tx in std::mem::take(&mut self.deferred_reads) {
            let _ = tx.send(Err(err()));
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            if self.restoring.is_some()
                && m.get_msg_type() == MessageType::MsgAppendResponse
                && !m.reject
            {
                // Nothing is acknowledged, not even the snapshot, until the store holds it
                // (see `install_snapshot`): a lost message, as far as the leader can tell.
                continue;
            }
            match m.write_to_bytes() {
                Ok(bytes) if m.get_msg_type() == MessageType::MsgSnapshot => {
                    let rev = Revision(m.get_snapshot().get_metadata().index);
                    tracing::info!(to = m.to, revision = rev.0, "sending a snapshot");
                    self.transport.send_snapshot(m.to, bytes, rev);
                }
                Ok(bytes) => self.transport.send(m.to, bytes),
                Err(e) => tracing::error!(error = %e, "cannot encode a raft message"),
            }
        }
    }

    /// One Ready, in raft-rs's order.
    fn on_ready(&mut self) -> Result<(), RaftError> {
        if self.failed.is_some() || !self.space_ok() {
            return Ok(());
        }
        self.finish_restore()?;
        if !self.raw.has_ready() {
            // No Ready for the pending entries to wait for.
            let pending = std::mem::take(&mut self.pending);
            self.apply(pending)?;
            self.raw.advance_apply_to(self.applied_index);
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. Messages a leader may send before persisting.
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        // 2. A snapshot from the leader, its data staged by the transport (after the entries
        // committed before it).
        if !ready.snapshot().is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.apply(pending)?;
            let snap = ready.snapshot().clone();
            self.install_snapshot(&snap)?;
        }
        // 3 and 4. Committed entries (those pending first), and the new entries and the hard
        // state persisted: written, then synced, before raft-rs is told (7) and before their
        // messages go out (6). The sync runs on a thread of its own while the entries apply
        // when `overlap_sync` is set: committed entries are durable already (on a quorum, and
        // here since an earlier sync), and what the applier writes meanwhile is rewritten from
        // the log after a crash.
        let mut committed = std::mem::take(&mut self.pending);
        committed.extend(ready.take_committed_entries());
        if ready.entries().is_empty() && ready.hs().is_none() {
            self.apply(committed)?;
        } else {
            let storage = self.storage.clone();
            let (entries, hs) = (ready.entries(), ready.hs());
            let persist = move || -> Result<(), RaftError> {
                storage.persist_unsynced(entries, hs)?;
                Ok(storage.syncer()?()?)
            };
            // A thread costs more than it saves for a small application (a few writes).
            let work: usize = committed.iter().map(|e| e.data.len()).sum();
            if self.overlap_sync && work >= OVERLAP_MIN_BYTES {
                self.apply_beside(committed, persist)?;
            } else {
                self.apply(committed)?;
                persist()?;
            }
        }
        // 5. Read states answer ReadIndex requests.
        for rs in ready.take_read_states() {
            self.proposals
                .answer_read(&rs.request_ctx, Revision(rs.index));
        }
        // 6. Messages that had to wait for persistence.
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }
        // 7. Advance, then what the light ready carries. raft-rs is told what was applied,
        // which lags what was committed while a restore defers entries.
        let mut light = self.raw.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit)?;
        }
        self.send(light.take_messages());
        if self.overlap_sync {
            self.pending.extend(light.take_committed_entries());
        } else {
            self.apply(light.take_committed_entries())?;
        }
        self.raw.advance_apply_to(self.applied_index);
        self.maybe_compact()?;
        self.count_log();
        Ok(())
    }

    /// Applies `committed` while `persist` (the new entries' write and sync) runs on a thread
    /// of its own; both must succeed. If no thread can be started, persists after applying.
    fn apply_beside(
        &mut self,
        committed: Vec<Entry>,
        persist: impl FnOnce() -> Result<(), RaftError> + Send,
    ) -> Result<(), RaftError> {
        // Taken by the thread; still here if the thread could not start.
        let persist = std::sync::Mutex::new(Some(persist));
        let run = || match persist.lock().ok().and_then(|mut p| p.take()) {
            Some(f) => f(),
            None => Ok(()),
        };
        let (applied, persisted) = std::thread::scope(|s| {
            let persisting = std::thread::Builder::new()
                .name(format!("raft-{}-persist", self.config.id))
                .spawn_scoped(s, run);
            let applied = self.apply(committed);
            let persisted = match persisting {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    Err(StorageError::new(StorageKind::Other, "persisting the log panicked").into())
                }),
                Err(_) => run(),
            };
            (applied, persisted)
        });
        persisted?;
        applied
    }
}
