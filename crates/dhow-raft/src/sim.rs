//! A Raft node driven step by step, for the deterministic simulation (`tests/sim.rs`): the
//! same [`Core`] the threaded loop runs, with no thread and no clock. The simulation decides
//! when a node handles its pending requests, when it ticks, and when a snapshot restore the
//! node handed off ends. Not a stable API.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use dhow_tuples::{Revision, TupleStore, WriteRequest};
use raft::StateRole;
use tokio::sync::{oneshot, watch};

use crate::core::{Core, Job, Request, Runner};
use crate::restore::snapshot_index;
use crate::transport::Reporter;
use crate::{LogStore, MemberChange, RaftConfig, RaftError, StagedSnapshot, Status, Transport};

/// What a request answers: poll it with `try_recv` after running the node.
pub type Answer<T> = oneshot::Receiver<Result<T, RaftError>>;

/// A Raft node without a thread: requests queue until [`SimNode::run`].
pub struct SimNode<L: LogStore, T: Transport> {
    core: Core<L, T>,
    tx: Sender<Request>,
    rx: Receiver<Request>,
    applied: watch::Receiver<Revision>,
    jitter: u64,
    /// Restores handed off by the core, held until [`SimNode::finish_restore`].
    jobs: Arc<Mutex<Vec<Job>>>,
}

impl<L: LogStore, T: Transport> SimNode<L, T> {
    /// Prepares a node exactly as [`crate::RaftHandle::start`] does (membership, repair, the
    /// reporter given to the transport), without starting a thread. raft-rs draws election
    /// timeouts from a thread-local RNG; a `SimNode` overrides each one with a value derived
    /// from `jitter`, its id, term and role, so that a run replays from its seed; the first
    /// proposal id (random in production) comes from `jitter` too. A snapshot restore the node
    /// hands off is held (the node goes on without it) until [`SimNode::finish_restore`].
    pub fn start(
        config: RaftConfig,
        log: L,
        store: Arc<dyn TupleStore>,
        transport: T,
        jitter: u64,
    ) -> Result<Self, RaftError> {
        let (tx, rx) = mpsc::channel();
        let first_id = splitmix(jitter ^ 0x1D5);
        let jobs: Arc<Mutex<Vec<Job>>> = Arc::default();
        let held = jobs.clone();
        let runner: Runner = Box::new(move |job| {
            held.lock().unwrap_or_else(|p| p.into_inner()).push(job);
        });
        let (core, applied) = Core::new(
            config,
            log,
            store,
            transport,
            Reporter { tx: tx.clone() },
            first_id,
            runner,
            Arc::default(),
        )?;
        let mut node = SimNode {
            core,
            tx,
            rx,
            applied,
            jitter,
            jobs,
        };
        node.fix_election_timeout();
        Ok(node)
    }

    fn submit<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<R, RaftError>>) -> Request,
    ) -> Answer<R> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(make(tx));
        rx
    }

    /// Queues a client write.
    pub fn write(&self, w: WriteRequest) -> Answer<Revision> {
        let w = crate::codec::EncodedWrite::new(&w);
        self.submit(|tx| Request::Write(w, tx))
    }

    /// Queues a schema write.
    pub fn write_schema(&self, text: String) -> Answer<Revision> {
        self.submit(|tx| Request::Schema(text, tx))
    }

    /// Queues a ReadIndex request.
    pub fn read_index(&self) -> Answer<Revision> {
        self.submit(Request::ReadIndex)
    }

    /// Queues a raft-rs message from a peer.
    pub fn step(&self, message: Vec<u8>) {
        let _ = self.tx.send(Request::Step(message));
    }

    /// Keeps a snapshot's data in the node's stage, then queues its message (as
    /// [`crate::RaftHandle::step_snapshot`] does).
    pub fn step_snapshot(&self, message: Vec<u8>, data: StagedSnapshot) -> Answer<()> {
        if let Some(index) = snapshot_index(&message) {
            if let Err(e) = self.core.stage().save(index, &data) {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(RaftError::Storage(e)));
                return rx;
            }
        }
        self.submit(|tx| Request::Snapshot(message, data, tx))
    }

    /// Queues a membership change, forced: the simulation tests what Raft keeps safe, not
    /// the leader's reachable-quorum policy.
    pub fn change_membership(&self, change: MemberChange) -> Answer<Revision> {
        self.submit(|tx| Request::Change(change, true, tx))
    }

    /// Queues a leadership transfer.
    pub fn transfer_leader(&self, to: u64) -> Answer<()> {
        self.submit(|tx| Request::TransferLeader(to, tx))
    }

    /// Runs the loop until nothing is pending, as the thread would: each iteration takes the
    /// pending requests as one batch (at most `max_writes_per_entry` writes), ticks the
    /// logical clock if it is the first iteration and `tick` is set, then handles the Ready
    /// and checks leadership. False once the node was asked to shut down (it stays stopped).
    pub fn run(&mut self, tick: bool) -> bool {
        let mut tick = tick;
        loop {
            let first = self.rx.try_recv().ok();
            if first.is_none() && !tick {
                break;
            }
            if let Some(first) = first {
                let rx = &self.rx;
                if !self.core.serve(first, || rx.try_recv().ok()) {
                    self.core.stop();
                    return false;
                }
            }
            if std::mem::take(&mut tick) {
                self.core.tick();
            }
            self.core.ready();
            self.fix_election_timeout();
        }
        true
    }

    fn fix_election_timeout(&mut self) {
        let r = &mut self.core.raw.raft;
        let role = match r.state {
            StateRole::Follower => 1,
            StateRole::Candidate => 2,
            StateRole::Leader => 3,
            StateRole::PreCandidate => 4,
        };
        let min = r.election_timeout();
        let x = splitmix(self.jitter ^ (r.id << 48) ^ (r.term << 8) ^ role);
        r.set_randomized_election_timeout(min + (x % min as u64) as usize);
    }

    /// What the node knows of the cluster.
    pub fn status(&self) -> Status {
        self.core.status()
    }

    /// The newest applied revision the node published.
    pub fn applied(&self) -> Revision {
        *self.applied.borrow()
    }

    /// The index of the snapshot whose store restore has not ended yet (held, or ended and not
    /// yet seen by the loop), if any.
    pub fn restoring(&self) -> Option<u64> {
        self.core.restoring()
    }

    /// Runs the held snapshot restores now, on this thread; the loop sees their end at its
    /// next [`SimNode::run`]. False if none was held.
    pub fn finish_restore(&mut self) -> bool {
        let jobs = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        let any = !jobs.is_empty();
        for job in jobs {
            job();
        }
        any
    }

    /// What the node counted (no latencies: the simulation's core reads no clock).
    pub fn stats(&self) -> crate::RaftStats {
        self.core.stats.read()
    }

    /// Why the node stopped serving writes, if its storage failed.
    pub fn failed(&self) -> Option<&RaftError> {
        self.core.failed.as_ref()
    }
}

/// The splitmix64 finaliser: a well-mixed function of `x`.
fn splitmix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
