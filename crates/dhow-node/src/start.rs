//! Starting a node from its configuration: open the RocksDB store under the data dir, settle
//! the cluster id (kept from an earlier start, derived by the founding members, or learned
//! from the running cluster), start the Raft node on the store through the state machine's
//! schema check, serve the node-to-node service on the peer address, and run the GC task.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dhow_raft::{DecodeError, FileStage, Problem, RaftConfig, RaftError, RaftHandle, StorageKind};
use dhow_storage::{ErrorKind, RocksStore, StoreOptions};
use dhow_tuples::TupleStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{ClusterState, NodeConfig};
use crate::gc::{spawn_gc, GcHandle};
use crate::peer::{discover_cluster_id, peer_server_tls, serve_peers, PeerService, PeerTransport};
use crate::raft_node::RaftNode;
use crate::schema::SchemaCache;
use crate::schema_guard::SchemaGuard;

/// What an operator does with a damaged data dir (docs/operations.md).
pub const DAMAGED_HELP: &str = "This node must not serve from it: writes it acknowledged may be \
missing, and it would hand out their revisions again. In a cluster, replace it: `dhow cluster \
remove ID` on a live node, wipe this data dir, `dhow cluster add NEW_ID ADDR`, then start it \
with --node-id NEW_ID --initial-cluster-state existing; it rejoins by snapshot. Alone, restore \
from a backup. See docs/operations.md, \"When a node's data is damaged\".";

/// Why a node could not start; each says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir is damaged (a damaged WAL or table file, a Raft log with entries missing
    /// or undecodable, a store behind what the log says it applied): the node refuses it.
    #[error("the data in {path} is damaged: {message}. {DAMAGED_HELP}")]
    Damaged {
        path: std::path::PathBuf,
        message: String,
    },
    /// The data dir belongs to another node (its recorded node id is not `--node-id`).
    #[error(
        "the data dir {path} belongs to node {recorded} of cluster {cluster:016x}, but this node \
         was started as node {given}: start it with --node-id {recorded}, or give node {given} \
         a data dir of its own (an empty one joins as a new member)"
    )]
    WrongNode {
        path: std::path::PathBuf,
        recorded: u64,
        given: u64,
        cluster: u64,
    },
    #[error("cannot create data dir {path}: {error}")]
    DataDir {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("cannot open the store at {path}: {message}")]
    Store {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot listen on peer address {addr}: {error}")]
    PeerListen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("peer port TLS: {0}")]
    PeerTls(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("cannot start the raft node: {0}")]
    Raft(String),
}

/// A started node: the `Node` the API serves, and what runs beside it.
pub struct RunningNode {
    /// The node, for the API.
    pub node: Arc<RaftNode>,
    /// The cluster id its tokens carry.
    pub cluster_id: u64,
    /// Where the node-to-node service listens, if anywhere.
    pub peer_addr: Option<SocketAddr>,
    peer: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    _gc: GcHandle,
}

