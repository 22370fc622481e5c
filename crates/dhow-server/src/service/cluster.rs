//! `ClusterService`: status, membership changes and leadership transfer, over the node.

use std::sync::Arc;

use dhow_proto::v1 as pb;
use dhow_proto::v1::cluster_service_server::ClusterService;
use tonic::{Request, Response, Status};

use super::{status, State};
use crate::error::{ApiError, ApiResult};
use dhow_node::{ClusterStatus, MemberChange, Node, Role};

/// The cluster service over a node.
pub struct ClusterSvc<N: Node> {
    st: Arc<State<N>>,
}

impl<N: Node> ClusterSvc<N> {
    pub fn new(st: Arc<State<N>>) -> Self {
        ClusterSvc { st }
    }
}

fn role(r: Role) -> pb::MemberRole {
    match r {
        Role::Leader => pb::MemberRole::Leader,
        Role::Follower => pb::MemberRole::Follower,
        Role::Candidate => pb::MemberRole::Candidate,
        Role::Learner => pb::MemberRole::Learner,
        Role::None => pb::MemberRole::None,
    }
}

fn to_proto(s: ClusterStatus, cluster_id: u64) -> pb::StatusResponse {
    pb::StatusResponse {
        node_id: s.id,
        role: role(s.role) as i32,
        leader_id: s.leader,
        term: s.term,
        commit_index: s.commit,
        applied_revision: s.applied,
        members: s
            .members
            .into_iter()
            .map(|m| pb::Member {
                id: m.id,
                peer_addr: m.addr,
                learner: m.learner,
                matched: m.matched.unwrap_or(0),
            })
            .collect(),
        cluster_id,
    }
}

fn node_id(id: u64) -> ApiResult<u64> {
    if id == 0 {
        return Err(ApiError::invalid("id", "a node id must be non-zero"));
    }
    Ok(id)
}

/// Checks a peer address: HOST:PORT with a numeric port.
fn peer_addr(addr: &str) -> ApiResult<String> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        return Err(ApiError::invalid(
            "peer_addr",
            format!("`{addr}` is not HOST:PORT"),
        ));
    }
    Ok(addr.to_string())
}

impl<N: Node> ClusterSvc<N> {
    async fn add(&self, r: pb::AddMemberRequest) -> ApiResult<pb::AddMemberResponse> {
        let id = node_id(r.id)?;
        let addr = peer_addr(&r.peer_addr)?;
        let change = if r.learner {
            MemberChange::AddLearner { id, addr }
        } else {
            MemberChange::AddVoter { id, addr }
        };
        let rev = self.st.node.change_membership(change, r.force).await?;
        Ok(pb::AddMemberResponse {
            changed_at: Some(self.st.token(rev)),
        })
    }

    async fn remove(&self, r: pb::RemoveMemberRequest) -> ApiResult<pb::RemoveMemberResponse> {
        let id = node_id(r.id)?;
        let rev = self
            .st
            .node
            .change_membership(MemberChange::Remove { id }, r.force)
            .await?;
        Ok(pb::RemoveMemberResponse {
            changed_at: Some(self.st.token(rev)),
        })
    }
}

#[tonic::async_trait]
impl<N: Node> ClusterService for ClusterSvc<N> {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self
            .st
            .node
            .cluster_status()
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(to_proto(s, self.st.node.cluster_id())))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        self.add(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.remove(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let id = node_id(request.into_inner().id).map_err(status)?;
        self.st
            .node
            .transfer_leader(id)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::TransferLeaderResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_must_be_host_and_port() {
        assert!(peer_addr("10.0.0.1:50052").is_ok());
        assert!(peer_addr("dhow-0.dhow.default.svc:50052").is_ok());
        for bad in ["", "host", ":50052", "host:port", "host:99999"] {
            let e = peer_addr(bad).unwrap_err();
            assert!(e.message.contains("HOST:PORT"), "{bad}: {}", e.message);
        }
        assert!(node_id(0).is_err());
    }
}
