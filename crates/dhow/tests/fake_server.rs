//! The `dhow` client commands against a fake in-test gRPC server (the engine over a memory
//! store behind the `dhow.v1` services): wiring, streaming, outputs, tokens and exit codes.
//! Not a substitute for end-to-end tests against the real server.

#[allow(dead_code)]
#[path = "../src/client/convert.rs"]
mod convert;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use dhow_engine::{Engine, ExpandTree, Options, Proof, Step};
use dhow_proto::v1 as pb;
use dhow_tuples::{MemStore, Relationship, WriteOp};
use pb::permission_service_server::{PermissionService, PermissionServiceServer};
use pb::relationship_service_server::{RelationshipService, RelationshipServiceServer};
use pb::schema_service_server::{SchemaService, SchemaServiceServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

type Res<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Default)]
struct State {
    schema: String,
    rels: Vec<Relationship>,
    rev: u64,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

fn token(rev: u64) -> Option<pb::ConsistencyToken> {
    Some(pb::ConsistencyToken {
        token: format!("tok{rev}"),
    })
}

fn err(code: tonic::Code, reason: &str, msg: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        msg.into(),
        ErrorDetails::with_error_info(reason, "dhow", HashMap::new()),
    )
}

fn engine_err(e: dhow_engine::Error) -> Status {
    err(tonic::Code::FailedPrecondition, "ENGINE", e.to_string())
}

fn bad(msg: String) -> Status {
    err(tonic::Code::InvalidArgument, "INVALID", msg)
}

impl Fake {
    /// The engine and a store holding the relationships, for one evaluation.
    fn eval<T>(
        &self,
        f: impl FnOnce(&Engine, &MemStore) -> Result<T, Status>,
    ) -> Result<(T, u64), Status> {
        let st = self.0.lock().unwrap();
        let schema = dhow_schema::compile(&st.schema)
            .map_err(|e| err(tonic::Code::FailedPrecondition, "NO_SCHEMA", e.to_string()))?;
        let engine = Engine::new(Arc::new(schema));
        let mut store = MemStore::new();
        let ops: Vec<WriteOp> = st.rels.iter().cloned().map(WriteOp::Touch).collect();
        store.write(&ops).map_err(|e| bad(e.to_string()))?;
        Ok((f(&engine, &store)?, st.rev))
    }

    fn touch(st: &mut State, r: Relationship) {
        st.rels.retain(|x| x.key() != r.key());
        st.rels.push(r);
    }
}

fn proof_to_proto(p: &Proof) -> pb::Proof {
    use pb::proof as pp;
    let rel = |r: &Relationship| Some(convert::relationship_to_proto(r).unwrap());
    let step = match &p.step {
        Step::Member { resource, relation } => pb::proof::Step::Member(pp::MemberStep {
            resource: Some(convert::object_to_proto(resource)),
            relation: relation.clone(),
        }),
        Step::Direct(r) => pp::Step::Direct(pp::DirectStep {
            relationship: rel(r),
        }),
        Step::Wildcard(r) => pp::Step::Wildcard(pp::WildcardStep {
            relationship: rel(r),
        }),
        Step::SubjectSet(r) => pp::Step::SubjectSet(pp::SubjectSetStep {
            relationship: rel(r),
        }),
        Step::SameSubject => pp::Step::SameSubject(pp::SameSubjectStep {}),
        Step::NoMatch => pp::Step::NoMatch(pp::NoMatchStep {}),
        Step::Union => pp::Step::Union(pp::UnionStep {}),
        Step::Intersection => pp::Step::Intersection(pp::IntersectionStep {}),
        Step::Exclusion => pp::Step::Exclusion(pp::ExclusionStep {}),
        Step::Nil => pp::Step::Nil(pp::NilStep {}),
        Step::Arrow {
            tupleset,
            computed,
            mode,
        } => pp::Step::Arrow(pp::ArrowStep {
            tupleset: tupleset.clone(),
            computed: computed.clone(),
            mode: match mode {
                dhow_schema::ArrowMode::Any => pb::ArrowMode::Any as i32,
                dhow_schema::ArrowMode::All => pb::ArrowMode::All as i32,
            },
        }),
        Step::ArrowHop(r) => pp::Step::ArrowHop(pp::ArrowHopStep {
            relationship: rel(r),
        }),
        Step::Cycle { resource, relation } => pp::Step::Cycle(pp::CycleStep {
            resource: Some(convert::object_to_proto(resource)),
            relation: relation.clone(),
        }),
    };
    pb::Proof {
        allowed: p.allowed,
        step: Some(step),
        children: p.children.iter().map(proof_to_proto).collect(),
    }
}