impl RunningNode {
    /// Stops the node-to-node service (the Raft node stops when the last handle is dropped).
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.peer.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

/// A cluster id all founding members compute alike: FNV-1a of the sorted initial cluster, or
/// of the cluster token and the member ids when a token names the cluster.
pub fn founding_cluster_id(members: &BTreeMap<u64, String>, token: Option<&str>) -> u64 {
    let text: String = match token {
        Some(t) => {
            let ids: Vec<String> = members.keys().map(u64::to_string).collect();
            format!("token={t};{}", ids.join(","))
        }
        None => members
            .iter()
            .map(|(id, addr)| format!("{id}={addr};"))
            .collect(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

fn new_cluster_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// Starts the node `config` describes. Call inside a tokio runtime.
pub async fn start(config: &NodeConfig) -> Result<RunningNode, StartError> {
    // Certificates first: a bad file is reported before anything is written.
    let peer_tls = match &config.peer_tls {
        Some(t) => Some(peer_server_tls(t).map_err(|e| StartError::PeerTls(e.to_string()))?),
        None => None,
    };
    let db = config.data_dir.join("db");
    std::fs::create_dir_all(&db).map_err(|error| StartError::DataDir {
        path: db.clone(),
        error,
    })?;
    let store_error = |e: &dhow_storage::StorageError| match e.kind() {
        ErrorKind::Corruption => StartError::Damaged {
            path: config.data_dir.clone(),
            message: e.to_string(),
        },
        _ => StartError::Store {
            path: db.clone(),
            message: e.to_string(),
        },
    };
    let options = StoreOptions {
        min_free_bytes: config.min_free_bytes,
        memtable_bytes: config.memtable_bytes,
        ..StoreOptions::default()
    };
    let store = Arc::new(RocksStore::open(&db, options).map_err(|e| store_error(&e))?);
    let peer_listener = match config.peer_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| StartError::PeerListen { addr, error })?,
        ),
        None => None,
    };
    let peer_addr = match &peer_listener {
        Some(l) => Some(l.local_addr().map_err(|error| StartError::PeerListen {
            addr: config.peer_addr.unwrap_or(([0, 0, 0, 0], 0).into()),
            error,
        })?),
        None => None,
    };
    let mut peers = config.initial_cluster.clone();
    if peers.is_empty() {
        // A one-node cluster: it knows its own peer address if it listens on one.
        peers.insert(
            config.node_id,
            peer_addr.map(|a| a.to_string()).unwrap_or_default(),
        );
    }
    let cluster_id = match store.cluster_id().map_err(|e| store_error(&e))? {
        Some(id) => id,
        None => {
            let id = match config.initial_cluster_state {
                ClusterState::Existing => {
                    let others: Vec<String> = peers
                        .iter()
                        .filter(|(id, _)| **id != config.node_id)
                        .map(|(_, a)| a.clone())
                        .collect();
                    tracing::info!(peers = %others.join(", "), "joining the running cluster");
                    discover_cluster_id(&others, Duration::from_secs(60), config.peer_tls.as_ref())
                        .await
                        .map_err(StartError::Join)?
                }
                ClusterState::New if config.initial_cluster.len() > 1 => founding_cluster_id(
                    &config.initial_cluster,
                    config.initial_cluster_token.as_deref(),
                ),
                ClusterState::New => new_cluster_id(),
            };
            store.set_cluster_id(id).map_err(|e| store_error(&e))?;
            id
        }
    };
    // The data dir remembers its node: another id would vote and append as a different
    // member with this one's log and promises.
    match store.node_id().map_err(|e| store_error(&e))? {
        Some(recorded) if recorded != config.node_id => {
            return Err(StartError::WrongNode {
                path: config.data_dir.clone(),
                recorded,
                given: config.node_id,
                cluster: cluster_id,
            })
        }
        Some(_) => {}
        // A new data dir, or one written before node ids were recorded: it is this node's.
        None => store
            .set_node_id(config.node_id)
            .map_err(|e| store_error(&e))?,
    }
    let transport = PeerTransport::new(
        config.node_id,
        cluster_id,
        store.clone() as Arc<dyn TupleStore>,
        config.peer_tls.clone(),
    );
    let stats_of = ((*store).clone(), transport.clone());
    // Snapshots received from the leader are kept here until the store holds them.
    let stage = FileStage::new(config.data_dir.join("snapshots"))
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let raft_config = RaftConfig {
        id: config.node_id,
        initial_peers: peers,
        join: config.initial_cluster_state == ClusterState::Existing,
        log_retain: config.raft_log_retain,
        max_entry_bytes: config.max_entry_bytes,
        stage: Some(Arc::new(stage)),
        ..RaftConfig::default()
    };
    // The state machine checks every write against the schema in force when it is applied,
    // compiling through the cache the read path uses too.
    let schemas = Arc::new(SchemaCache::new());
    let state_machine: Arc<dyn TupleStore> = Arc::new(SchemaGuard::new(
        store.clone() as Arc<dyn TupleStore>,
        schemas.clone(),
    ));
    let handle = Arc::new(
        RaftHandle::start(raft_config, store.raft_log(), state_machine, transport).map_err(
            |e| match e {
                RaftError::Codec {
                    error:
                        DecodeError {
                            problem: Problem::UnknownVersion { .. },
                            ..
                        },
                    ..
                } => StartError::Raft(format!(
                    "{e}: the data dir was written by a newer build of dhow; run that build"
                )),
                RaftError::Codec { .. } => StartError::Damaged {
                    path: config.data_dir.clone(),
                    message: e.to_string(),
                },
                e if e.storage_kind() == Some(StorageKind::Corruption) => StartError::Damaged {
                    path: config.data_dir.clone(),
                    message: e.to_string(),
                },
                e => StartError::Raft(e.to_string()),
            },
        )?,
    );
    let node = Arc::new(
        RaftNode::new(
            handle.clone(),
            store.clone() as Arc<dyn TupleStore>,
            schemas,
            cluster_id,
            config.write_timeout,
            peer_listener.is_some(),
        )
        .with_stats_of(stats_of.0, stats_of.1),
    );
    let peer = peer_listener.map(|l| {
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = PeerService::new(handle.clone(), cluster_id, peer_tls.is_some());
        let task = tokio::spawn(async move {
            if let Err(e) = serve_peers(svc, l, peer_tls, async {
                let _ = stopped.await;
            })
            .await
            {
                tracing::error!(error = %e, "node-to-node service failed");
            }
        });
        (stop, task)
    });
    // A sole voter elected itself as its Raft node started: wait (briefly) until its first
    // entry of the term is committed, so that the API starts ready (health SERVING, fully
    // consistent reads answered) rather than a few milliseconds later.
    let mut leadership = handle.leadership();
    if leadership.borrow().leader == config.node_id {
        let _ = tokio::time::timeout(
            handle.election_timeout(),
            leadership.wait_for(|l| l.established()),
        )
        .await;
    }
    let gc = spawn_gc(store as Arc<dyn TupleStore>, config.gc_window);
    Ok(RunningNode {
        node,
        cluster_id,
        peer_addr,
        peer,
        _gc: gc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn founding_members_agree_on_the_cluster_id() {
        let a: BTreeMap<u64, String> = [(1, "a:1".to_string()), (2, "b:2".to_string())].into();
        let b: BTreeMap<u64, String> = [(1, "a:1".to_string()), (2, "proxy:9".to_string())].into();
        // Without a token the addresses name the cluster: every member needs the same text.
        assert_eq!(founding_cluster_id(&a, None), founding_cluster_id(&a, None));
        assert_ne!(founding_cluster_id(&a, None), founding_cluster_id(&b, None));
        // With a token, members that reach each other at different addresses still agree.
        assert_eq!(
            founding_cluster_id(&a, Some("t1")),
            founding_cluster_id(&b, Some("t1"))
        );
        assert_ne!(
            founding_cluster_id(&a, Some("t1")),
            founding_cluster_id(&a, Some("t2"))
        );
        let c: BTreeMap<u64, String> = [(1, "a:1".to_string()), (3, "b:2".to_string())].into();
        assert_ne!(
            founding_cluster_id(&a, Some("t1")),
            founding_cluster_id(&c, Some("t1"))
        );
    }
}
