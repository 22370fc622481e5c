//! Server configuration: defaults, then an optional TOML file, then `DHOW_*` environment
//! variables, then explicit overrides (command-line flags), each layer replacing the one
//! before it. Unknown keys in the file are errors naming the key.
//!
//! File keys (all optional), with their environment variables:
//!
//! | key | env | default |
//! | --- | --- | --- |
//! | `grpc_addr` | `DHOW_GRPC_ADDR` | `127.0.0.1:50051` |
//! | `data_dir` | `DHOW_DATA_DIR` | `./data` |
//! | `max_message_bytes` | `DHOW_MAX_MESSAGE_BYTES` | `4MiB` |
//! | `max_updates_per_write` | `DHOW_MAX_UPDATES_PER_WRITE` | `1000` |
//! | `max_entry_bytes` | `DHOW_MAX_ENTRY_BYTES` | `8MiB` (at least `1MiB`) |
//! | `max_preconditions_per_write` | `DHOW_MAX_PRECONDITIONS_PER_WRITE` | `1000` |
//! | `max_check_bulk_items` | `DHOW_MAX_CHECK_BULK_ITEMS` | `1000` |
//! | `max_lookup_subjects_results` | `DHOW_MAX_LOOKUP_SUBJECTS_RESULTS` | `100000` |
//! | `consistency_timeout` | `DHOW_CONSISTENCY_TIMEOUT` | `2s` |
//! | `request_timeout` | `DHOW_REQUEST_TIMEOUT` | `30s` |
//! | `max_connections` | `DHOW_MAX_CONNECTIONS` | half the open-file limit, at most 10000 |
//! | `max_concurrent_streams` | `DHOW_MAX_CONCURRENT_STREAMS` | `256` |
//! | `keepalive_interval` | `DHOW_KEEPALIVE_INTERVAL` | `30s` |
//! | `idle_timeout` | `DHOW_IDLE_TIMEOUT` | `2m` |
//! | `gc_window` | `DHOW_GC_WINDOW` | `24h` |
//! | `node_id` | `DHOW_NODE_ID` | `1` |
//! | `peer_addr` | `DHOW_PEER_ADDR` | none (no node-to-node listener) |
//! | `initial_cluster` | `DHOW_INITIAL_CLUSTER` | none (a one-node cluster) |
//! | `initial_cluster_state` | `DHOW_INITIAL_CLUSTER_STATE` | `new` |
//! | `initial_cluster_token` | `DHOW_INITIAL_CLUSTER_TOKEN` | none (the cluster id comes from `initial_cluster`) |
//! | `raft_log_retain` | `DHOW_RAFT_LOG_RETAIN` | `50000` |
//! | `tls_cert_file` | `DHOW_TLS_CERT_FILE` | none (plaintext) |
//! | `tls_key_file` | `DHOW_TLS_KEY_FILE` | none |
//! | `tls_client_ca_file` | `DHOW_TLS_CLIENT_CA_FILE` | none (no client certificates asked) |
//! | `peer_tls_ca_file` | `DHOW_PEER_TLS_CA_FILE` | none (plaintext peer port) |
//! | `peer_tls_cert_file` | `DHOW_PEER_TLS_CERT_FILE` | none |
//! | `peer_tls_key_file` | `DHOW_PEER_TLS_KEY_FILE` | none |
//! | `insecure_allow_unauthenticated_public_access` | `DHOW_INSECURE_ALLOW_UNAUTHENTICATED_PUBLIC_ACCESS` | `false` |
//! | `log_format` | `DHOW_LOG_FORMAT` | `text` (or `json`: one JSON object a line) |
//! | `metrics_addr` | `DHOW_METRICS_ADDR` | none (no metrics listener; port 0: any free port, logged) |
//! | `[auth]` (a table, file only) | `DHOW_PRESHARED_KEY` adds one key in clear | none (open on loopback) |
//! | `[audit]` (a table, file only) | none | `mode = "off"` |
//!
//! The `[audit]` table keeps the decision audit log in `DATA_DIR/audit` (docs/agents.md):
//!
//! ```toml
//! [audit]
//! mode = "denied"          # off, all, denied, or sampled:0.01 (that share of the allowed, every denial)
//! proofs = false           # record every decision's proof, not only those a request asked for
//! max_bytes = "256MiB"     # the oldest segments go first past it
//! max_age = "30d"          # and once their newest record is older
//! queue = 65536            # records waiting for the writer; past it they are dropped and counted
//! ```
//!
//! The `[auth]` table (preshared keys, JWT issuers, client certificates) is described in
//! `auth/settings.rs`. A node whose `grpc_addr` is not a loopback address refuses to start
//! without any of them, unless `insecure_allow_unauthenticated_public_access` says so: an
//! open authorization service lets anyone rewrite it.
//!
//! `initial_cluster` is `1=HOST:PORT,2=HOST:PORT,...`: every member's id and the peer address
//! the others reach it at. It (and `initial_cluster_state`) only matter the first time a node
//! starts on an empty data dir; afterwards the membership comes from the node's own log.
//! The founding members derive the cluster id from `initial_cluster`, so all of them must be
//! given the same text; with `initial_cluster_token` (as etcd's) they derive it from the token
//! and the member ids instead, so each may reach the others at addresses of its own (through
//! a proxy or NAT).
//!
//! Durations are written `500ms`, `2s`, `5m`, `24h`, `7d` or `1h 30m` (a bare number in the
//! file is seconds); sizes as a number of bytes or with a `KiB`, `MiB` or `GiB` suffix.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dhow_node::{parse_cluster_state, parse_initial_cluster, ClusterState, NodeConfig, PeerTls};