fn expand_to_proto(n: &dhow_engine::ExpandNode) -> pb::ExpandNode {
    use pb::expand_node as en;
    let tree = match &n.tree {
        ExpandTree::Leaf(s) => en::Tree::Leaf(en::LeafTree {
            subjects: s.iter().map(convert::subject_to_proto).collect(),
        }),
        ExpandTree::Union(c) => en::Tree::Union(en::UnionTree {
            children: c.iter().map(expand_to_proto).collect(),
        }),
        ExpandTree::Intersection(c) => en::Tree::Intersection(en::IntersectionTree {
            children: c.iter().map(expand_to_proto).collect(),
        }),
        ExpandTree::Exclusion(a, b) => en::Tree::Exclusion(Box::new(en::ExclusionTree {
            base: Some(Box::new(expand_to_proto(a))),
            subtract: Some(Box::new(expand_to_proto(b))),
        })),
    };
    pb::ExpandNode {
        resource: Some(convert::object_to_proto(&n.resource)),
        relation: n.relation.clone(),
        tree: Some(tree),
    }
}

fn stream<T: Send + 'static>(items: Vec<T>) -> BoxStream<T> {
    Box::pin(tokio_stream::iter(items.into_iter().map(Ok)))
}

fn from_proto(r: Option<&pb::Relationship>) -> Result<Relationship, Status> {
    let r = r.ok_or_else(|| bad("missing relationship".into()))?;
    Ok(convert::relationship_from_proto(r))
}

fn matches(f: &pb::RelationshipFilter, r: &Relationship) -> bool {
    r.resource.object_type == f.resource_type
        && (f.optional_resource_id.is_empty() || f.optional_resource_id == r.resource.object_id)
        && (f.optional_relation.is_empty() || f.optional_relation == r.relation)
        && f.optional_subject_filter.as_ref().is_none_or(|s| {
            s.subject_type == r.subject.object.object_type
                && (s.optional_subject_id.is_empty()
                    || s.optional_subject_id == r.subject.object.object_id)
                && s.optional_relation
                    .as_ref()
                    .is_none_or(|rf| rf.relation == r.subject.relation.clone().unwrap_or_default())
        })
}

#[tonic::async_trait]
impl SchemaService for Fake {
    async fn write_schema(
        &self,
        req: Request<pb::WriteSchemaRequest>,
    ) -> Res<pb::WriteSchemaResponse> {
        let text = req.into_inner().schema;
        dhow_schema::compile(&text).map_err(|e| bad(format!("schema: {e}")))?;
        let mut st = self.0.lock().unwrap();
        st.schema = text;
        st.rev += 1;
        Ok(Response::new(pb::WriteSchemaResponse {
            written_at: token(st.rev),
        }))
    }

    async fn read_schema(&self, _: Request<pb::ReadSchemaRequest>) -> Res<pb::ReadSchemaResponse> {
        let st = self.0.lock().unwrap();
        if st.schema.is_empty() {
            return Err(err(
                tonic::Code::NotFound,
                "NO_SCHEMA",
                "no schema has been written",
            ));
        }
        Ok(Response::new(pb::ReadSchemaResponse {
            schema_text: st.schema.clone(),
            read_at: token(st.rev),
        }))
    }
}

