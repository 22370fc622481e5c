//! The Raft loop: one thread owns the `RawNode`, ticks it, batches client writes into
//! entries, and handles each Ready in raft-rs's documented order (send messages, apply a
//! snapshot, apply committed entries, persist entries and hard state, send persisted
//! messages, advance, apply what the light ready commits). Proposals are answered by the
//! proposal id carried in the entry, never by queue position. Membership changes are raft-rs
//! conf changes carrying the new member's peer address; snapshots arrive with their data
//! already staged by the transport: the loop installs them in the log, then hands the store
//! restore to a [`Runner`] and keeps going (see [`Core::install_snapshot`]).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dhow_tuples::{Batch, Revision, TupleStore, WriteRequest};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{oneshot, watch};

use crate::codec::{self, Body, Proposal};
use crate::log::{LogStore, Membership, RaftStorage};
use crate::snapshot::{decode_header, MemStage, SnapshotStage, StagedSnapshot};
use crate::RaftError;

/// Node-to-node delivery of raft-rs messages, as encoded bytes. Called from the Raft thread:
/// implementations queue and return at once. Delivery may fail silently (Raft retries).
pub trait Transport: Send + 'static {
    /// Sends one message to node `to`.
    fn send(&self, to: u64, message: Vec<u8>);
    /// Sends a snapshot message to `to` together with the data of the store at `revision`
    /// (see [`crate::SnapshotSource`]), then reports the outcome through the reporter given
    /// to [`Transport::attach`]. The default refuses at once.
    fn send_snapshot(&self, to: u64, message: Vec<u8>, revision: Revision) {
        let _ = (message, revision);
        tracing::warn!(to, "this transport cannot send snapshots");
    }
    /// The peer addresses changed (a member added or removed).
    fn set_peers(&self, peers: &BTreeMap<u64, String>) {
        let _ = peers;
    }
    /// Called once before the loop starts, with a handle to report delivery problems.
    fn attach(&self, reporter: Reporter) {
        let _ = reporter;
    }
}

/// What a transport tells the Raft loop about deliveries.
#[derive(Clone)]
pub struct Reporter {
    pub(crate) tx: Sender<Request>,
}

impl Reporter {
    /// Node `to` could not be reached (raft-rs then probes it gently).
    pub fn unreachable(&self, to: u64) {
        let _ = self.tx.send(Request::Report(Report::Unreachable(to)));
    }
    /// A snapshot sent to `to` was installed there (`ok`) or failed.
    pub fn snapshot_done(&self, to: u64, ok: bool) {
        let _ = self.tx.send(Request::Report(Report::Snapshot(to, ok)));
    }
}

pub(crate) enum Report {
    Unreachable(u64),
    Snapshot(u64, bool),
}

/// A change of membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a voter (or promote a learner) reachable at the peer address.
    AddVoter { id: u64, addr: String },
    /// Add a non-voting replica that follows the log and serves reads.
    AddLearner { id: u64, addr: String },
    /// Remove a voter or learner.
    Remove { id: u64 },
}

/// A node's role, as `dhow cluster status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Not a member (removed, or joining and not yet given a snapshot).
    None,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub learner: bool,
    /// The highest log index known to be replicated there (leader only).
    pub matched: Option<u64>,
}

/// What a node knows of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub role: Role,
    /// 0 when no leader is known.
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub members: Vec<Member>,
}

/// A transport for a one-node cluster: there is nobody to talk to.
pub struct NoTransport;

impl Transport for NoTransport {
    fn send(&self, to: u64, _message: Vec<u8>) {
        tracing::warn!(to, "raft message to a peer on a one-node cluster dropped");
    }
}

/// Settings of the Raft loop.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's id (non-zero).
    pub id: u64,
    /// The members of a new cluster and their peer addresses (used only when the log holds no
    /// membership yet). With `join`, the addresses of the running cluster instead.
    pub initial_peers: BTreeMap<u64, String>,
    /// Join a running cluster (after `add` there): start with no membership and wait for a
    /// snapshot from the leader.
    pub join: bool,
    /// How often the loop ticks raft-rs.
    pub tick: Duration,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// At most this many client writes go into one entry.
    pub max_writes_per_entry: usize,
    /// Applied entries kept in the log behind the applied index before compaction.
    pub log_retain: u64,
    /// Where received snapshots are kept until the store holds them (none: in memory, so a
    /// crash during a restore costs a new snapshot from the leader).
    pub stage: Option<Arc<dyn SnapshotStage>>,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            id: 1,
            initial_peers: BTreeMap::from([(1, String::new())]),
            join: false,
            tick: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 3,
            max_writes_per_entry: 1000,
            log_retain: 50_000,
            stage: None,
        }
    }
}

