//! Prometheus metrics of a node (`prometheus-client`, OpenMetrics text), served over HTTP on a
//! port of their own (`metrics_addr`; off unless set) by a small HTTP/1.1 server: `GET
//! /metrics` answers the registry, anything else 404.
//!
//! One registry per process ([`global`]): the call log counts every call
//! (`dhow_grpc_requests_total`, `dhow_grpc_request_duration_seconds`), the permission service
//! every Check answer (`dhow_checks_total`) and the reader calls of each Check
//! ([`CountingReader`]), consistency resolution its waits, the readiness task the health it
//! reports (`dhow_health_serving`). The node's gauges (leadership, term, applied revision) are
//! read from the [`Node`] at each scrape, and so are the plain numbers its lower crates count
//! ([`Node::stats`]: the Raft loop's proposals, log, snapshots and commit and apply latencies,
//! RocksDB's sizes and stalls, the peer links' errors), copied into their metrics; a task
//! watching the node's leadership counts leader changes. Only this crate knows the metrics
//! crate: engine, storage and Raft stay free of it. Every metric is listed with its meaning
//! and an alert in docs/operations.md ("Metrics"); tests/tests/metrics.rs reads that table.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use dhow_node::{LatencyHistogram, Node, NodeStats, Role, LATENCY_BOUNDS};
use dhow_tuples::{ObjectRef, Relationship, RelationshipFilter, Revision, SnapshotReader, Subject};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The labels of a metric: name and value pairs.
type Labels = Vec<(&'static str, String)>;

/// Every method path a `method` label may name: the rpcs of dhow.v1 (from the descriptor set
/// the server reflects), gRPC health and reflection. Any other path, whatever its status
/// (an unauthenticated caller's made-up path is refused before routing), is `unknown`: no
/// client can grow the label set.
static KNOWN_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut known: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(dhow_proto::FILE_DESCRIPTOR_SET) {
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    known.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    known
});

/// The `method` label of a call's path: the path if it is a method the server has, else
/// `unknown`.
fn method_label(path: &str) -> &'static str {
    match KNOWN_METHODS.get(path) {
        Some(known) => known.as_str(),
        None => "unknown",
    }
}

/// The counter and the duration histogram of one method and status code.
type CallHandles = (Counter, Histogram);

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of the process, registered in one registry.
pub struct Metrics {
    registry: Registry,
    grpc_requests: Family<Labels, Counter>,
    grpc_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// The handles of `grpc_requests` and `grpc_duration` by method label and code, made on
    /// a call's first use: counting a call then allocates nothing and hashes two pointers'
    /// worth of text (the label set is bounded: known methods times codes).
    call_handles: std::sync::RwLock<HashMap<(&'static str, &'static str), CallHandles>>,
    /// `dhow_checks_total` by result, made once: counting an answer allocates nothing.
    checks: [Counter; 3],
    health_serving: Gauge,
    raft_is_leader: Gauge,
    raft_term: Gauge,
    raft_leader_id: Gauge,
    raft_commit_index: Gauge,
    applied_revision: Gauge,
    leader_changes: Counter,
    scrape_errors: Counter,
    reader_calls: Histogram,
    /// By [`Wait`]: made once, so that recording a wait allocates nothing.
    consistency_waits: [Histogram; 2],
    consistency_timeouts: [Counter; 2],
    proposals_in_flight: Gauge,
    raft_log_entries: Gauge,
    commit_latency: CopiedHistogram,
    apply_latency: CopiedHistogram,
    snapshots_sent: Counter,
    snapshot_send_failures: Counter,
    snapshots_received: Counter,
    snapshots_installed: Counter,
    rocksdb_sst_bytes: Family<Labels, Gauge>,
    rocksdb_memtable_bytes: Gauge,
    rocksdb_pending_compaction_bytes: Gauge,
    rocksdb_write_stopped: Gauge,
    rocksdb_delayed_write_rate: Gauge,
    check_cache_hits: Counter,
    check_cache_misses: Counter,
    check_cache_bytes: Gauge,
    /// The check cache whose counters are copied at each scrape (the server's, once set).
    check_cache: std::sync::Mutex<Option<Arc<crate::checkcache::CheckCache>>>,
    peer_errors: Family<Labels, Counter>,
    peer_reconnects: Family<Labels, Counter>,
    peer_dropped: Family<Labels, Counter>,
}

