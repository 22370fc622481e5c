//! `PermissionService`: Check (with proofs), CheckBulk, Expand, LookupResources and
//! LookupSubjects, each evaluated by the engine at one resolved revision, three-valued with
//! caveats (the request's `context` reaches the engine; conditional answers carry their
//! missing parameters).

use std::sync::Arc;

use dhow_engine::{
    Cancel, CaveatContext, CheckRequest as EngineCheck, DelegatedCheck, DelegatedResult, Options,
};
use dhow_proto::v1 as pb;
use dhow_proto::v1::permission_service_server::PermissionService;
use dhow_tuples::{ObjectRef, Revision, Subject, Timestamp};
use tonic::{Code, Request, Response, Status};

use super::audit::Decision;
use super::{evaluate, status, ResponseStream, State};
use crate::auth::jwt::TokenChain;
use crate::auth::Identity;
use crate::checks::check_ref;
use crate::cursor::{fingerprint, CursorKind, Position, ResumePoint};
use crate::delegation;
use crate::error::{reason, ApiError, ApiResult};
use crate::telemetry;
use dhow_node::Node;
use dhow_wire::join;

/// The permission service over a node.
pub struct PermissionSvc<N: Node> {
    st: Arc<State<N>>,
}

impl<N: Node> PermissionSvc<N> {
    pub fn new(st: Arc<State<N>>) -> Self {
        PermissionSvc { st }
    }
}

/// The engine's options for one request: evaluated now, stopped by `cancel`, with the
/// request's caveat context (a CheckRequest item may carry its own instead), sharing answers
/// through the node's check cache when given (the engine decides what it may share).
fn opts(
    shared: Option<&dhow_engine::Shared>,
    explain: bool,
    cancel: &Cancel,
    context: Option<&CaveatContext>,
) -> Options {
    Options {
        explain,
        context: context.cloned(),
        shared: shared.cloned(),
        ..Options::at(Timestamp::now())
    }
    .with_cancel(cancel.clone())
}

/// An engine error, naming the field at fault under `prefix`: the request's `context`, or
/// the actor a refused chain names.
fn engine_error(e: dhow_engine::Error, prefix: &str) -> ApiError {
    let field = match &e {
        dhow_engine::Error::InvalidContext { .. } => Some(join(prefix, "context")),
        dhow_engine::Error::InvalidChain { index: Some(i), .. } => {
            Some(join(prefix, &format!("actors[{i}]")))
        }
        _ => None,
    };
    let e = ApiError::from(e);
    match field {
        Some(f) => e.at(f),
        None => e,
    }
}

/// A checked item, validated against the request's shape.
struct Item {
    check: EngineCheck,
    /// The delegation chain, outermost first; empty for a plain check.
    actors: Vec<ObjectRef>,
    explain: bool,
    /// The field prefix of the item (`""` for Check, `items[3]` for CheckBulk).
    field: String,
}

/// The fields of one check, as Check and CheckBulk items both carry them.
struct ItemFields<'a> {
    resource: Option<&'a pb::ObjectReference>,
    permission: &'a str,
    subject: Option<&'a pb::SubjectReference>,
    actors: &'a [pb::SubjectReference],
    explain: bool,
    context: Option<&'a prost_types::Struct>,
}

fn check_item(
    prefix: &str,
    f: ItemFields<'_>,
    token: Option<TokenChainRef<'_>>,
) -> ApiResult<Item> {
    let resource = dhow_wire::object(f.resource, &join(prefix, "resource"), false)?;
    let permission = dhow_wire::relation_name(f.permission, &join(prefix, "permission"))?;
    let (subject, actors) = delegation::resolve(prefix, f.subject, f.actors, token)?;
    let mut check = EngineCheck::new(resource, permission, subject);
    check.context = dhow_wire::context(f.context, &join(prefix, "context"))?;
    Ok(Item {
        check,
        actors,
        explain: f.explain,
        field: prefix.to_string(),
    })
}

type TokenChainRef<'a> = Result<&'a TokenChain, &'a str>;

/// The answer to one check, plain or delegated.
struct Answer {
    permissionship: dhow_engine::Permissionship,
    proof: Option<dhow_engine::Proof>,
    actor_proofs: Vec<dhow_engine::Proof>,
    denied_at: Option<dhow_engine::ChainLink>,
}

