//! Membership: the public types (`MemberChange`, `Role`, `Member`, `Status`), the membership a
//! node starts with, membership changes as raft-rs conf changes whose context carries the
//! proposal id and the new member's peer address (proposed, then applied to raft-rs and
//! persisted with the peer addresses), leadership transfer, and what `Status` reports.

use raft::eraftpb::{ConfChange, ConfChangeType, ConfState};
use raft::StateRole;

use crate::codec;
use crate::config::RaftConfig;
use crate::core::Core;
use crate::log::{LogStore, Membership, RaftStorage};
use crate::propose::{Answer, Waiter};
use crate::transport::Transport;
use crate::RaftError;

/// A change of membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a voter (or promote a learner) reachable at the peer address.
    AddVoter { id: u64, addr: String },
    /// Add a non-voting replica that follows the log and serves reads.
    AddLearner { id: u64, addr: String },
    /// Remove a voter or learner.
    Remove { id: u64 },
}

/// A node's role, as `dhow cluster status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Not a member (removed, or joining and not yet given a snapshot).
    None,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub learner: bool,
    /// The highest log index known to be replicated there (leader only).
    pub matched: Option<u64>,
}

/// What a node knows of its leader, published by the loop as it changes (see
/// [`crate::RaftHandle::leadership`]): cheap to read, for readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The leader this node knows (0: none: an election in progress, or cut off from the
    /// majority).
    pub leader: u64,
    /// An entry of the current term is committed, as far as this node knows. A leader refuses
    /// ReadIndex until then, so a new leader (and a one-node cluster just started) cannot
    /// serve fully consistent reads yet.
    pub committed_in_term: bool,
    /// The index of the snapshot whose store restore is running, if any: the node applies
    /// nothing until it ends.
    pub restoring: Option<u64>,
    /// A follower or learner that has applied more than [`MAX_LAG_ENTRIES`] entries fewer
    /// than the leader said it committed (catching up after a restart or a partition).
    pub behind: bool,
    /// A follower or learner that has heard nothing from the leader it knows for two
    /// election timeouts (a learner cut off from the cluster keeps its leader id: it never
    /// campaigns).
    pub out_of_touch: bool,
}

/// How many committed entries a follower may still have to apply before it calls itself
/// behind (an entry batches many writes; a node keeping up applies within a few).
pub const MAX_LAG_ENTRIES: u64 = 1000;

impl Leadership {
    /// A leader is known and has committed an entry of its term.
    pub fn established(&self) -> bool {
        self.leader != 0 && self.committed_in_term
    }
}

/// What a node knows of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub role: Role,
    /// 0 when no leader is known.
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub members: Vec<Member>,
}

/// The membership a node starts with: the one its log holds, or else (recorded in the log
/// now) the initial cluster of the configuration, or none at all for a node joining a
/// running cluster (it waits for a snapshot).
pub(crate) fn initial_membership<L: LogStore>(
    config: &RaftConfig,
    storage: &RaftStorage<L>,
) -> Result<Membership, RaftError> {
    if let Some(m) = storage.membership()? {
        return Ok(m);
    }
    let m = if config.join {
        Membership {
            conf: ConfState::default(),
            peers: config.initial_peers.clone(),
        }
    } else {
        if !config.initial_peers.contains_key(&config.id) {
            return Err(RaftError::Config(format!(
                "node {} is not in the initial cluster {:?}",
                config.id,
                config.initial_peers.keys().collect::<Vec<_>>()
            )));
        }
        let voters: Vec<u64> = config.initial_peers.keys().copied().collect();
        Membership {
            conf: ConfState::from((voters, vec![])),
            peers: config.initial_peers.clone(),
        }
    };
    storage.set_membership(&m)?;
    Ok(m)
}

/// A node's role from the membership and raft-rs's state.
fn role(conf: &ConfState, id: u64, state: StateRole) -> Role {
    if !conf.voters.contains(&id) && !conf.learners.contains(&id) {
        return Role::None;
    }
    match state {
        StateRole::Leader => Role::Leader,
        StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
        StateRole::Follower if conf.learners.contains(&id) => Role::Learner,
        StateRole::Follower => Role::Follower,
    }
}

