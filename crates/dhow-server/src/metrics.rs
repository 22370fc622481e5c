//! Prometheus metrics of a node (`prometheus-client`, OpenMetrics text), served over HTTP on a
//! port of their own (`metrics_addr`; off unless set) by a small HTTP/1.1 server: `GET
//! /metrics` answers the registry, anything else 404.
//!
//! One registry per process ([`global`]): the call log counts every call
//! (`dhow_grpc_requests_total`, `dhow_grpc_request_duration_seconds`), the permission service
//! every Check answer (`dhow_checks_total`), the readiness task the health it reports
//! (`dhow_health_serving`). The node's gauges (leadership, term, applied revision) are read
//! from the [`Node`] at each scrape; a task watching the node's leadership counts leader
//! changes. Only this crate knows the metrics crate: engine, storage and Raft stay free of it.
//! Every metric is listed with its meaning and an alert in docs/operations.md ("Metrics").

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dhow_node::{Node, Role};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
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
fn method_label(path: &str) -> &str {
    if KNOWN_METHODS.contains(path) {
        path
    } else {
        "unknown"
    }
}

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of the process, registered in one registry.
pub struct Metrics {
    registry: Registry,
    grpc_requests: Family<Labels, Counter>,
    grpc_duration: Family<Labels, Histogram, fn() -> Histogram>,
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
        Metrics {
            registry,
            grpc_requests,
            grpc_duration,
            checks,
            health_serving,
            raft_is_leader,
            raft_term,
            raft_leader_id,
            raft_commit_index,
            applied_revision,
            leader_changes,
            scrape_errors,
        }
    }

    /// Counts a call that ended with `code` after `elapsed`. A path the server does not have
    /// is counted as `unknown` ([`method_label`]): a client cannot grow the label set.
    pub fn grpc_call(&self, method: &str, code: &str, elapsed: Duration) {
        let method = method_label(method).to_string();
        self.grpc_requests
            .get_or_create(&vec![
                ("method", method.clone()),
                ("code", code.to_string()),
            ])
            .inc();
        self.grpc_duration
            .get_or_create(&vec![("method", method)])
            .observe(elapsed.as_secs_f64());
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

    /// Reads the node's gauges now.
    async fn refresh<N: Node>(&self, node: &N) {
        self.applied_revision.set(node.applied().0 as i64);
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
}
