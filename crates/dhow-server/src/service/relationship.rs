//! `RelationshipService`: Write, Delete by filter, Read (paginated at one snapshot), Watch
//! (resumable change stream), Import (client stream of batches) and Export.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use dhow_proto::v1 as pb;
use dhow_proto::v1::relationship_service_server::RelationshipService;
use dhow_tuples::{
    Precondition, Relationship, RelationshipFilter, RelationshipKey, Revision, Timestamp, WriteOp,
    WriteRequest,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{blocking, status, ResponseStream, State};
use crate::checks::{check_filter, check_ref, filter_key, writable_relationship};
use crate::consistency;
use crate::cursor::{fingerprint, CursorKind, Position, ResumePoint};
use crate::error::{reason, ApiError, ApiResult};
use crate::token;
use dhow_node::{Node, NodeError};
use dhow_wire::join;

/// Relationships read from the store per page (Read, Export, Delete).
const PAGE: usize = 1000;

/// The relationship service over a node.
pub struct RelationshipSvc<N: Node> {
    st: Arc<State<N>>,
}

impl<N: Node> RelationshipSvc<N> {
    pub fn new(st: Arc<State<N>>) -> Self {
        RelationshipSvc { st }
    }
}

/// Validates a relationship to be stored against the schema, naming the field at fault
/// (`field` is only written out for an error).
fn validate_stored(
    engine: &dhow_engine::Engine,
    r: &Relationship,
    field: impl FnOnce() -> String,
) -> ApiResult<()> {
    use dhow_engine::Error as E;
    engine.validate_relationship(r).map_err(|e| {
        let sub = match &e {
            E::UnknownType(t) if *t == r.resource.object_type => "resource.object_type",
            E::UnknownType(_) => "subject.object.object_type",
            E::UnknownRelation {
                type_name,
                relation,
            } if *type_name == r.resource.object_type && *relation == r.relation => "relation",
            E::UnknownRelation { .. } => "subject.optional_relation",
            E::InvalidRelationship(_) if context_at_fault(engine, r) => "optional_caveat.context",
            _ => "",
        };
        ApiError::from(e).at(join(&field(), sub))
    })
}

/// Whether a refused relationship would be accepted without its caveat's context: then the
/// context (an undeclared parameter, a value of the wrong type, too large) is at fault.
fn context_at_fault(engine: &dhow_engine::Engine, r: &Relationship) -> bool {
    match &r.caveat {
        Some(c) if c.context.is_some() => {
            let mut bare = r.clone();
            if let Some(c) = bare.caveat.as_mut() {
                c.context = None;
            }
            engine.validate_relationship(&bare).is_ok()
        }
        _ => false,
    }
}

/// Validates the names of a relationship to be deleted (only its key matters).
fn validate_deleted(engine: &dhow_engine::Engine, r: &Relationship, field: &str) -> ApiResult<()> {
    check_ref(
        engine,
        &r.resource.object_type,
        Some(&r.relation),
        &join(field, "resource.object_type"),
        &join(field, "relation"),
    )?;
    check_ref(
        engine,
        &r.subject.object.object_type,
        r.subject.relation.as_deref(),
        &join(field, "subject.object.object_type"),
        &join(field, "subject.optional_relation"),
    )
}

fn preconditions(pre: &[pb::Precondition], max: usize) -> ApiResult<Vec<Precondition>> {
    use pb::precondition::Operation;
    // Each precondition is a read on the apply path, where every write waits for it.
    if pre.len() > max {
        return Err(ApiError::new(
            Code::InvalidArgument,
            reason::TOO_MANY_PRECONDITIONS,
            format!(
                "{} preconditions in one write; at most {max} are allowed",
                pre.len()
            ),
        )
        .with("max_preconditions_per_write", max)
        .at("optional_preconditions"));
    }
    pre.iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("optional_preconditions[{i}]");
            let filter =
                dhow_wire::relationship_filter(p.filter.as_ref(), &join(&field, "filter"))?;
            match Operation::try_from(p.operation) {
                Ok(Operation::MustMatch) => Ok(Precondition::MustMatch(filter)),
                Ok(Operation::MustNotMatch) => Ok(Precondition::MustNotMatch(filter)),
                _ => Err(ApiError::invalid(
                    join(&field, "operation"),
                    "must be OPERATION_MUST_MATCH or OPERATION_MUST_NOT_MATCH",
                )),
            }
        })
        .collect()
}

