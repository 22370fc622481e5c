//! `dhow cluster status|add|remove|transfer-leader`: the cluster's membership and leadership.

use clap::Subcommand;
use dhow_proto::v1 as pb;

use dhow_client::{block_on, token_text, CliError, Conn, ConnArgs, Out};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Print the members, the leader and the answering node's state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add a node (then start it with --initial-cluster-state existing); prints the token.
    /// Adding an existing learner without --learner promotes it to a voter.
    Add {
        /// The new node's id.
        id: u64,
        /// Where the other nodes reach it (its --peer-addr), HOST:PORT.
        peer_addr: String,
        /// Add a non-voting replica that follows the log and serves reads.
        #[arg(long)]
        learner: bool,
        /// Add a voter even if the leader could then not reach a quorum of voters (without
        /// it, such a change is refused: add a learner first, then promote it).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove a node; prints the token.
    Remove {
        /// The node's id.
        id: u64,
        /// Remove it even if the voters the leader can reach would then not be a quorum.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Ask the leader to hand leadership to a voter.
    TransferLeader {
        /// The voter's id.
        id: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

fn role(r: i32) -> &'static str {
    match pb::MemberRole::try_from(r).unwrap_or(pb::MemberRole::Unspecified) {
        pb::MemberRole::Leader => "leader",
        pb::MemberRole::Follower => "follower",
        pb::MemberRole::Candidate => "candidate",
        pb::MemberRole::Learner => "learner",
        pb::MemberRole::None => "not a member",
        pb::MemberRole::Unspecified => "unknown",
    }
}

fn print_status(s: &pb::StatusResponse, json: bool) -> Result<(), CliError> {
    let mut out = Out::new();
    if json {
        let members: Vec<serde_json::Value> = s
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "peer_addr": m.peer_addr,
                    "learner": m.learner,
                    "matched": m.matched,
                })
            })
            .collect();
        let v = serde_json::json!({
            "node_id": s.node_id,
            "role": role(s.role),
            "leader_id": s.leader_id,
            "term": s.term,
            "commit_index": s.commit_index,
            "applied_revision": s.applied_revision,
            "cluster_id": format!("{:016x}", s.cluster_id),
            "members": members,
        });
        out.line(v)?;
        return out.flush();
    }
    out.line(format!(
        "node {} ({}), leader {}, term {}, commit {}, applied {}, cluster {:016x}",
        s.node_id,
        role(s.role),
        if s.leader_id == 0 {
            "unknown".to_string()
        } else {
            s.leader_id.to_string()
        },
        s.term,
        s.commit_index,
        s.applied_revision,
        s.cluster_id
    ))?;
    out.line(format!(
        "{:>4}  {:<8}  {:<30}  {}",
        "ID", "ROLE", "PEER ADDRESS", "MATCHED"
    ))?;
    for m in &s.members {
        let kind = if m.id == s.leader_id {
            "leader"
        } else if m.learner {
            "learner"
        } else {
            "voter"
        };
        let matched = if s.role == pb::MemberRole::Leader as i32 {
            m.matched.to_string()
        } else {
            "-".to_string()
        };
        out.line(format!(
            "{:>4}  {:<8}  {:<30}  {}",
            m.id, kind, m.peer_addr, matched
        ))?;
    }
    out.flush()
}

pub fn run(cmd: ClusterCommand) -> Result<(), CliError> {
    match cmd {
        ClusterCommand::Status { json, conn } => block_on(async {
            let c = Conn::connect(&conn).await?;
            let s = c
                .cluster()
                .status(pb::StatusRequest {})
                .await
                .map_err(|s| c.err(s))?
                .into_inner();
            print_status(&s, json)
        })?,
        ClusterCommand::Add {
            id,
            peer_addr,
            learner,
            force,
            conn,
        } => block_on(async {
            let c = Conn::connect(&conn).await?;
            let r = c
                .cluster()
                .add_member(pb::AddMemberRequest {
                    id,
                    peer_addr,
                    learner,
                    force,
                })
                .await
                .map_err(|s| c.err(s))?
                .into_inner();
            let mut out = Out::new();
            out.line(token_text(r.changed_at.as_ref()))?;
            out.flush()
        })?,
        ClusterCommand::Remove { id, force, conn } => block_on(async {
            let c = Conn::connect(&conn).await?;
            let r = c
                .cluster()
                .remove_member(pb::RemoveMemberRequest { id, force })
                .await
                .map_err(|s| c.err(s))?
                .into_inner();
            let mut out = Out::new();
            out.line(token_text(r.changed_at.as_ref()))?;
            out.flush()
        })?,
        ClusterCommand::TransferLeader { id, conn } => block_on(async {
            let c = Conn::connect(&conn).await?;
            c.cluster()
                .transfer_leader(pb::TransferLeaderRequest { id })
                .await
                .map_err(|s| c.err(s))?;
            let mut out = Out::new();
            out.line(format!("asked the leader to hand leadership to node {id}"))?;
            out.flush()
        })?,
    }
}