/// The proof of an answer as text: the chain's tree for a delegated check.
fn proof_text(item: &Item, a: &Answer, rev: Revision) -> String {
    if item.actors.is_empty() {
        return a.proof.as_ref().map(|p| p.to_string()).unwrap_or_default();
    }
    let request = DelegatedCheck::new(item.check.clone(), item.actors.clone());
    let result = DelegatedResult {
        permissionship: a.permissionship.clone(),
        allowed: a.permissionship.is_allowed(),
        revision: rev,
        proof: a.proof.clone(),
        actor_proofs: a.actor_proofs.clone(),
        denied_at: a.denied_at,
    };
    dhow_engine::ChainProof {
        request: &request,
        result: &result,
    }
    .to_string()
}

impl From<dhow_engine::CheckResult> for Answer {
    fn from(r: dhow_engine::CheckResult) -> Self {
        Answer {
            permissionship: r.permissionship,
            proof: r.proof,
            actor_proofs: Vec::new(),
            denied_at: None,
        }
    }
}

impl From<DelegatedResult> for Answer {
    fn from(r: DelegatedResult) -> Self {
        Answer {
            permissionship: r.permissionship,
            proof: r.proof,
            actor_proofs: r.actor_proofs,
            denied_at: r.denied_at,
        }
    }
}

/// Checks the item's names against the schema, naming its fields.
fn check_item_schema(engine: &dhow_engine::Engine, it: &Item) -> ApiResult<()> {
    let p = &it.field;
    check_ref(
        engine,
        &it.check.resource.object_type,
        Some(&it.check.permission),
        &join(p, "resource.object_type"),
        &join(p, "permission"),
    )?;
    check_ref(
        engine,
        &it.check.subject.object.object_type,
        it.check.subject.relation.as_deref(),
        &join(p, "subject.object.object_type"),
        &join(p, "subject.optional_relation"),
    )
}

fn bulk_error(e: ApiError) -> pb::check_bulk_response_item::Response {
    pb::check_bulk_response_item::Response::Error(pb::CheckBulkError {
        code: e.code as i32,
        message: e.message,
        reason: e.reason.to_string(),
    })
}

/// Evaluates `item` (validated, its names checked against the schema): the plain check, or
/// the delegated check when it has actors.
fn answer<R: dhow_tuples::SnapshotReader>(
    engine: &dhow_engine::Engine,
    reader: &R,
    item: &Item,
    cancel: &Cancel,
    audit_proofs: bool,
    shared: Option<&dhow_engine::Shared>,
) -> ApiResult<Answer> {
    let o = opts(shared, item.explain || audit_proofs, cancel, None);
    let r = if item.actors.is_empty() {
        engine.check(reader, &item.check, o).map(Answer::from)
    } else {
        let d = DelegatedCheck::new(item.check.clone(), item.actors.clone());
        engine.check_delegated(reader, &d, o).map(Answer::from)
    };
    r.map_err(|e| engine_error(e, &item.field))
}

impl<N: Node> PermissionSvc<N> {
    /// Hands the decision to the audit log, then drops the proofs the request did not ask
    /// for (computed for the log only).
    fn audit(&self, caller: Option<&Identity>, item: &Item, a: &mut Answer, rev: Revision) {
        if self.st.audit.is_some() {
            let proof = (item.explain || self.st.audit_proofs()).then(|| proof_text(item, a, rev));
            self.st.audit(Decision {
                caller,
                check: &item.check,
                actors: &item.actors,
                permissionship: &a.permissionship,
                denied_at: a.denied_at,
                revision: rev,
                proof: proof.filter(|p| !p.is_empty()),
            });
        }
        if !item.explain {
            a.proof = None;
            a.actor_proofs.clear();
        }
    }

    /// One check evaluated by the engine on the blocking pool, at `rev`.
    async fn evaluate_check(
        &self,
        item: Item,
        rev: Revision,
        audit_proofs: bool,
    ) -> ApiResult<(Item, Answer)> {
        let st = self.st.clone();
        // The engine's span of a traced call (none otherwise).
        let engine_span = telemetry::child(|| tracing::info_span!("engine.check"));
        evaluate(move |cancel| {
            let store = st.node.store();
            let schema = st.require_schema(rev)?;
            check_item_schema(&schema.engine, &item)?;
            let reader = crate::metrics::CountingReader::new(store.reader(rev)?);
            let a = engine_span.in_scope(|| {
                answer(
                    &schema.engine,
                    &reader,
                    &item,
                    &cancel,
                    audit_proofs,
                    st.check_cache.as_ref(),
                )
            });
            crate::metrics::global().reader_calls(reader.calls());
            telemetry::span_attr(&engine_span, "dhow.reader_calls", reader.calls() as i64);
            drop(engine_span);
            Ok((item, a?))
        })
        .await
    }

