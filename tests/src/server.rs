//! The real API server in-process on 127.0.0.1:0 over a `MemNode`, its generated tonic
//! clients, and helpers to build requests and read error reasons.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dhow_node::MemNode;
use dhow_proto::v1 as pb;
use dhow_proto::v1::cluster_service_client::ClusterServiceClient;
use dhow_proto::v1::permission_service_client::PermissionServiceClient;
use dhow_proto::v1::relationship_service_client::RelationshipServiceClient;
use dhow_proto::v1::schema_service_client::SchemaServiceClient;
use dhow_server::{serve, Config, ServerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Status;
use tonic_types::StatusExt;

pub const CLUSTER: u64 = 0x00d0_0d1e;

pub const SCHEMA: &str = "definition user {}
definition group {
    relation member: user | group#member
}
definition document {
    relation owner: user
    relation viewer: user | group#member | user:*
    relation banned: user
    permission view = (owner + viewer) - banned
    permission edit = owner
}
";

pub struct TestServer {
    pub addr: SocketAddr,
    pub node: Arc<MemNode>,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let node = Arc::new(MemNode::new(CLUSTER));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let n = node.clone();
        let handle = tokio::spawn(async move {
            serve(n, &config, listener, async {
                let _ = rx.await;
            })
            .await
        });
        // Lazily: a server with TLS or authentication is reached by the test's own channels.
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        TestServer {
            addr,
            node,
            channel,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn perm(&self) -> PermissionServiceClient<Channel> {
        PermissionServiceClient::new(self.channel.clone())
    }
    pub fn rel(&self) -> RelationshipServiceClient<Channel> {
        RelationshipServiceClient::new(self.channel.clone())
    }
    pub fn cluster(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel.clone())
    }
    pub fn schema(&self) -> SchemaServiceClient<Channel> {
        SchemaServiceClient::new(self.channel.clone())
    }

    /// Writes the test schema; returns its token.
    pub async fn with_schema(&self) -> pb::ConsistencyToken {
        self.schema()
            .write_schema(pb::WriteSchemaRequest {
                schema: SCHEMA.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .written_at
            .unwrap()
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let h = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
    }
}

pub use crate::{rel, revision};

pub fn obj(t: &str, id: &str) -> Option<pb::ObjectReference> {
    Some(pb::ObjectReference {
        object_type: t.into(),
        object_id: id.into(),
    })
}

pub fn subj(t: &str, id: &str) -> Option<pb::SubjectReference> {
    Some(pb::SubjectReference {
        object: obj(t, id),
        optional_relation: String::new(),
    })
}

pub fn update(op: pb::relationship_update::Operation, text: &str) -> pb::RelationshipUpdate {
    pb::RelationshipUpdate {
        operation: op as i32,
        relationship: Some(rel(text)),
    }
}

pub fn touch(text: &str) -> pb::RelationshipUpdate {
    update(pb::relationship_update::Operation::Touch, text)
}
pub fn create(text: &str) -> pb::RelationshipUpdate {
    update(pb::relationship_update::Operation::Create, text)
}
pub fn delete(text: &str) -> pb::RelationshipUpdate {
    update(pb::relationship_update::Operation::Delete, text)
}

pub async fn write(s: &TestServer, updates: Vec<pb::RelationshipUpdate>) -> pb::ConsistencyToken {
    s.rel()
        .write(pb::WriteRequest {
            updates,
            optional_preconditions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .written_at
        .unwrap()
}

pub fn fresh(t: &pb::ConsistencyToken) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(t.clone())),
    })
}

pub fn exact(t: &pb::ConsistencyToken) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtExactSnapshot(t.clone())),
    })
}

pub fn check_req(
    resource: &str,
    permission: &str,
    subject: &str,
    consistency: Option<pb::Consistency>,
) -> pb::CheckRequest {
    let (rt, rid) = resource.split_once(':').unwrap();
    let (st, sid) = subject.split_once(':').unwrap();
    pb::CheckRequest {
        consistency,
        resource: obj(rt, rid),
        permission: permission.into(),
        subject: subj(st, sid),
        explain: false,
        actors: vec![],
        context: None,
    }
}

pub async fn allowed(s: &TestServer, req: pb::CheckRequest) -> bool {
    let r = s.perm().check(req).await.unwrap().into_inner();
    r.permissionship == pb::Permissionship::HasPermission as i32
}

pub fn reason(s: &Status) -> String {
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

pub fn field(s: &Status) -> String {
    s.get_details_error_info()
        .and_then(|i| i.metadata.get("field").cloned())
        .unwrap_or_default()
}

/// Asserts INVALID_ARGUMENT naming `want_field` (in ErrorInfo and at the message's start).
#[track_caller]
pub fn assert_invalid(s: &Status, want_field: &str) {
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert_eq!(field(s), want_field, "{s:?}");
    assert!(s.message().starts_with(want_field), "{s:?}");
    let info = s.get_details_error_info().unwrap();
    assert_eq!(info.domain, "dhow.dev");
}

/// Reads everything a filter selects (a fresh read).
pub async fn read_all(
    s: &TestServer,
    resource_type: &str,
    consistency: Option<pb::Consistency>,
) -> Vec<String> {
    let mut stream = s
        .rel()
        .read(pb::ReadRequest {
            consistency,
            filter: Some(pb::RelationshipFilter {
                resource_type: resource_type.into(),
                ..Default::default()
            }),
            optional_limit: 0,
            optional_cursor: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        out.push(text(m.relationship.as_ref().unwrap()));
    }
    out
}

/// The text form of a proto relationship.
pub fn text(r: &pb::Relationship) -> String {
    let res = r.resource.as_ref().unwrap();
    let sub = r.subject.as_ref().unwrap();
    let so = sub.object.as_ref().unwrap();
    let mut s = format!(
        "{}:{}#{}@{}:{}",
        res.object_type, res.object_id, r.relation, so.object_type, so.object_id
    );
    if !sub.optional_relation.is_empty() {
        s.push('#');
        s.push_str(&sub.optional_relation);
    }
    s
}

/// A caveat context for a request, from JSON object text.
pub fn context(json: &str) -> Option<dhow_wire::Struct> {
    Some(dhow_wire::json_text_to_struct(json).unwrap_or_else(|e| panic!("context `{json}`: {e}")))
}

/// The full text form of a proto relationship, caveat (with its context) and expiration
/// included: `document:d#viewer@user:tom[on_network:{"cidr":"10.0.0.0/8"}]`.
pub fn full_text(r: &pb::Relationship) -> String {
    dhow_wire::relationship(Some(r), "relationship")
        .expect("the server sends valid relationships")
        .to_string()
}

/// Reads everything of a resource type, in full text form (caveats and expirations kept).
pub async fn read_full(
    s: &TestServer,
    resource_type: &str,
    consistency: Option<pb::Consistency>,
) -> Vec<String> {
    let mut stream = s
        .rel()
        .read(pb::ReadRequest {
            consistency,
            filter: Some(pb::RelationshipFilter {
                resource_type: resource_type.into(),
                ..Default::default()
            }),
            optional_limit: 0,
            optional_cursor: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        out.push(full_text(m.relationship.as_ref().unwrap()));
    }
    out
}

/// The metadata entry `key` of a status's `ErrorInfo` (empty if absent).
pub fn metadata(s: &Status, key: &str) -> String {
    s.get_details_error_info()
        .and_then(|i| i.metadata.get(key).cloned())
        .unwrap_or_default()
}