use crate::auth::AuthSettings;
use serde::Deserialize;

/// Everything `dhow serve` needs to know: the public API's settings, and the node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the public gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Most updates in one Write (and per write of an Import or Delete by filter).
    pub max_updates_per_write: usize,
    /// Most preconditions in one Write (each is checked on the apply path).
    pub max_preconditions_per_write: usize,
    /// Most items in one CheckBulk.
    pub max_check_bulk_items: usize,
    /// Most subjects one LookupSubjects returns; past it the call fails (narrow it).
    pub max_lookup_subjects_results: usize,
    /// How long a read waits for this node to apply the revision it asks for.
    pub consistency_timeout: Duration,
    /// Deadline of a unary request when the client sets none (also how long a write may
    /// take to commit: the node's `write_timeout`).
    pub request_timeout: Duration,
    /// Connections the public port keeps open at once, and how long it keeps one on which
    /// nothing was received (longer than `keepalive_interval`: a live client answers the
    /// server's pings, so it is never closed).
    pub connections: dhow_node::listen::Limits,
    /// Calls in flight on one connection (HTTP/2 streams); more wait for the client.
    pub max_concurrent_streams: u32,
    /// How often the server pings a connection it has not heard from (HTTP/2 keepalive); a
    /// peer that does not answer within 20 s is closed.
    pub keepalive_interval: Duration,
    /// Who may call, with which roles.
    pub auth: AuthSettings,
    /// TLS on the public port: certificate and key (PEM); plaintext without them.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Ask for client certificates signed by this CA (identities for `[auth]`).
    pub tls_client_ca_file: Option<PathBuf>,
    /// Serve a non-loopback address with no authentication configured.
    pub insecure_allow_unauthenticated_public_access: bool,
    /// The node below the API.
    pub node: NodeConfig,
    /// The decision audit log (in `node.data_dir/audit`).
    pub audit: dhow_audit::AuditSettings,
    /// How the log on stderr is written.
    pub log_format: LogFormat,
    /// Where Prometheus metrics are served over HTTP (`GET /metrics`); none: not served.
    pub metrics_addr: Option<SocketAddr>,
}

/// How `dhow serve` writes its log (on stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object a line (timestamp, level, target, message and fields).
    Json,
}

/// Parses a log format: `text` or `json`.
pub fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("invalid log format `{other}` (text or json)")),
    }
}

impl Default for Config {
    fn default() -> Self {
        let node = NodeConfig::default();
        Config {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: 4 * 1024 * 1024,
            max_updates_per_write: 1000,
            max_preconditions_per_write: 1000,
            max_check_bulk_items: 1000,
            max_lookup_subjects_results: 100_000,
            consistency_timeout: Duration::from_secs(2),
            request_timeout: node.write_timeout,
            connections: dhow_node::listen::Limits::default(),
            max_concurrent_streams: 256,
            keepalive_interval: Duration::from_secs(30),
            auth: AuthSettings::default(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            insecure_allow_unauthenticated_public_access: false,
            node,
            audit: dhow_audit::AuditSettings::default(),
            log_format: LogFormat::Text,
            metrics_addr: None,
        }
    }
}

/// Explicit values (from flags) that win over file and environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    pub grpc_addr: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub max_message_bytes: Option<usize>,
    pub max_updates_per_write: Option<usize>,
    pub consistency_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub gc_window: Option<Duration>,
    pub node_id: Option<u64>,
    pub peer_addr: Option<SocketAddr>,
    pub initial_cluster: Option<BTreeMap<u64, String>>,
    pub initial_cluster_state: Option<ClusterState>,
    pub initial_cluster_token: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub peer_tls_ca_file: Option<PathBuf>,
    pub peer_tls_cert_file: Option<PathBuf>,
    pub peer_tls_key_file: Option<PathBuf>,
    pub insecure_allow_unauthenticated_public_access: bool,
    pub log_format: Option<LogFormat>,
    pub metrics_addr: Option<SocketAddr>,
}

