//! OpenTelemetry traces of real `dhow serve` processes, exported over OTLP/gRPC to a small
//! receiver this test runs (the collector's trace service, from opentelemetry-proto). The
//! nodes sample nothing of their own (`--trace-sample-ratio 0`): only the calls whose
//! `traceparent` metadata says "sampled" are traced, so every exported span must belong to one
//! of the test's traces.
//!
//! - one node: a Check with a `traceparent` is exported as the RPC span, a child of the
//!   caller's span, with the resource type, permission, result and revision, and the
//!   consistency wait and the engine's evaluation (with its reader call count) under it;
//! - three nodes: a Write sent to a follower with a `traceparent` shows, in the same trace,
//!   the follower's RPC and Raft write spans and, exported by the leader, the leader's apply
//!   of the forwarded entry (a child of the follower's Raft write span).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhow_proto::v1 as pb;
use dhow_proto::v1::permission_service_client::PermissionServiceClient;
use dhow_proto::v1::relationship_service_client::RelationshipServiceClient;
use dhow_tests::cluster::{at_least, Client, Cluster, SCHEMA};
use dhow_tests::process::Server;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// One exported span and the node (`service.instance.id`) that exported it.
#[derive(Debug, Clone)]
struct Got {
    node: String,
    span: opentelemetry_proto::tonic::trace::v1::Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&Value> {
        attr(&self.span.attributes, key)
    }
    fn str_attr(&self, key: &str) -> Option<&str> {
        match self.attr(key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }
    fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(Value::IntValue(i)) => Some(*i),
            _ => None,
        }
    }
    fn bool_attr(&self, key: &str) -> Option<bool> {
        match self.attr(key) {
            Some(Value::BoolValue(b)) => Some(*b),
            _ => None,
        }
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The OTLP receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let node = match rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.instance.id"))
            {
                Some(Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Got {
                        node: node.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Starts the receiver on a free loopback port; its endpoint URL.
    async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (receiver, url)
    }

    fn all(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of `trace`, once `done` says they are all there (polled, at most 30 s).
    async fn wait_for(&self, trace: &[u8], done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Got> = self
                .all()
                .into_iter()
                .filter(|g| g.span.trace_id == trace)
                .collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the spans of trace {} did not all arrive within 30 s; got: {:#?}",
                hex(trace),
                summary(&spans)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a failed assertion shows of the spans: node, name, ids.
fn summary(spans: &[Got]) -> Vec<String> {
    spans
        .iter()
        .map(|g| {
            let attrs: Vec<String> = g
                .span
                .attributes
                .iter()
                .map(|kv| {
                    format!(
                        "{}={:?}",
                        kv.key,
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                    )
                })
                .collect();
            format!(
                "node {} {} id {} parent {} {}",
                g.node,
                g.span.name,
                hex(&g.span.span_id),
                hex(&g.span.parent_span_id),
                attrs.join(" ")
            )
        })
        .collect()
}

/// A fresh, random trace id and span id: the caller's span.
fn caller_span() -> ([u8; 16], [u8; 8]) {
    use std::hash::BuildHasher;
    let s = std::collections::hash_map::RandomState::new();
    let a = s.hash_one(("trace", 1)).to_be_bytes();
    let b = s.hash_one(("trace", 2)).to_be_bytes();
    let c = s.hash_one(("span", 3)).to_be_bytes();
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&a);
    trace[8..].copy_from_slice(&b);
    trace[0] |= 1; // never all zeros
    let mut span = c;
    span[0] |= 1;
    (trace, span)
}

/// The W3C `traceparent` of a sampled caller span.
fn traceparent(trace: &[u8; 16], span: &[u8; 8]) -> String {
    format!("00-{}-{}-01", hex(trace), hex(span))
}

/// The W3C `traceparent` of a caller span that is not sampled.
fn unsampled_traceparent(trace: &[u8; 16], span: &[u8; 8]) -> String {
    format!("00-{}-{}-00", hex(trace), hex(span))
}

fn with_traceparent<T>(msg: T, tp: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("traceparent", tp.parse().expect("ascii"));
    req
}

fn object(t: &str, id: &str) -> Option<pb::ObjectReference> {
    Some(pb::ObjectReference {
        object_type: t.into(),
        object_id: id.into(),
    })
}

fn user(id: &str) -> Option<pb::SubjectReference> {
    Some(pb::SubjectReference {
        object: object("user", id),
        optional_relation: String::new(),
    })
}

fn named<'a>(spans: &'a [Got], name: &str) -> Vec<&'a Got> {
    spans.iter().filter(|g| g.span.name == name).collect()
}

fn one<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one span `{name}` expected: {:#?}",
        summary(spans)
    );
    found[0]
}

const CHECK: &str = "dhow.v1.PermissionService/Check";
const WRITE: &str = "dhow.v1.RelationshipService/Write";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_check_is_exported_under_the_callers_span_with_its_children() {
    let (receiver, url) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        0,
        &["--otlp-endpoint", &url, "--trace-sample-ratio", "0"],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let mut client = Client::connect(&server.endpoint()).await;
    client.write_schema(SCHEMA).await.expect("schema");
    let token = client
        .set("document:readme", "alice", true)
        .await
        .expect("write");

    let (trace, parent) = caller_span();
    let response = PermissionServiceClient::new(client.channel.clone())
        .check(with_traceparent(
            pb::CheckRequest {
                consistency: at_least(&token),
                resource: object("document", "readme"),
                permission: "view".into(),
                subject: user("alice"),
                ..Default::default()
            },
            &traceparent(&trace, &parent),
        ))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(
        response.permissionship,
        pb::Permissionship::HasPermission as i32
    );
    let revision = dhow_tests::revision(response.checked_at.as_ref().expect("a token"));

    let spans = receiver
        .wait_for(&trace, |s| {
            !named(s, CHECK).is_empty()
                && !named(s, "consistency").is_empty()
                && !named(s, "engine.check").is_empty()
        })
        .await;
    // The RPC span: the caller's child, a server span, with the documented attributes.
    let rpc = one(&spans, CHECK);
    assert_eq!(rpc.span.parent_span_id, parent, "{:#?}", summary(&spans));
    assert_eq!(rpc.span.kind, SpanKind::Server as i32);
    assert_eq!(rpc.str_attr("rpc.system"), Some("grpc"));
    assert_eq!(rpc.str_attr("dhow.resource_type"), Some("document"));
    assert_eq!(rpc.str_attr("dhow.permission"), Some("view"));
    assert_eq!(rpc.str_attr("dhow.result"), Some("allowed"));
    assert_eq!(rpc.int_attr("dhow.revision"), Some(revision as i64));
    // The consistency wait and the engine's evaluation under it.
    let consistency = one(&spans, "consistency");
    assert_eq!(consistency.span.parent_span_id, rpc.span.span_id);
    assert_eq!(
        consistency.str_attr("dhow.consistency"),
        Some("at_least_as_fresh")
    );
    assert_eq!(consistency.int_attr("dhow.revision"), Some(revision as i64));
    let engine = one(&spans, "engine.check");
    assert_eq!(engine.span.parent_span_id, rpc.span.span_id);
    let calls = engine.int_attr("dhow.reader_calls").expect("reader calls");
    assert!(calls >= 1, "the check read nothing? {calls}");
    assert!(
        engine.span.start_time_unix_nano >= rpc.span.start_time_unix_nano
            && engine.span.end_time_unix_nano <= rpc.span.end_time_unix_nano,
        "the evaluation lies within the call"
    );

    // Sampling: the node samples nothing of its own (ratio 0), so the calls before (schema,
    // write) and a check without a traceparent left no span; a check whose caller did not
    // sample (flags 00) neither.
    let (unsampled, p2) = caller_span();
    PermissionServiceClient::new(client.channel.clone())
        .check(with_traceparent(
            pb::CheckRequest {
                resource: object("document", "readme"),
                permission: "view".into(),
                subject: user("alice"),
                ..Default::default()
            },
            &unsampled_traceparent(&unsampled, &p2),
        ))
        .await
        .expect("check");
    // A last traced call: once it is exported, everything before it was too.
    let (last, p3) = caller_span();
    PermissionServiceClient::new(client.channel.clone())
        .check(with_traceparent(
            pb::CheckRequest {
                resource: object("document", "readme"),
                permission: "view".into(),
                subject: user("bob"),
                ..Default::default()
            },
            &traceparent(&last, &p3),
        ))
        .await
        .expect("check");
    let spans = receiver
        .wait_for(&last, |s| !named(s, CHECK).is_empty())
        .await;
    assert_eq!(one(&spans, CHECK).str_attr("dhow.result"), Some("denied"));
    let strays: Vec<Got> = receiver
        .all()
        .into_iter()
        .filter(|g| g.span.trace_id != trace && g.span.trace_id != last)
        .collect();
    assert!(
        strays.is_empty(),
        "spans of calls that were not sampled: {:#?}",
        summary(&strays)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_follower_is_traced_to_the_leader_in_the_same_trace() {
    let (receiver, url) = Receiver::start().await;
    let cluster = Cluster::start_with_env(
        3,
        &[
            ("DHOW_OTLP_ENDPOINT", &url),
            ("DHOW_TRACE_SAMPLE_RATIO", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let follower = (leader + 1) % cluster.nodes.len();
    let (leader_id, follower_id) = (
        cluster.nodes[leader].id.to_string(),
        cluster.nodes[follower].id.to_string(),
    );
    let mut client = cluster.client(follower).await;
    client.write_schema(SCHEMA).await.expect("schema");

    let (trace, parent) = caller_span();
    let written = RelationshipServiceClient::new(client.channel.clone())
        .write(with_traceparent(
            pb::WriteRequest {
                updates: vec![pb::RelationshipUpdate {
                    operation: pb::relationship_update::Operation::Touch as i32,
                    relationship: Some(pb::Relationship {
                        resource: object("document", "plan"),
                        relation: "viewer".into(),
                        subject: user("carol"),
                        ..Default::default()
                    }),
                }],
                optional_preconditions: vec![],
            },
            &traceparent(&trace, &parent),
        ))
        .await
        .expect("write through the follower")
        .into_inner();
    let revision = dhow_tests::revision(written.written_at.as_ref().expect("a token")) as i64;

    // Every node applies the entry, each under a span of the trace.
    let spans = receiver
        .wait_for(&trace, |s| {
            !named(s, WRITE).is_empty()
                && !named(s, "raft.write").is_empty()
                && named(s, "raft.apply")
                    .iter()
                    .filter(|g| g.int_attr("raft.index") == Some(revision))
                    .count()
                    == 3
        })
        .await;
    // On the follower: the RPC span under the caller's, the Raft write under it.
    let rpc = one(&spans, WRITE);
    assert_eq!(rpc.node, follower_id);
    assert_eq!(rpc.span.parent_span_id, parent);
    assert_eq!(rpc.int_attr("dhow.revision"), Some(revision));
    let raft_write = one(&spans, "raft.write");
    assert_eq!(raft_write.node, follower_id);
    assert_eq!(raft_write.span.parent_span_id, rpc.span.span_id);
    assert_eq!(raft_write.int_attr("dhow.revision"), Some(revision));
    // On the leader, in the same trace: the apply of the forwarded entry, a child of the
    // follower's Raft write span (whose context the entry carried).
    let applies: HashMap<&str, &Got> = named(&spans, "raft.apply")
        .into_iter()
        .map(|g| (g.node.as_str(), g))
        .collect();
    assert_eq!(applies.len(), 3, "{:#?}", summary(&spans));
    let on_leader = applies[leader_id.as_str()];
    assert_eq!(on_leader.span.parent_span_id, raft_write.span.span_id);
    assert_eq!(on_leader.bool_attr("raft.leader"), Some(true));
    assert_eq!(on_leader.bool_attr("raft.proposed_here"), Some(false));
    let on_follower = applies[follower_id.as_str()];
    assert_eq!(on_follower.span.parent_span_id, raft_write.span.span_id);
    assert_eq!(on_follower.bool_attr("raft.leader"), Some(false));
    assert_eq!(on_follower.bool_attr("raft.proposed_here"), Some(true));
}