    async fn do_check(
        &self,
        req: pb::CheckRequest,
        id: Option<Identity>,
    ) -> ApiResult<pb::CheckResponse> {
        let item = check_item(
            "",
            ItemFields {
                resource: req.resource.as_ref(),
                permission: &req.permission,
                subject: req.subject.as_ref(),
                actors: &req.actors,
                explain: req.explain,
                context: req.context.as_ref(),
            },
            delegation::token_chain(id.as_ref()),
        )?;
        let rev = self.st.resolve(req.consistency.as_ref()).await?;
        let audit_proofs = self.st.audit_proofs();
        // An answer the check cache holds is given here, without a hand-off to the blocking
        // pool (the engine says when one may be: `Engine::cached_check`).
        let cached = match &self.st.check_cache {
            Some(cache) if item.actors.is_empty() && !audit_proofs => {
                let o = Options {
                    explain: item.explain,
                    shared: Some(cache.clone()),
                    ..Options::at(Timestamp::now())
                };
                dhow_engine::Engine::cached_check(&item.check, rev, &o)
            }
            _ => None,
        };
        let (item, mut result) = match cached {
            Some(r) => {
                crate::metrics::global().reader_calls(0);
                (item, Answer::from(r))
            }
            None => self.evaluate_check(item, rev, audit_proofs).await?,
        };
        telemetry::rpc_attrs(|| {
            [
                (
                    "dhow.resource_type",
                    item.check.resource.object_type.to_string().into(),
                ),
                ("dhow.permission", item.check.permission.to_string().into()),
                // (`dhow.revision`: set when the consistency was resolved.)
                (
                    "dhow.result",
                    telemetry::result_name(&result.permissionship).into(),
                ),
            ]
        });
        self.audit(id.as_ref(), &item, &mut result, rev);
        crate::metrics::global().check(&result.permissionship);
        let (permissionship, partial_caveat_info) =
            dhow_wire::permissionship_pb(&result.permissionship);
        Ok(pb::CheckResponse {
            checked_at: Some(self.st.token(rev)),
            permissionship,
            proof: result.proof.as_ref().map(dhow_wire::proof_pb),
            actor_proofs: result
                .actor_proofs
                .iter()
                .map(dhow_wire::proof_pb)
                .collect(),
            partial_caveat_info,
            denied_at: result.denied_at.map(dhow_wire::chain_link_pb),
        })
    }