pub(crate) enum Request {
    Write(WriteRequest, oneshot::Sender<Result<Revision, RaftError>>),
    Schema(String, oneshot::Sender<Result<Revision, RaftError>>),
    ReadIndex(oneshot::Sender<Result<Revision, RaftError>>),
    Step(Vec<u8>),
    Snapshot(
        Vec<u8>,
        StagedSnapshot,
        oneshot::Sender<Result<(), RaftError>>,
    ),
    Change(MemberChange, oneshot::Sender<Result<Revision, RaftError>>),
    TransferLeader(u64, oneshot::Sender<Result<(), RaftError>>),
    Status(oneshot::Sender<Status>),
    Report(Report),
    /// A store restore handed to the [`Runner`] ended: the snapshot's index and the outcome.
    Restored(u64, Result<(), String>),
    Shutdown,
}

/// Work the Raft loop hands off: restoring a snapshot's data into the store.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Runs [`Job`]s off the Raft loop, so that the [`Core`] itself spawns nothing: a worker
/// thread in production ([`RaftHandle::start`]), the simulation's hand in a
/// [`crate::sim::SimNode`]. A job reports its end to the loop as [`Request::Restored`].
pub(crate) type Runner = Box<dyn FnMut(Job) + Send>;

/// A snapshot installed in the log whose data is being restored into the store.
struct Restoring {
    index: u64,
    /// The outcome, once the job reported it.
    done: Option<Result<(), String>>,
    /// Entries committed meanwhile, in order: applied once the store holds the snapshot.
    deferred: Vec<Entry>,
}

enum Waiter {
    Writes(Vec<oneshot::Sender<Result<Revision, RaftError>>>),
    /// A schema or a membership change.
    One(oneshot::Sender<Result<Revision, RaftError>>),
}

/// A running Raft node: submit writes and reads, watch the applied revision.
pub struct RaftHandle {
    tx: Sender<Request>,
    applied: watch::Receiver<Revision>,
    store: Arc<dyn TupleStore>,
    thread: Option<JoinHandle<()>>,
    /// Restores snapshots into the store while the Raft thread goes on.
    restorer: Option<JoinHandle<()>>,
    /// Where an incoming snapshot's data is kept before its message is stepped.
    stage: Arc<dyn SnapshotStage>,
    id: u64,
}

