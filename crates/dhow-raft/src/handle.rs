//! [`RaftHandle`], a running Raft node as its callers see it: the async API (writes, schema
//! changes, ReadIndex, membership, snapshots received by the transport, status), each call a
//! [`Request`] sent to the loop and answered through a oneshot channel, and the applied
//! revision as a watch channel. Also the two trace hooks through which the server's tracing
//! (which alone knows OpenTelemetry) reaches the loop with plain strings.

use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use dhow_tuples::{Revision, TupleStore, WriteRequest};
use tokio::sync::{oneshot, watch};

use crate::config::RaftConfig;
use crate::core::Request;
use crate::error::{RaftError, StorageError, StorageKind};
use crate::log::LogStore;
use crate::membership::{Leadership, MemberChange, Status};
use crate::restore::snapshot_index;
use crate::snapshot::{MemStage, SnapshotStage, StagedSnapshot};
use crate::stats::{Counters, RaftStats};
use crate::thread;
use crate::transport::Transport;

/// How the Raft code meets the server's traces, set once per process by whoever exports them
/// ([`RaftHandle::set_trace_hooks`]); without them (tracing off) nothing is traced here.
#[derive(Clone, Copy)]
pub(crate) struct TraceHooks {
    /// The W3C `traceparent` of the current span if it is sampled: a write submitted under
    /// it carries it in its entry to every node's apply.
    pub current: fn() -> Option<String>,
    /// Makes `span` a child of the remote `traceparent`.
    pub set_parent: fn(&tracing::Span, &str),
}

static TRACE_HOOKS: OnceLock<TraceHooks> = OnceLock::new();

/// The trace hooks, if tracing is on.
pub(crate) fn trace_hooks() -> Option<&'static TraceHooks> {
    TRACE_HOOKS.get()
}

/// A running Raft node: submit writes and reads, watch the applied revision.
pub struct RaftHandle {
    tx: Sender<Request>,
    applied: watch::Receiver<Revision>,
    store: Arc<dyn TupleStore>,
    thread: Option<JoinHandle<()>>,
    /// What is wrong with the node (`None`: nothing).
    fault: watch::Receiver<Option<String>>,
    /// What the node knows of its leader.
    leadership: watch::Receiver<Leadership>,
    /// One election timeout (the shortest: raft-rs draws each from one to two of them).
    election_timeout: Duration,
    /// Restores snapshots into the store while the Raft thread goes on.
    restorer: Option<JoinHandle<()>>,
    /// Where an incoming snapshot's data is kept before its message is stepped.
    stage: Arc<dyn SnapshotStage>,
    id: u64,
    /// What the loop counts.
    stats: Arc<Counters>,
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
        let id = config.id;
        let election_timeout = config.tick * config.election_tick as u32;
        let threads = thread::spawn(config, log, store.clone(), transport)?;
        Ok(RaftHandle {
            tx: threads.tx,
            applied: threads.applied,
            fault: threads.fault,
            leadership: threads.leadership,
            election_timeout,
            store,
            thread: Some(threads.raft),
            restorer: Some(threads.restorer),
            stage,
            id,
            stats: threads.stats,
        })
    }

    /// Turns tracing on for the writes of this process: `current` gives the W3C
    /// `traceparent` of the current span when it is sampled (a write submitted under it
    /// carries it, in its entry's context, to the leader and to every node's apply),
    /// `set_parent` makes a span a child of such a `traceparent` (the apply span). Set once;
    /// false if hooks were set before.
    pub fn set_trace_hooks(
        current: fn() -> Option<String>,
        set_parent: fn(&tracing::Span, &str),
    ) -> bool {
        TRACE_HOOKS
            .set(TraceHooks {
                current,
                set_parent,
            })
            .is_ok()
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

    /// What is wrong with the node, as it changes: `None` while it applies what is
    /// committed, or why it cannot (a committed entry that does not decode, a failed
    /// storage write), naming the entry.
    pub fn fault(&self) -> watch::Receiver<Option<String>> {
        self.fault.clone()
    }

    /// What the node knows of its leader, as it changes (the loop publishes it at the end of
    /// every iteration): cheap, for readiness.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// One election timeout of this node (ticks times the tick): a follower that hears from
    /// no leader for one to two of them starts an election.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout
    }

    /// What the loop counted so far (proposals waiting, log size, snapshots, commit and
    /// apply latencies): plain numbers, read without asking the loop.
    pub fn stats(&self) -> RaftStats {
        self.stats.read()
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
        let trace = trace_hooks().and_then(|h| (h.current)());
        // Encoded here, on the caller's thread, not on the Raft thread.
        let w = crate::codec::EncodedWrite::new(&w);
        let rx = self.submit(|tx| match trace {
            Some(t) => Request::TracedWrite(w, t, tx),
            None => Request::Write(w, tx),
        });
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
                        .map_err(|e| {
                            StorageError::new(StorageKind::Other, format!("snapshot stage: {e}"))
                        })??;
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

    /// Proposes a membership change; resolves once it is applied here. Unless `force`, the
    /// leader refuses a change after which the voters it can reach would not be a quorum
    /// (adding a voter that has never answered, removing the last healthy ones).
    pub async fn change_membership(
        &self,
        change: MemberChange,
        force: bool,
    ) -> Result<Revision, RaftError> {
        self.submit(|tx| Request::Change(change, force, tx))
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
