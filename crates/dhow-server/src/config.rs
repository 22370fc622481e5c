//! `dhow serve`'s settings: each declared once, in [`SETTINGS`] (name, value, default, help
//! and parser), from which come the file key (`name`), the environment variable
//! (`DHOW_NAME`), the flag (`--name-with-dashes`, built by `dhow::serve`) and the table of
//! docs/operations.md ("The node's settings"), which a test keeps equal to it.
//!
//! [`Config::load`] starts from the defaults and lets each layer replace the one before it:
//! an optional TOML file, then the `DHOW_*` environment variables, then the flags. An error
//! names the file and key, the variable or the flag. Unknown keys in the file are errors.
//! Two tables are file only: `[auth]` (preshared keys, JWT issuers, client certificates;
//! `auth/settings.rs`) and `[audit]`, the decision audit log in `DATA_DIR/audit`
//! (docs/agents.md):
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
//! `DHOW_PRESHARED_KEY` (a key in clear, with every role) is a variable only: a secret does
//! not belong on a command line or in a file. A node whose `grpc_addr` is not a loopback
//! address refuses to start without authentication, unless
//! `insecure_allow_unauthenticated_public_access` says so: an open authorization service lets
//! anyone rewrite it.
//!
//! Every duration goes through [`parse_duration`] (`500ms`, `1.5s`, `5m`, `24h`, `7d`,
//! `1h 30m`, or a bare number of seconds), every size through [`parse_size`] (bytes, or with a
//! `KiB`, `MiB` or `GiB` suffix), whichever layer they come from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dhow_node::{parse_cluster_state, parse_initial_cluster, NodeConfig, PeerTls};

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
    /// Memory for answers shared between checks at the same revision (the check cache);
    /// 0 turns it off.
    pub check_cache_bytes: usize,
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
    /// Where traces are exported (OTLP over gRPC, plaintext: `http://HOST:PORT`, a collector
    /// beside the node); none: tracing is off.
    pub otlp_endpoint: Option<String>,
    /// The share of calls traced when the caller sent no sampled `traceparent`.
    pub trace_sample_ratio: SampleRatio,
}

/// A share of calls, from 0 (none) to 1 (all); never NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio(f64);

// Never NaN (see `parse_sample_ratio`), so equality is an equivalence.
impl Eq for SampleRatio {}

impl SampleRatio {
    /// The ratio, in `0.0..=1.0`.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for SampleRatio {
    fn default() -> Self {
        SampleRatio(0.01)
    }
}

/// Parses a sample ratio: a number from 0 to 1 (`0.01`, `1`).
pub fn parse_sample_ratio(s: &str) -> Result<SampleRatio, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(SampleRatio(r)),
        _ => Err(format!(
            "invalid sample ratio `{s}` (a number from 0 to 1, e.g. 0.01)"
        )),
    }
}

/// Parses an OTLP endpoint: an `http://HOST:PORT` URL (OTLP/gRPC without TLS: a collector
/// beside the node carries traces further, over TLS if need be).
pub fn parse_otlp_endpoint(s: &str) -> Result<String, String> {
    let t = s.trim();
    match t.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => Ok(t.to_string()),
        _ => Err(format!(
            "invalid OTLP endpoint `{s}` (expected http://HOST:PORT, e.g. http://127.0.0.1:4317; no TLS: run a collector beside the node)"
        )),
    }
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
            check_cache_bytes: 256 * 1024 * 1024,
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
            otlp_endpoint: None,
            trace_sample_ratio: SampleRatio::default(),
        }
    }
}