impl RaftHandle {
    /// Starts the loop over `log` (the Raft log) and `store` (the state machine).
    pub fn start<L: LogStore, T: Transport>(
        mut config: RaftConfig,
        log: L,
        store: Arc<dyn TupleStore>,
        transport: T,
    ) -> Result<RaftHandle, RaftError> {
        let stage = config
            .stage
            .get_or_insert_with(|| Arc::new(MemStage::default()))
            .clone();
        let (tx, rx) = mpsc::channel();
        let id = config.id;
        // The restore thread ends when the loop drops the runner (its only sender of jobs).
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let restorer = std::thread::Builder::new()
            .name(format!("raft-{id}-restore"))
            .spawn(move || {
                for job in job_rx {
                    job();
                }
            })
            .map_err(|e| RaftError::Config(format!("cannot start the restore thread: {e}")))?;
        let runner: Runner = Box::new(move |job| {
            if let Err(mpsc::SendError(job)) = job_tx.send(job) {
                job();
            }
        });
        let (core, applied_rx) = Core::new(
            config,
            log,
            store.clone(),
            transport,
            Reporter { tx: tx.clone() },
            random_counter_start(),
            runner,
        )?;
        let mut driver = Driver { core, rx };
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || driver.run())
            .map_err(|e| RaftError::Config(format!("cannot start the raft thread: {e}")))?;
        Ok(RaftHandle {
            tx,
            applied: applied_rx,
            store,
            thread: Some(thread),
            restorer: Some(restorer),
            stage,
            id,
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The state machine.
    pub fn store(&self) -> Arc<dyn TupleStore> {
        self.store.clone()
    }

    /// The newest applied revision.
    pub fn applied(&self) -> Revision {
        *self.applied.borrow()
    }

    /// A receiver that sees every newly applied revision.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.applied.clone()
    }

    fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RaftError>>) -> Request,
    ) -> oneshot::Receiver<Result<T, RaftError>> {
        let (tx, rx) = oneshot::channel();
        // If the loop is gone, dropping the sender makes the receiver report it.
        let _ = self.tx.send(make(tx));
        rx
    }

    /// Replicates one client write; resolves once it is applied here, with its revision.
    pub async fn write(&self, w: WriteRequest) -> Result<Revision, RaftError> {
        self.submit_write(w).await
    }

    /// [`RaftHandle::write`], submitted to the loop now, before the returned future is
    /// polled: writes submitted one after the other are proposed (and applied) in that order,
    /// whoever waits for their outcomes and when.
    pub fn submit_write(
        &self,
        w: WriteRequest,
    ) -> impl std::future::Future<Output = Result<Revision, RaftError>> + Send + 'static {
        let rx = self.submit(|tx| Request::Write(w, tx));
        async move { rx.await.unwrap_or(Err(RaftError::Stopped)) }
    }

    /// Replicates a new schema.
    pub async fn write_schema(&self, text: String) -> Result<Revision, RaftError> {
        self.submit(|tx| Request::Schema(text, tx))
            .await
            .unwrap_or(Err(RaftError::Stopped))
    }

    /// Raft ReadIndex: a revision at least as new as every write acknowledged before the call.
    pub async fn read_index(&self) -> Result<Revision, RaftError> {
        self.submit(Request::ReadIndex)
            .await
            .unwrap_or(Err(RaftError::Stopped))
    }

    /// Waits until `rev` is applied here.
    pub async fn wait_applied(&self, rev: Revision, timeout: Duration) -> Result<(), RaftError> {
        let mut rx = self.applied.clone();
        let outcome = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev))
            .await
            .map(|r| r.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(RaftError::Stopped),
            Err(_) => Err(RaftError::Timeout(format!(
                "revision {rev} not applied within {timeout:?} (applied: {})",
                self.applied()
            ))),
        }
    }

    /// Delivers a raft-rs message from a peer.
    pub fn step(&self, message: Vec<u8>) {
        let _ = self.tx.send(Request::Step(message));
    }

    /// Delivers a snapshot message whose data the transport has received in full, after
    /// keeping the data in the stage (synced, off the loop).
    pub async fn step_snapshot(
        &self,
        message: Vec<u8>,
        data: StagedSnapshot,
    ) -> Result<(), RaftError> {
        let data = match snapshot_index(&message) {
            Some(index) => {
                let stage = self.stage.clone();
                let data =
                    tokio::task::spawn_blocking(move || stage.save(index, &data).map(|()| data))
                        .await
                        .map_err(|e| RaftError::Storage(format!("snapshot stage: {e}")))?
                        .map_err(RaftError::Storage)?;
                tracing::info!(index, "snapshot staged");
                data
            }
            // Not a snapshot message: the loop says so.
            None => data,
        };
        self.submit(|tx| Request::Snapshot(message, data, tx))
            .await
            .unwrap_or(Err(RaftError::Stopped))
    }

    /// Proposes a membership change; resolves once it is applied here.
    pub async fn change_membership(&self, change: MemberChange) -> Result<Revision, RaftError> {
        self.submit(|tx| Request::Change(change, tx))
            .await
            .unwrap_or(Err(RaftError::Stopped))
    }

    /// Asks the leader to hand leadership to `to` (returns once asked, not once done).
    pub async fn transfer_leader(&self, to: u64) -> Result<(), RaftError> {
        self.submit(|tx| Request::TransferLeader(to, tx))
            .await
            .unwrap_or(Err(RaftError::Stopped))
    }

    /// What this node knows of the cluster.
    pub async fn status(&self) -> Result<Status, RaftError> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Status(tx));
        rx.await.map_err(|_| RaftError::Stopped)
    }

    /// Stops the loop and waits for it (and for a snapshot restore in progress, which holds
    /// the store).
    pub fn shutdown(&mut self) {
        let _ = self.tx.send(Request::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.restorer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RaftHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The thread around a [`Core`]: waits for requests until the next tick, in real time.
struct Driver<L: LogStore, T: Transport> {
    core: Core<L, T>,
    rx: Receiver<Request>,
}

/// The state of the Raft loop and everything one iteration does, with no thread and no clock:
/// [`Driver`] runs it on real time, [`crate::sim::SimNode`] step by step in a simulation.
pub(crate) struct Core<L: LogStore, T: Transport> {
    pub(crate) raw: RawNode<RaftStorage<L>>,
    storage: RaftStorage<L>,
    store: Arc<dyn TupleStore>,
    transport: T,
    applied_tx: watch::Sender<Revision>,
    config: RaftConfig,
    membership: Membership,
    waiters: BTreeMap<u64, Waiter>,
    reads: BTreeMap<u64, oneshot::Sender<Result<Revision, RaftError>>>,
    /// Data of a snapshot whose message was stepped and is not installed yet: (index, data).
    staged: Option<(u64, StagedSnapshot)>,
    /// Where staged snapshots are kept durably until the store holds them.
    stage: Arc<dyn SnapshotStage>,
    /// Runs snapshot restores off the loop.
    runner: Runner,
    /// Where a restore job reports its end.
    wake: Sender<Request>,
    /// The snapshot whose store restore is running, if any.
    restoring: Option<Restoring>,
    /// The applied index as raft-rs is told it: the last entry applied to the store, or the
    /// index of a snapshot installed in the log (its conf state is raft-rs's already).
    applied_index: u64,
    next_id: u64,
    was_leader: bool,
    /// The leader known at the last check (0: none).
    leader: u64,
    pub(crate) failed: Option<String>,
}

/// The index of the snapshot a raft-rs snapshot message carries.
pub(crate) fn snapshot_index(message: &[u8]) -> Option<u64> {
    Message::parse_from_bytes(message)
        .ok()
        .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
        .map(|m| m.get_snapshot().get_metadata().index)
}

/// Where this run of the node starts counting proposal ids: random, because entries a previous
/// run proposed (still in the log, or forwarded to the leader) may be applied after a restart,
/// and an id counted again from the same start would hand their revision to a new waiter.
fn random_counter_start() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::collections::hash_map::RandomState::new().hash_one((now, std::process::id()))
}

/// Brings the log in line with the store after a crash between the two: entries the store
/// has applied were committed, and a store that missed a snapshot the log recorded is
/// restored from the stage (or, if its data was never staged, must be given a new one).
fn repair<L: LogStore>(
    storage: &RaftStorage<L>,
    store: &dyn TupleStore,
    stage: &dyn SnapshotStage,
) -> Result<(), String> {
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
                .map_err(|e| format!("restore the staged snapshot at {snap_index}: {e}"))?;
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
            return stage.retain(None);
        }
    }
    if head.0 > hs.commit {
        let last = storage.with(|l| l.last_index())?;
        if head.0 > last {
            return Err(format!(
                "the store is at revision {head} but the Raft log ends at {last}: the data dir is damaged"
            ));
        }
        hs.commit = head.0;
        storage.set_hard_state(&hs)?;
    }
    // Nothing staged is needed any more: a snapshot received before the crash but never
    // installed will be sent again.
    stage.retain(None)
}

