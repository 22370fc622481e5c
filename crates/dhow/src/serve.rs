//! `dhow serve`: one node of a Dhow cluster. Loads the settings (file, environment, flags),
//! starts the node (`dhow_node::start`: the store, the Raft node, the peer service) and serves
//! the public gRPC API over it until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use dhow_node::{Node, Role};
use dhow_server::config::{Setting, SETTINGS};
use dhow_server::telemetry::Telemetry;
use dhow_server::{Config, ConfigOverrides, LogFormat};

/// Flags of `dhow serve`: `--config FILE`, and one per setting of
/// [`dhow_server::config::SETTINGS`], each with its `DHOW_*` variable. A flag overrides the
/// variable, which overrides the file.
#[derive(Debug)]
pub struct ServeArgs {
    config: Option<PathBuf>,
    /// The settings given as flags (not those clap found in the environment: the config
    /// loader reads those itself, below the flags, and names the variable in its errors).
    flags: ConfigOverrides,
}

/// The flag of a setting: `--name-with-dashes VALUE`, its variable shown in `--help` (clap
/// takes the text as it is; the config loader parses it).
fn flag(s: &'static Setting) -> Arg {
    let a = Arg::new(s.name)
        .long(s.flag())
        .env(s.env())
        .value_name(s.value)
        .help(format!("{} [default: {}]", s.help, s.default_text()))
        .value_parser(clap::value_parser!(String));
    if s.is_switch() {
        a.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
    } else {
        a
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(
            Arg::new("config")
                .long("config")
                .env("DHOW_CONFIG")
                .value_name("FILE")
                .help("Configuration file (TOML): the settings below by name (`grpc_addr = \"0.0.0.0:50051\"`), and the [auth] and [audit] tables")
                .value_parser(clap::value_parser!(PathBuf)),
        )
        .args(SETTINGS.iter().map(flag))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = ConfigOverrides::default();
        for s in SETTINGS {
            if m.value_source(s.name) == Some(ValueSource::CommandLine) {
                if let Some(v) = m.get_one::<String>(s.name) {
                    flags.set(s.name, v.clone());
                }
            }
        }
        Ok(ServeArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

/// Runs `dhow serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    // Before the settings: the default connection limit is half the open-file limit.
    let fd_limit = dhow_node::listen::raise_fd_limit();
    let config = match Config::from_env(args.config.as_deref(), &args.flags) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    // The trace exporter's channel lives on the runtime.
    let telemetry = {
        let _in_runtime = rt.enter();
        match init_logging(&config) {
            Ok(t) => t,
            Err(e) => return fail(e),
        }
    };
    tracing::info!(
        open_files = fd_limit,
        max_connections = config.connections.max_connections,
        "connection budget"
    );
    let served = rt.block_on(serve(config));
    // Sends the spans still buffered, while the runtime still runs the exporter's channel.
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// The log on stderr, filtered by RUST_LOG (default `info,raft=warn`), and with
/// `otlp_endpoint` set the OpenTelemetry trace exporter beside it (its own filter: Dhow's
/// spans, whatever RUST_LOG says).
fn init_logging(config: &Config) -> Result<Option<Telemetry>, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,raft=warn".into());
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match config.log_format {
        // Colours only on a terminal: none in log files or under a supervisor.
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        // An event's fields at the top level of its object, beside `message`.
        LogFormat::Json => log.json().flatten_event(true).boxed(),
    };
    let Some(endpoint) = &config.otlp_endpoint else {
        let _ = tracing_subscriber::registry()
            .with(log.with_filter(filter))
            .try_init();
        return Ok(None);
    };
    let (telemetry, traces) = Telemetry::start(
        endpoint,
        config.trace_sample_ratio.get(),
        config.node.node_id,
    )
    .map_err(|e| e.to_string())?;
    let _ = tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(traces)
        .try_init();
    tracing::info!(
        otlp_endpoint = %endpoint,
        sample_ratio = config.trace_sample_ratio.get(),
        "exporting traces"
    );
    Ok(Some(telemetry))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn command() -> Command {
        ServeArgs::augment_args(Command::new("serve").no_binary_name(true))
    }

    /// Every setting has its flag and variable, named after it, with its help; and there is
    /// no other flag but --config.
    #[test]
    fn every_setting_is_a_flag_with_its_variable() {
        let cmd = command();
        cmd.clone().debug_assert();
        for s in SETTINGS {
            let a = cmd
                .get_arguments()
                .find(|a| a.get_id() == s.name)
                .unwrap_or_else(|| panic!("no flag for `{}`", s.name));
            assert_eq!(a.get_long(), Some(s.name.replace('_', "-").as_str()));
            assert_eq!(
                a.get_env().and_then(|e| e.to_str()),
                Some(format!("DHOW_{}", s.name.to_uppercase()).as_str())
            );
            let help = a.get_help().unwrap().to_string();
            assert!(help.starts_with(s.help), "{help}");
            assert!(
                help.ends_with(&format!("[default: {}]", s.default_text())),
                "{help}"
            );
        }
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            assert!(
                id == "config" || SETTINGS.iter().any(|s| s.name == id),
                "--{id} is not a setting"
            );
        }
    }

    #[test]
    fn flags_become_overrides_by_setting_name() {
        let m = command()
            .try_get_matches_from([
                "--max-message-bytes",
                "8MiB",
                "--request-timeout=1.5s",
                "--insecure-allow-unauthenticated-public-access",
                "--log-format",
                "json",
                "--config",
                "dhow.toml",
            ])
            .unwrap();
        let args = ServeArgs::from_arg_matches(&m).unwrap();
        assert_eq!(args.config, Some(PathBuf::from("dhow.toml")));
        let mut got: Vec<(&str, &str)> = args.flags.values().collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("insecure_allow_unauthenticated_public_access", "true"),
                ("log_format", "json"),
                ("max_message_bytes", "8MiB"),
                ("request_timeout", "1.5s"),
            ]
        );
        let m = command()
            .try_get_matches_from(["--insecure-allow-unauthenticated-public-access=false"])
            .unwrap();
        let args = ServeArgs::from_arg_matches(&m).unwrap();
        let got: Vec<(&str, &str)> = args.flags.values().collect();
        assert_eq!(
            got,
            [("insecure_allow_unauthenticated_public_access", "false")]
        );
        assert!(command()
            .try_get_matches_from(["--no-such-flag", "1"])
            .is_err());
    }
}
