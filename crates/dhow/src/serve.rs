//! `dhow serve`: one node of a Dhow cluster. Loads the settings (file, environment, flags),
//! starts the node (`dhow_node::start`: the store, the Raft node, the peer service) and serves
//! the public gRPC API over it until Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dhow_node::{parse_cluster_state, parse_initial_cluster, ClusterState, Node, Role};
use dhow_server::config::parse_log_format;
use dhow_server::{Config, ConfigOverrides, LogFormat};

/// Flags of `dhow serve`; each overrides the config file and `DHOW_*` variables.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "DHOW_CONFIG", value_name = "FILE")]
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
    #[arg(long, value_name = "new|existing", value_parser = parse_cluster_state)]
    initial_cluster_state: Option<ClusterState>,
    /// Names a new cluster (as etcd's flag): the founding members derive the cluster id from
    /// it and their ids rather than from the --initial-cluster text, so each member may reach
    /// the others at addresses of its own (a proxy, NAT). Used only on an empty data dir.
    #[arg(long, value_name = "TOKEN")]
    initial_cluster_token: Option<String>,
    /// TLS on the public API: the server's certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// TLS on the public API: the server's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Ask API clients for certificates signed by this CA (PEM); their identities get roles
    /// in the config file's [[auth.client_certificates]].
    #[arg(long, value_name = "FILE")]
    tls_client_ca_file: Option<PathBuf>,
    /// Mutual TLS on the peer port: the cluster CA (PEM) that signs every node's certificate.
    #[arg(long, value_name = "FILE")]
    peer_tls_ca_file: Option<PathBuf>,
    /// Mutual TLS on the peer port: this node's certificate (PEM), naming it DNS:node-<id>.
    #[arg(long, value_name = "FILE")]
    peer_tls_cert_file: Option<PathBuf>,
    /// Mutual TLS on the peer port: this node's private key (PEM).
    #[arg(long, value_name = "FILE")]
    peer_tls_key_file: Option<PathBuf>,
    /// Serve a non-loopback address with no authentication configured: anyone who reaches
    /// it may rewrite the schema and every relationship.
    #[arg(long)]
    insecure_allow_unauthenticated_public_access: bool,
    /// How the log on stderr is written: `text` (colours only on a terminal) or `json` (one
    /// object a line). RUST_LOG filters it either way.
    #[arg(long, value_name = "text|json", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Serve Prometheus metrics over HTTP at `http://HOST:PORT/metrics` (off unless set; port
    /// 0: any free port, printed and logged).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

/// Runs `dhow serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    // Before the settings: the default connection limit is half the open-file limit.
    let fd_limit = dhow_node::listen::raise_fd_limit();
    let overrides = ConfigOverrides {
        grpc_addr: args.grpc_addr,
        data_dir: args.data_dir,
        node_id: args.node_id,
        peer_addr: args.peer_addr,
        initial_cluster: args.initial_cluster,
        initial_cluster_state: args.initial_cluster_state,
        initial_cluster_token: args.initial_cluster_token,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        tls_client_ca_file: args.tls_client_ca_file,
        peer_tls_ca_file: args.peer_tls_ca_file,
        peer_tls_cert_file: args.peer_tls_cert_file,
        peer_tls_key_file: args.peer_tls_key_file,
        insecure_allow_unauthenticated_public_access: args
            .insecure_allow_unauthenticated_public_access,
        log_format: args.log_format,
        metrics_addr: args.metrics_addr,
        ..Default::default()
    };
    let config = match Config::from_env(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    init_logging(config.log_format);
    tracing::info!(
        open_files = fd_limit,
        max_connections = config.connections.max_connections,
        "connection budget"
    );
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

/// The log on stderr, filtered by RUST_LOG (default `info,raft=warn`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,raft=warn".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colours only on a terminal: none in log files or under a supervisor.
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // An event's fields at the top level of its object, beside `message`.
        LogFormat::Json => log.json().flatten_event(true).try_init(),
    };
}

/// On the way out, a leader hands leadership to its most up-to-date voter and waits (at most
/// two election timeouts) until that one leads, so that the cluster does not wait an election
/// timeout for a new leader (a rolling restart). Anything else (a follower, a cluster of one,
/// no voter to take over) goes at once.
async fn hand_over_leadership<N: Node>(node: &N) {
    let Ok(status) = node.cluster_status().await else {
        return;
    };
    if status.role != Role::Leader {
        return;
    }
    let Some(to) = status
        .members
        .iter()
        .filter(|m| m.id != status.id && !m.learner)
        .max_by_key(|m| m.matched.unwrap_or(0))
        .map(|m| m.id)
    else {
        return;
    };
    let started = std::time::Instant::now();
    if let Err(e) = node.transfer_leader(to).await {
        tracing::warn!(to, error = %e, "stopping: cannot hand leadership over");
        return;
    }
    let within = node.election_timeout() * 2;
    let mut leadership = node.leadership();
    let moved = tokio::time::timeout(
        within,
        leadership.wait_for(|l| l.leader != 0 && l.leader != status.id),
    )
    .await;
    match moved {
        Ok(Ok(l)) => tracing::warn!(
            to = l.leader,
            took = ?started.elapsed(),
            "stopping: leadership handed over"
        ),
        _ => tracing::warn!(
            to,
            ?within,
            "stopping: leadership not handed over in time; the others elect a leader"
        ),
    }
}

async fn serve(config: Config) -> Result<(), String> {
    // Bind first: a port in use is reported before anything is written.
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.grpc_addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match config.metrics_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("cannot listen on {a} (metrics_addr): {e}"))?,
        ),
        None => None,
    };
    let running = dhow_node::start(&config.node)
        .await
        .map_err(|e| e.to_string())?;
    let node = running.node.clone();
    println!(
        "dhow node {} listening on {addr} (data in {}, revision {}{})",
        config.node.node_id,
        config.node.data_dir.display(),
        node.applied(),
        running
            .peer_addr
            .map(|p| format!(", peers on {p}"))
            .unwrap_or_default()
    );
    let scheme = if config.tls_cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    println!("try:  dhow schema write examples/schema.zed --endpoint {scheme}://{addr}");
    println!(
        "      dhow rel create 'document:readme#viewer@user:alice' --endpoint {scheme}://{addr}"
    );
    println!("      dhow check 'document:readme#view@user:alice' --endpoint {scheme}://{addr}");
    tracing::info!(%addr, cluster_id = running.cluster_id, "serving");
    let metrics = match metrics_listener {
        Some(l) => {
            let at = l.local_addr().map_err(|e| e.to_string())?;
            println!("metrics on http://{at}/metrics");
            tracing::info!(metrics_addr = %at, "metrics listening on http://{at}/metrics");
            Some(tokio::spawn(dhow_server::metrics::serve(node.clone(), l)))
        }
        None => None,
    };
    let leaving = node.clone();
    let shutdown = async move {
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
        hand_over_leadership(&*leaving).await;
    };
    let served = dhow_server::serve(node, &config, listener, shutdown)
        .await
        .map_err(|e| e.to_string());
    if let Some(m) = metrics {
        m.abort();
    }
    running.stop().await;
    served
}
