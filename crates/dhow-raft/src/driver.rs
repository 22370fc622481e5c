//! The Raft loop: one thread owns the `RawNode`, ticks it, batches client writes into
//! entries, and handles each Ready in raft-rs's documented order (send messages, apply a
//! snapshot, apply committed entries, persist entries and hard state, send persisted
//! messages, advance, apply what the light ready commits). Proposals are answered by the
//! proposal id carried in the entry, never by queue position.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dhow_tuples::{Batch, Revision, TupleStore, WriteRequest};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use tokio::sync::{oneshot, watch};

use crate::codec::{self, Body, Proposal};
use crate::log::{LogStore, RaftStorage};
use crate::RaftError;

/// Node-to-node delivery of raft-rs messages, as encoded bytes.
pub trait Transport: Send + 'static {
    fn send(&self, to: u64, message: Vec<u8>);
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
    /// The voters of a new cluster (used only when the log is empty).
    pub initial_voters: Vec<u64>,
    /// How often the loop ticks raft-rs.
    pub tick: Duration,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// At most this many client writes go into one entry.
    pub max_writes_per_entry: usize,
    /// Applied entries kept in the log behind the applied index before compaction.
    pub log_retain: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            id: 1,
            initial_voters: vec![1],
            tick: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 3,
            max_writes_per_entry: 1000,
            log_retain: 50_000,
        }
    }
}

pub(crate) enum Request {
    Write(WriteRequest, oneshot::Sender<Result<Revision, RaftError>>),
    Schema(String, oneshot::Sender<Result<Revision, RaftError>>),
    ReadIndex(oneshot::Sender<Result<Revision, RaftError>>),
    Step(Vec<u8>),
    Shutdown,
}

enum Waiter {
    Writes(Vec<oneshot::Sender<Result<Revision, RaftError>>>),
    Schema(oneshot::Sender<Result<Revision, RaftError>>),
}

/// A running Raft node: submit writes and reads, watch the applied revision.
pub struct RaftHandle {
    tx: Sender<Request>,
    applied: watch::Receiver<Revision>,
    store: Arc<dyn TupleStore>,
    thread: Option<JoinHandle<()>>,
    id: u64,
}