impl<L: LogStore, T: Transport> Driver<L, T> {
    fn run(&mut self) {
        let core = &mut self.core;
        let rx = &self.rx;
        let mut next_tick = Instant::now() + core.config.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Request::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(first) => {
                    if !core.serve(first, || rx.try_recv().ok()) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                core.tick();
                next_tick = Instant::now() + core.config.tick;
            }
            core.ready();
        }
        core.stop();
    }
}

impl<L: LogStore, T: Transport> Core<L, T> {
    /// Prepares a node over `log` and `store` (membership, repair after a crash, raft-rs),
    /// with `reporter` given to the transport and proposal ids counting from `first_id`.
    /// Returns the receiver of applied revisions.
    pub(crate) fn new(
        config: RaftConfig,
        log: L,
        store: Arc<dyn TupleStore>,
        transport: T,
        reporter: Reporter,
        first_id: u64,
        runner: Runner,
    ) -> Result<(Self, watch::Receiver<Revision>), RaftError> {
        if config.id == 0 {
            return Err(RaftError::Config("node id must be non-zero".into()));
        }
        let storage = RaftStorage::new(log);
        let membership = match storage.membership().map_err(RaftError::Storage)? {
            Some(m) => m,
            None => {
                let m = if config.join {
                    Membership {
                        conf: ConfState::default(),
                        peers: config.initial_peers.clone(),
                    }
                } else {
                    if !config.initial_peers.contains_key(&config.id) {
                        return Err(RaftError::Config(format!(
                            "node {} is not in the initial cluster {:?}",
                            config.id,
                            config.initial_peers.keys().collect::<Vec<_>>()
                        )));
                    }
                    let voters: Vec<u64> = config.initial_peers.keys().copied().collect();
                    Membership {
                        conf: ConfState::from((voters, vec![])),
                        peers: config.initial_peers.clone(),
                    }
                };
                storage.set_membership(&m).map_err(RaftError::Storage)?;
                m
            }
        };
        let stage = config
            .stage
            .clone()
            .unwrap_or_else(|| Arc::new(MemStage::default()));
        repair(&storage, &*store, &*stage).map_err(RaftError::Storage)?;
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
        let core = Core {
            raw,
            storage,
            store,
            transport,
            applied_tx,
            config,
            membership,
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            staged: None,
            stage,
            runner,
            wake,
            restoring: None,
            applied_index: applied.0,
            next_id: first_id,
            was_leader: false,
            leader: 0,
            failed: None,
        };
        Ok((core, applied_rx))
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        (self.config.id << 40) | (self.next_id & ((1 << 40) - 1))
    }