#[tonic::async_trait]
impl RelationshipService for Fake {
    async fn write(&self, req: Request<pb::WriteRequest>) -> Res<pb::WriteResponse> {
        use pb::relationship_update::Operation;
        let mut st = self.0.lock().unwrap();
        for u in req.into_inner().updates {
            let r = from_proto(u.relationship.as_ref())?;
            match Operation::try_from(u.operation) {
                Ok(Operation::Create) => {
                    if st.rels.iter().any(|x| x.key() == r.key()) {
                        return Err(err(
                            tonic::Code::AlreadyExists,
                            "RELATIONSHIP_EXISTS",
                            format!("relationship `{r}` already exists"),
                        ));
                    }
                    st.rels.push(r);
                }
                Ok(Operation::Touch) => Fake::touch(&mut st, r),
                Ok(Operation::Delete) => st.rels.retain(|x| x.key() != r.key()),
                _ => return Err(bad("operation unspecified".into())),
            }
        }
        st.rev += 1;
        Ok(Response::new(pb::WriteResponse {
            written_at: token(st.rev),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Res<pb::DeleteResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut st = self.0.lock().unwrap();
        let before = st.rels.len();
        st.rels.retain(|r| !matches(&f, r));
        st.rev += 1;
        Ok(Response::new(pb::DeleteResponse {
            deleted_at: token(st.rev),
            deleted_count: (before - st.rels.len()) as u64,
            partial: false,
        }))
    }

    type ReadStream = BoxStream<pb::ReadResponse>;
    async fn read(&self, req: Request<pb::ReadRequest>) -> Res<Self::ReadStream> {
        let f = req.into_inner().filter.unwrap_or_default();
        let st = self.0.lock().unwrap();
        let mut rels: Vec<&Relationship> = st.rels.iter().filter(|r| matches(&f, r)).collect();
        rels.sort();
        let items = rels
            .into_iter()
            .map(|r| pb::ReadResponse {
                read_at: token(st.rev),
                relationship: Some(convert::relationship_to_proto(r).unwrap()),
                after_result_cursor: None,
            })
            .collect();
        Ok(Response::new(stream(items)))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;
    async fn watch(&self, req: Request<pb::WatchRequest>) -> Res<Self::WatchStream> {
        use pb::relationship_change::Operation;
        let from = req.into_inner().optional_start_cursor.map(|t| t.token);
        let change = |op: Operation, s: &str| pb::RelationshipChange {
            operation: op as i32,
            relationship: Some(
                convert::relationship_to_proto(&convert::relationship_arg(s).unwrap()).unwrap(),
            ),
        };
        let first = pb::WatchResponse {
            changes: vec![
                change(Operation::Touch, "document:w#viewer@user:a"),
                change(Operation::Delete, "document:w#viewer@user:b"),
            ],
            changes_through: token(100),
        };
        let second = pb::WatchResponse {
            changes: vec![change(Operation::Touch, "document:w#viewer@user:c")],
            changes_through: token(101),
        };
        if from.as_deref() == Some("expired") {
            return Err(err(
                tonic::Code::FailedPrecondition,
                "TOKEN_EXPIRED",
                "token is older than the GC window",
            ));
        }
        // Two responses, then nothing more until the client goes away.
        let s = tokio_stream::StreamExt::chain(
            tokio_stream::iter(vec![Ok(first), Ok(second)]),
            tokio_stream::pending(),
        );
        Ok(Response::new(Box::pin(s)))
    }

    async fn import(
        &self,
        req: Request<tonic::Streaming<pb::ImportRequest>>,
    ) -> Res<pb::ImportResponse> {
        let mut s = req.into_inner();
        let mut n = 0;
        while let Some(batch) = s.message().await? {
            assert!(batch.relationships.len() <= 1000, "batches of at most 1000");
            let mut st = self.0.lock().unwrap();
            for r in &batch.relationships {
                Fake::touch(&mut st, from_proto(Some(r))?);
                n += 1;
            }
            st.rev += 1;
        }
        let st = self.0.lock().unwrap();
        Ok(Response::new(pb::ImportResponse {
            loaded_count: n,
            written_at: token(st.rev),
        }))
    }

    type ExportStream = BoxStream<pb::ExportResponse>;
    async fn export(&self, _: Request<pb::ExportRequest>) -> Res<Self::ExportStream> {
        let st = self.0.lock().unwrap();
        let mut rels = st.rels.clone();
        rels.sort();
        let items = rels
            .chunks(2)
            .map(|c| pb::ExportResponse {
                exported_at: token(st.rev),
                relationships: c
                    .iter()
                    .map(|r| convert::relationship_to_proto(r).unwrap())
                    .collect(),
                after_result_cursor: None,
            })
            .collect();
        Ok(Response::new(stream(items)))
    }
}

#[tonic::async_trait]
impl PermissionService for Fake {
    async fn check(&self, req: Request<pb::CheckRequest>) -> Res<pb::CheckResponse> {
        let r = req.into_inner();
        let creq = dhow_engine::CheckRequest::new(
            convert::object_from_proto(r.resource.as_ref()),
            r.permission.clone(),
            convert::subject_from_proto(r.subject.as_ref()),
        );
        let mut opts = Options::now();
        if r.explain {
            opts = opts.with_explain();
        }
        let (res, rev) = self.eval(|e, s| e.check(&s.latest(), &creq, opts).map_err(engine_err))?;
        Ok(Response::new(pb::CheckResponse {
            checked_at: token(rev),
            permissionship: if res.allowed {
                pb::Permissionship::HasPermission as i32
            } else {
                pb::Permissionship::NoPermission as i32
            },
            proof: res.proof.as_ref().map(proof_to_proto),
            actor_proofs: Vec::new(),
        }))
    }

    async fn check_bulk(&self, _: Request<pb::CheckBulkRequest>) -> Res<pb::CheckBulkResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn expand(&self, req: Request<pb::ExpandRequest>) -> Res<pb::ExpandResponse> {
        let r = req.into_inner();
        let obj = convert::object_from_proto(r.resource.as_ref());
        let (node, rev) = self.eval(|e, s| {
            e.expand(&s.latest(), &obj, &r.permission, Options::now())
                .map_err(engine_err)
        })?;
        Ok(Response::new(pb::ExpandResponse {
            expanded_at: token(rev),
            tree: Some(expand_to_proto(&node)),
        }))
    }

    type LookupResourcesStream = BoxStream<pb::LookupResourcesResponse>;
    async fn lookup_resources(
        &self,
        req: Request<pb::LookupResourcesRequest>,
    ) -> Res<Self::LookupResourcesStream> {
        let r = req.into_inner();
        let subject = convert::subject_from_proto(r.subject.as_ref());
        let (ids, rev) = self.eval(|e, s| {
            e.lookup_resources(
                &s.latest(),
                &r.resource_object_type,
                &r.permission,
                &subject,
                Options::now(),
            )
            .map_err(engine_err)
        })?;
        let items = ids
            .into_iter()
            .map(|id| pb::LookupResourcesResponse {
                looked_up_at: token(rev),
                resource_object_id: id,
                after_result_cursor: None,
            })
            .collect();
        Ok(Response::new(stream(items)))
    }

    type LookupSubjectsStream = BoxStream<pb::LookupSubjectsResponse>;
    async fn lookup_subjects(
        &self,
        req: Request<pb::LookupSubjectsRequest>,
    ) -> Res<Self::LookupSubjectsStream> {
        let r = req.into_inner();
        let obj = convert::object_from_proto(r.resource.as_ref());
        let rel = (!r.optional_subject_relation.is_empty())
            .then_some(r.optional_subject_relation.as_str());
        let (found, rev) = self.eval(|e, s| {
            e.lookup_subjects(
                &s.latest(),
                &obj,
                &r.permission,
                &r.subject_object_type,
                rel,
                Options::now(),
            )
            .map_err(engine_err)
        })?;
        let items = found
            .into_iter()
            .map(|f| pb::LookupSubjectsResponse {
                looked_up_at: token(rev),
                subject: Some(convert::subject_to_proto(&f.subject)),
                excluded_subjects: f.excluded.iter().map(convert::subject_to_proto).collect(),
            })
            .collect();
        Ok(Response::new(stream(items)))
    }
}

/// Starts a fake server on a free loopback port, in a background thread; returns its URL.
fn start() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let fake = Fake::default();
            tonic::transport::Server::builder()
                .add_service(SchemaServiceServer::new(fake.clone()))
                .add_service(RelationshipServiceServer::new(fake.clone()))
                .add_service(PermissionServiceServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
                .unwrap();
        });
    });
    format!("http://{addr}")
}