fn check_preconditions_schema(engine: &dhow_engine::Engine, pre: &[Precondition]) -> ApiResult<()> {
    for (i, p) in pre.iter().enumerate() {
        let (Precondition::MustMatch(f) | Precondition::MustNotMatch(f)) = p;
        check_filter(engine, f, &format!("optional_preconditions[{i}].filter"))?;
    }
    Ok(())
}

/// One Import message as the writes it becomes: chunks of at most `max` relationships,
/// each with how many relationships of the message it covers. TOUCH semantics: within a
/// chunk a later copy of a relationship replaces an earlier one, in the earlier one's
/// place. Each kept relationship carries its index in the message, for an error naming it.
/// (The identities are hashed with a randomly seeded hasher: a message's keys cannot be
/// chosen to collide.)
fn import_chunks(rels: Vec<Relationship>, max: usize) -> Vec<(Vec<(usize, Relationship)>, u64)> {
    let max = max.max(1);
    // Per chunk, the message index kept for each distinct relationship, in first-seen order.
    let mut kept: Vec<Vec<usize>> = Vec::new();
    for (ci, chunk) in rels.chunks(max).enumerate() {
        let mut index: HashMap<RelationshipKey<'_>, usize, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(chunk.len(), Default::default());
        let mut out: Vec<usize> = Vec::with_capacity(chunk.len());
        for (k, r) in chunk.iter().enumerate() {
            let at = ci * max + k;
            match index.entry(r.key()) {
                std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = at,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push(at);
                }
            }
        }
        kept.push(out);
    }
    let total = rels.len();
    let mut slots: Vec<Option<Relationship>> = rels.into_iter().map(Some).collect();
    kept.into_iter()
        .enumerate()
        .map(|(ci, out)| {
            let n = (total - ci * max).min(max) as u64;
            let chunk = out
                .into_iter()
                .filter_map(|at| slots[at].take().map(|r| (at, r)))
                .collect();
            (chunk, n)
        })
        .collect()
}

/// Maps a refused write, pointing at the update a CREATE conflict came from.
fn write_error(e: NodeError, rels: &[(String, &Relationship)]) -> ApiError {
    if let NodeError::Rejected(dhow_tuples::Error::AlreadyExists(text)) = &e {
        if let Some((field, _)) = rels.iter().find(|(_, r)| r.to_string() == *text) {
            return ApiError::from(e).at(field.clone());
        }
    }
    ApiError::from(e)
}

/// One page of relationships matching `filter` at `rev`, after `after`.
async fn read_page<N: Node>(
    st: &Arc<State<N>>,
    rev: Revision,
    filter: &RelationshipFilter,
    after: Option<Relationship>,
    n: usize,
) -> ApiResult<Vec<Relationship>> {
    let st = st.clone();
    let filter = filter.clone();
    blocking(move || {
        let store = st.node.store();
        let reader = store.reader(rev)?;
        Ok(reader.read(&filter, after.as_ref(), n)?)
    })
    .await
}

/// Import keeps up to this many writes submitted while it reads and checks the next
/// messages: the Raft loop then batches them into fewer, larger entries (fewer syncs, and
/// less of the applier's work per relationship: 4 in flight imported 1M relationships at
/// 303,000/s, 16 at 376,000/s, 32 at 392,000/s, `docs/benchmarks.md`), and checking overlaps
/// with replicating. Submission order is kept, so a later copy of a relationship still wins.
const IMPORT_IN_FLIGHT: usize = 32;

/// ... and writes from at most this many bytes of messages (their size on the wire, shared
/// among a message's writes), so that a client sending large relationships holds less of
/// them in the server's memory. A write is submitted however large, then waited for.
const IMPORT_IN_FLIGHT_BYTES: usize = 8 << 20;