    async fn do_check_bulk(
        &self,
        req: pb::CheckBulkRequest,
        id: Option<Identity>,
    ) -> ApiResult<pb::CheckBulkResponse> {
        let max = self.st.limits.max_check_bulk_items;
        if req.items.len() > max {
            return Err(ApiError::new(
                Code::InvalidArgument,
                reason::TOO_MANY_ITEMS,
                format!(
                    "{} items in one CheckBulk; at most {max} are allowed (split the call)",
                    req.items.len()
                ),
            )
            .with("max_check_bulk_items", max)
            .at("items"));
        }
        // Shape errors fail their item only, as a unary Check would have failed.
        let token = delegation::token_chain(id.as_ref());
        let items: Vec<ApiResult<Item>> = req
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                check_item(
                    &format!("items[{i}]"),
                    ItemFields {
                        resource: it.resource.as_ref(),
                        permission: &it.permission,
                        subject: it.subject.as_ref(),
                        actors: &it.actors,
                        explain: it.explain,
                        context: it.context.as_ref(),
                    },
                    token,
                )
            })
            .collect();
        let rev = self.st.resolve(req.consistency.as_ref()).await?;
        let st = self.st.clone();
        let audit_proofs = self.st.audit_proofs();
        let (items, mut outcomes) = evaluate(move |cancel| {
            let store = st.node.store();
            let schema = st.require_schema(rev)?;
            let engine = &schema.engine;
            let reader = store.reader(rev)?;
            let mut out: Vec<Option<ApiResult<Answer>>> = items
                .iter()
                .map(|it| match it {
                    Err(e) => Some(Err(e.clone())),
                    Ok(it) => check_item_schema(engine, it).err().map(Err),
                })
                .collect();
            // The valid items, evaluated in bulk calls (plain and delegated, with and without
            // proofs), each sharing its memo.
            for (explain, delegated) in [(false, false), (true, false), (false, true), (true, true)]
            {
                let idx: Vec<usize> = items
                    .iter()
                    .enumerate()
                    .filter(|(i, it)| {
                        out[*i].is_none()
                            && matches!(it, Ok(x) if x.explain == explain
                                && x.actors.is_empty() != delegated)
                    })
                    .map(|(i, _)| i)
                    .collect();
                let valid: Vec<&Item> =
                    idx.iter().filter_map(|i| items[*i].as_ref().ok()).collect();
                let o = opts(
                    st.check_cache.as_ref(),
                    explain || audit_proofs,
                    &cancel,
                    None,
                );
                let results: Vec<Result<Answer, dhow_engine::Error>> = if delegated {
                    let reqs: Vec<DelegatedCheck> = valid
                        .iter()
                        .map(|it| DelegatedCheck::new(it.check.clone(), it.actors.clone()))
                        .collect();
                    engine
                        .check_bulk_delegated(&reader, &reqs, o)
                        .into_iter()
                        .map(|r| r.map(Answer::from))
                        .collect()
                } else {
                    let reqs: Vec<EngineCheck> = valid.iter().map(|it| it.check.clone()).collect();
                    engine
                        .check_bulk(&reader, &reqs, o)
                        .into_iter()
                        .map(|r| r.map(Answer::from))
                        .collect()
                };
                for (i, r) in idx.into_iter().zip(results) {
                    out[i] = Some(r.map_err(|e| engine_error(e, &format!("items[{i}]"))));
                }
            }
            Ok((items, out))
        })
        .await?;
        for (it, o) in items.iter().zip(outcomes.iter_mut()) {
            if let (Ok(it), Some(Ok(a))) = (it, o) {
                self.audit(id.as_ref(), it, a, rev);
            }
        }
        let items = req
            .items
            .into_iter()
            .zip(outcomes)
            .map(|(request, o)| {
                let response = match o {
                    Some(Ok(r)) => {
                        crate::metrics::global().check(&r.permissionship);
                        let (permissionship, partial_caveat_info) =
                            dhow_wire::permissionship_pb(&r.permissionship);
                        pb::check_bulk_response_item::Response::Result(pb::CheckBulkResult {
                            permissionship,
                            proof: r.proof.as_ref().map(dhow_wire::proof_pb),
                            actor_proofs: r.actor_proofs.iter().map(dhow_wire::proof_pb).collect(),
                            partial_caveat_info,
                            denied_at: r.denied_at.map(dhow_wire::chain_link_pb),
                        })
                    }
                    Some(Err(e)) => bulk_error(e),
                    None => bulk_error(ApiError::internal("check was not evaluated")),
                };
                pb::CheckBulkResponseItem {
                    request: Some(request),
                    response: Some(response),
                }
            })
            .collect();
        Ok(pb::CheckBulkResponse {
            checked_at: Some(self.st.token(rev)),
            items,
        })
    }

    async fn do_expand(&self, req: pb::ExpandRequest) -> ApiResult<pb::ExpandResponse> {
        let resource = dhow_wire::object(req.resource.as_ref(), "resource", false)?;
        let permission = dhow_wire::relation_name(&req.permission, "permission")?;
        telemetry::rpc_attrs(|| {
            [
                (
                    "dhow.resource_type",
                    resource.object_type.to_string().into(),
                ),
                ("dhow.permission", permission.to_string().into()),
            ]
        });
        let rev = self.st.resolve(req.consistency.as_ref()).await?;
        let st = self.st.clone();
        let tree = evaluate(move |cancel| {
            let store = st.node.store();
            let schema = st.require_schema(rev)?;
            check_ref(
                &schema.engine,
                &resource.object_type,
                Some(&permission),
                "resource.object_type",
                "permission",
            )?;
            let reader = store.reader(rev)?;
            Ok(schema.engine.expand(
                &reader,
                &resource,
                &permission,
                opts(None, false, &cancel, None),
            )?)
        })
        .await?;
        Ok(pb::ExpandResponse {
            expanded_at: Some(self.st.token(rev)),
            tree: Some(dhow_wire::expand_pb(&tree)),
        })
    }

    async fn do_lookup_resources(
        &self,
        req: pb::LookupResourcesRequest,
        id: Option<Identity>,
    ) -> ApiResult<Vec<pb::LookupResourcesResponse>> {
        let rtype = dhow_wire::type_name(&req.resource_object_type, "resource_object_type")?;
        let permission = dhow_wire::relation_name(&req.permission, "permission")?;
        telemetry::rpc_attrs(|| {
            [
                ("dhow.resource_type", rtype.to_string().into()),
                ("dhow.permission", permission.to_string().into()),
            ]
        });
        let (subject, actors) = delegation::resolve(
            "",
            req.subject.as_ref(),
            &req.actors,
            delegation::token_chain(id.as_ref()),
        )?;
        let context = dhow_wire::context(req.context.as_ref(), "context")?;
        let cluster = self.st.node.cluster_id();
        // A cursor continues the same request: with another context or chain, conditional
        // results (and the order they were sent in) could differ.
        let subject_text = subject.to_string();
        let context_text = context.as_ref().map(CaveatContext::to_json);
        let actors_text: Vec<String> = actors.iter().map(|a| format!("actor {a}")).collect();
        let mut parts: Vec<&str> = vec![&rtype, &permission, &subject_text];
        parts.extend(context_text.as_deref());
        parts.extend(actors_text.iter().map(String::as_str));
        let fp = fingerprint(&parts);
        let resume = req
            .optional_cursor
            .as_ref()
            .map(|c| {
                ResumePoint::decode(
                    c,
                    CursorKind::LookupResources,
                    cluster,
                    fp,
                    "optional_cursor",
                )
            })
            .transpose()?;
        let after = match resume.as_ref().map(|r| &r.position) {
            Some(Position::ResourceId(id)) => Some(id.clone()),
            _ => None,
        };
        let rev = self
            .st
            .resolve_with_cursor(req.consistency.as_ref(), resume.as_ref(), "optional_cursor")
            .await?;
        let st = self.st.clone();
        // The engine checks only the candidates this page needs, after the cursor, in id
        // order: a page costs in proportion to the page, not to every result.
        let page = dhow_engine::LookupPage {
            after,
            limit: req.optional_limit as usize,
        };
        let (rt, perm, subj) = (rtype.clone(), permission.clone(), subject.clone());
        let found = evaluate(move |cancel| {
            let store = st.node.store();
            let schema = st.require_schema(rev)?;
            lookup_refs(&schema.engine, &rt, &perm, &subj)?;
            let reader = store.reader(rev)?;
            // Not through the check cache: a lookup's candidates are mostly answers no other
            // request asks (10,000 documents of one user), so sharing them cost more than it
            // saved (`dhow-bench lookup` on 1M, 10,689 results: 255-273 ms with, 164 ms
            // without) and evicted what checks repeat.
            let o = opts(None, false, &cancel, context.as_ref());
            if actors.is_empty() {
                schema
                    .engine
                    .lookup_found_resources_page(&reader, &rt, &perm, &subj, &page, o)
            } else {
                schema
                    .engine
                    .lookup_resources_delegated_page(&reader, &rt, &perm, &subj, &actors, &page, o)
            }
            .map_err(|e| engine_error(e, ""))
        })
        .await?;
        let token = self.st.token(rev);
        Ok(found
            .iter()
            .map(|f| {
                let cursor = ResumePoint {
                    kind: CursorKind::LookupResources,
                    cluster_id: cluster,
                    revision: rev,
                    fingerprint: fp,
                    position: Position::ResourceId(f.id.clone()),
                }
                .encode();
                pb::LookupResourcesResponse {
                    looked_up_at: Some(token.clone()),
                    after_result_cursor: Some(cursor),
                    ..dhow_wire::found_resource_pb(f)
                }
            })
            .collect())
    }

    async fn do_lookup_subjects(
        &self,
        req: pb::LookupSubjectsRequest,
    ) -> ApiResult<Vec<pb::LookupSubjectsResponse>> {
        let resource = dhow_wire::object(req.resource.as_ref(), "resource", false)?;
        let permission = dhow_wire::relation_name(&req.permission, "permission")?;
        telemetry::rpc_attrs(|| {
            [
                (
                    "dhow.resource_type",
                    resource.object_type.to_string().into(),
                ),
                ("dhow.permission", permission.to_string().into()),
            ]
        });
        let stype = dhow_wire::type_name(&req.subject_object_type, "subject_object_type")?;
        let srel = dhow_wire::subject_relation(
            &req.optional_subject_relation,
            "optional_subject_relation",
        )?;
        let context = dhow_wire::context(req.context.as_ref(), "context")?;
        let rev = self.st.resolve(req.consistency.as_ref()).await?;
        let st = self.st.clone();
        let found = evaluate(move |cancel| {
            let store = st.node.store();
            let schema = st.require_schema(rev)?;
            let e = &schema.engine;
            check_ref(
                e,
                &resource.object_type,
                Some(&permission),
                "resource.object_type",
                "permission",
            )?;
            check_ref(
                e,
                &stype,
                srel.as_deref(),
                "subject_object_type",
                "optional_subject_relation",
            )?;
            let reader = store.reader(rev)?;
            e.lookup_subjects(
                &reader,
                &resource,
                &permission,
                &stype,
                srel.as_deref(),
                opts(None, false, &cancel, context.as_ref()),
            )
            .map_err(|e| engine_error(e, ""))
        })
        .await?;
        let max = self.st.limits.max_lookup_subjects_results;
        if found.len() > max {
            return Err(ApiError::new(
                Code::ResourceExhausted,
                reason::TOO_MANY_RESULTS,
                format!(
                    "{} subjects found; one LookupSubjects returns at most {max} (look up a narrower permission or subject relation)",
                    found.len()
                ),
            )
            .with("limit", max));
        }
        let token = self.st.token(rev);
        Ok(found
            .iter()
            .map(|f| pb::LookupSubjectsResponse {
                looked_up_at: Some(token.clone()),
                ..dhow_wire::found_subject_pb(f)
            })
            .collect())
    }
}