    /// Handles `first` and the requests `more` yields at once, as one batch: writes are
    /// collected (at most `max_writes_per_entry`) and proposed as one entry, every other
    /// request is handled in turn. False when a shutdown was asked.
    pub(crate) fn serve(
        &mut self,
        first: Request,
        mut more: impl FnMut() -> Option<Request>,
    ) -> bool {
        let mut writes: Vec<(WriteRequest, oneshot::Sender<Result<Revision, RaftError>>)> =
            Vec::new();
        let mut stop = false;
        let mut pending = Some(first);
        while let Some(req) = pending.take() {
            match req {
                Request::Shutdown => stop = true,
                Request::Write(w, tx) => writes.push((w, tx)),
                other => self.handle(other),
            }
            if stop || writes.len() >= self.config.max_writes_per_entry {
                break;
            }
            pending = more();
        }
        self.propose_writes(writes);
        !stop
    }

    /// One tick of raft-rs's logical clock. While a snapshot is being restored the node does
    /// not stand for election (see [`Core::install_snapshot`]): a follower's tick only advances
    /// the election clock (so that its leader lease still expires and it votes for others),
    /// which is all raft-rs's tick does short of campaigning.
    pub(crate) fn tick(&mut self) {
        if self.restoring.is_some() && self.raw.raft.state != StateRole::Leader {
            self.raw.raft.election_elapsed += 1;
        } else {
            self.raw.tick();
        }
    }

    /// Where this node keeps staged snapshots.
    pub(crate) fn stage(&self) -> &Arc<dyn SnapshotStage> {
        &self.stage
    }

    /// The index of the snapshot whose store restore is running, if any.
    pub(crate) fn restoring(&self) -> Option<u64> {
        self.restoring.as_ref().map(|r| r.index)
    }

    /// The end of every iteration: handles the Ready (a storage failure stops the node serving
    /// writes), then answers waiters if the leader changed.
    pub(crate) fn ready(&mut self) {
        if let Err(e) = self.on_ready() {
            tracing::error!(error = %e, "raft loop failed; this node stops serving writes");
            self.failed = Some(e);
            self.fail_all(|| RaftError::Storage("the node's storage failed".into()));
        }
        self.check_leadership();
    }