impl<L: LogStore, T: Transport> Core<L, T> {
    /// Proposes a membership change; `tx` is answered once it is applied.
    pub(crate) fn propose_change(&mut self, change: MemberChange, force: bool, tx: Answer) {
        if !force {
            if let Err(e) = self.quorum_after(&change) {
                let _ = tx.send(Err(e));
                return;
            }
        }
        let id = self.proposals.next_id();
        let (kind, node, addr) = match change {
            MemberChange::AddVoter { id, addr } => (ConfChangeType::AddNode, id, addr),
            MemberChange::AddLearner { id, addr } => (ConfChangeType::AddLearnerNode, id, addr),
            MemberChange::Remove { id } => (ConfChangeType::RemoveNode, id, String::new()),
        };
        if node == 0 {
            let _ = tx.send(Err(RaftError::Config("node id must be non-zero".into())));
            return;
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = node;
        cc.context = codec::encode_change_context(id, &addr).into();
        // The entry's own context names the format of the change's context.
        let outcome = self
            .raw
            .propose_conf_change(codec::change_entry_context(), cc);
        self.proposed(id, outcome, Waiter::One(tx));
    }

    /// On the leader: refuses a change after which the voters it has heard from within an
    /// election timeout (raft-rs's `recent_active`, kept by check-quorum) would not be a
    /// quorum of the voters. Elsewhere it cannot tell, and raft-rs drops the proposal anyway.
    fn quorum_after(&self, change: &MemberChange) -> Result<(), RaftError> {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader {
            return Ok(());
        }
        let mut voters: Vec<u64> = self.membership.conf.voters.clone();
        let what = match change {
            MemberChange::AddVoter { id, .. } => {
                if !voters.contains(id) {
                    voters.push(*id);
                }
                format!("adding node {id} as a voter")
            }
            MemberChange::Remove { id } => {
                voters.retain(|v| v != id);
                format!("removing node {id}")
            }
            MemberChange::AddLearner { .. } => return Ok(()),
        };
        if voters.is_empty() {
            return Err(RaftError::Config(format!(
                "{what} would leave the cluster without voters"
            )));
        }
        let healthy: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|v| *v == r.id || r.prs().get(*v).is_some_and(|p| p.recent_active))
            .collect();
        let quorum = voters.len() / 2 + 1;
        if healthy.len() >= quorum {
            return Ok(());
        }
        Err(RaftError::Config(format!(
            "refused: {what} would leave {} voters of which only {} ({:?}) answer this leader; a quorum needs {quorum}, so every write would stall. Add a new node as a learner first (dhow cluster add --learner), let it catch up, then add it as a voter; bring unreachable voters back first; or force the change (--force)",
            voters.len(),
            healthy.len(),
            healthy
        )))
    }

    /// Applies a membership change to raft-rs and persists the new membership. `Ok(Ok(true))`
    /// when a member was added; `Ok(Err(..))` when raft-rs refused the change (the entry still
    /// counts as applied).
    pub(crate) fn apply_change(
        &mut self,
        cc: &ConfChange,
        addr: String,
    ) -> Result<Result<bool, RaftError>, RaftError> {
        let conf = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(e) => {
                tracing::warn!(error = %e, node = cc.node_id, "membership change refused");
                return Ok(Err(RaftError::Config(format!(
                    "membership change refused: {e}"
                ))));
            }
        };
        if self.raw.raft.state == StateRole::Leader && !conf.voters.contains(&self.config.id) {
            // raft-rs keeps a removed leader leading: it sends heartbeats, so nobody else
            // campaigns, and drops every proposal. Step down so that the voters elect a leader.
            tracing::info!("this leader was removed from the voters: stepping down");
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
        let added = cc.get_change_type() != ConfChangeType::RemoveNode;
        if added {
            self.membership.peers.insert(cc.node_id, addr);
        } else {
            self.membership.peers.remove(&cc.node_id);
        }
        self.membership.conf = conf;
        self.storage.set_membership(&self.membership)?;
        self.transport.set_peers(&self.membership.peers);
        tracing::info!(
            node = cc.node_id,
            change = ?cc.get_change_type(),
            voters = ?self.membership.conf.voters,
            learners = ?self.membership.conf.learners,
            "membership changed"
        );
        Ok(Ok(added))
    }