/// Whether Import must wait for its oldest submitted write before reading on: `count`
/// writes from `bytes` bytes of messages are in flight.
fn import_window_full(count: usize, bytes: usize) -> bool {
    count >= IMPORT_IN_FLIGHT || (count > 0 && bytes > IMPORT_IN_FLIGHT_BYTES)
}

/// Import's submitted writes, oldest first: (message number, relationships, bytes of the
/// message they came from, outcome).
type InFlight<'a> = VecDeque<(
    usize,
    u64,
    usize,
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Revision, NodeError>> + Send + 'a>>,
)>;

/// Waits for the oldest submitted write; counts it if it was applied.
async fn settle_one(
    inflight: &mut InFlight<'_>,
    loaded: &mut u64,
    last: &mut Option<Revision>,
) -> ApiResult<()> {
    let Some((batch_no, n, _, pending)) = inflight.pop_front() else {
        return Ok(());
    };
    match pending.await {
        Ok(rev) => {
            *loaded += n;
            *last = (*last).max(Some(rev));
            Ok(())
        }
        Err(e) => Err(ApiError::from(e).with("batch", batch_no)),
    }
}

/// Waits for every submitted write (after a failure: what was applied still counts).
async fn settle_all(inflight: &mut InFlight<'_>, loaded: &mut u64, last: &mut Option<Revision>) {
    while !inflight.is_empty() {
        let _ = settle_one(inflight, loaded, last).await;
    }
}