    /// The loop ended: whoever still waits is told.
    pub(crate) fn stop(&mut self) {
        self.fail_all(|| RaftError::Stopped);
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Schema(text, tx) => {
                if let Some(e) = &self.failed {
                    let _ = tx.send(Err(RaftError::Storage(e.clone())));
                    return;
                }
                let id = self.new_id();
                match codec::encode(&Proposal {
                    id,
                    body: Body::Schema(text),
                }) {
                    Ok(data) => match self.raw.propose(vec![], data) {
                        Ok(()) => {
                            self.waiters.insert(id, Waiter::One(tx));
                        }
                        Err(e) => {
                            let _ = tx.send(Err(not_leader(e)));
                        }
                    },
                    Err(e) => {
                        let _ = tx.send(Err(RaftError::Raft(e)));
                    }
                }
            }
            Request::ReadIndex(tx) => {
                if self.raw.raft.leader_id == 0 {
                    let _ = tx.send(Err(RaftError::Unavailable(
                        "no leader is known to this node (election in progress, or cut off from the majority)".into(),
                    )));
                    return;
                }
                let id = self.new_id();
                self.raw.read_index(id.to_be_bytes().to_vec());
                self.reads.insert(id, tx);
            }
            Request::Step(bytes) => match Message::parse_from_bytes(&bytes) {
                Ok(m) if m.get_msg_type() == MessageType::MsgSnapshot => {
                    tracing::warn!(from = m.from, "snapshot message without its data dropped");
                }
                Ok(m)
                    if m.get_msg_type() == MessageType::MsgTimeoutNow
                        && self.restoring.is_some() =>
                {
                    tracing::info!(
                        from = m.from,
                        "restoring a snapshot: leadership transfer declined"
                    );
                }
                Ok(m) => {
                    if let Err(e) = self.raw.step(m) {
                        tracing::debug!(error = %e, "raft step refused a message");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable raft message dropped"),
            },
            Request::Snapshot(_, _, tx) if self.restoring.is_some() => {
                // The sender's transport reports a failed snapshot; raft-rs retries later.
                let _ = tx.send(Err(RaftError::Unavailable(format!(
                    "this node is still restoring the snapshot at {}",
                    self.restoring.as_ref().map_or(0, |r| r.index)
                ))));
            }
            Request::Snapshot(bytes, data, tx) => {
                let outcome = match Message::parse_from_bytes(&bytes) {
                    Ok(m) if m.get_msg_type() == MessageType::MsgSnapshot => {
                        let index = m.get_snapshot().get_metadata().index;
                        self.staged = Some((index, data));
                        self.raw.step(m).map_err(|e| RaftError::Raft(e.to_string()))
                    }
                    Ok(m) => Err(RaftError::Raft(format!(
                        "expected a snapshot message, got {:?}",
                        m.get_msg_type()
                    ))),
                    Err(e) => Err(RaftError::Raft(format!(
                        "undecodable snapshot message: {e}"
                    ))),
                };
                let _ = tx.send(outcome);
            }
            Request::Change(change, tx) => self.propose_change(change, tx),
            Request::TransferLeader(to, tx) => {
                let outcome = if self.raw.raft.leader_id == 0 {
                    Err(RaftError::Unavailable(
                        "no leader is known to this node".into(),
                    ))
                } else if !self.membership.conf.voters.contains(&to) {
                    Err(RaftError::Config(format!(
                        "node {to} is not a voter of this cluster"
                    )))
                } else {
                    self.raw.transfer_leader(to);
                    Ok(())
                };
                let _ = tx.send(outcome);
            }
            Request::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Request::Report(Report::Unreachable(to)) => self.raw.report_unreachable(to),
            Request::Report(Report::Snapshot(to, ok)) => self.raw.report_snapshot(
                to,
                if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                },
            ),
            Request::Restored(index, outcome) => match &mut self.restoring {
                Some(r) if r.index == index => r.done = Some(outcome),
                _ => tracing::warn!(index, "the end of a restore nobody waits for ignored"),
            },
            Request::Write(..) | Request::Shutdown => unreachable!("handled by the caller"),
        }
    }