/// What a request waited for before it was evaluated (see `consistency.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// This node to apply a revision (a token's, or a ReadIndex's).
    Revision = 0,
    /// A ReadIndex from the leader (`fully_consistent`).
    ReadIndex = 1,
}

impl Wait {
    const ALL: [Wait; 2] = [Wait::Revision, Wait::ReadIndex];

    /// The `wait` label.
    fn label(self) -> &'static str {
        match self {
            Wait::Revision => "revision",
            Wait::ReadIndex => "read_index",
        }
    }
}

/// A histogram measured by the node (the Raft loop's own lock-free buckets over
/// [`LATENCY_BOUNDS`]), copied in at each scrape.
#[derive(Debug, Clone, Default)]
struct CopiedHistogram(Arc<Mutex<LatencyHistogram>>);

impl CopiedHistogram {
    fn set(&self, h: &LatencyHistogram) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = h.clone();
    }
}

impl EncodeMetric for CopiedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let count = |i: usize| h.buckets.get(i).copied().unwrap_or(0);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .enumerate()
            .map(|(i, bound)| (*bound, count(i)))
            .collect();
        buckets.push((f64::MAX, count(LATENCY_BOUNDS.len())));
        encoder.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A reader that counts its calls: the reader calls of one Check (`dhow_check_reader_calls`).
/// A `Cell`: one evaluation runs on one thread, and counting costs an add.
pub struct CountingReader<R> {
    inner: R,
    calls: Cell<u64>,
}

impl<R: SnapshotReader> CountingReader<R> {
    pub fn new(inner: R) -> Self {
        CountingReader {
            inner,
            calls: Cell::new(0),
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    fn count(&self) {
        self.calls.set(self.calls.get() + 1);
    }
}

impl<R: SnapshotReader> SnapshotReader for CountingReader<R> {
    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        self.count();
        self.inner.by_resource(resource, relation)
    }

    fn by_resource_of_type(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        self.count();
        self.inner
            .by_resource_of_type(resource, relation, subject_type)
    }

    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, dhow_tuples::Error> {
        self.count();
        self.inner.find(resource, relation, subject)
    }

    fn by_subject_object(
        &self,
        subject: &ObjectRef,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        self.count();
        self.inner.by_subject_object(subject)
    }

    fn by_subject_keys(
        &self,
        subject: &ObjectRef,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        self.count();
        self.inner.by_subject_keys(subject)
    }

    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        self.count();
        self.inner.read(filter, after, limit)
    }
}