    /// Asks raft-rs to hand leadership to the voter `to`.
    pub(crate) fn transfer_leader(&mut self, to: u64) -> Result<(), RaftError> {
        if self.raw.raft.leader_id == 0 {
            Err(RaftError::Unavailable(
                "no leader is known to this node".into(),
            ))
        } else if !self.membership.conf.voters.contains(&to) {
            Err(RaftError::Config(format!(
                "node {to} is not a voter of this cluster"
            )))
        } else {
            self.raw.transfer_leader(to);
            Ok(())
        }
    }

    /// What this node knows of the cluster.
    pub(crate) fn status(&self) -> Status {
        let r = &self.raw.raft;
        let conf = &self.membership.conf;
        let matched = |id: u64| {
            if r.state == StateRole::Leader {
                r.prs().get(id).map(|p| p.matched)
            } else {
                None
            }
        };
        let mut members: Vec<Member> = conf
            .voters
            .iter()
            .map(|&id| (id, false))
            .chain(conf.learners.iter().map(|&id| (id, true)))
            .map(|(id, learner)| Member {
                id,
                addr: self.membership.peers.get(&id).cloned().unwrap_or_default(),
                learner,
                matched: matched(id),
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Status {
            id: self.config.id,
            role: role(conf, self.config.id, r.state),
            leader: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: self.store.head().0,
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::MemLog;
    use std::collections::BTreeMap;

    #[test]
    fn the_role_follows_membership_before_raft_state() {
        let conf = ConfState::from((vec![1, 2], vec![3]));
        assert_eq!(role(&conf, 1, StateRole::Leader), Role::Leader);
        assert_eq!(role(&conf, 2, StateRole::PreCandidate), Role::Candidate);
        assert_eq!(role(&conf, 2, StateRole::Follower), Role::Follower);
        assert_eq!(role(&conf, 3, StateRole::Follower), Role::Learner);
        // A removed node that still thinks it leads is not a member.
        assert_eq!(role(&conf, 4, StateRole::Leader), Role::None);
    }

    #[test]
    fn the_initial_membership_is_recorded_once_and_then_read_back() {
        let storage = RaftStorage::new(MemLog::default());
        let config = RaftConfig {
            id: 2,
            initial_peers: BTreeMap::from([(1, "a:1".into()), (2, "b:1".into())]),
            ..RaftConfig::default()
        };
        let m = initial_membership(&config, &storage).unwrap();
        assert_eq!(m.conf.voters, vec![1, 2]);
        assert_eq!(storage.membership().unwrap(), Some(m.clone()));
        // The log's membership wins over a configuration that changed since.
        let other = RaftConfig {
            initial_peers: BTreeMap::from([(2, "b:1".into())]),
            ..config.clone()
        };
        assert_eq!(initial_membership(&other, &storage).unwrap(), m);
        // A joining node starts with no voters; a node outside its initial cluster is refused.
        let fresh = RaftStorage::new(MemLog::default());
        let join = RaftConfig {
            join: true,
            id: 5,
            ..config.clone()
        };
        assert!(initial_membership(&join, &fresh)
            .unwrap()
            .conf
            .voters
            .is_empty());
        let fresh = RaftStorage::new(MemLog::default());
        let outside = RaftConfig { id: 9, ..config };
        let e = initial_membership(&outside, &fresh).unwrap_err();
        assert!(
            matches!(&e, RaftError::Config(m) if m.contains("node 9")),
            "{e}"
        );
    }
}