    fn propose_change(
        &mut self,
        change: MemberChange,
        tx: oneshot::Sender<Result<Revision, RaftError>>,
    ) {
        let id = self.new_id();
        let (kind, node, addr) = match change {
            MemberChange::AddVoter { id, addr } => (ConfChangeType::AddNode, id, addr),
            MemberChange::AddLearner { id, addr } => (ConfChangeType::AddLearnerNode, id, addr),
            MemberChange::Remove { id } => (ConfChangeType::RemoveNode, id, String::new()),
        };
        if node == 0 {
            let _ = tx.send(Err(RaftError::Config("node id must be non-zero".into())));
            return;
        }
        let context = match bincode::serialize(&(id, addr)) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(RaftError::Raft(e.to_string())));
                return;
            }
        };
        let mut cc = ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = node;
        cc.context = context.into();
        match self.raw.propose_conf_change(vec![], cc) {
            Ok(()) => {
                self.waiters.insert(id, Waiter::One(tx));
            }
            Err(e) => {
                let _ = tx.send(Err(not_leader(e)));
            }
        }
    }

    pub(crate) fn status(&self) -> Status {
        let r = &self.raw.raft;
        let conf = &self.membership.conf;
        let role =
            if !conf.voters.contains(&self.config.id) && !conf.learners.contains(&self.config.id) {
                Role::None
            } else {
                match r.state {
                    StateRole::Leader => Role::Leader,
                    StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
                    StateRole::Follower if conf.learners.contains(&self.config.id) => Role::Learner,
                    StateRole::Follower => Role::Follower,
                }
            };
        let matched = |id: u64| {
            if r.state == StateRole::Leader {
                r.prs().get(id).map(|p| p.matched)
            } else {
                None
            }
        };
        let mut members: Vec<Member> = conf
            .voters
            .iter()
            .map(|&id| (id, false))
            .chain(conf.learners.iter().map(|&id| (id, true)))
            .map(|(id, learner)| Member {
                id,
                addr: self.membership.peers.get(&id).cloned().unwrap_or_default(),
                learner,
                matched: matched(id),
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Status {
            id: self.config.id,
            role,
            leader: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: self.store.head().0,
            members,
        }
    }

    fn propose_writes(
        &mut self,
        writes: Vec<(WriteRequest, oneshot::Sender<Result<Revision, RaftError>>)>,
    ) {
        if writes.is_empty() {
            return;
        }
        if let Some(e) = &self.failed {
            for (_, tx) in writes {
                let _ = tx.send(Err(RaftError::Storage(e.clone())));
            }
            return;
        }
        let id = self.new_id();
        let (reqs, txs): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
        let data = match codec::encode(&Proposal {
            id,
            body: Body::Writes(reqs),
        }) {
            Ok(d) => d,
            Err(e) => {
                for tx in txs {
                    let _ = tx.send(Err(RaftError::Raft(e.clone())));
                }
                return;
            }
        };
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                self.waiters.insert(id, Waiter::Writes(txs));
            }
            Err(e) => {
                let err = not_leader(e);
                for tx in txs {
                    let _ = tx.send(Err(err.clone()));
                }
            }
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
    }

    fn fail_all(&mut self, err: impl Fn() -> RaftError) {
        for (_, w) in std::mem::take(&mut self.waiters) {
            match w {
                Waiter::Writes(txs) => {
                    for tx in txs {
                        let _ = tx.send(Err(err()));
                    }
                }
                Waiter::One(tx) => {
                    let _ = tx.send(Err(err()));
                }
            }
        }
        for (_, tx) in std::mem::take(&mut self.reads) {
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

    /// Installs the snapshot of a Ready: the log at once, then its staged data into the store
    /// off the loop (a restore of millions of relationships takes seconds), through the
    /// [`Runner`]. Until the restore has ended (`finish_restore`), the loop goes on ticking,
    /// stepping, sending, persisting entries and the hard state, but applies nothing: committed
    /// entries wait, in order, and so does the applied revision.
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
    fn install_snapshot(&mut self, snap: &raft::eraftpb::Snapshot) -> Result<(), String> {
        let meta = snap.get_metadata();
        let index = meta.index;
        let data = match self.staged.take() {
            Some((i, data)) if i == index => data,
            _ => return Err(format!("snapshot at {index} arrived without its data")),
        };
        if self.restoring.is_some() {
            // `serve` refuses snapshots while a restore runs: raft-rs cannot hold a second one.
            return Err(format!(
                "snapshot at {index} while another is being restored"
            ));
        }
        let peers = decode_header(&snap.data)?;
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
                .map_err(|e| format!("restore snapshot at {index}: {e}"));
            let _ = wake.send(Request::Restored(index, outcome));
        }));
        Ok(())
    }

    /// Once the restore job has reported: the store holds the snapshot, so its revision is
    /// published and the entries committed meanwhile are applied, in order. A failed restore
    /// fails the node like any storage error.
    fn finish_restore(&mut self) -> Result<(), String> {
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
        tracing::info!(index, deferred = deferred.len(), "snapshot restored");
        self.stage.retain(None)?;
        self.storage.set_applied(index);
        self.storage.set_restoring(false);
        let _ = self.applied_tx.send(Revision(index));
        self.apply(deferred)?;
        self.raw.advance_apply_to(self.applied_index);
        self.maybe_compact()
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.finish_restore()?;
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. Messages a leader may send before persisting.
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        // 2. A snapshot from the leader, its data staged by the transport.
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.install_snapshot(&snap)?;
        }
        // 3. Committed entries.
        self.apply(ready.take_committed_entries())?;
        // 4. Persist new entries and the hard state (synced) before their messages go out.
        if !ready.entries().is_empty() {
            self.storage.append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.storage.set_hard_state(hs)?;
        }
        // 5. Read states answer ReadIndex requests.
        for rs in ready.take_read_states() {
            if let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                if let Some(tx) = self.reads.remove(&u64::from_be_bytes(bytes)) {
                    let _ = tx.send(Ok(Revision(rs.index)));
                }
            }
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
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply_to(self.applied_index);
        self.maybe_compact()?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        if let Some(r) = &mut self.restoring {
            r.deferred.extend(entries);
            return Ok(());
        }
        for entry in entries {
            let index = entry.index;
            if index <= self.store.head().0 {
                self.applied_index = index;
                continue; // applied before a restart
            }
            let mut batch = Batch::default();
            let mut waiter = None;
            let mut change_outcome = None;
            match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.data.is_empty() => {
                    let p = codec::decode(&entry.data)?;
                    waiter = self.waiters.remove(&p.id);
                    match p.body {
                        Body::Writes(w) => batch.writes = w,
                        Body::Schema(s) => batch.schema = Some(s),
                    }
                }
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| format!("decode conf change at {index}: {e}"))?;
                    let (pid, addr): (u64, String) = bincode::deserialize(&cc.context)
                        .map_err(|e| format!("decode conf change context at {index}: {e}"))?;
                    waiter = self.waiters.remove(&pid);
                    change_outcome = Some(self.apply_change(&cc, addr)?);
                }
                EntryType::EntryConfChangeV2 => {
                    return Err(format!(
                        "entry {index} is a joint membership change, which Dhow never proposes"
                    ));
                }
            }
            let outcomes = self
                .store
                .apply(Revision(index), &batch)
                .map_err(|e| format!("apply entry {index}: {e}"))?;
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
            if let Some(outcome) = change_outcome {
                if let Some(Waiter::One(tx)) = waiter.take() {
                    let _ = tx.send(outcome.map(|_| Revision(index)));
                }
            }
            match waiter {
                Some(Waiter::Writes(txs)) => {
                    for (tx, outcome) in txs.into_iter().zip(outcomes) {
                        let _ = tx.send(
                            outcome
                                .map(|()| Revision(index))
                                .map_err(RaftError::Rejected),
                        );
                    }
                }
                Some(Waiter::One(tx)) => {
                    let _ = tx.send(Ok(Revision(index)));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Applies a membership change to raft-rs and persists the new membership. `Ok(Ok(true))`
    /// when a member was added; `Ok(Err(..))` when raft-rs refused the change (the entry still
    /// counts as applied).
    fn apply_change(
        &mut self,
        cc: &ConfChange,
        addr: String,
    ) -> Result<Result<bool, RaftError>, String> {
        let conf = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(e) => {
                tracing::warn!(error = %e, node = cc.node_id, "membership change refused");
                return Ok(Err(RaftError::Config(format!(
                    "membership change refused: {e}"
                ))));
            }
        };
        if self.raw.raft.state == StateRole::Leader && !conf.voters.contains(&self.config.id) {
            // raft-rs keeps a removed leader leading: it sends heartbeats, so nobody else
            // campaigns, and drops every proposal. Step down so that the voters elect a leader.
            tracing::info!("this leader was removed from the voters: stepping down");
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
        let added = cc.get_change_type() != ConfChangeType::RemoveNode;
        if added {
            self.membership.peers.insert(cc.node_id, addr);
        } else {
            self.membership.peers.remove(&cc.node_id);
        }
        self.membership.conf = conf;
        self.storage.set_membership(&self.membership)?;
        self.transport.set_peers(&self.membership.peers);
        tracing::info!(
            node = cc.node_id,
            change = ?cc.get_change_type(),
            voters = ?self.membership.conf.voters,
            learners = ?self.membership.conf.learners,
            "membership changed"
        );
        Ok(Ok(added))
    }

    fn maybe_compact(&mut self) -> Result<(), String> {
        if self.restoring.is_some() {
            return Ok(());
        }
        let applied = self.store.head().0;
        let first = self.storage.with(|l| l.first_index())?;
        if applied > first + 2 * self.config.log_retain {
            let upto = applied - self.config.log_retain;
            let term = self
                .storage
                .with(|l| l.term(upto))?
                .ok_or_else(|| format!("no term for index {upto}"))?;
            self.storage.with(|l| l.compact(upto, term))?;
        }
        Ok(())
    }
}

fn not_leader(e: raft::Error) -> RaftError {
    match e {
        raft::Error::ProposalDropped => {
            RaftError::Unavailable("this node is not the leader (or there is none yet)".into())
        }
        other => RaftError::Raft(other.to_string()),
    }
}