fn duration_histogram() -> Histogram {
    // 100µs to about 13s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let grpc_requests = Family::<Labels, Counter>::default();
        registry.register(
            "dhow_grpc_requests",
            "gRPC calls ended, by method and status code (OK included)",
            grpc_requests.clone(),
        );
        let grpc_duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "dhow_grpc_request_duration_seconds",
            "Time from a gRPC call's arrival to its status (the end of a stream), by method",
            grpc_duration.clone(),
        );
        let family = Family::<Labels, Counter>::default();
        // Each result from 0, so that a rate exists before the first answer of its kind.
        let checks = ["allowed", "denied", "conditional"].map(|result| {
            family
                .get_or_create(&vec![("result", result.to_string())])
                .clone()
        });
        registry.register(
            "dhow_checks",
            "Check answers (Check and each CheckBulk item), by result: allowed, denied, conditional",
            family,
        );
        let health_serving = Gauge::default();
        registry.register(
            "dhow_health_serving",
            "1 while the node reports SERVING on gRPC health (readiness), else 0",
            health_serving.clone(),
        );
        let raft_is_leader = Gauge::default();
        registry.register(
            "dhow_raft_is_leader",
            "1 if this node is the Raft leader, else 0",
            raft_is_leader.clone(),
        );
        let raft_term = Gauge::default();
        registry.register(
            "dhow_raft_term",
            "The Raft term this node is in",
            raft_term.clone(),
        );
        let raft_leader_id = Gauge::default();
        registry.register(
            "dhow_raft_leader_id",
            "The id of the leader this node knows (0: none)",
            raft_leader_id.clone(),
        );
        let raft_commit_index = Gauge::default();
        registry.register(
            "dhow_raft_commit_index",
            "The Raft log index this node knows committed",
            raft_commit_index.clone(),
        );
        let applied_revision = Gauge::default();
        registry.register(
            "dhow_applied_revision",
            "The last revision this node applied to its store",
            applied_revision.clone(),
        );
        let leader_changes = Counter::default();
        registry.register(
            "dhow_raft_leader_changes",
            "Times this node learned of a new leader (the first one included)",
            leader_changes.clone(),
        );
        let scrape_errors = Counter::default();
        registry.register(
            "dhow_metrics_node_status_errors",
            "Scrapes whose Raft status (term, role, commit) the node did not give in time",
            scrape_errors.clone(),
        );
        // 1 to 131072 reader calls (the default dispatch budget is 1,000,000).
        let reader_calls = Histogram::new(exponential_buckets(1.0, 2.0, 18));
        registry.register(
            "dhow_check_reader_calls",
            "Reads of the store (reader calls) one Check made, answered or not",
            reader_calls.clone(),
        );
        let waits = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let consistency_waits = Wait::ALL.map(|w| {
            waits
                .get_or_create(&vec![("wait", w.label().to_string())])
                .clone()
        });
        registry.register(
            "dhow_consistency_wait_duration_seconds",
            "Waits of a request before evaluation, by wait: revision (this node to apply a \
             token's or ReadIndex's revision; only when it had not yet), read_index (a \
             fully_consistent request's ReadIndex from the leader); timeouts included",
            waits,
        );
        let timeouts = Family::<Labels, Counter>::default();
        let consistency_timeouts = Wait::ALL.map(|w| {
            timeouts
                .get_or_create(&vec![("wait", w.label().to_string())])
                .clone()
        });
        registry.register(
            "dhow_consistency_timeouts",
            "Consistency waits that timed out (the request failed UNAVAILABLE), by wait",
            timeouts,
        );
        let proposals_in_flight = Gauge::default();
        registry.register(
            "dhow_raft_proposals_in_flight",
            "Entries proposed on this node (writes, schemas, membership changes) not yet applied here",
            proposals_in_flight.clone(),
        );
        let raft_log_entries = Gauge::default();
        registry.register(
            "dhow_raft_log_entries",
            "Entries in this node's Raft log since its last compaction or snapshot",
            raft_log_entries.clone(),
        );
        let commit_latency = CopiedHistogram::default();
        registry.register(
            "dhow_raft_commit_duration_seconds",
            "From a proposal on this node until it applies the entry, committed (the apply excluded)",
            commit_latency.clone(),
        );
        let apply_latency = CopiedHistogram::default();
        registry.register(
            "dhow_raft_apply_duration_seconds",
            "Applying one committed entry to the store (one synced write batch)",
            apply_latency.clone(),
        );
        let snapshots_sent = Counter::default();
        registry.register(
            "dhow_raft_snapshots_sent",
            "Snapshots this node streamed in full to a follower",
            snapshots_sent.clone(),
        );
        let snapshot_send_failures = Counter::default();
        registry.register(
            "dhow_raft_snapshot_send_failures",
            "Snapshots this node failed to stream to a follower",
            snapshot_send_failures.clone(),
        );
        let snapshots_received = Counter::default();
        registry.register(
            "dhow_raft_snapshots_received",
            "Snapshots this node received in full from the leader",
            snapshots_received.clone(),
        );
        let snapshots_installed = Counter::default();
        registry.register(
            "dhow_raft_snapshots_installed",
            "Snapshots restored into this node's store",
            snapshots_installed.clone(),
        );
        let rocksdb_sst_bytes = Family::<Labels, Gauge>::default();
        registry.register(
            "dhow_rocksdb_sst_bytes",
            "Size of the RocksDB SST files, by column family (cf)",
            rocksdb_sst_bytes.clone(),
        );
        let rocksdb_memtable_bytes = Gauge::default();
        registry.register(
            "dhow_rocksdb_memtable_bytes",
            "Size of RocksDB's memtables (written, not yet flushed), all column families",
            rocksdb_memtable_bytes.clone(),
        );
        let rocksdb_pending_compaction_bytes = Gauge::default();
        registry.register(
            "dhow_rocksdb_pending_compaction_bytes",
            "Bytes RocksDB estimates compaction must still rewrite, all column families",
            rocksdb_pending_compaction_bytes.clone(),
        );
        let rocksdb_write_stopped = Gauge::default();
        registry.register(
            "dhow_rocksdb_write_stopped",
            "1 while RocksDB stops writes (a write stall), else 0",
            rocksdb_write_stopped.clone(),
        );
        let rocksdb_delayed_write_rate = Gauge::default();
        registry.register(
            "dhow_rocksdb_delayed_write_rate_bytes_per_second",
            "The rate RocksDB slows writes to while it delays them, else 0",
            rocksdb_delayed_write_rate.clone(),
        );
        let check_cache_hits = Counter::default();
        registry.register(
            "dhow_check_cache_hits",
            "Sub-problems of checks answered from the check cache",
            check_cache_hits.clone(),
        );
        let check_cache_misses = Counter::default();
        registry.register(
            "dhow_check_cache_misses",
            "Sub-problems of checks looked up in the check cache and evaluated",
            check_cache_misses.clone(),
        );
        let check_cache_bytes = Gauge::default();
        registry.register(
            "dhow_check_cache_bytes",
            "Bytes the check cache holds (roughly; at most check_cache_bytes)",
            check_cache_bytes.clone(),
        );
        let peer_errors = Family::<Labels, Counter>::default();
        registry.register(
            "dhow_peer_send_errors",
            "Batches of Raft messages to a peer that could not be delivered, by peer (node id)",
            peer_errors.clone(),
        );
        let peer_reconnects = Family::<Labels, Counter>::default();
        registry.register(
            "dhow_peer_reconnects",
            "Deliveries to a peer that succeeded again after failures, by peer (node id)",
            peer_reconnects.clone(),
        );
        let peer_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "dhow_peer_messages_dropped",
            "Raft messages dropped because the queue to a peer was full, by peer (node id)",
            peer_dropped.clone(),
        );
        Metrics {
            registry,
            grpc_requests,
            grpc_duration,
            call_handles: std::sync::RwLock::new(HashMap::new()),
            checks,
            health_serving,
            raft_is_leader,
            raft_term,
            raft_leader_id,
            raft_commit_index,
            applied_revision,
            leader_changes,
            scrape_errors,
            reader_calls,
            consistency_waits,
            consistency_timeouts,
            proposals_in_flight,
            raft_log_entries,
            commit_latency,
            apply_latency,
            snapshots_sent,
            snapshot_send_failures,
            snapshots_received,
            snapshots_installed,
            rocksdb_sst_bytes,
            rocksdb_memtable_bytes,
            rocksdb_pending_compaction_bytes,
            rocksdb_write_stopped,
            rocksdb_delayed_write_rate,
            check_cache_hits,
            check_cache_misses,
            check_cache_bytes,
            check_cache: std::sync::Mutex::new(None),
            peer_errors,
            peer_reconnects,
            peer_dropped,
        }
    }

    /// Records the reader calls of one Check.
    pub fn reader_calls(&self, calls: u64) {
        self.reader_calls.observe(calls as f64);
    }

    /// Records a consistency wait that took `elapsed` (and whether it timed out).
    pub fn consistency_wait(&self, wait: Wait, elapsed: Duration, timed_out: bool) {
        self.consistency_waits[wait as usize].observe(elapsed.as_secs_f64());
        if timed_out {
            self.consistency_timeouts[wait as usize].inc();
        }
    }

    /// Copies what the node counted into the metrics.
    fn set_stats(&self, s: &NodeStats) {
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        let counter = |c: &Counter, v: u64| {
            c.inner().store(v, Relaxed);
        };
        let r = &s.raft;
        gauge(&self.proposals_in_flight, r.proposals_in_flight);
        gauge(&self.raft_log_entries, r.log_entries);
        self.commit_latency.set(&r.commit);
        self.apply_latency.set(&r.apply);
        counter(&self.snapshots_sent, r.snapshots_sent);
        counter(&self.snapshot_send_failures, r.snapshot_send_failures);
        counter(&self.snapshots_received, r.snapshots_received);
        counter(&self.snapshots_installed, r.snapshots_installed);
        let st = &s.storage;
        for (cf, bytes) in &st.sst_bytes {
            let g = self
                .rocksdb_sst_bytes
                .get_or_create(&vec![("cf", (*cf).to_string())]);
            gauge(&g, *bytes);
        }
        gauge(&self.rocksdb_memtable_bytes, st.memtable_bytes);
        gauge(
            &self.rocksdb_pending_compaction_bytes,
            st.pending_compaction_bytes,
        );
        gauge(&self.rocksdb_write_stopped, u64::from(st.write_stopped));
        gauge(&self.rocksdb_delayed_write_rate, st.delayed_write_rate);
        for p in &s.peers {
            let labels = vec![("peer", p.peer.to_string())];
            counter(&self.peer_errors.get_or_create(&labels), p.errors);
            counter(&self.peer_reconnects.get_or_create(&labels), p.reconnects);
            counter(&self.peer_dropped.get_or_create(&labels), p.dropped);
        }
    }

    /// Counts a call that ended with `code` after `elapsed`. A path the server does not have
    /// is counted as `unknown` ([`method_label`]): a client cannot grow the label set.
    pub fn grpc_call(&self, method: &str, code: &'static str, elapsed: Duration) {
        let method = method_label(method);
        let known = self
            .call_handles
            .read()
            .ok()
            .and_then(|h| h.get(&(method, code)).cloned());
        let (count, duration) = match known {
            Some(h) => h,
            None => {
                let h: CallHandles = (
                    self.grpc_requests
                        .get_or_create(&vec![
                            ("method", method.to_string()),
                            ("code", code.to_string()),
                        ])
                        .clone(),
                    self.grpc_duration
                        .get_or_create(&vec![("method", method.to_string())])
                        .clone(),
                );
                if let Ok(mut handles) = self.call_handles.write() {
                    handles.insert((method, code), h.clone());
                }
                h
            }
        };
        count.inc();
        duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a Check answer.
    pub fn check(&self, p: &dhow_engine::Permissionship) {
        let i = match p {
            dhow_engine::Permissionship::Allowed => 0,
            dhow_engine::Permissionship::Denied => 1,
            dhow_engine::Permissionship::Conditional { .. } => 2,
        };
        self.checks[i].inc();
    }

    /// Sets the readiness gauge.
    pub fn set_serving(&self, serving: bool) {
        self.health_serving.set(i64::from(serving));
    }

    /// Copies the counters of `cache` into the metrics at each scrape from now on.
    pub fn set_check_cache(&self, cache: Arc<crate::checkcache::CheckCache>) {
        if let Ok(mut c) = self.check_cache.lock() {
            *c = Some(cache);
        }
    }

    /// Reads the node's gauges now.
    async fn refresh<N: Node>(&self, node: &N) {
        self.applied_revision.set(node.applied().0 as i64);
        self.set_stats(&node.stats());
        let cache = self.check_cache.lock().ok().and_then(|c| c.clone());
        if let Some(c) = cache {
            self.check_cache_hits.inner().store(c.hits(), Relaxed);
            self.check_cache_misses.inner().store(c.misses(), Relaxed);
            self.check_cache_bytes
                .set(i64::try_from(c.bytes()).unwrap_or(i64::MAX));
        }
        let known = node.leadership().borrow().leader;
        match tokio::time::timeout(Duration::from_secs(1), node.cluster_status()).await {
            Ok(Ok(s)) => {
                self.raft_term.set(s.term as i64);
                self.raft_leader_id.set(s.leader as i64);
                self.raft_commit_index.set(s.commit as i64);
                self.raft_is_leader
                    .set(i64::from(s.role == Role::Leader && s.leader == s.id));
            }
            _ => {
                self.scrape_errors.inc();
                self.raft_leader_id.set(known as i64);
                self.raft_is_leader.set(0);
            }
        }
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Scrapes served at once on the metrics port.
const MAX_SCRAPES: usize = 16;

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Serves `GET /metrics` on `listener` (and counts leader changes) until the task is
/// dropped or aborted.
pub async fn serve<N: Node>(node: Arc<N>, listener: TcpListener) {
    tokio::spawn(count_leader_changes(node.leadership()));
    // At most this many scrapes at once (each at most 10 s): past it, new connections wait
    // in the kernel's backlog, so a client cannot spend the node's descriptors here.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(&*node, stream)).await;
            drop(permit);
        });
    }
}