impl<N: Node> RelationshipSvc<N> {
    async fn do_write(&self, req: pb::WriteRequest) -> ApiResult<pb::WriteResponse> {
        use pb::relationship_update::Operation;
        let max = self.st.limits.max_updates_per_write;
        if req.updates.len() > max {
            return Err(ApiError::new(
                Code::InvalidArgument,
                reason::TOO_MANY_UPDATES,
                format!(
                    "{} updates in one write; at most {max} are allowed (split the write, or use Import)",
                    req.updates.len()
                ),
            )
            .with("max_updates_per_write", max)
            .at("updates"));
        }
        let mut ops = Vec::with_capacity(req.updates.len());
        for (i, u) in req.updates.iter().enumerate() {
            let field = format!("updates[{i}]");
            let rel =
                writable_relationship(u.relationship.as_ref(), &join(&field, "relationship"))?;
            let op = match Operation::try_from(u.operation) {
                Ok(Operation::Create) => WriteOp::Create(rel),
                Ok(Operation::Touch) => WriteOp::Touch(rel),
                Ok(Operation::Delete) => WriteOp::Delete(rel),
                _ => {
                    return Err(ApiError::invalid(
                        join(&field, "operation"),
                        "must be OPERATION_CREATE, OPERATION_TOUCH or OPERATION_DELETE",
                    ))
                }
            };
            ops.push(op);
        }
        let mut seen: HashMap<RelationshipKey<'_>, usize> = HashMap::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let (WriteOp::Create(r) | WriteOp::Touch(r) | WriteOp::Delete(r)) = op;
            if let Some(first) = seen.insert(r.key(), i) {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    reason::DUPLICATE_RELATIONSHIP,
                    format!("relationship `{r}` appears more than once in one write (first at updates[{first}])"),
                )
                .at(format!("updates[{i}].relationship")));
            }
        }
        let pre = preconditions(
            &req.optional_preconditions,
            self.st.limits.max_preconditions_per_write,
        )?;

        let _gate = self.st.write_gate.read().await;
        // Validation hands the write back whatever its outcome, so a retry needs no copy.
        let validate = |rev: Revision, ops: Vec<WriteOp>, pre: Vec<Precondition>| {
            let st = self.st.clone();
            blocking(move || {
                let outcome = (|| {
                    let schema = st.require_schema(rev)?;
                    for (i, op) in ops.iter().enumerate() {
                        let field = format!("updates[{i}].relationship");
                        match op {
                            WriteOp::Create(r) | WriteOp::Touch(r) => {
                                validate_stored(&schema.engine, r, || field.clone())?
                            }
                            WriteOp::Delete(r) => validate_deleted(&schema.engine, r, &field)?,
                        }
                    }
                    check_preconditions_schema(&schema.engine, &pre)
                })();
                Ok((outcome, ops, pre))
            })
        };
        // Validate against this node's schema; if that refuses the write, the schema may have
        // changed on another node a moment ago: refuse only what the cluster's newest schema
        // refuses too.
        let local = self.st.node.applied();
        let (outcome, ops, pre) = validate(local, ops, pre).await?;
        let (ops, pre) = match outcome {
            Ok(()) => (ops, pre),
            Err(e) => {
                let fresh = self.st.node.read_index().await.map_err(|_| e.clone())?;
                if fresh <= local {
                    return Err(e);
                }
                self.st
                    .node
                    .wait_applied(fresh, self.st.limits.consistency_timeout)
                    .await?;
                let (outcome, ops, pre) = validate(fresh, ops, pre).await?;
                outcome?;
                (ops, pre)
            }
        };
        let fields: Vec<(String, Relationship)> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                let (WriteOp::Create(r) | WriteOp::Touch(r) | WriteOp::Delete(r)) = op;
                (format!("updates[{i}].relationship"), r.clone())
            })
            .collect();
        let rev = self
            .st
            .write(WriteRequest {
                preconditions: pre,
                ops,
            })
            .await
            .map_err(|e| {
                let refs: Vec<(String, &Relationship)> =
                    fields.iter().map(|(f, r)| (f.clone(), r)).collect();
                write_error(e, &refs)
            })?;
        Ok(pb::WriteResponse {
            written_at: Some(self.st.token(rev)),
        })
    }

    async fn do_delete(&self, req: pb::DeleteRequest) -> ApiResult<pb::DeleteResponse> {
        let filter = dhow_wire::relationship_filter(req.filter.as_ref(), "filter")?;
        let pre = preconditions(
            &req.optional_preconditions,
            self.st.limits.max_preconditions_per_write,
        )?;
        // One delete is one write, so at most `max_updates_per_write` relationships: a larger
        // delete is done in chunks, each call deleting one and reporting `partial` until none
        // match (with `optional_allow_partial_deletions`; refused without).
        let max = self.st.limits.max_updates_per_write;
        let asked = req.optional_limit as usize;
        let limit = if asked == 0 { max } else { asked.min(max) };
        let chunked = limit < asked || asked == 0;
        let _gate = self.st.write_gate.read().await;
        let rev = self.st.node.applied();
        {
            let st = self.st.clone();
            let (f, p) = (filter.clone(), pre.clone());
            blocking(move || {
                let schema = st.require_schema(rev)?;
                check_filter(&schema.engine, &f, "filter")?;
                check_preconditions_schema(&schema.engine, &p)
            })
            .await?;
        }
        // Read one more than the limit, to know whether matches remain.
        let want = limit.saturating_add(1);
        let mut matches: Vec<Relationship> = Vec::new();
        let mut after = None;
        while matches.len() < want {
            let n = PAGE.min(want - matches.len());
            let page = read_page(&self.st, rev, &filter, after.take(), n).await?;
            let done = page.len() < n;
            after = page.last().cloned();
            matches.extend(page);
            if done {
                break;
            }
        }
        let mut partial = false;
        if matches.len() > limit {
            if !req.optional_allow_partial_deletions && chunked {
                return Err(ApiError::new(
                    Code::FailedPrecondition,
                    reason::DELETE_LIMIT_EXCEEDED,
                    format!(
                        "more than {max} relationships match the filter, over max_updates_per_write \
                         ({max}): set optional_allow_partial_deletions and call again while the \
                         response says partial"
                    ),
                )
                .with("max_updates_per_write", max)
                .at("optional_allow_partial_deletions"));
            }
            if !req.optional_allow_partial_deletions {
                return Err(ApiError::new(
                    Code::FailedPrecondition,
                    reason::DELETE_LIMIT_EXCEEDED,
                    format!(
                        "more than {limit} relationships match the filter; raise optional_limit or set \
                         optional_allow_partial_deletions"
                    ),
                )
                .with("limit", limit)
                .at("optional_limit"));
            }
            matches.truncate(limit);
            partial = true;
        }
        let count = matches.len() as u64;
        let rev = self
            .st
            .write(WriteRequest {
                preconditions: pre,
                ops: matches.into_iter().map(WriteOp::Delete).collect(),
            })
            .await?;
        Ok(pb::DeleteResponse {
            deleted_at: Some(self.st.token(rev)),
            deleted_count: count,
            partial,
        })
    }

    async fn do_read(&self, req: pb::ReadRequest) -> ApiResult<ResponseStream<pb::ReadResponse>> {
        let filter = dhow_wire::relationship_filter(req.filter.as_ref(), "filter")?;
        let cluster = self.st.node.cluster_id();
        let fp = fingerprint(&[&filter_key(&filter)]);
        let resume = req
            .optional_cursor
            .as_ref()
            .map(|c| ResumePoint::decode(c, CursorKind::Read, cluster, fp, "optional_cursor"))
            .transpose()?;
        let rev = self
            .st
            .resolve_with_cursor(req.consistency.as_ref(), resume.as_ref(), "optional_cursor")
            .await?;
        {
            let st = self.st.clone();
            let f = filter.clone();
            blocking(move || {
                let schema = st.require_schema(rev)?;
                check_filter(&schema.engine, &f, "filter")
            })
            .await?;
        }
        let mut after = match resume.map(|r| r.position) {
            Some(Position::Relationship(r)) => Some(r),
            _ => None,
        };
        let limit = req.optional_limit as usize;
        let (tx, rx) = mpsc::channel(64);
        let st = self.st.clone();
        let token = st.token(rev);
        tokio::spawn(async move {
            let mut sent = 0usize;
            let now = Timestamp::now();
            loop {
                let page = match read_page(&st, rev, &filter, after.take(), PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let done = page.len() < PAGE;
                after = page.last().cloned();
                for r in page {
                    if r.is_expired_at(now) {
                        continue;
                    }
                    let cursor = ResumePoint {
                        kind: CursorKind::Read,
                        cluster_id: cluster,
                        revision: rev,
                        fingerprint: fp,
                        position: Position::Relationship(r.clone()),
                    }
                    .encode();
                    let msg = pb::ReadResponse {
                        read_at: Some(token.clone()),
                        relationship: Some(dhow_wire::relationship_pb(&r)),
                        after_result_cursor: Some(cursor),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    sent += 1;
                    if limit > 0 && sent >= limit {
                        return;
                    }
                }
                if done {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn do_watch(
        &self,
        req: pb::WatchRequest,
    ) -> ApiResult<ResponseStream<pb::WatchResponse>> {
        let types: Vec<String> = req
            .optional_object_types
            .iter()
            .enumerate()
            .map(|(i, t)| dhow_wire::type_name(t, &format!("optional_object_types[{i}]")))
            .collect::<Result<_, _>>()?;
        let node = &self.st.node;
        let start = match &req.optional_start_cursor {
            Some(t) => {
                let rev = token::decode_for(node.cluster_id(), t, "optional_start_cursor")?;
                consistency::wait_for(&**node, rev, self.st.limits.consistency_timeout).await?;
                consistency::check_not_expired(&**node, rev, "optional_start_cursor")?;
                rev
            }
            None => node.applied(),
        };
        let (tx, rx) = mpsc::channel(16);
        let st = self.st.clone();
        tokio::spawn(async move { super::watching::watch_loop(st, start, types, tx).await });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn do_import(
        &self,
        mut stream: Streaming<pb::ImportRequest>,
    ) -> Result<pb::ImportResponse, Status> {
        let max = self.st.limits.max_updates_per_write;
        let mut loaded: u64 = 0;
        let mut last: Option<Revision> = None;
        let mut batch_no: usize = 0;
        let mut inflight: InFlight<'_> = VecDeque::new();
        // No deadline for the whole stream (`deadline.rs`): each next message must come
        // within `request_timeout`.
        let idle = self.st.limits.request_timeout;
        loop {
            let batch = match tokio::time::timeout(idle, stream.message()).await {
                Ok(next) => match next? {
                    Some(batch) => batch,
                    None => break,
                },
                Err(_) => {
                    settle_all(&mut inflight, &mut loaded, &mut last).await;
                    return Err(status(
                        ApiError::new(
                            Code::DeadlineExceeded,
                            reason::TIMEOUT,
                            format!(
                                "no Import message for {} (request_timeout); the batches before were loaded",
                                humantime::format_duration(idle)
                            ),
                        )
                        .with("loaded", loaded),
                    ));
                }
            };
            // The field path of a relationship is only written out for an error.
            let rels = batch
                .relationships
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    dhow_wire::relationship(Some(r), "").map_err(|e| {
                        ApiError::from(e.within(&format!("relationships[{i}]")))
                            .with("batch", batch_no)
                    })
                })
                .collect::<ApiResult<Vec<_>>>()
                .map_err(status)?;
            // Each write of the message carries its share of the message's size.
            let (wire, count) = (batch.encoded_len(), rels.len().max(1));
            let chunks = import_chunks(rels, max);
            for (chunk, n) in chunks {
                let bytes = wire.saturating_mul(chunk.len()) / count;
                // The schema cannot change on this node between the check and the submission.
                let gate = self.st.write_gate.read().await;
                let rev = self.st.node.applied();
                let st = self.st.clone();
                let checked = blocking(move || {
                    let schema = st.require_schema(rev)?;
                    for (at, r) in &chunk {
                        validate_stored(&schema.engine, r, || format!("relationships[{at}]"))
                            .map_err(|e| e.with("batch", batch_no))?;
                    }
                    Ok(chunk.into_iter().map(|(_, r)| r).collect::<Vec<_>>())
                })
                .await;
                let chunk = match checked {
                    Ok(c) => c,
                    Err(e) => {
                        drop(gate);
                        settle_all(&mut inflight, &mut loaded, &mut last).await;
                        return Err(status(e.with("loaded", loaded)));
                    }
                };
                // Submitted now, in order; the outcome is awaited later (`Node::write`).
                let pending = self.st.node.write(WriteRequest {
                    preconditions: Vec::new(),
                    ops: chunk.into_iter().map(WriteOp::Touch).collect(),
                });
                drop(gate);
                inflight.push_back((batch_no, n, bytes, Box::pin(pending)));
                while import_window_full(inflight.len(), inflight.iter().map(|w| w.2).sum()) {
                    if let Err(e) = settle_one(&mut inflight, &mut loaded, &mut last).await {
                        settle_all(&mut inflight, &mut loaded, &mut last).await;
                        return Err(status(e.with("loaded", loaded)));
                    }
                }
            }
            batch_no += 1;
        }
        while !inflight.is_empty() {
            if let Err(e) = settle_one(&mut inflight, &mut loaded, &mut last).await {
                settle_all(&mut inflight, &mut loaded, &mut last).await;
                return Err(status(e.with("loaded", loaded)));
            }
        }
        let rev = last.unwrap_or_else(|| self.st.node.applied());
        Ok(pb::ImportResponse {
            loaded_count: loaded,
            written_at: Some(self.st.token(rev)),
        })
    }

    async fn do_export(
        &self,
        req: pb::ExportRequest,
    ) -> ApiResult<ResponseStream<pb::ExportResponse>> {
        let cluster = self.st.node.cluster_id();
        let fp = fingerprint(&["export"]);
        let resume = req
            .optional_cursor
            .as_ref()
            .map(|c| ResumePoint::decode(c, CursorKind::Export, cluster, fp, "optional_cursor"))
            .transpose()?;
        let rev = self
            .st
            .resolve_with_cursor(req.consistency.as_ref(), resume.as_ref(), "optional_cursor")
            .await?;
        let mut after = match resume.map(|r| r.position) {
            Some(Position::Relationship(r)) => Some(r),
            _ => None,
        };
        let (tx, rx) = mpsc::channel(4);
        let st = self.st.clone();
        let token = st.token(rev);
        tokio::spawn(async move {
            let all = RelationshipFilter::default();
            let now = Timestamp::now();
            let mut sent_any = false;
            loop {
                let page = match read_page(&st, rev, &all, after.take(), PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let done = page.len() < PAGE;
                after = page.last().cloned();
                let relationships: Vec<pb::Relationship> = page
                    .iter()
                    .filter(|r| !r.is_expired_at(now))
                    .map(dhow_wire::relationship_pb)
                    .collect();
                // Every batch is sent unless it is empty; the last one always is, so that
                // even an empty export tells its revision.
                if !relationships.is_empty() || (done && !sent_any) {
                    let cursor = after.clone().map(|r| {
                        ResumePoint {
                            kind: CursorKind::Export,
                            cluster_id: cluster,
                            revision: rev,
                            fingerprint: fp,
                            position: Position::Relationship(r),
                        }
                        .encode()
                    });
                    let msg = pb::ExportResponse {
                        exported_at: Some(token.clone()),
                        relationships,
                        after_result_cursor: cursor,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    sent_any = true;
                }
                if done {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl<N: Node> RelationshipService for RelationshipSvc<N> {
    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.do_write(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.do_delete(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    type ReadStream = ResponseStream<pb::ReadResponse>;

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        self.do_read(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    type WatchStream = ResponseStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.do_watch(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn import(
        &self,
        request: Request<Streaming<pb::ImportRequest>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        self.do_import(request.into_inner())
            .await
            .map(Response::new)
    }

    type ExportStream = ResponseStream<pb::ExportResponse>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        self.do_export(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::parse_relationship;

    fn rels(texts: &[&str]) -> Vec<Relationship> {
        texts
            .iter()
            .map(|t| parse_relationship(t).unwrap())
            .collect()
    }

    /// Import waits for its oldest write at 32 in flight, or earlier once the messages they
    /// came from exceed 8 MiB; with none in flight it reads on.
    #[test]
    fn the_import_window_is_bounded_by_writes_and_by_bytes() {
        let small = 80 * 1000; // 1,000 relationships of the benchmark's data, on the wire
        assert!(!import_window_full(31, 31 * small));
        assert!(import_window_full(32, 32 * small));
        let fat = 4 << 20; // a message at `max_message_bytes`
        assert!(!import_window_full(2, 2 * fat));
        assert!(import_window_full(3, 3 * fat));
        // One write larger than the budget was still submitted; it is awaited before the
        // next message is read.
        assert!(import_window_full(1, 64 << 20));
        assert!(!import_window_full(0, 64 << 20));
    }

    #[test]
    fn an_import_chunk_keeps_the_last_copy_in_the_first_copys_place() {
        let a = "document:1#viewer@user:a";
        let b = "document:1#viewer@user:b";
        let a_caveated = "document:1#viewer@user:a[on_vpn]";
        let chunks = import_chunks(rels(&[a, b, a_caveated, b, "document:2#viewer@user:a"]), 10);
        assert_eq!(chunks.len(), 1);
        let (chunk, n) = &chunks[0];
        assert_eq!(*n, 5);
        let kept: Vec<(usize, String)> = chunk.iter().map(|(at, r)| (*at, r.to_string())).collect();
        assert_eq!(
            kept,
            vec![
                (2, parse_relationship(a_caveated).unwrap().to_string()),
                (3, b.to_string()),
                (4, "document:2#viewer@user:a".to_string()),
            ]
        );
    }

    #[test]
    fn import_chunks_are_deduplicated_each_on_its_own() {
        let a = "document:1#viewer@user:a";
        let b = "document:1#viewer@user:b";
        // Chunks of 2: [a, a] [b, a] [a]. A copy in a later chunk is a later write.
        let chunks = import_chunks(rels(&[a, a, b, a, a]), 2);
        let shape: Vec<(Vec<usize>, u64)> = chunks
            .iter()
            .map(|(c, n)| (c.iter().map(|(at, _)| *at).collect(), *n))
            .collect();
        assert_eq!(shape, vec![(vec![1], 2), (vec![2, 3], 2), (vec![4], 1)]);
        assert!(import_chunks(Vec::new(), 2).is_empty());
    }
}