impl RaftHandle {
    /// Starts the loop over `log` (the Raft log) and `store` (the state machine).
    pub fn start<L: LogStore, T: Transport>(
        config: RaftConfig,
        log: L,
        store: Arc<dyn TupleStore>,
        transport: T,
    ) -> Result<RaftHandle, RaftError> {
        if config.id == 0 {
            return Err(RaftError::Config("node id must be non-zero".into()));
        }
        let storage = RaftStorage::new(log);
        if storage.conf_state().map_err(RaftError::Storage)?.is_none() {
            if config.initial_voters.is_empty() {
                return Err(RaftError::Config(
                    "a new cluster needs at least one voter".into(),
                ));
            }
            let cs = ConfState::from((config.initial_voters.clone(), vec![]));
            storage.set_conf_state(&cs).map_err(RaftError::Storage)?;
        }
        let applied = store.head();
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
        let voters = storage
            .conf_state()
            .map_err(RaftError::Storage)?
            .map(|c| c.voters)
            .unwrap_or_default();
        if voters == [config.id] {
            raw.campaign().map_err(|e| RaftError::Raft(e.to_string()))?;
        }
        let (tx, rx) = mpsc::channel();
        let (applied_tx, applied_rx) = watch::channel(applied);
        let id = config.id;
        let mut driver = Driver {
            raw,
            storage,
            store: store.clone(),
            transport,
            rx,
            applied_tx,
            config,
            waiters: HashMap::new(),
            reads: HashMap::new(),
            next_id: 1,
            was_leader: false,
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || driver.run())
            .map_err(|e| RaftError::Config(format!("cannot start the raft thread: {e}")))?;
        Ok(RaftHandle {
            tx,
            applied: applied_rx,
            store,
            thread: Some(thread),
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
        self.submit(|tx| Request::Write(w, tx))
            .await
            .unwrap_or(Err(RaftError::Stopped))
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

    /// Stops the loop and waits for it.
    pub fn shutdown(&mut self) {
        let _ = self.tx.send(Request::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RaftHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Driver<L: LogStore, T: Transport> {
    raw: RawNode<RaftStorage<L>>,
    storage: RaftStorage<L>,
    store: Arc<dyn TupleStore>,
    transport: T,
    rx: Receiver<Request>,
    applied_tx: watch::Sender<Revision>,
    config: RaftConfig,
    waiters: HashMap<u64, Waiter>,
    reads: HashMap<u64, oneshot::Sender<Result<Revision, RaftError>>>,
    next_id: u64,
    was_leader: bool,
    failed: Option<String>,
}

impl<L: LogStore, T: Transport> Driver<L, T> {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        (self.config.id << 40) | (self.next_id & ((1 << 40) - 1))
    }

    fn run(&mut self) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut writes: Vec<(WriteRequest, oneshot::Sender<Result<Revision, RaftError>>)> =
                Vec::new();
            match self.rx.recv_timeout(wait) {
                Ok(Request::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(first) => {
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
                        pending = self.rx.try_recv().ok();
                    }
                    self.propose_writes(writes);
                    if stop {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick = Instant::now() + self.config.tick;
            }
            if let Err(e) = self.on_ready() {
                tracing::error!(error = %e, "raft loop failed; this node stops serving writes");
                self.failed = Some(e);
                self.fail_all(|| RaftError::Storage("the node's storage failed".into()));
            }
            self.check_leadership();
        }
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
                            self.waiters.insert(id, Waiter::Schema(tx));
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
                let id = self.new_id();
                self.raw.read_index(id.to_be_bytes().to_vec());
                self.reads.insert(id, tx);
            }
            Request::Step(bytes) => match Message::parse_from_bytes(&bytes) {
                Ok(m) => {
                    if let Err(e) = self.raw.step(m) {
                        tracing::debug!(error = %e, "raft step refused a message");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable raft message dropped"),
            },
            Request::Write(..) | Request::Shutdown => unreachable!("handled by the caller"),
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
        if self.was_leader && !leader {
            // Entries proposed here may still commit under the next leader, or not: the
            // outcome is unknown, and the callers are told exactly that.
            self.fail_all(|| {
                RaftError::Unavailable("leadership changed before the write committed; it may or may not have been applied".into())
            });
        }
        self.was_leader = leader;
    }

    fn fail_all(&mut self, err: impl Fn() -> RaftError) {
        for (_, w) in self.waiters.drain() {
            match w {
                Waiter::Writes(txs) => {
                    for tx in txs {
                        let _ = tx.send(Err(err()));
                    }
                }
                Waiter::Schema(tx) => {
                    let _ = tx.send(Err(err()));
                }
            }
        }
        for (_, tx) in self.reads.drain() {
            let _ = tx.send(Err(err()));
        }
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            match m.write_to_bytes() {
                Ok(bytes) => self.transport.send(m.to, bytes),
                Err(e) => tracing::error!(error = %e, "cannot encode a raft message"),
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if self.failed.is_some() || !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. Messages a leader may send before persisting.
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        // 2. A snapshot from the leader (installed with the cluster's snapshot transfer).
        if !ready.snapshot().is_empty() {
            return Err("received a raft snapshot, which this node cannot install yet".into());
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
        // 7. Advance, then what the light ready carries.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        for entry in entries {
            let index = entry.index;
            if index <= self.store.head().0 {
                continue; // applied before a restart
            }
            let mut batch = Batch::default();
            let mut waiter = None;
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
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    return Err("membership changes arrive with the cluster issue".into());
                }
            }
            let outcomes = self
                .store
                .apply(Revision(index), &batch)
                .map_err(|e| format!("apply entry {index}: {e}"))?;
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
                Some(Waiter::Schema(tx)) => {
                    let _ = tx.send(Ok(Revision(index)));
                }
                None => {}
            }
            let _ = self.applied_tx.send(Revision(index));
        }
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), String> {
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