/// A setting's default, as the docs and `--help` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// This text, parsed as any other value of the setting (a test checks it is the default).
    Is(&'static str),
    /// No value: the feature is off, or the text says what happens instead.
    Unset(&'static str),
    /// Worked out at start, as the text says.
    Computed(&'static str),
}

/// One setting of `dhow serve`: file key `name`, variable `DHOW_NAME`, flag
/// `--name-with-dashes`.
#[derive(Debug)]
pub struct Setting {
    /// The file key; the flag and the variable are made from it.
    pub name: &'static str,
    /// What the value is, as `--help` and the docs name it; `BOOL` for a switch (the flag
    /// alone means true).
    pub value: &'static str,
    pub default: DefaultValue,
    /// One line for `--help` and the docs' table.
    pub help: &'static str,
    /// Parses the text of a value into the configuration (the one parser of every layer).
    pub set: fn(&mut Config, &str) -> Result<(), String>,
}

impl Setting {
    /// The flag's name, without its dashes: `grpc-addr`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The environment variable: `DHOW_GRPC_ADDR`.
    pub fn env(&self) -> String {
        format!("DHOW_{}", self.name.to_ascii_uppercase())
    }

    /// A switch: `--flag` alone means true.
    pub fn is_switch(&self) -> bool {
        self.value == "BOOL"
    }

    /// The default as text: `127.0.0.1:50051`, `none (plaintext)`.
    pub fn default_text(&self) -> String {
        match self.default {
            DefaultValue::Is(v) => v.to_string(),
            DefaultValue::Unset("") => "none".to_string(),
            DefaultValue::Unset(why) => format!("none ({why})"),
            DefaultValue::Computed(how) => how.to_string(),
        }
    }
}

/// The setting of that name.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Every setting of `dhow serve` but the `[auth]` and `[audit]` tables (file only) and
/// `DHOW_PRESHARED_KEY` (variable only), in the order of `--help` and the docs.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "node_id",
        value: "N",
        default: DefaultValue::Is("1"),
        help: "This node's id: non-zero, unique in the cluster, never reused for different data (the data dir records it at first start and refuses another)",
        set: |c, v| {
            c.node.node_id = v
                .trim()
                .parse()
                .map_err(|_| format!("invalid node id `{v}` (a positive integer)"))?;
            Ok(())
        },
    },
    Setting {
        name: "data_dir",
        value: "DIR",
        default: DefaultValue::Is("./data"),
        help: "Where the node keeps its data: RocksDB in DIR/db (the Raft log, the relationships, the schema) and DIR/snapshots (a snapshot received from the leader, kept until the store holds it)",
        set: |c, v| {
            c.node.data_dir = PathBuf::from(v);
            Ok(())
        },
    },
    Setting {
        name: "grpc_addr",
        value: "HOST:PORT",
        default: DefaultValue::Is("127.0.0.1:50051"),
        help: "Address of the public gRPC API, with grpc.health.v1 health checking",
        set: |c, v| {
            c.grpc_addr = parse_addr(v, "127.0.0.1:50051")?;
            Ok(())
        },
    },
    Setting {
        name: "peer_addr",
        value: "HOST:PORT",
        default: DefaultValue::Unset("a one-node cluster that never adds members needs none"),
        help: "Address of the node-to-node Raft service; keep it off public networks",
        set: |c, v| {
            c.node.peer_addr = Some(parse_addr(v, "127.0.0.1:50052")?);
            Ok(())
        },
    },
    Setting {
        name: "initial_cluster",
        value: "ID=HOST:PORT,...",
        default: DefaultValue::Unset("a one-node cluster"),
        help: "The members of a new cluster: each one's id and the peer address the others reach it at (DNS names allowed), the same text on every founding member; used only on an empty data dir",
        set: |c, v| {
            c.node.initial_cluster = parse_initial_cluster(v)?;
            Ok(())
        },
    },
    Setting {
        name: "initial_cluster_state",
        value: "new|existing",
        default: DefaultValue::Is("new"),
        help: "`new` bootstraps a cluster with initial_cluster as its voters; `existing` joins a running one (after `dhow cluster add` there), learning its data by snapshot",
        set: |c, v| {
            c.node.initial_cluster_state = parse_cluster_state(v)?;
            Ok(())
        },
    },
    Setting {
        name: "initial_cluster_token",
        value: "TOKEN",
        default: DefaultValue::Unset("the cluster id comes from initial_cluster"),
        help: "Names a new cluster (as etcd's flag): the founding members derive the cluster id from it and their ids instead of the initial_cluster text, so each may reach the others at addresses of its own (a proxy, NAT); used only on an empty data dir",
        set: |c, v| {
            let t = v.trim();
            if t.is_empty() {
                return Err("an empty cluster token".into());
            }
            c.node.initial_cluster_token = Some(t.to_string());
            Ok(())
        },
    },
    Setting {
        name: "raft_log_retain",
        value: "N",
        default: DefaultValue::Is("50000"),
        help: "Applied Raft entries kept in the log (it is compacted past twice this many); a peer further behind is sent a snapshot",
        set: |c, v| {
            c.node.raft_log_retain = parse_number(v)?;
            Ok(())
        },
    },
    Setting {
        name: "gc_window",
        value: "DURATION",
        default: DefaultValue::Is("24h"),
        help: "How long old revisions stay readable (at_exact_snapshot, cursors, Watch)",
        set: |c, v| {
            c.node.gc_window = parse_duration(v)?;
            Ok(())
        },
    },
    Setting {
        name: "tls_cert_file",
        value: "FILE",
        default: DefaultValue::Unset("plaintext"),
        help: "TLS on the public API: the server's certificate chain (PEM), with tls_key_file; both re-read when the files change",
        set: |c, v| {
            c.set_path("tls_cert_file", PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        name: "tls_key_file",
        value: "FILE",
        default: DefaultValue::Unset(""),
        help: "TLS on the public API: the server's private key (PEM)",
        set: |c, v| {
            c.set_path("tls_key_file", PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        name: "tls_client_ca_file",
        value: "FILE",
        default: DefaultValue::Unset("no client certificates asked"),
        help: "Ask API clients for certificates signed by this CA (PEM); [[auth.client_certificates]] in the config file gives their identities roles",
        set: |c, v| {
            c.set_path("tls_client_ca_file", PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        name: "peer_tls_ca_file",
        value: "FILE",
        default: DefaultValue::Unset("plaintext peer port"),
        help: "Mutual TLS on the peer port: the cluster CA (PEM) that signs every node's certificate",
        set: |c, v| {
            c.set_path("peer_tls_ca_file", PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        name: "peer_tls_cert_file",
        value: "FILE",
        default: DefaultValue::Unset(""),
        help: "Mutual TLS on the peer port: this node's certificate (PEM), naming it DNS:node-<id>",
        set: |c, v| {
            c.set_path("peer_tls_cert_file", PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        name: "peer_tls_key_file",
        value: "FILE",
        default: DefaultValue::Unset(""),
        help: "Mutual TLS on the peer port: this node's private key (PEM)",
        set: |c, v| {
            c.set_path("peer_tls_key_file", PathBuf::from(v));
            Ok(())
        },
    },
    Setting {
        name: "insecure_allow_unauthenticated_public_access",
        value: "BOOL",
        default: DefaultValue::Is("false"),
        help: "Serve a non-loopback address with no authentication configured: anyone who reaches it may rewrite the schema and every relationship",
        set: |c, v| {
            c.insecure_allow_unauthenticated_public_access = parse_bool(v)?;
            Ok(())
        },
    },
    Setting {
        name: "log_format",
        value: "text|json",
        default: DefaultValue::Is("text"),
        help: "The log on stderr: `text` lines (ANSI colours only when stderr is a terminal) or `json`, one object a line; RUST_LOG filters it either way",
        set: |c, v| {
            c.log_format = parse_log_format(v)?;
            Ok(())
        },
    },
    Setting {
        name: "metrics_addr",
        value: "HOST:PORT",
        default: DefaultValue::Unset("no metrics"),
        help: "Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics; port 0 picks a free port, printed and logged",
        set: |c, v| {
            c.metrics_addr = Some(parse_addr(v, "0.0.0.0:9090")?);
            Ok(())
        },
    },
    Setting {
        name: "otlp_endpoint",
        value: "URL",
        default: DefaultValue::Unset("no traces"),
        help: "Export OpenTelemetry traces over OTLP/gRPC, plaintext, to a collector at http://HOST:PORT (e.g. http://127.0.0.1:4317)",
        set: |c, v| {
            c.otlp_endpoint = Some(parse_otlp_endpoint(v)?);
            Ok(())
        },
    },
    Setting {
        name: "trace_sample_ratio",
        value: "RATIO",
        default: DefaultValue::Is("0.01"),
        help: "The share of calls traced, 0 to 1, when the caller sent no sampled `traceparent` (a caller's decision is always followed)",
        set: |c, v| {
            c.trace_sample_ratio = parse_sample_ratio(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_message_bytes",
        value: "SIZE",
        default: DefaultValue::Is("4MiB"),
        help: "Largest gRPC message accepted or sent",
        set: |c, v| {
            c.max_message_bytes = parse_size(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_updates_per_write",
        value: "N",
        default: DefaultValue::Is("1000"),
        help: "Most updates in one Write (and per write of an Import or a delete by filter)",
        set: |c, v| {
            c.max_updates_per_write = parse_number(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_preconditions_per_write",
        value: "N",
        default: DefaultValue::Is("1000"),
        help: "Most preconditions in one Write or DeleteRelationships",
        set: |c, v| {
            c.max_preconditions_per_write = parse_number(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_entry_bytes",
        value: "SIZE",
        default: DefaultValue::Is("8MiB"),
        help: "Largest Raft entry, at least 1MiB: writes batched past it are split, a single write or schema past it is refused",
        set: |c, v| {
            c.node.max_entry_bytes = parse_size(v)?;
            Ok(())
        },
    },
    Setting {
        name: "memtable_bytes",
        value: "SIZE",
        default: DefaultValue::Is("512MiB"),
        help: "Memory for writes not yet flushed to files (RocksDB memtables, all column families together), at least 8MiB: a larger budget takes a bigger import before flushing under it, and costs memory and a longer WAL replay at restart",
        set: |c, v| {
            c.node.memtable_bytes = parse_size(v)?;
            Ok(())
        },
    },
    Setting {
        name: "check_cache_bytes",
        value: "SIZE",
        default: DefaultValue::Is("256MiB"),
        help: "Memory for the answers shared between checks at the same revision (the check cache); 0 turns it off",
        set: |c, v| {
            c.check_cache_bytes = parse_size(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_check_bulk_items",
        value: "N",
        default: DefaultValue::Is("1000"),
        help: "Most items in one CheckBulk",
        set: |c, v| {
            c.max_check_bulk_items = parse_number(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_lookup_subjects_results",
        value: "N",
        default: DefaultValue::Is("100000"),
        help: "Most subjects one LookupSubjects returns; past it the call fails",
        set: |c, v| {
            c.max_lookup_subjects_results = parse_number(v)?;
            Ok(())
        },
    },
    Setting {
        name: "request_timeout",
        value: "DURATION",
        default: DefaultValue::Is("30s"),
        help: "Deadline of a request when the client sets none (of an Import stream: the wait for each next message), and how long a write may take to commit",
        set: |c, v| {
            c.request_timeout = parse_duration(v)?;
            Ok(())
        },
    },
    Setting {
        name: "consistency_timeout",
        value: "DURATION",
        default: DefaultValue::Is("2s"),
        help: "How long a read waits for this node to apply the revision it asks for",
        set: |c, v| {
            c.consistency_timeout = parse_duration(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_connections",
        value: "N",
        default: DefaultValue::Computed("half the open-file limit, at most 10000"),
        help: "Connections the public port keeps open at once; past it new ones wait in the kernel's backlog (the node raises its soft open-file limit to the hard one at start)",
        set: |c, v| {
            c.connections.max_connections = parse_number(v)?;
            Ok(())
        },
    },
    Setting {
        name: "max_concurrent_streams",
        value: "N",
        default: DefaultValue::Is("256"),
        help: "Calls in flight on one connection (HTTP/2 streams); more wait for the client",
        set: |c, v| {
            c.max_concurrent_streams = parse_number(v)?;
            Ok(())
        },
    },
    Setting {
        name: "keepalive_interval",
        value: "DURATION",
        default: DefaultValue::Is("30s"),
        help: "How often the server pings a connection it has not heard from (HTTP/2 keepalive); one that does not answer within 20s is closed",
        set: |c, v| {
            c.keepalive_interval = parse_duration(v)?;
            Ok(())
        },
    },
    Setting {
        name: "idle_timeout",
        value: "DURATION",
        default: DefaultValue::Is("2m"),
        help: "Closes a connection on which nothing was received for this long; longer than keepalive_interval, so a live client is never closed",
        set: |c, v| {
            c.connections.idle_timeout = parse_duration(v)?;
            Ok(())
        },
    },
];

/// The variable that adds one preshared key in clear, with every role (no flag, no file key).
pub const PRESHARED_KEY_ENV: &str = "DHOW_PRESHARED_KEY";

/// Values given on the command line, by setting name, as text: they win over the file and
/// the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    values: Vec<(String, String)>,
}

impl ConfigOverrides {
    /// Sets `name` (a [`SETTINGS`] name) to `text`, as `--name text` does.
    pub fn set(&mut self, name: impl Into<String>, text: impl Into<String>) -> &mut Self {
        self.values.push((name.into(), text.into()));
        self
    }

    /// [`ConfigOverrides::set`], by value.
    pub fn with(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.set(name, text);
        self
    }

    /// The values, in the order given.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Why the configuration could not be loaded; says which file, key, variable or flag.
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
    #[error("flag {flag}: {message}")]
    Flag { flag: String, message: String },
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

impl NumOrText {
    fn text(self) -> String {
        match self {
            NumOrText::Num(n) => n.to_string(),
            NumOrText::Text(s) => s,
        }
    }
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

/// Parses a duration, wherever it comes from (flag, variable, file, `[auth]`, `[audit]`):
/// the `humantime` syntax (`500ms`, `1.5s`, `5m`, `24h`, `7d`, `1h 30m`), or a bare number of
/// seconds (`30`, `1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bare = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.');
    let parsed = if bare {
        humantime::parse_duration(&format!("{t}s"))
    } else {
        humantime::parse_duration(t)
    };
    parsed.map_err(|e| {
        format!("invalid duration `{s}` ({e}; e.g. 500ms, 1.5s, 5m, 24h, 7d, or 30 for seconds)")
    })
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

/// Parses a count.
fn parse_number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("invalid number `{v}`"))
}

/// Parses `host:port`; `example` goes into the error.
fn parse_addr(v: &str, example: &str) -> Result<SocketAddr, String> {
    v.trim()
        .parse()
        .map_err(|e| format!("invalid address `{v}` (expected host:port, e.g. {example}): {e}"))
}

/// Parses a switch: `true`, `1`, `yes`, or `false`, `0`, `no`, empty.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(format!("`{other}` is not true or false")),
    }
}

/// The text of a scalar TOML value, as a flag or a variable would give it.
fn toml_text(v: toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, a number or a boolean, not {}",
            other.type_str()
        )),
    }
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
    /// `overrides` (the flags).
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
        for s in SETTINGS {
            let var = s.env();
            if let Some(v) = env.get(&var) {
                (s.set)(&mut c, v).map_err(|message| ConfigError::Env { var, message })?;
            }
        }
        if let Some(key) = env.get(PRESHARED_KEY_ENV) {
            c.auth.env_preshared_key = Some(key.clone());
        }
        for (name, v) in overrides.values() {
            let Some(s) = setting(name) else {
                return Err(ConfigError::Flag {
                    flag: format!("--{}", name.replace('_', "-")),
                    message: "no such setting".into(),
                });
            };
            (s.set)(&mut c, v).map_err(|message| ConfigError::Flag {
                flag: format!("--{}", s.flag()),
                message,
            })?;
        }
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

    /// The file's keys: every setting by name (a TOML string, number or boolean, parsed as
    /// the same text from a flag would be), and the `[auth]` and `[audit]` tables.
    fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        for (key, value) in table {
            match key.as_str() {
                "auth" => {
                    let a: AuthSettings = value.try_into().map_err(|e| format!("`auth`: {e}"))?;
                    self.auth = AuthSettings {
                        env_preshared_key: self.auth.env_preshared_key.take(),
                        ..a
                    };
                }
                "audit" => {
                    let a: AuditFile = value.try_into().map_err(|e| format!("`audit`: {e}"))?;
                    self.apply_audit(a)?;
                }
                _ => {
                    let Some(s) = setting(&key) else {
                        return Err(format!(
                            "unknown key `{key}` (the keys are the settings of `dhow serve --help` with underscores, and the [auth] and [audit] tables)"
                        ));
                    };
                    toml_text(value)
                        .and_then(|v| (s.set)(self, &v))
                        .map_err(|m| format!("`{key}`: {m}"))?;
                }
            }
        }
        Ok(())
    }

    fn apply_audit(&mut self, a: AuditFile) -> Result<(), String> {
        let au = &mut self.audit;
        if let Some(m) = a.mode {
            au.mode = dhow_audit::Mode::parse(&m).map_err(|m| format!("`audit.mode`: {m}"))?;
        }
        if let Some(p) = a.proofs {
            au.proofs = p;
        }
        if let Some(v) = a.max_bytes {
            au.max_bytes =
                parse_size(&v.text()).map_err(|m| format!("`audit.max_bytes`: {m}"))? as u64;
        }
        if let Some(v) = a.max_age {
            au.max_age = parse_duration(&v.text()).map_err(|m| format!("`audit.max_age`: {m}"))?;
        }
        if let Some(q) = a.queue {
            au.queue = q.clamp(1, 1 << 24) as usize;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_node::ClusterState;

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
        let o = ConfigOverrides::default().with("max_updates_per_write", "10");
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
    fn the_memtable_budget_is_a_setting_with_a_floor() {
        let c = Config::load(None, &HashMap::new(), &ConfigOverrides::default()).unwrap();
        assert_eq!(c.node.memtable_bytes, 512 << 20);
        let p = write_tmp("memtable.toml", "memtable_bytes = \"64MiB\"\n");
        let c = Config::load(Some(&p), &HashMap::new(), &ConfigOverrides::default()).unwrap();
        assert_eq!(c.node.memtable_bytes, 64 << 20);
        let mut env = HashMap::new();
        env.insert("DHOW_MEMTABLE_BYTES".to_string(), "1MiB".to_string());
        let e = Config::load(None, &env, &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("memtable_bytes"), "{e}");
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
        let o =
            ConfigOverrides::default().with("insecure_allow_unauthenticated_public_access", "true");
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
        let flag = ConfigOverrides::default().with("log_format", "json");
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
        let flag = ConfigOverrides::default().with("metrics_addr", "127.0.0.1:9191");
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
    fn tracing_settings_from_file_env_and_flag() {
        let none = ConfigOverrides::default();
        let c = Config::load(None, &HashMap::new(), &none).unwrap();
        assert_eq!(c.otlp_endpoint, None, "off unless set");
        assert_eq!(c.trace_sample_ratio.get(), 0.01);
        let p = write_tmp(
            "traces.toml",
            "otlp_endpoint = \"http://collector:4317\"\ntrace_sample_ratio = 1\n",
        );
        let c = Config::load(Some(&p), &HashMap::new(), &none).unwrap();
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(c.trace_sample_ratio.get(), 1.0);
        // The environment wins over the file, a flag over both.
        let mut env = HashMap::new();
        env.insert(
            "DHOW_OTLP_ENDPOINT".to_string(),
            "http://tempo:4317".to_string(),
        );
        env.insert("DHOW_TRACE_SAMPLE_RATIO".to_string(), "0.25".to_string());
        let c = Config::load(Some(&p), &env, &none).unwrap();
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://tempo:4317"));
        assert_eq!(c.trace_sample_ratio.get(), 0.25);
        let flag = ConfigOverrides::default()
            .with("otlp_endpoint", "http://127.0.0.1:4317")
            .with("trace_sample_ratio", "0");
        let c = Config::load(Some(&p), &env, &flag).unwrap();
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(c.trace_sample_ratio.get(), 0.0);
        // Wrong values name the variable or the key.
        env.insert("DHOW_TRACE_SAMPLE_RATIO".to_string(), "1.5".to_string());
        let e = Config::load(None, &env, &none).unwrap_err().to_string();
        assert!(
            e.contains("DHOW_TRACE_SAMPLE_RATIO") && e.contains("`1.5`"),
            "{e}"
        );
        env.insert("DHOW_TRACE_SAMPLE_RATIO".to_string(), "NaN".to_string());
        assert!(Config::load(None, &env, &none).is_err());
        env.remove("DHOW_TRACE_SAMPLE_RATIO");
        env.insert(
            "DHOW_OTLP_ENDPOINT".to_string(),
            "collector:4317".to_string(),
        );
        let e = Config::load(None, &env, &none).unwrap_err().to_string();
        assert!(
            e.contains("DHOW_OTLP_ENDPOINT") && e.contains("http://"),
            "{e}"
        );
        env.insert(
            "DHOW_OTLP_ENDPOINT".to_string(),
            "https://tempo:4317".to_string(),
        );
        let e = Config::load(None, &env, &none).unwrap_err().to_string();
        assert!(e.contains("no TLS"), "{e}");
        let p = write_tmp("traces-bad.toml", "trace_sample_ratio = -1\n");
        let e = Config::load(Some(&p), &HashMap::new(), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`trace_sample_ratio`"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604800));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        // A bare number is seconds, in every layer.
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration(" 1.5 ").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("x").unwrap_err().contains("`x`"));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration(".").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert!(parse_size("4MB").is_err());
    }

    /// `1.5s` and `5m` mean the same from a flag, a variable and the file (where a bare
    /// number, integer or not, is seconds too); a wrong one is refused by each, naming it.
    #[test]
    fn one_duration_parser_in_every_layer() {
        let none = ConfigOverrides::default();
        for (text, toml, want) in [
            ("1.5s", "\"1.5s\"", Duration::from_millis(1500)),
            ("1.5", "1.5", Duration::from_millis(1500)),
            ("5m", "\"5m\"", Duration::from_secs(300)),
            ("90", "90", Duration::from_secs(90)),
        ] {
            let p = write_tmp("duration.toml", &format!("request_timeout = {toml}\n"));
            let from_file = Config::load(Some(&p), &HashMap::new(), &none).unwrap();
            let env = HashMap::from([("DHOW_REQUEST_TIMEOUT".to_string(), text.to_string())]);
            let from_env = Config::load(None, &env, &none).unwrap();
            let flag = ConfigOverrides::default().with("request_timeout", text);
            let from_flag = Config::load(None, &HashMap::new(), &flag).unwrap();
            for c in [&from_file, &from_env, &from_flag] {
                assert_eq!(c.request_timeout, want, "{text}");
                assert_eq!(c.node.write_timeout, want, "{text}");
            }
        }
        let bad = "1.5 fortnights";
        let p = write_tmp("duration-bad.toml", &format!("gc_window = \"{bad}\"\n"));
        let e = Config::load(Some(&p), &HashMap::new(), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`gc_window`") && e.contains(bad), "{e}");
        let env = HashMap::from([("DHOW_GC_WINDOW".to_string(), bad.to_string())]);
        let e = Config::load(None, &env, &none).unwrap_err().to_string();
        assert!(e.contains("DHOW_GC_WINDOW") && e.contains(bad), "{e}");
        let flag = ConfigOverrides::default().with("gc_window", bad);
        let e = Config::load(None, &HashMap::new(), &flag)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--gc-window") && e.contains(bad), "{e}");
    }

    /// For a size and a duration: the file beats the default, the variable the file, the
    /// flag the variable.
    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file() {
        let p = write_tmp(
            "precedence.toml",
            "check_cache_bytes = \"1MiB\"\nconsistency_timeout = \"3s\"\n",
        );
        let env = HashMap::from([
            ("DHOW_CHECK_CACHE_BYTES".to_string(), "2MiB".to_string()),
            ("DHOW_CONSISTENCY_TIMEOUT".to_string(), "4s".to_string()),
        ]);
        let flags = ConfigOverrides::default()
            .with("check_cache_bytes", "0")
            .with("consistency_timeout", "500ms");
        let none = ConfigOverrides::default();
        let no_env = HashMap::new();
        let got = |file: Option<&Path>, env: &HashMap<String, String>, o: &ConfigOverrides| {
            let c = Config::load(file, env, o).unwrap();
            (c.check_cache_bytes, c.consistency_timeout)
        };
        let secs = Duration::from_secs;
        assert_eq!(got(None, &no_env, &none), (256 << 20, secs(2)));
        assert_eq!(got(Some(&p), &no_env, &none), (1 << 20, secs(3)));
        assert_eq!(got(Some(&p), &env, &none), (2 << 20, secs(4)));
        assert_eq!(got(None, &env, &none), (2 << 20, secs(4)));
        let flagged = (0, Duration::from_millis(500));
        assert_eq!(got(Some(&p), &env, &flags), flagged);
        assert_eq!(got(Some(&p), &no_env, &flags), flagged);
        assert_eq!(got(None, &no_env, &flags), flagged);
    }

    /// A value for every setting, different from its default where it can be.
    fn sample(name: &str) -> &'static str {
        match name {
            "node_id" => "7",
            "data_dir" => "/var/lib/dhow",
            "grpc_addr" => "127.0.0.1:6000",
            "peer_addr" => "127.0.0.1:7000",
            "initial_cluster" => "1=127.0.0.1:7000",
            "initial_cluster_state" => "existing",
            "initial_cluster_token" => "prod-eu",
            "raft_log_retain" => "10",
            "gc_window" => "1h 30m",
            "tls_cert_file" | "tls_key_file" | "tls_client_ca_file" | "peer_tls_ca_file"
            | "peer_tls_cert_file" | "peer_tls_key_file" => "/etc/dhow/x.pem",
            "insecure_allow_unauthenticated_public_access" => "true",
            "log_format" => "json",
            "metrics_addr" => "127.0.0.1:9999",
            "otlp_endpoint" => "http://collector:4317",
            "trace_sample_ratio" => "0.5",
            "max_message_bytes" => "8MiB",
            "max_updates_per_write" => "10",
            "max_preconditions_per_write" => "11",
            "max_entry_bytes" => "2MiB",
            "check_cache_bytes" => "0",
            "memtable_bytes" => "64MiB",
            "max_check_bulk_items" => "12",
            "max_lookup_subjects_results" => "13",
            "request_timeout" => "1.5s",
            "consistency_timeout" => "3",
            "max_connections" => "14",
            "max_concurrent_streams" => "15",
            "keepalive_interval" => "10s",
            "idle_timeout" => "5m",
            other => panic!("no sample value for the setting `{other}`: add one here"),
        }
    }

    /// Every setting is a file key, a variable and a flag of the same name, parsed alike.
    #[test]
    fn every_setting_is_a_file_key_a_variable_and_a_flag() {
        let mut names = std::collections::BTreeSet::new();
        let mut changed = 0;
        for s in SETTINGS {
            assert!(names.insert(s.name), "`{}` declared twice", s.name);
            assert!(
                s.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                s.name
            );
            assert!(!s.help.is_empty() && !s.value.is_empty(), "{}", s.name);
            let v = sample(s.name);
            let p = write_tmp("one.toml", &format!("{} = {v:?}\n", s.name));
            let from_file = Config::load(Some(&p), &HashMap::new(), &ConfigOverrides::default());
            let env = HashMap::from([(s.env(), v.to_string())]);
            let from_env = Config::load(None, &env, &ConfigOverrides::default());
            let flag = ConfigOverrides::default().with(s.name, v);
            let from_flag = Config::load(None, &HashMap::new(), &flag);
            match (from_file, from_env, from_flag) {
                (Ok(a), Ok(b), Ok(c)) => {
                    assert_eq!(a, b, "{}", s.name);
                    assert_eq!(a, c, "{}", s.name);
                    if a != Config::default() {
                        changed += 1;
                    }
                }
                // Alone, some are refused (a TLS key without its certificate...): by every
                // layer, for the same reason.
                (Err(a), Err(b), Err(c)) => {
                    let (a, b, c) = (a.to_string(), b.to_string(), c.to_string());
                    let reason = c.rsplit(": ").next().unwrap();
                    assert!(a.ends_with(reason) && b.ends_with(reason), "{a}\n{b}\n{c}");
                }
                (a, b, c) => panic!("{}: file {a:?}, env {b:?}, flag {c:?}", s.name),
            }
        }
        assert!(
            changed >= SETTINGS.len() - 8,
            "only {changed} samples took effect"
        );
        let flag = ConfigOverrides::default().with("grpc_adr", "127.0.0.1:1");
        let e = Config::load(None, &HashMap::new(), &flag).unwrap_err();
        assert!(e.to_string().contains("--grpc-adr"), "{e}");
    }

    /// The declared defaults are the defaults: each parsed as a value changes nothing.
    #[test]
    fn the_declared_defaults_are_the_defaults() {
        let base = Config::default();
        for s in SETTINGS {
            match s.default {
                DefaultValue::Is(v) => {
                    let mut c = Config::default();
                    (s.set)(&mut c, v).unwrap_or_else(|e| panic!("{}: {e}", s.name));
                    assert_eq!(c, base, "the default of `{}` is not {v}", s.name);
                }
                DefaultValue::Unset(_) => {
                    let mut c = Config::default();
                    (s.set)(&mut c, sample(s.name)).unwrap();
                    assert_ne!(c, base, "`{}` is set by default", s.name);
                }
                DefaultValue::Computed(_) => {}
            }
        }
        assert_eq!(
            Config::load(None, &HashMap::new(), &ConfigOverrides::default()).unwrap(),
            base
        );
    }

    /// The table of docs/operations.md's "The node's settings", made from `SETTINGS`.
    fn settings_table() -> String {
        let cell = |s: &str| s.replace('|', "\\|");
        let mut t = String::from(
            "| setting (file key) | flag | variable | default | meaning |\n| --- | --- | --- | --- | --- |\n",
        );
        for s in SETTINGS {
            let flag = if s.is_switch() {
                format!("--{}", s.flag())
            } else {
                format!("--{} {}", s.flag(), s.value)
            };
            let default = match s.default {
                DefaultValue::Is(v) => format!("`{v}`"),
                _ => s.default_text(),
            };
            t += &format!(
                "| `{}` | `{}` | `{}` | {} | {} |\n",
                s.name,
                cell(&flag),
                s.env(),
                cell(&default),
                cell(s.help)
            );
        }
        t
    }

    #[test]
    fn the_docs_list_exactly_the_settings() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let section = doc
            .split("\n## The node's settings\n")
            .nth(1)
            .expect("docs/operations.md has no section \"The node's settings\"");
        let section = section.split("\n## ").next().unwrap();
        let table: String = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        let want = settings_table();
        assert!(
            table == want,
            "docs/operations.md's settings table is not config::SETTINGS; it should read:\n\n{want}"
        );
    }
}
