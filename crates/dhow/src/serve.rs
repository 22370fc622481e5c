//! `dhow serve`: one node of a Dhow cluster. Opens the RocksDB store under the data dir,
//! starts the Raft node on it (a one-node cluster by default), and serves the gRPC API until
//! Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dhow_raft::{NoTransport, RaftConfig, RaftError, RaftHandle};
use dhow_server::{Config, ConfigOverrides, Node, NodeError};
use dhow_storage::{RocksStore, StoreOptions};
use dhow_tuples::{Revision, TupleStore, WriteRequest};

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
}

/// The Raft node as the services see it.
struct RaftNode {
    handle: RaftHandle,
    cluster_id: u64,
    write_timeout: Duration,
}

fn node_error(e: RaftError) -> NodeError {
    match e {
        RaftError::Rejected(e) => NodeError::Rejected(e),
        RaftError::Unavailable(m) => NodeError::Unavailable(m),
        RaftError::Timeout(m) => NodeError::Timeout(m),
        RaftError::Stopped => NodeError::Unavailable("the node is shutting down".into()),
        other => NodeError::Internal(other.to_string()),
    }
}

impl RaftNode {
    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, RaftError>>,
    ) -> Result<T, NodeError> {
        match tokio::time::timeout(self.write_timeout, f).await {
            Ok(r) => r.map_err(node_error),
            Err(_) => Err(NodeError::Timeout(format!(
                "{what} not committed within {:?}; it may or may not be applied",
                self.write_timeout
            ))),
        }
    }
}

impl Node for RaftNode {
    async fn write(&self, write: WriteRequest) -> Result<Revision, NodeError> {
        self.bounded("write", self.handle.write(write)).await
    }
    async fn write_schema(&self, text: String) -> Result<Revision, NodeError> {
        self.bounded("schema write", self.handle.write_schema(text))
            .await
    }
    fn applied(&self) -> Revision {
        self.handle.applied()
    }
    async fn wait_applied(&self, rev: Revision, timeout: Duration) -> Result<(), NodeError> {
        self.handle
            .wait_applied(rev, timeout)
            .await
            .map_err(node_error)
    }
    async fn read_index(&self) -> Result<Revision, NodeError> {
        self.bounded("read index", self.handle.read_index()).await
    }
    fn store(&self) -> Arc<dyn TupleStore> {
        self.handle.store()
    }
    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }
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
    let cluster_id = match store.cluster_id().map_err(|e| e.to_string())? {
        Some(id) => id,
        None => {
            let id = new_cluster_id();
            store.set_cluster_id(id).map_err(|e| e.to_string())?;
            id
        }
    };
    let handle = RaftHandle::start(
        RaftConfig::default(),
        store.raft_log(),
        store.clone() as Arc<dyn TupleStore>,
        NoTransport,
    )
    .map_err(|e| format!("cannot start the raft node: {e}"))?;
    let node = Arc::new(RaftNode {
        handle,
        cluster_id,
        write_timeout: config.request_timeout,
    });
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.grpc_addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let _gc = dhow_server::spawn_gc(node.store(), config.gc_window);
    println!(
        "dhow listening on {addr} (data in {}, revision {})",
        config.data_dir.display(),
        node.applied()
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
    dhow_server::serve(node, &config, listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}
