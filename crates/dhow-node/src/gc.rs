//! The garbage-collection task: forgets MVCC versions and changes older than the GC window.
//!
//! Revisions carry no time, so the task keeps a small in-memory clock: every period it
//! samples `(now, store.head())` (only when the head moved). A sample `(t, H)` proves every
//! revision <= H was applied by time t; once t is older than the window, `store.gc(H)` is
//! safe: H itself stays readable and everything older goes. The clock lives in memory, so
//! after a restart nothing is collected until one full window has passed: a restart can
//! only keep history longer, never shorter.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use dhow_tuples::{Revision, TupleStore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Samples of `(time, head revision)`, oldest first.
#[derive(Debug, Default)]
pub struct RevisionClock {
    samples: VecDeque<(Instant, Revision)>,
}

impl RevisionClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `head` was applied at or before `now`.
    pub fn observe(&mut self, now: Instant, head: Revision) {
        if self.samples.back().is_none_or(|(_, r)| *r < head) {
            self.samples.push_back((now, head));
        }
    }

    /// The newest revision known to have been applied at least `window` before `now`, if
    /// any; drops the samples that can no longer matter.
    pub fn horizon(&mut self, now: Instant, window: Duration) -> Option<Revision> {
        let cutoff = now.checked_sub(window)?;
        let idx = self.samples.iter().rposition(|(t, _)| *t <= cutoff)?;
        self.samples.drain(..idx);
        self.samples.front().map(|(_, r)| *r)
    }

    /// How many samples are kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no sample is kept.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The running GC task; dropping the handle stops it.
#[derive(Debug)]
pub struct GcHandle(JoinHandle<()>);

impl GcHandle {
    /// Stops the task.
    pub fn stop(self) {}
}

impl Drop for GcHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spawns the GC task for `window`, sampling every `window / 16` (between 10 ms and 60 s).
pub fn spawn_gc(store: Arc<dyn TupleStore>, window: Duration) -> GcHandle {
    let period = (window / 16).clamp(Duration::from_millis(10), Duration::from_secs(60));
    spawn_gc_every(store, window, period)
}

/// Spawns the GC task with an explicit sampling period.
pub fn spawn_gc_every(store: Arc<dyn TupleStore>, window: Duration, period: Duration) -> GcHandle {
    GcHandle(tokio::spawn(async move {
        let mut clock = RevisionClock::new();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            clock.observe(now, store.head());
            let Some(h) = clock.horizon(now, window) else {
                continue;
            };
            if h <= store.oldest() {
                continue;
            }
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.gc(h)).await {
                Ok(Ok(())) => {
                    tracing::debug!(before = h.0, "gc: forgot versions older than the window")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "gc failed"),
                Err(e) => tracing::warn!(error = %e, "gc task failed"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{Batch, SharedMemStore};

    #[test]
    fn clock_horizon() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = RevisionClock::new();
        c.observe(t0, Revision(1));
        c.observe(t0 + s, Revision(1));
        c.observe(t0 + 2 * s, Revision(5));
        c.observe(t0 + 3 * s, Revision(9));
        assert_eq!(c.len(), 3);
        assert_eq!(c.horizon(t0 + 3 * s, 10 * s), None);
        assert_eq!(c.horizon(t0 + 12 * s, 10 * s), Some(Revision(5)));
        assert_eq!(c.len(), 2);
        assert_eq!(c.horizon(t0 + 100 * s, 10 * s), Some(Revision(9)));
        assert_eq!(c.len(), 1);
    }

    #[tokio::test]
    async fn collects_after_the_window() {
        let store = Arc::new(SharedMemStore::new());
        for r in 1..=3 {
            store.apply(Revision(r), &Batch::default()).unwrap();
        }
        let h = spawn_gc_every(
            store.clone(),
            Duration::from_millis(50),
            Duration::from_millis(5),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.oldest() < Revision(3) {
            assert!(Instant::now() < deadline, "gc never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h.stop();
    }
}