fn lookup_refs(
    engine: &dhow_engine::Engine,
    rtype: &str,
    perm: &str,
    subject: &Subject,
) -> ApiResult<()> {
    check_ref(
        engine,
        rtype,
        Some(perm),
        "resource_object_type",
        "permission",
    )?;
    check_ref(
        engine,
        &subject.object.object_type,
        subject.relation.as_deref(),
        "subject.object.object_type",
        "subject.optional_relation",
    )
}

fn stream_of<T: Send + 'static>(items: Vec<T>) -> ResponseStream<T> {
    Box::pin(tokio_stream::iter(items.into_iter().map(Ok)))
}

#[tonic::async_trait]
impl<N: Node> PermissionService for PermissionSvc<N> {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let id = request.extensions().get::<Identity>().cloned();
        self.do_check(request.into_inner(), id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn check_bulk(
        &self,
        request: Request<pb::CheckBulkRequest>,
    ) -> Result<Response<pb::CheckBulkResponse>, Status> {
        let id = request.extensions().get::<Identity>().cloned();
        self.do_check_bulk(request.into_inner(), id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn expand(
        &self,
        request: Request<pb::ExpandRequest>,
    ) -> Result<Response<pb::ExpandResponse>, Status> {
        self.do_expand(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    type LookupResourcesStream = ResponseStream<pb::LookupResourcesResponse>;

    async fn lookup_resources(
        &self,
        request: Request<pb::LookupResourcesRequest>,
    ) -> Result<Response<Self::LookupResourcesStream>, Status> {
        let id = request.extensions().get::<Identity>().cloned();
        self.do_lookup_resources(request.into_inner(), id)
            .await
            .map(|v| Response::new(stream_of(v)))
            .map_err(status)
    }

    type LookupSubjectsStream = ResponseStream<pb::LookupSubjectsResponse>;

    async fn lookup_subjects(
        &self,
        request: Request<pb::LookupSubjectsRequest>,
    ) -> Result<Response<Self::LookupSubjectsStream>, Status> {
        self.do_lookup_subjects(request.into_inner())
            .await
            .map(|v| Response::new(stream_of(v)))
            .map_err(status)
    }
}