fn dhow(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dhow"))
        .args(args)
        .env("DHOW_ENDPOINT", endpoint)
        .output()
        .expect("run dhow")
}

fn ok(endpoint: &str, args: &[&str]) -> (String, String) {
    let o = dhow(endpoint, args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{args:?}: {out}{err}");
    (out, err)
}

const SCHEMA: &str = "use expiration
definition user {}
definition group {
  relation member: user | group#member
}
definition document {
  relation owner: user | user with expiration
  relation viewer: user | user:* | group#member
  relation banned: user
  permission view = (owner + viewer) - banned
}
";

fn setup() -> String {
    let ep = start();
    let dir = std::env::temp_dir().join(format!(
        "dhow-fake-{}-{}",
        std::process::id(),
        ep.rsplit(':').next().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("schema.zed");
    std::fs::write(&schema, SCHEMA).unwrap();
    let (out, _) = ok(&ep, &["schema", "write", schema.to_str().unwrap()]);
    assert_eq!(out, "tok1\n");
    let _ = std::fs::remove_dir_all(&dir);
    ep
}

#[test]
fn schema_rel_and_check() {
    let ep = setup();
    let (out, err) = ok(&ep, &["schema", "read"]);
    assert_eq!(out, SCHEMA);
    assert_eq!(err, "token: tok1\n");

    let (out, _) = ok(
        &ep,
        &[
            "rel",
            "create",
            "document:1#owner@user:alice",
            "document:1#viewer@group:eng#member",
            "group:eng#member@user:bob",
            "document:2#owner@user:alice[expiration:2300-01-01T00:00:00Z]",
        ],
    );
    assert_eq!(out, "tok2\n");

    // Create of an existing relationship: server error, code, reason, exit 2.
    let o = dhow(&ep, &["rel", "create", "document:1#owner@user:alice"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        e,
        "error: ALREADY_EXISTS: relationship `document:1#owner@user:alice` already exists (reason: RELATIONSHIP_EXISTS)\n"
    );

    let (out, err) = ok(&ep, &["check", "document:1#view@user:bob"]);
    assert_eq!(out, "true\n");
    assert_eq!(err, "token: tok2\n");
    let (out, _) = ok(
        &ep,
        &[
            "check",
            "document:1",
            "view",
            "user:carol",
            "--consistency",
            "fully-consistent",
        ],
    );
    assert_eq!(out, "false\n");

    let (out, _) = ok(&ep, &["check", "document:1#view@user:bob", "--explain"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "true");
    assert_eq!(lines[1], "✓ document:1#view");
    assert!(
        lines.iter().any(|l| l
            .contains("relationship document:1#viewer@group:eng#member, through its subject set")),
        "{out}"
    );
    assert!(lines[2..].iter().all(|l| l.starts_with("  ")), "{out}");

    let (out, err) = ok(
        &ep,
        &["check", "document:1#view@user:alice", "--json", "--explain"],
    );
    assert!(err.is_empty());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["token"], "tok2");
    assert_eq!(v["proof"]["step"], "document:1#view");
    let (out, _) = ok(&ep, &["check", "document:1#view@user:alice", "--json"]);
    assert_eq!(out, "{\"allowed\":true,\"token\":\"tok2\"}\n");

    // Unknown permission: FAILED_PRECONDITION from the engine, exit 2.
    let o = dhow(&ep, &["check", "document:1#nope@user:alice"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.starts_with("error: FAILED_PRECONDITION: ") && e.ends_with("(reason: ENGINE)\n"),
        "{e}"
    );

    let (out, err) = ok(&ep, &["rel", "read", "document:1"]);
    assert_eq!(
        out,
        "document:1#owner@user:alice\ndocument:1#viewer@group:eng#member\n"
    );
    assert_eq!(err, "token: tok2\n");
    let (out, _) = ok(&ep, &["rel", "read", "document", "--subject", "user:alice"]);
    assert_eq!(
        out,
        "document:1#owner@user:alice\ndocument:2#owner@user:alice[expiration:2300-01-01T00:00:00Z]\n"
    );
    let (out, err) = ok(&ep, &["rel", "read", "document:9"]);
    assert_eq!((out.as_str(), err.as_str()), ("", ""));

    let (out, _) = ok(&ep, &["lookup-resources", "document", "view", "user:alice"]);
    assert_eq!(out, "1\n2\n");
    let (out, _) = ok(&ep, &["lookup-subjects", "document:1", "view", "user"]);
    assert_eq!(out, "user:alice\nuser:bob\n");
    let (out, _) = ok(
        &ep,
        &[
            "lookup-subjects",
            "document:1",
            "viewer",
            "group",
            "--subject-relation",
            "member",
        ],
    );
    assert_eq!(out, "group:eng#member\n");

    let (out, _) = ok(&ep, &["expand", "document:1#view"]);
    assert!(out.starts_with("document:1#view (exclusion -)\n"), "{out}");
    assert!(
        out.contains("\n      document:1#owner: user:alice\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "\n  except document:1#view (union +)\n    document:1#banned: (no subjects)\n"
        ),
        "{out}"
    );

    let (out, _) = ok(&ep, &["rel", "delete", "document:1#owner@user:alice"]);
    assert_eq!(out, "tok3\n");
    let (out, _) = ok(&ep, &["check", "document:1#view@user:alice"]);
    assert_eq!(out, "false\n");
}

#[test]
fn import_and_export() {
    let ep = setup();
    let dir = std::env::temp_dir().join(format!("dhow-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rels.txt");
    let mut text = String::from("// generated\n\n");
    for i in 0..2500 {
        text.push_str(&format!("document:d{i}#viewer@user:u{}\n", i % 7));
    }
    std::fs::write(&file, &text).unwrap();
    let (out, err) = ok(&ep, &["rel", "import", file.to_str().unwrap()]);
    // Three batches (1000, 1000, 500), each committed: revision 1 + 3.
    assert_eq!(out, "tok4\n");
    assert_eq!(err, "imported 2500 relationships\n");

    let o = dhow(&ep, &["rel", "export"]);
    assert!(o.status.success());
    let exported = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(exported.lines().count(), 2500);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "token: tok4\n");

    // What export prints, import reads.
    std::fs::write(&file, &exported).unwrap();
    let (_, err) = ok(
        &ep,
        &[
            "rel",
            "import",
            file.to_str().unwrap(),
            "--batch-size",
            "300",
        ],
    );
    assert_eq!(err, "imported 2500 relationships\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watch_count_and_errors() {
    let ep = setup();
    let (out, err) = ok(&ep, &["watch", "--count", "3"]);
    assert_eq!(
        out,
        "TOUCH document:w#viewer@user:a\nDELETE document:w#viewer@user:b\nTOUCH document:w#viewer@user:c\n"
    );
    assert_eq!(err, "token: tok100\ntoken: tok101\n");
    // Stopping inside a batch prints no token past the last change shown.
    let (out, err) = ok(&ep, &["watch", "--count", "1"]);
    assert_eq!(out, "TOUCH document:w#viewer@user:a\n");
    assert_eq!(err, "");
    let o = dhow(&ep, &["watch", "--from", "expired"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "error: FAILED_PRECONDITION: token is older than the GC window (reason: TOKEN_EXPIRED)\n"
    );
}

#[test]
fn watch_stops_on_interrupt() {
    let ep = setup();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dhow"))
        .args(["watch", "--endpoint", &ep])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        lines.next().unwrap().unwrap();
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn validate_against_the_fake_server() {
    let ep = setup();
    let root = std::path::Path::new(&manifest_dir()).join("../..");
    // Twice: the second load replaces the first's relationships.
    for _ in 0..2 {
        let o = Command::new(env!("CARGO_BIN_EXE_dhow"))
            .current_dir(&root)
            .args(["validate", "examples/quickstart.yaml", "--endpoint", &ep])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(" passed, 0 failed"), "{out}");
    }
    let (out, _) = ok(&ep, &["schema", "read"]);
    assert!(out.contains("definition folder"), "{out}");
}

/// The package's directory: cargo's value at run time (right even when a build from another
/// checkout shares the target dir), else the one compiled in.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