/// Why the configuration could not be loaded; says which file, key or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// How long the server waits for the answer to a keepalive ping before closing the
/// connection.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A number or a string, as TOML allows either for sizes and durations.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    grpc_addr: Option<String>,
    data_dir: Option<PathBuf>,
    max_message_bytes: Option<NumOrText>,
    max_entry_bytes: Option<NumOrText>,
    max_updates_per_write: Option<u64>,
    max_preconditions_per_write: Option<u64>,
    max_check_bulk_items: Option<u64>,
    max_lookup_subjects_results: Option<u64>,
    consistency_timeout: Option<NumOrText>,
    request_timeout: Option<NumOrText>,
    max_connections: Option<u64>,
    max_concurrent_streams: Option<u64>,
    keepalive_interval: Option<NumOrText>,
    idle_timeout: Option<NumOrText>,
    gc_window: Option<NumOrText>,
    node_id: Option<u64>,
    peer_addr: Option<String>,
    initial_cluster: Option<String>,
    initial_cluster_state: Option<String>,
    initial_cluster_token: Option<String>,
    raft_log_retain: Option<u64>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    peer_tls_ca_file: Option<PathBuf>,
    peer_tls_cert_file: Option<PathBuf>,
    peer_tls_key_file: Option<PathBuf>,
    insecure_allow_unauthenticated_public_access: Option<bool>,
    log_format: Option<String>,
    metrics_addr: Option<String>,
    auth: Option<AuthSettings>,
    audit: Option<AuditFile>,
}

/// The `[audit]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFile {
    mode: Option<String>,
    proofs: Option<bool>,
    max_bytes: Option<NumOrText>,
    max_age: Option<NumOrText>,
    queue: Option<u64>,
}

/// The environment variables read, with the key each sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("DHOW_GRPC_ADDR", "grpc_addr"),
    ("DHOW_DATA_DIR", "data_dir"),
    ("DHOW_MAX_MESSAGE_BYTES", "max_message_bytes"),
    ("DHOW_MAX_ENTRY_BYTES", "max_entry_bytes"),
    ("DHOW_MAX_UPDATES_PER_WRITE", "max_updates_per_write"),
    (
        "DHOW_MAX_PRECONDITIONS_PER_WRITE",
        "max_preconditions_per_write",
    ),
    ("DHOW_MAX_CHECK_BULK_ITEMS", "max_check_bulk_items"),
    (
        "DHOW_MAX_LOOKUP_SUBJECTS_RESULTS",
        "max_lookup_subjects_results",
    ),
    ("DHOW_CONSISTENCY_TIMEOUT", "consistency_timeout"),
    ("DHOW_REQUEST_TIMEOUT", "request_timeout"),
    ("DHOW_MAX_CONNECTIONS", "max_connections"),
    ("DHOW_MAX_CONCURRENT_STREAMS", "max_concurrent_streams"),
    ("DHOW_KEEPALIVE_INTERVAL", "keepalive_interval"),
    ("DHOW_IDLE_TIMEOUT", "idle_timeout"),
    ("DHOW_GC_WINDOW", "gc_window"),
    ("DHOW_NODE_ID", "node_id"),
    ("DHOW_PEER_ADDR", "peer_addr"),
    ("DHOW_INITIAL_CLUSTER", "initial_cluster"),
    ("DHOW_INITIAL_CLUSTER_STATE", "initial_cluster_state"),
    ("DHOW_INITIAL_CLUSTER_TOKEN", "initial_cluster_token"),
    ("DHOW_RAFT_LOG_RETAIN", "raft_log_retain"),
    ("DHOW_TLS_CERT_FILE", "tls_cert_file"),
    ("DHOW_TLS_KEY_FILE", "tls_key_file"),
    ("DHOW_TLS_CLIENT_CA_FILE", "tls_client_ca_file"),
    ("DHOW_PEER_TLS_CA_FILE", "peer_tls_ca_file"),
    ("DHOW_PEER_TLS_CERT_FILE", "peer_tls_cert_file"),
    ("DHOW_PEER_TLS_KEY_FILE", "peer_tls_key_file"),
    (
        "DHOW_INSECURE_ALLOW_UNAUTHENTICATED_PUBLIC_ACCESS",
        "insecure_allow_unauthenticated_public_access",
    ),
    ("DHOW_LOG_FORMAT", "log_format"),
    ("DHOW_METRICS_ADDR", "metrics_addr"),
    ("DHOW_PRESHARED_KEY", "preshared_key"),
];

