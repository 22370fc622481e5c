//! The production driver: a thread that runs a [`Core`] on real time (waiting for requests
//! until the next tick, then `serve`, `tick`, `ready`), a second thread that runs the store
//! restores the core hands off, and the random start of the proposal-id counter. Nothing
//! here decides anything the core does; the simulation replaces this file with `sim.rs`.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use dhow_tuples::{Revision, TupleStore};
use tokio::sync::watch;

use crate::config::RaftConfig;
use crate::core::{Core, Job, Request, Runner};
use crate::log::LogStore;
use crate::membership::Leadership;
use crate::stats::Counters;
use crate::transport::{Reporter, Transport};
use crate::RaftError;

/// The running threads of one node, as [`crate::RaftHandle`] holds them.
pub(crate) struct Threads {
    /// Where requests for the loop go.
    pub tx: Sender<Request>,
    /// Every newly applied revision.
    pub applied: watch::Receiver<Revision>,
    /// What is wrong with the node (`None`: nothing).
    pub fault: watch::Receiver<Option<String>>,
    /// What the node knows of its leader.
    pub leadership: watch::Receiver<Leadership>,
    /// The Raft loop.
    pub raft: JoinHandle<()>,
    /// Restores snapshots into the store while the Raft thread goes on; it ends when the
    /// loop drops the runner (its only sender of jobs).
    pub restorer: JoinHandle<()>,
    /// What the loop counts, latencies measured on the real clock.
    pub stats: Arc<Counters>,
}

/// Prepares a [`Core`] over `log` and `store` and starts its two threads.
pub(crate) fn spawn<L: LogStore, T: Transport>(
    config: RaftConfig,
    log: L,
    store: Arc<dyn TupleStore>,
    transport: T,
) -> Result<Threads, RaftError> {
    let (tx, rx) = mpsc::channel();
    let id = config.id;
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
    let stats = Arc::new(Counters::timed());
    let (core, applied) = Core::new(
        config,
        log,
        store,
        transport,
        Reporter { tx: tx.clone() },
        random_counter_start(),
        runner,
        stats.clone(),
    )?;
    let fault = core.fault();
    let leadership = core.leadership();
    let mut driver = Driver { core, rx };
    let raft = std::thread::Builder::new()
        .name(format!("raft-{id}"))
        .spawn(move || driver.run())
        .map_err(|e| RaftError::Config(format!("cannot start the raft thread: {e}")))?;
    Ok(Threads {
        tx,
        applied,
        fault,
        leadership,
        raft,
        restorer,
        stats,
    })
}

/// The thread around a [`Core`]: waits for requests until the next tick, in real time.
struct Driver<L: LogStore, T: Transport> {
    core: Core<L, T>,
    rx: Receiver<Request>,
}

impl<L: LogStore, T: Transport> Driver<L, T> {
    fn run(&mut self) {
        let core = &mut self.core;
        let rx = &self.rx;
        let tick = core.config().tick;
        let mut next_tick = Instant::now() + tick;
        core.overlap_sync();
        // A sole voter elected itself when the core was made: its first entry is committed
        // now, not at the first request or tick.
        core.ready();
        loop {
            // Committed entries pending: the next `ready` applies them, beside the sync of
            // whatever came meanwhile, so the loop does not sleep first.
            let wait = if core.has_pending() {
                std::time::Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
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
                next_tick = Instant::now() + tick;
            }
            core.ready();
        }
        core.stop();
    }
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
