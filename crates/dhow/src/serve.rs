//! `dhow serve`: one node of a Dhow cluster. Opens the RocksDB store under the data dir,
//! starts the Raft node on it (a one-node cluster by default, or a member of the cluster given
//! by `--initial-cluster`), serves the node-to-node service on `--peer-addr` and the gRPC API
//! until Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dhow_raft::{FileStage, RaftConfig, RaftHandle};
use dhow_server::config::parse_initial_cluster;
use dhow_server::{
    ClusterState, Config, ConfigOverrides, Node, PeerService, PeerTransport, RaftNode, SchemaGuard,
};
use dhow_storage::{RocksStore, StoreOptions};
use dhow_tuples::TupleStore;

/// Flags of `dhow serve`; each overrides the config file and `DHOW_*` variables.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the node keeps its data (default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the public gRPC API (default 127.0.0.1:50051).
    #[arg(long, value_name = "HOST:PORT")]
    grpc_addr: Option<std::net::SocketAddr>,
    /// This node's id in the cluster (default 1).
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,
    /// Address of the node-to-node service (none by default: a one-node cluster that never
    /// adds members needs none).
    #[arg(long, value_name = "HOST:PORT")]
    peer_addr: Option<std::net::SocketAddr>,
    /// The members of a new cluster: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`, each node's id and
    /// the peer address the others reach it at. Used only on an empty data dir.
    #[arg(long, value_name = "ID=HOST:PORT,...", value_parser = parse_initial_cluster)]
    initial_cluster: Option<BTreeMap<u64, String>>,
    /// `new` bootstraps a cluster from --initial-cluster; `existing` joins a running one
    /// (after `dhow cluster add` there), learning its data by snapshot.
    #[arg(long, value_name = "new|existing", value_parser = parse_state)]
    initial_cluster_state: Option<ClusterState>,
    /// Names a new cluster (as etcd's flag): the founding members derive the cluster id from
    /// it and their ids rather than from the --initial-cluster text, so each member may reach
    /// the others at addresses of its own (a proxy, NAT). Used only on an empty data dir.
    #[arg(long, value_name = "TOKEN")]
    initial_cluster_token: Option<String>,
}

fn parse_state(s: &str) -> Result<ClusterState, String> {
    match s {
        "new" => Ok(ClusterState::New),
        "existing" => Ok(ClusterState::Existing),
        other => Err(format!("`{other}` is not `new` or `existing`")),
    }
}

/// A cluster id all founding members compute alike: FNV-1a of the sorted initial cluster, or
/// of the cluster token and the member ids when a token names the cluster.
fn founding_cluster_id(members: &BTreeMap<u64, String>, token: Option<&str>) -> u64 {
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

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

/// Runs `dhow serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    let overrides = ConfigOverrides {
        grpc_addr: args.grpc_addr,
        data_dir: args.data_dir,
        node_id: args.node_id,
        peer_addr: args.peer_addr,
        initial_cluster: args.initial_cluster,
        initial_cluster_state: args.initial_cluster_state,
        initial_cluster_token: args.initial_cluster_token,
        ..Default::default()
    };
    let config = match Config::from_env(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,raft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let db = config.data_dir.join("db");
    std::fs::create_dir_all(&db)
        .map_err(|e| format!("cannot create data dir {}: {e}", db.display()))?;
    let store = Arc::new(
        RocksStore::open(&db, StoreOptions::default())
            .map_err(|e| format!("cannot open the store at {}: {e}", db.display()))?,
    );
    // Bind first: a port in use is reported before anything is written.
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.grpc_addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let peer_listener = match config.peer_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("cannot listen on peer address {a}: {e}"))?,
        ),
        None => None,
    };
    let peer_local = match &peer_listener {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let mut peers = config.initial_cluster.clone();
    if peers.is_empty() {
        // A one-node cluster: it knows its own peer address if it listens on one.
        peers.insert(
            config.node_id,
            peer_local.map(|a| a.to_string()).unwrap_or_default(),
        );
    }
    let cluster_id = match store.cluster_id().map_err(|e| e.to_string())? {
        Some(id) => id,
        None => {
            let id = match config.initial_cluster_state {
                ClusterState::Existing => {
                    let others: Vec<String> = peers
                        .iter()
                        .filter(|(id, _)| **id != config.node_id)
                        .map(|(_, a)| a.clone())
                        .collect();
                    println!("joining the cluster at {}", others.join(", "));
                    dhow_server::discover_cluster_id(&others, Duration::from_secs(60)).await?
                }
                ClusterState::New if config.initial_cluster.len() > 1 => founding_cluster_id(
                    &config.initial_cluster,
                    config.initial_cluster_token.as_deref(),
                ),
                ClusterState::New => new_cluster_id(),
            };
            store.set_cluster_id(id).map_err(|e| e.to_string())?;
            id
        }
    };
    let transport = PeerTransport::new(
        config.node_id,
        cluster_id,
        store.clone() as Arc<dyn TupleStore>,
    );
    // Snapshots received from the leader are kept here until the store holds them.
    let stage = FileStage::new(config.data_dir.join("snapshots"))?;
    let raft_config = RaftConfig {
        id: config.node_id,
        initial_peers: peers,
        join: config.initial_cluster_state == ClusterState::Existing,
        log_retain: config.raft_log_retain,
        stage: Some(Arc::new(stage)),
        ..RaftConfig::default()
    };
    // The state machine checks every write against the schema in force when it is applied.
    let state_machine: Arc<dyn TupleStore> =
        Arc::new(SchemaGuard::new(store.clone() as Arc<dyn TupleStore>));
    let handle = Arc::new(
        RaftHandle::start(raft_config, store.raft_log(), state_machine, transport)
            .map_err(|e| format!("cannot start the raft node: {e}"))?,
    );
    let node = Arc::new(RaftNode::new(
        handle.clone(),
        cluster_id,
        config.request_timeout,
        peer_listener.is_some(),
    ));
    let (peer_stop, peer_stopped) = tokio::sync::oneshot::channel::<()>();
    let peer_task = peer_listener.map(|l| {
        let svc = PeerService::new(handle.clone(), cluster_id);
        tokio::spawn(async move {
            if let Err(e) = dhow_server::serve_peers(svc, l, async {
                let _ = peer_stopped.await;
            })
            .await
            {
                tracing::error!(error = %e, "node-to-node service failed");
            }
        })
    });
    let _gc = dhow_server::spawn_gc(node.store(), config.gc_window);
    println!(
        "dhow node {} listening on {addr} (data in {}, revision {}{})",
        config.node_id,
        config.data_dir.display(),
        node.applied(),
        peer_local
            .map(|p| format!(", peers on {p}"))
            .unwrap_or_default()
    );
    println!("try:  dhow schema write examples/schema.zed --endpoint http://{addr}");
    println!("      dhow rel create 'document:readme#viewer@user:alice' --endpoint http://{addr}");
    println!("      dhow check 'document:readme#view@user:alice' --endpoint http://{addr}");
    tracing::info!(%addr, cluster_id, "serving");
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
    };
    let served = dhow_server::serve(node, &config, listener, shutdown)
        .await
        .map_err(|e| e.to_string());
    let _ = peer_stop.send(());
    if let Some(t) = peer_task {
        let _ = t.await;
    }
    served
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