/// Counts each new leader the node learns of.
async fn count_leader_changes(mut leadership: tokio::sync::watch::Receiver<dhow_node::Leadership>) {
    let mut last = 0;
    loop {
        let leader = leadership.borrow_and_update().leader;
        if leader != 0 && leader != last {
            global().leader_changes.inc();
        }
        last = leader;
        if leadership.changed().await.is_err() {
            return;
        }
    }
}

/// Answers one HTTP/1.x request (the connection closes after it).
async fn answer<N: Node>(node: &N, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let m = global();
            m.refresh(node).await;
            respond(&mut stream, "200 OK", CONTENT_TYPE, &m.encode()).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_encodes() {
        let m = global();
        m.grpc_call(
            "/dhow.v1.PermissionService/Check",
            "OK",
            Duration::from_millis(3),
        );
        m.grpc_call("/x.Y/Z", "UNIMPLEMENTED", Duration::from_millis(1));
        // Refused before routing (no credential): a made-up path must not become a label.
        m.grpc_call(
            "/dhow.v1.PermissionService/Made_Up_1",
            "UNAUTHENTICATED",
            Duration::from_millis(1),
        );
        m.check(&dhow_engine::Permissionship::Allowed);
        let text = m.encode();
        for name in [
            "dhow_grpc_requests_total",
            "dhow_grpc_request_duration_seconds_bucket",
            "dhow_checks_total",
            "dhow_health_serving",
            "dhow_raft_is_leader",
            "dhow_raft_term",
            "dhow_raft_leader_id",
            "dhow_raft_commit_index",
            "dhow_applied_revision",
            "dhow_raft_leader_changes_total",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(text.contains("method=\"unknown\""), "{text}");
        assert!(!text.contains("/x.Y/Z"), "{text}");
        assert!(!text.contains("Made_Up_1"), "{text}");
        let allowed: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("dhow_checks_total{result=\"allowed\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no allowed count in\n{text}"));
        assert!(allowed >= 1, "{text}");
        assert_eq!(
            method_label("/dhow.v1.RelationshipService/Write"),
            "/dhow.v1.RelationshipService/Write"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert!(text.contains("# HELP dhow_checks "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn what_the_node_counted_is_copied_into_the_metrics() {
        let m = Metrics::new();
        let mut buckets = vec![0; LATENCY_BOUNDS.len() + 1];
        buckets[0] = 1;
        buckets[LATENCY_BOUNDS.len()] = 1;
        let stats = NodeStats {
            raft: dhow_node::RaftStats {
                proposals_in_flight: 2,
                log_entries: 7,
                snapshots_sent: 3,
                commit: LatencyHistogram {
                    buckets,
                    count: 2,
                    sum_seconds: 20.5,
                },
                ..Default::default()
            },
            storage: dhow_node::StorageStats {
                sst_bytes: vec![("tuples", 4096), ("raft_log", 512)],
                write_stopped: true,
                ..Default::default()
            },
            peers: vec![dhow_node::PeerLinkStats {
                peer: 2,
                errors: 5,
                reconnects: 1,
                dropped: 0,
            }],
        };
        // Counters are copied, not added: two scrapes of the same numbers say the same.
        m.set_stats(&stats);
        m.set_stats(&stats);
        let text = m.encode();
        for line in [
            "dhow_raft_proposals_in_flight 2",
            "dhow_raft_log_entries 7",
            "dhow_raft_snapshots_sent_total 3",
            "dhow_raft_commit_duration_seconds_sum 20.5",
            "dhow_raft_commit_duration_seconds_count 2",
            "dhow_raft_commit_duration_seconds_bucket{le=\"0.0001\"} 1",
            "dhow_raft_commit_duration_seconds_bucket{le=\"13.1072\"} 1",
            "dhow_raft_commit_duration_seconds_bucket{le=\"+Inf\"} 2",
            "dhow_raft_apply_duration_seconds_bucket{le=\"+Inf\"} 0",
            "dhow_rocksdb_sst_bytes{cf=\"tuples\"} 4096",
            "dhow_rocksdb_sst_bytes{cf=\"raft_log\"} 512",
            "dhow_rocksdb_write_stopped 1",
            "dhow_peer_send_errors_total{peer=\"2\"} 5",
            "dhow_peer_reconnects_total{peer=\"2\"} 1",
            "dhow_peer_messages_dropped_total{peer=\"2\"} 0",
            "dhow_consistency_timeouts_total{wait=\"read_index\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        m.consistency_wait(Wait::Revision, Duration::from_millis(5), true);
        m.reader_calls(3);
        let text = m.encode();
        for line in [
            "dhow_consistency_wait_duration_seconds_count{wait=\"revision\"} 1",
            "dhow_consistency_wait_duration_seconds_count{wait=\"read_index\"} 0",
            "dhow_consistency_timeouts_total{wait=\"revision\"} 1",
            "dhow_check_reader_calls_count 1",
            "dhow_check_reader_calls_bucket{le=\"2.0\"} 0",
            "dhow_check_reader_calls_bucket{le=\"4.0\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }

    #[test]
    fn a_counting_reader_counts_every_read() {
        use dhow_tuples::TupleStore;
        let store = dhow_tuples::SharedMemStore::new();
        let reader = CountingReader::new(store.reader(Revision(0)).unwrap());
        let doc = ObjectRef::new("document", "d");
        assert_eq!(reader.calls(), 0);
        reader.by_resource(&doc, "viewer").unwrap();
        reader.by_subject_object(&doc).unwrap();
        reader
            .read(&RelationshipFilter::default(), None, 10)
            .unwrap();
        assert_eq!(reader.revision(), Revision(0));
        assert_eq!(reader.calls(), 3, "revision() reads nothing");
    }
}
