//! `AuditService`: this node's decision log (`dhow-audit`), queried by principal, actor,
//! resource, outcome and time; and the one place the permission handlers hand it a decision.

use std::sync::Arc;

use dhow_audit::{Outcome, Record};
use dhow_engine::{ChainLink, CheckRequest, Permissionship};
use dhow_node::Node;
use dhow_proto::v1 as pb;
use dhow_proto::v1::audit_service_server::AuditService;
use dhow_tuples::{ObjectRef, Revision};
use tonic::{Code, Request, Response, Status};

use super::{evaluate, status, State};
use crate::auth::Identity;
use crate::error::{reason, ApiError, ApiResult};

/// The audit service over a node.
pub struct AuditSvc<N: Node> {
    st: Arc<State<N>>,
}

impl<N: Node> AuditSvc<N> {
    pub fn new(st: Arc<State<N>>) -> Self {
        AuditSvc { st }
    }
}

/// One decision, as the permission handlers saw it.
pub struct Decision<'a> {
    pub caller: Option<&'a Identity>,
    pub check: &'a CheckRequest,
    pub actors: &'a [ObjectRef],
    pub permissionship: &'a Permissionship,
    pub denied_at: Option<ChainLink>,
    pub revision: Revision,
    /// The proof as text, when there is one to record.
    pub proof: Option<String>,
}

impl<N: Node> State<N> {
    /// Whether the audit log records every proof (the handlers then compute them).
    pub fn audit_proofs(&self) -> bool {
        self.audit.as_ref().is_some_and(|a| a.settings().proofs)
    }

    /// Hands `d` to the audit log, if its mode wants it; never blocks.
    pub fn audit(&self, d: Decision<'_>) {
        let Some(log) = &self.audit else { return };
        let outcome = match d.permissionship {
            Permissionship::Allowed => Outcome::Allowed,
            Permissionship::Denied => Outcome::Denied,
            Permissionship::Conditional { .. } => Outcome::Conditional,
        };
        if !log.wants(outcome) {
            return;
        }
        log.record(Record {
            time_us: dhow_audit::now_us(),
            node: self.node_id,
            caller: d
                .caller
                .map(|i| i.name.clone())
                .unwrap_or_else(|| "anonymous".into()),
            principal: d.check.subject.to_string(),
            actors: d.actors.iter().map(|a| a.to_string()).collect(),
            resource: d.check.resource.to_string(),
            permission: d.check.permission.clone(),
            outcome,
            revision: d.revision.0,
            denied_at: d.denied_at.map(|l| match l {
                ChainLink::Principal => "principal".to_string(),
                ChainLink::Actor(i) => format!("actors[{i}]"),
            }),
            proof: d.proof,
        });
    }
}

impl<N: Node> AuditSvc<N> {
    async fn do_query(
        &self,
        req: pb::QueryDecisionsRequest,
    ) -> ApiResult<pb::QueryDecisionsResponse> {
        let q = dhow_wire::audit_query(&req)?;
        let Some(log) = self.st.audit.clone() else {
            return Err(ApiError::new(
                Code::FailedPrecondition,
                reason::AUDIT_OFF,
                "this node keeps no audit log ([audit] mode is off)",
            ));
        };
        let node_id = self.st.node_id;
        let records = evaluate(move |_| {
            log.query(&q)
                .map(|r| (r, log.dropped()))
                .map_err(|e| ApiError::internal(format!("reading the audit log: {e}")))
        })
        .await?;
        Ok(pb::QueryDecisionsResponse {
            node_id,
            records: records.0.iter().map(dhow_wire::audit_record_pb).collect(),
            dropped: records.1,
        })
    }
}

#[tonic::async_trait]
impl<N: Node> AuditService for AuditSvc<N> {
    async fn query_decisions(
        &self,
        request: Request<pb::QueryDecisionsRequest>,
    ) -> Result<Response<pb::QueryDecisionsResponse>, Status> {
        self.do_query(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}
