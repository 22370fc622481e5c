//! What the Raft loop counts for the node's metrics, as plain numbers: proposals waiting, the
//! log's size, snapshots sent, received and installed, and the commit and apply latencies in
//! fixed buckets. The loop writes relaxed atomics (no lock, no allocation); [`RaftStats`] is
//! a copy read at any time (`RaftHandle::stats`). Latencies are measured only when the stats
//! were made [`Counters::timed`] (the production thread): the simulation's core reads no
//! clock, and its latencies stay empty.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the latency buckets: 100 µs doubling to about 13 s; a last,
/// unbounded bucket holds the rest.
pub const LATENCY_BOUNDS: [f64; 18] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536, 13.1072,
];

/// A latency histogram over [`LATENCY_BOUNDS`], lock-free.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    /// One count per bound, then the unbounded bucket.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Latency {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn read(&self) -> LatencyHistogram {
        LatencyHistogram {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            count: self.count.load(Relaxed),
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// A latency histogram as read: the count of each bucket of [`LATENCY_BOUNDS`] (not
/// cumulative), then of the unbounded one; the number and the sum of all observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// What the loop counts, shared by the loop (writes) and the handle (reads).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Measure latencies (the production thread); false: read no clock.
    timed: bool,
    pub(crate) proposals_in_flight: AtomicU64,
    pub(crate) log_first: AtomicU64,
    pub(crate) log_last: AtomicU64,
    pub(crate) snapshots_sent: AtomicU64,
    pub(crate) snapshot_send_failures: AtomicU64,
    pub(crate) snapshots_received: AtomicU64,
    pub(crate) snapshots_installed: AtomicU64,
    pub(crate) commit: Latency,
    pub(crate) apply: Latency,
}

impl Counters {
    /// Counters that measure latencies on the real clock.
    pub(crate) fn timed() -> Counters {
        Counters {
            timed: true,
            ..Counters::default()
        }
    }

    /// Now, if latencies are measured.
    pub(crate) fn now(&self) -> Option<Instant> {
        self.timed.then(Instant::now)
    }

    /// Records the time since `since` (nothing when untimed).
    pub(crate) fn since(latency: &Latency, since: Option<Instant>) {
        if let Some(t) = since {
            latency.observe(t.elapsed());
        }
    }

    /// Counts one.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The log's first and last index (the first is one past its compaction point).
    pub(crate) fn set_log(&self, first: u64, last: u64) {
        self.log_first.store(first, Relaxed);
        self.log_last.store(last, Relaxed);
    }

    /// A copy of every number now.
    pub(crate) fn read(&self) -> RaftStats {
        let (first, last) = (self.log_first.load(Relaxed), self.log_last.load(Relaxed));
        RaftStats {
            proposals_in_flight: self.proposals_in_flight.load(Relaxed),
            log_entries: (last + 1).saturating_sub(first.max(1)),
            snapshots_sent: self.snapshots_sent.load(Relaxed),
            snapshot_send_failures: self.snapshot_send_failures.load(Relaxed),
            snapshots_received: self.snapshots_received.load(Relaxed),
            snapshots_installed: self.snapshots_installed.load(Relaxed),
            commit: self.commit.read(),
            apply: self.apply.read(),
        }
    }
}

/// What a node's Raft loop counted, read at one moment (counters since the process started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftStats {
    /// Entries proposed on this node (writes, schemas, membership changes) whose outcome
    /// their callers still wait for.
    pub proposals_in_flight: u64,
    /// Entries in the log (after its last compaction or snapshot), applied or not.
    pub log_entries: u64,
    /// Snapshots streamed in full to a follower (the transport reported success).
    pub snapshots_sent: u64,
    /// Snapshots that could not be streamed to a follower.
    pub snapshot_send_failures: u64,
    /// Snapshots received in full from the leader and stepped into Raft.
    pub snapshots_received: u64,
    /// Snapshots restored into the store.
    pub snapshots_installed: u64,
    /// From a proposal on this node until the node applies its entry, committed (the apply
    /// itself excluded).
    pub commit: LatencyHistogram,
    /// Applying one committed entry to the store (one synced write batch).
    pub apply: LatencyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_into_their_buckets() {
        let l = Latency::default();
        l.observe(Duration::from_micros(50));
        l.observe(Duration::from_micros(100));
        l.observe(Duration::from_millis(3));
        l.observe(Duration::from_secs(60));
        let h = l.read();
        assert_eq!(h.count, 4);
        assert_eq!(h.buckets.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!(h.buckets[0], 2, "50 µs and 100 µs are <= 100 µs");
        assert_eq!(h.buckets[5], 1, "3 ms is in (1.6 ms, 3.2 ms]");
        assert_eq!(
            h.buckets[LATENCY_BOUNDS.len()],
            1,
            "a minute is past every bound"
        );
        assert_eq!(h.buckets.iter().sum::<u64>(), 4);
        assert!((h.sum_seconds - 60.00315).abs() < 1e-9, "{}", h.sum_seconds);
    }

    #[test]
    fn untimed_counters_read_no_clock_and_log_entries_count_from_the_first_index() {
        let c = Counters::default();
        assert!(c.now().is_none());
        Counters::since(&c.commit, c.now());
        assert_eq!(c.read().commit.count, 0);
        assert!(Counters::timed().now().is_some());
        assert_eq!(c.read().log_entries, 0);
        c.set_log(1, 0);
        assert_eq!(c.read().log_entries, 0, "an empty log");
        c.set_log(1, 5);
        assert_eq!(c.read().log_entries, 5);
        c.set_log(101, 150);
        assert_eq!(c.read().log_entries, 50, "compacted up to 100");
    }
}