/// Parses a duration: `500ms`, `2s`, `1.5s` is not one, `5m`, `24h`, `7d`, `1h 30m` (the
/// `humantime` syntax, as the bench's `--duration` takes it).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration `{s}` ({e}; e.g. 500ms, 2s, 5m, 24h, 7d)"))
}

/// Parses a size: bytes, or with a `KiB`, `MiB`, `GiB` suffix.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size `{s}` (expected e.g. 4194304 or 4MiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u => {
            return Err(format!(
                "invalid size unit `{u}` in `{s}` (use KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

fn positive<T: PartialEq + Default>(key: &str, v: T) -> Result<T, ConfigError> {
    if v == T::default() {
        return Err(ConfigError::Invalid {
            key: key.into(),
            message: "must be greater than zero".into(),
        });
    }
    Ok(v)
}

impl Config {
    /// Defaults, then `file` (if any), then `env` (the `DHOW_*` variables among them), then
    /// `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &ConfigOverrides,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.to_path_buf(),
                error,
            })?;
            c.apply_file(&text).map_err(|message| ConfigError::File {
                path: path.to_path_buf(),
                message,
            })?;
        }
        for (var, key) in ENV_VARS {
            if let Some(v) = env.get(*var) {
                c.set(key, v).map_err(|message| ConfigError::Env {
                    var: (*var).into(),
                    message,
                })?;
            }
        }
        let o = overrides.clone();
        c.grpc_addr = o.grpc_addr.unwrap_or(c.grpc_addr);
        c.node.data_dir = o.data_dir.unwrap_or(c.node.data_dir);
        c.max_message_bytes = o.max_message_bytes.unwrap_or(c.max_message_bytes);
        c.max_updates_per_write = o.max_updates_per_write.unwrap_or(c.max_updates_per_write);
        c.consistency_timeout = o.consistency_timeout.unwrap_or(c.consistency_timeout);
        c.request_timeout = o.request_timeout.unwrap_or(c.request_timeout);
        let n = &mut c.node;
        n.gc_window = o.gc_window.unwrap_or(n.gc_window);
        n.node_id = o.node_id.unwrap_or(n.node_id);
        n.peer_addr = o.peer_addr.or(n.peer_addr);
        n.initial_cluster = o
            .initial_cluster
            .unwrap_or(std::mem::take(&mut n.initial_cluster));
        n.initial_cluster_state = o.initial_cluster_state.unwrap_or(n.initial_cluster_state);
        n.initial_cluster_token = o.initial_cluster_token.or(n.initial_cluster_token.take());
        for (key, v) in [
            ("tls_cert_file", o.tls_cert_file),
            ("tls_key_file", o.tls_key_file),
            ("tls_client_ca_file", o.tls_client_ca_file),
            ("peer_tls_ca_file", o.peer_tls_ca_file),
            ("peer_tls_cert_file", o.peer_tls_cert_file),
            ("peer_tls_key_file", o.peer_tls_key_file),
        ] {
            if let Some(v) = v {
                c.set_path(key, v);
            }
        }
        if o.insecure_allow_unauthenticated_public_access {
            c.insecure_allow_unauthenticated_public_access = true;
        }
        c.log_format = o.log_format.unwrap_or(c.log_format);
        c.metrics_addr = o.metrics_addr.or(c.metrics_addr);
        // One setting: the deadline of a request bounds how long its write may take to commit.
        c.node.write_timeout = c.request_timeout;
        c.validate()?;
        Ok(c)
    }

    /// [`Config::load`] with the process environment.
    pub fn from_env(
        file: Option<&Path>,
        overrides: &ConfigOverrides,
    ) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Config::load(file, &env, overrides)
    }

    /// Checks values that every layer could have set wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("max_message_bytes", self.max_message_bytes)?;
        positive("max_updates_per_write", self.max_updates_per_write)?;
        positive(
            "max_preconditions_per_write",
            self.max_preconditions_per_write,
        )?;
        positive("max_check_bulk_items", self.max_check_bulk_items)?;
        positive(
            "max_lookup_subjects_results",
            self.max_lookup_subjects_results,
        )?;
        positive("consistency_timeout", self.consistency_timeout)?;
        positive("request_timeout", self.request_timeout)?;
        positive("max_connections", self.connections.max_connections)?;
        positive("max_concurrent_streams", self.max_concurrent_streams)?;
        positive("keepalive_interval", self.keepalive_interval)?;
        // A live client answers the server's ping within a round trip of it: it is then never
        // silent for longer than `keepalive_interval` and a bit.
        if self.connections.idle_timeout <= self.keepalive_interval {
            return Err(ConfigError::Invalid {
                key: "idle_timeout".into(),
                message: format!(
                    "must be longer than keepalive_interval ({}), or live but quiet clients would be cut off between two pings",
                    humantime::format_duration(self.keepalive_interval)
                ),
            });
        }
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "tls_cert_file",
                "TLS needs both tls_cert_file and tls_key_file".into(),
            ));
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return Err(invalid(
                "tls_client_ca_file",
                "client certificates need TLS: set tls_cert_file and tls_key_file".into(),
            ));
        }
        if !self.auth.client_certificates.is_empty() && self.tls_client_ca_file.is_none() {
            return Err(invalid(
                "auth.client_certificates",
                "client certificate identities need tls_client_ca_file (the CA that signs them)"
                    .into(),
            ));
        }
        if !self.grpc_addr.ip().is_loopback()
            && self.auth_is_open()
            && !self.insecure_allow_unauthenticated_public_access
        {
            return Err(invalid(
                "auth",
                format!(
                    "refusing to serve {} without authentication: anyone who reaches it could rewrite the schema and every relationship. Configure [auth] in the config file (preshared_keys as SHA-256 digests, jwt_issuers, or client_certificates with tls_client_ca_file) or DHOW_PRESHARED_KEY; or, if this really is wanted, set insecure_allow_unauthenticated_public_access = true (flag --insecure-allow-unauthenticated-public-access)",
                    self.grpc_addr
                ),
            ));
        }
        self.node.validate().map_err(|e| ConfigError::Invalid {
            key: e.key.into(),
            message: e.message,
        })
    }

    fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let f: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let text_of = |v: NumOrText| match v {
            NumOrText::Num(n) => n.to_string(),
            NumOrText::Text(s) => s,
        };
        let with_key = |key: &str, r: Result<(), String>| r.map_err(|m| format!("`{key}`: {m}"));
        for (key, v) in [
            ("tls_cert_file", f.tls_cert_file),
            ("tls_key_file", f.tls_key_file),
            ("tls_client_ca_file", f.tls_client_ca_file),
            ("peer_tls_ca_file", f.peer_tls_ca_file),
            ("peer_tls_cert_file", f.peer_tls_cert_file),
            ("peer_tls_key_file", f.peer_tls_key_file),
        ] {
            if let Some(v) = v {
                self.set_path(key, v);
            }
        }
        if let Some(v) = f.insecure_allow_unauthenticated_public_access {
            self.insecure_allow_unauthenticated_public_access = v;
        }
        if let Some(a) = f.audit {
            let au = &mut self.audit;
            if let Some(m) = a.mode {
                au.mode = dhow_audit::Mode::parse(&m).map_err(|m| format!("`audit.mode`: {m}"))?;
            }
            if let Some(p) = a.proofs {
                au.proofs = p;
            }
            if let Some(v) = a.max_bytes {
                au.max_bytes =
                    parse_size(&text_of(v)).map_err(|m| format!("`audit.max_bytes`: {m}"))? as u64;
            }
            if let Some(v) = a.max_age {
                au.max_age =
                    parse_duration(&text_of(v)).map_err(|m| format!("`audit.max_age`: {m}"))?;
            }
            if let Some(q) = a.queue {
                au.queue = q.clamp(1, 1 << 24) as usize;
            }
        }
        if let Some(a) = f.auth {
            self.auth = AuthSettings {
                env_preshared_key: self.auth.env_preshared_key.take(),
                ..a
            };
        }
        if let Some(v) = f.grpc_addr {
            with_key("grpc_addr", self.set("grpc_addr", &v))?;
        }
        if let Some(v) = f.data_dir {
            self.node.data_dir = v;
        }
        if let Some(v) = f.max_message_bytes {
            with_key(
                "max_message_bytes",
                self.set("max_message_bytes", &text_of(v)),
            )?;
        }
        if let Some(v) = f.max_entry_bytes {
            with_key("max_entry_bytes", self.set("max_entry_bytes", &text_of(v)))?;
        }
        if let Some(v) = f.max_updates_per_write {
            with_key(
                "max_updates_per_write",
                self.set("max_updates_per_write", &v.to_string()),
            )?;
        }
        for (key, v) in [
            ("max_connections", f.max_connections),
            ("max_concurrent_streams", f.max_concurrent_streams),
            ("max_preconditions_per_write", f.max_preconditions_per_write),
            ("max_check_bulk_items", f.max_check_bulk_items),
            ("max_lookup_subjects_results", f.max_lookup_subjects_results),
        ] {
            if let Some(v) = v {
                with_key(key, self.set(key, &v.to_string()))?;
            }
        }
        if let Some(v) = f.node_id {
            with_key("node_id", self.set("node_id", &v.to_string()))?;
        }
        if let Some(v) = f.raft_log_retain {
            with_key(
                "raft_log_retain",
                self.set("raft_log_retain", &v.to_string()),
            )?;
        }
        for (key, v) in [
            ("peer_addr", f.peer_addr),
            ("initial_cluster", f.initial_cluster),
            ("initial_cluster_state", f.initial_cluster_state),
            ("initial_cluster_token", f.initial_cluster_token),
            ("log_format", f.log_format),
            ("metrics_addr", f.metrics_addr),
        ] {
            if let Some(v) = v {
                with_key(key, self.set(key, &v))?;
            }
        }
        for (key, v) in [
            ("consistency_timeout", f.consistency_timeout),
            ("request_timeout", f.request_timeout),
            ("keepalive_interval", f.keepalive_interval),
            ("idle_timeout", f.idle_timeout),
            ("gc_window", f.gc_window),
        ] {
            // A bare TOML number is a number of seconds.
            let text = match v {
                Some(NumOrText::Num(n)) => format!("{n}s"),
                Some(NumOrText::Text(t)) => t,
                None => continue,
            };
            with_key(key, self.set(key, &text))?;
        }
        Ok(())
    }

    /// Sets one of the file keys that name a file.
    fn set_path(&mut self, key: &str, v: PathBuf) {
        let peer = self.node.peer_tls.get_or_insert_with(PeerTls::default);
        match key {
            "tls_cert_file" => self.tls_cert_file = Some(v),
            "tls_key_file" => self.tls_key_file = Some(v),
            "tls_client_ca_file" => self.tls_client_ca_file = Some(v),
            "peer_tls_ca_file" => peer.ca_file = v,
            "peer_tls_cert_file" => peer.cert_file = v,
            "peer_tls_key_file" => peer.key_file = v,
            _ => {}
        }
        if self.node.peer_tls.as_ref() == Some(&PeerTls::default()) {
            self.node.peer_tls = None;
        }
    }

    /// True when no credential is configured: the server would be open to every caller.
    pub fn auth_is_open(&self) -> bool {
        let a = &self.auth;
        a.preshared_keys.is_empty()
            && a.jwt_issuers.is_empty()
            && a.client_certificates.is_empty()
            && a.env_preshared_key.is_none()
    }

    /// Sets one key from text.
    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "grpc_addr" => {
                self.grpc_addr = v.trim().parse().map_err(|e| {
                    format!("invalid address `{v}` (expected host:port, e.g. 127.0.0.1:50051): {e}")
                })?
            }
            "data_dir" => self.node.data_dir = PathBuf::from(v),
            "max_message_bytes" => self.max_message_bytes = parse_size(v)?,
            "max_entry_bytes" => self.node.max_entry_bytes = parse_size(v)?,
            "max_updates_per_write" => {
                self.max_updates_per_write = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "consistency_timeout" => self.consistency_timeout = parse_duration(v)?,
            "request_timeout" => self.request_timeout = parse_duration(v)?,
            "max_preconditions_per_write" => {
                self.max_preconditions_per_write = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "max_check_bulk_items" => {
                self.max_check_bulk_items = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "max_lookup_subjects_results" => {
                self.max_lookup_subjects_results = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "max_connections" => {
                self.connections.max_connections = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "max_concurrent_streams" => {
                self.max_concurrent_streams = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "keepalive_interval" => self.keepalive_interval = parse_duration(v)?,
            "idle_timeout" => self.connections.idle_timeout = parse_duration(v)?,
            "gc_window" => self.node.gc_window = parse_duration(v)?,
            "node_id" => {
                self.node.node_id = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid node id `{v}` (a positive integer)"))?
            }
            "peer_addr" => {
                self.node.peer_addr = Some(v.trim().parse().map_err(|e| {
                    format!("invalid address `{v}` (expected host:port, e.g. 127.0.0.1:50052): {e}")
                })?)
            }
            "initial_cluster" => self.node.initial_cluster = parse_initial_cluster(v)?,
            "initial_cluster_token" => {
                let t = v.trim();
                if t.is_empty() {
                    return Err("an empty cluster token".into());
                }
                self.node.initial_cluster_token = Some(t.to_string())
            }
            "raft_log_retain" => {
                self.node.raft_log_retain = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "initial_cluster_state" => self.node.initial_cluster_state = parse_cluster_state(v)?,
            "tls_cert_file" | "tls_key_file" | "tls_client_ca_file" | "peer_tls_ca_file"
            | "peer_tls_cert_file" | "peer_tls_key_file" => self.set_path(key, PathBuf::from(v)),
            "insecure_allow_unauthenticated_public_access" => {
                self.insecure_allow_unauthenticated_public_access = match v.trim() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" | "" => false,
                    other => return Err(format!("`{other}` is not true or false")),
                }
            }
            "log_format" => self.log_format = parse_log_format(v)?,
            "metrics_addr" => {
                self.metrics_addr = Some(v.trim().parse().map_err(|e| {
                    format!("invalid address `{v}` (expected host:port, e.g. 0.0.0.0:9090): {e}")
                })?)
            }
            "preshared_key" => self.auth.env_preshared_key = Some(v.to_string()),
            other => return Err(format!("unknown key `{other}`")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_tmp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dhow-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn layers() {
        let p = write_tmp(
            "layers.toml",
            "grpc_addr = \"0.0.0.0:6000\"\ninsecure_allow_unauthenticated_public_access = true\nmax_message_bytes = \"8MiB\"\ngc_window = \"1h\"\nconsistency_timeout = 3\n",
        );
        let mut env = HashMap::new();
        env.insert("DHOW_GC_WINDOW".to_string(), "2h".to_string());
        env.insert("DHOW_UNRELATED".to_string(), "x".to_string());
        let o = ConfigOverrides {
            max_updates_per_write: Some(10),
            ..Default::default()
        };
        let c = Config::load(Some(&p), &env, &o).unwrap();
        assert_eq!(c.grpc_addr, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(c.max_message_bytes, 8 << 20);
        assert_eq!(c.node.gc_window, Duration::from_secs(7200));
        assert_eq!(c.consistency_timeout, Duration::from_secs(3));
        assert_eq!(c.max_updates_per_write, 10);
        assert_eq!(c.node.data_dir, PathBuf::from("./data"));
        assert_eq!(
            Config::load(None, &HashMap::new(), &ConfigOverrides::default()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn errors_name_the_key() {
        let p = write_tmp("unknown.toml", "grpc_adr = \"x\"\n");
        let e = Config::load(Some(&p), &HashMap::new(), &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("grpc_adr"), "{e}");
        let p = write_tmp("bad.toml", "gc_window = \"2 fortnights\"\n");
        let e = Config::load(Some(&p), &HashMap::new(), &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("gc_window"), "{e}");
        let mut env = HashMap::new();
        env.insert("DHOW_MAX_UPDATES_PER_WRITE".to_string(), "0".to_string());
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("max_updates_per_write"), "{e}");
        env.insert("DHOW_MAX_UPDATES_PER_WRITE".to_string(), "lots".to_string());
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("DHOW_MAX_UPDATES_PER_WRITE"), "{e}");
    }

    #[test]
    fn the_entry_bound_is_a_setting_with_a_floor() {
        let p = write_tmp("entry.toml", "max_entry_bytes = \"2MiB\"\n");
        let c = Config::load(Some(&p), &HashMap::new(), &ConfigOverrides::default()).unwrap();
        assert_eq!(c.node.max_entry_bytes, 2 << 20);
        let mut env = HashMap::new();
        env.insert("DHOW_MAX_ENTRY_BYTES".to_string(), "64KiB".to_string());
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("max_entry_bytes"), "{e}");
    }

    #[test]
    fn cluster_settings() {
        let mut env = HashMap::new();
        env.insert("DHOW_NODE_ID".to_string(), "2".to_string());
        env.insert(
            "DHOW_INITIAL_CLUSTER".to_string(),
            "1=a:1,2=b:2".to_string(),
        );
        env.insert("DHOW_PEER_ADDR".to_string(), "127.0.0.1:7002".to_string());
        env.insert(
            "DHOW_INITIAL_CLUSTER_STATE".to_string(),
            "existing".to_string(),
        );
        let c = Config::load(None, &env, &ConfigOverrides::default()).unwrap();
        assert_eq!(c.node.node_id, 2);
        assert_eq!(c.node.initial_cluster_state, ClusterState::Existing);
        env.insert("DHOW_NODE_ID".to_string(), "3".to_string());
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("does not list this node"), "{e}");
        env.insert("DHOW_NODE_ID".to_string(), "2".to_string());
        env.remove("DHOW_PEER_ADDR");
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("peer_addr"), "{e}");
        env.insert("DHOW_INITIAL_CLUSTER_STATE".to_string(), "old".to_string());
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("DHOW_INITIAL_CLUSTER_STATE"), "{e}");
        env.insert("DHOW_INITIAL_CLUSTER_STATE".to_string(), "new".to_string());
        env.insert("DHOW_PEER_ADDR".to_string(), "127.0.0.1:7002".to_string());
        env.insert("DHOW_INITIAL_CLUSTER_TOKEN".to_string(), " ".to_string());
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        assert!(
            e.to_string().contains("DHOW_INITIAL_CLUSTER_TOKEN") && e.to_string().contains("empty"),
            "{e}"
        );
        env.insert(
            "DHOW_INITIAL_CLUSTER_TOKEN".to_string(),
            "prod-eu".to_string(),
        );
        let c = Config::load(None, &env, &ConfigOverrides::default()).unwrap();
        assert_eq!(c.node.initial_cluster_token.as_deref(), Some("prod-eu"));
    }

    #[test]
    fn a_public_address_needs_authentication() {
        let mut env = HashMap::new();
        env.insert("DHOW_GRPC_ADDR".to_string(), "0.0.0.0:50051".to_string());
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("refusing to serve 0.0.0.0:50051 without authentication"),
            "{m}"
        );
        assert!(
            m.contains("[auth]") && m.contains("insecure_allow_unauthenticated_public_access"),
            "{m}"
        );
        // Loopback needs nothing.
        env.insert("DHOW_GRPC_ADDR".to_string(), "127.0.0.1:50051".to_string());
        Config::load(None, &env, &ConfigOverrides::default()).unwrap();
        // A key, or the explicit setting, lets a public address start.
        env.insert("DHOW_GRPC_ADDR".to_string(), "0.0.0.0:50051".to_string());
        env.insert("DHOW_PRESHARED_KEY".to_string(), "s3cret".to_string());
        let c = Config::load(None, &env, &ConfigOverrides::default()).unwrap();
        assert!(!c.auth_is_open());
        env.remove("DHOW_PRESHARED_KEY");
        let o = ConfigOverrides {
            insecure_allow_unauthenticated_public_access: true,
            ..Default::default()
        };
        Config::load(None, &env, &o).unwrap();
        let p = write_tmp(
            "auth.toml",
            "grpc_addr = \"0.0.0.0:1\"\n[[auth.preshared_keys]]\nname = \"ci\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\nroles = [\"read\"]\n",
        );
        let c = Config::load(Some(&p), &HashMap::new(), &ConfigOverrides::default()).unwrap();
        assert_eq!(c.auth.preshared_keys[0].name, "ci");
        let p = write_tmp("tls.toml", "tls_cert_file = \"/x.pem\"\n");
        let e = Config::load(Some(&p), &HashMap::new(), &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("tls_key_file"), "{e}");
    }

    #[test]
    fn log_format_from_file_env_and_flag() {
        let none = ConfigOverrides::default();
        let c = Config::load(None, &HashMap::new(), &none).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let p = write_tmp("log.toml", "log_format = \"json\"\n");
        let c = Config::load(Some(&p), &HashMap::new(), &none).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        // The environment wins over the file, a flag over both.
        let mut env = HashMap::new();
        env.insert("DHOW_LOG_FORMAT".to_string(), "text".to_string());
        let c = Config::load(Some(&p), &env, &none).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let flag = ConfigOverrides {
            log_format: Some(LogFormat::Json),
            ..Default::default()
        };
        let c = Config::load(Some(&p), &env, &flag).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        // A wrong value names the variable or the key, and the choices.
        env.insert("DHOW_LOG_FORMAT".to_string(), "yaml".to_string());
        let e = Config::load(None, &env, &none).unwrap_err().to_string();
        assert!(
            e.contains("DHOW_LOG_FORMAT") && e.contains("`yaml`") && e.contains("text or json"),
            "{e}"
        );
        let p = write_tmp("log-bad.toml", "log_format = \"JSON\"\n");
        let e = Config::load(Some(&p), &HashMap::new(), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`log_format`"), "{e}");
    }

    #[test]
    fn metrics_addr_from_file_env_and_flag() {
        let none = ConfigOverrides::default();
        let c = Config::load(None, &HashMap::new(), &none).unwrap();
        assert_eq!(c.metrics_addr, None, "off unless set");
        let p = write_tmp("metrics.toml", "metrics_addr = \"0.0.0.0:9090\"\n");
        let c = Config::load(Some(&p), &HashMap::new(), &none).unwrap();
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        // The environment wins over the file, a flag over both.
        let mut env = HashMap::new();
        env.insert("DHOW_METRICS_ADDR".to_string(), "127.0.0.1:0".to_string());
        let c = Config::load(Some(&p), &env, &none).unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:0".parse().unwrap()));
        let flag = ConfigOverrides {
            metrics_addr: Some("127.0.0.1:9191".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load(Some(&p), &env, &flag).unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9191".parse().unwrap()));
        // A wrong value names the variable or the key.
        env.insert("DHOW_METRICS_ADDR".to_string(), "nine".to_string());
        let e = Config::load(None, &env, &none).unwrap_err().to_string();
        assert!(
            e.contains("DHOW_METRICS_ADDR") && e.contains("`nine`"),
            "{e}"
        );
        let p = write_tmp("metrics-bad.toml", "metrics_addr = \"x:y\"\n");
        let e = Config::load(Some(&p), &HashMap::new(), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`metrics_addr`"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604800));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("x").unwrap_err().contains("`x`"));
        assert!(parse_duration("5 fortnights").is_err());
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert!(parse_size("4MB").is_err());
    }
}
