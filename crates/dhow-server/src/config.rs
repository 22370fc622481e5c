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
//! | `consistency_timeout` | `DHOW_CONSISTENCY_TIMEOUT` | `2s` |
//! | `request_timeout` | `DHOW_REQUEST_TIMEOUT` | `30s` |
//! | `gc_window` | `DHOW_GC_WINDOW` | `24h` |
//! | `node_id` | `DHOW_NODE_ID` | `1` |
//! | `peer_addr` | `DHOW_PEER_ADDR` | none (no node-to-node listener) |
//! | `initial_cluster` | `DHOW_INITIAL_CLUSTER` | none (a one-node cluster) |
//! | `initial_cluster_state` | `DHOW_INITIAL_CLUSTER_STATE` | `new` |
//! | `initial_cluster_token` | `DHOW_INITIAL_CLUSTER_TOKEN` | none (the cluster id comes from `initial_cluster`) |
//! | `raft_log_retain` | `DHOW_RAFT_LOG_RETAIN` | `50000` |
//!
//! `initial_cluster` is `1=HOST:PORT,2=HOST:PORT,...`: every member's id and the peer address
//! the others reach it at. It (and `initial_cluster_state`) only matter the first time a node
//! starts on an empty data dir; afterwards the membership comes from the node's own log.
//! The founding members derive the cluster id from `initial_cluster`, so all of them must be
//! given the same text; with `initial_cluster_token` (as etcd's) they derive it from the token
//! and the member ids instead, so each may reach the others at addresses of its own (through
//! a proxy or NAT).
//!
//! Durations are written `500ms`, `2s`, `5m`, `24h` or `7d`; sizes as a number of bytes or
//! with a `KiB`, `MiB` or `GiB` suffix.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything the gRPC server needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the public gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Most updates in one Write (and per write of an Import or Delete by filter).
    pub max_updates_per_write: usize,
    /// How long a read waits for this node to apply the revision it asks for.
    pub consistency_timeout: Duration,
    /// Deadline of a unary request when the client sets none.
    pub request_timeout: Duration,
    /// How long old revisions stay readable (at_exact_snapshot, cursors, Watch).
    pub gc_window: Duration,
    /// This node's id in the cluster (non-zero).
    pub node_id: u64,
    /// Where the node-to-node service listens; none for a node that never has peers.
    pub peer_addr: Option<SocketAddr>,
    /// The members of a new cluster and their peer addresses; empty for a one-node cluster.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Bootstrap a new cluster, or join a running one.
    pub initial_cluster_state: ClusterState,
    /// Names a new cluster: the founding members derive the cluster id from it and their ids.
    pub initial_cluster_token: Option<String>,
    /// Applied Raft entries kept in the log; a peer further behind is sent a snapshot.
    pub raft_log_retain: u64,
}

/// How a node with an empty data dir starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterState {
    /// Form a new cluster with the initial members as voters.
    #[default]
    New,
    /// Join a running cluster that has already added this node (`dhow cluster add`).
    Existing,
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` in `{part}` is not a node id (a positive integer)"))?;
        if id == 0 {
            return Err(format!("`{part}`: node ids start at 1"));
        }
        let addr = addr.trim();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("`{addr}` in `{part}` is not HOST:PORT"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    if out.is_empty() {
        return Err("no members given (expected 1=HOST:PORT,2=HOST:PORT,...)".into());
    }
    Ok(out)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./data"),
            max_message_bytes: 4 * 1024 * 1024,
            max_updates_per_write: 1000,
            consistency_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            gc_window: Duration::from_secs(24 * 3600),
            node_id: 1,
            peer_addr: None,
            initial_cluster: BTreeMap::new(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: None,
            raft_log_retain: 50_000,
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
    max_updates_per_write: Option<u64>,
    consistency_timeout: Option<NumOrText>,
    request_timeout: Option<NumOrText>,
    gc_window: Option<NumOrText>,
    node_id: Option<u64>,
    peer_addr: Option<String>,
    initial_cluster: Option<String>,
    initial_cluster_state: Option<String>,
    initial_cluster_token: Option<String>,
    raft_log_retain: Option<u64>,
}

/// The environment variables read, with the key each sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("DHOW_GRPC_ADDR", "grpc_addr"),
    ("DHOW_DATA_DIR", "data_dir"),
    ("DHOW_MAX_MESSAGE_BYTES", "max_message_bytes"),
    ("DHOW_MAX_UPDATES_PER_WRITE", "max_updates_per_write"),
    ("DHOW_CONSISTENCY_TIMEOUT", "consistency_timeout"),
    ("DHOW_REQUEST_TIMEOUT", "request_timeout"),
    ("DHOW_GC_WINDOW", "gc_window"),
    ("DHOW_NODE_ID", "node_id"),
    ("DHOW_PEER_ADDR", "peer_addr"),
    ("DHOW_INITIAL_CLUSTER", "initial_cluster"),
    ("DHOW_INITIAL_CLUSTER_STATE", "initial_cluster_state"),
    ("DHOW_INITIAL_CLUSTER_TOKEN", "initial_cluster_token"),
    ("DHOW_RAFT_LOG_RETAIN", "raft_log_retain"),
];

/// Parses `500ms`, `2s`, `5m`, `24h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (expected e.g. 500ms, 2s, 5m, 24h, 7d)"))?;
    let mult = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        u => {
            return Err(format!(
                "invalid duration unit `{u}` in `{s}` (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration `{s}` is too large"))
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
        c.data_dir = o.data_dir.unwrap_or(c.data_dir);
        c.max_message_bytes = o.max_message_bytes.unwrap_or(c.max_message_bytes);
        c.max_updates_per_write = o.max_updates_per_write.unwrap_or(c.max_updates_per_write);
        c.consistency_timeout = o.consistency_timeout.unwrap_or(c.consistency_timeout);
        c.request_timeout = o.request_timeout.unwrap_or(c.request_timeout);
        c.gc_window = o.gc_window.unwrap_or(c.gc_window);
        c.node_id = o.node_id.unwrap_or(c.node_id);
        c.peer_addr = o.peer_addr.or(c.peer_addr);
        c.initial_cluster = o.initial_cluster.unwrap_or(c.initial_cluster);
        c.initial_cluster_state = o.initial_cluster_state.unwrap_or(c.initial_cluster_state);
        c.initial_cluster_token = o.initial_cluster_token.or(c.initial_cluster_token);
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
        positive("consistency_timeout", self.consistency_timeout)?;
        positive("request_timeout", self.request_timeout)?;
        positive("node_id", self.node_id)?;
        positive("raft_log_retain", self.raft_log_retain)?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if !self.initial_cluster.is_empty() && !self.initial_cluster.contains_key(&self.node_id) {
            return Err(invalid(
                "initial_cluster",
                format!(
                    "does not list this node (node_id {}); list every member, this one included",
                    self.node_id
                ),
            ));
        }
        if self.initial_cluster.len() > 1 && self.peer_addr.is_none() {
            return Err(invalid(
                "peer_addr",
                "a node of a cluster needs a peer address to listen on".into(),
            ));
        }
        if self.initial_cluster_state == ClusterState::Existing && self.initial_cluster.len() < 2 {
            return Err(invalid(
                "initial_cluster",
                "joining a running cluster (initial_cluster_state existing) needs the addresses of its members".into(),
            ));
        }
        Ok(())
    }

    fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let f: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let text_of = |v: NumOrText| match v {
            NumOrText::Num(n) => n.to_string(),
            NumOrText::Text(s) => s,
        };
        let with_key = |key: &str, r: Result<(), String>| r.map_err(|m| format!("`{key}`: {m}"));
        if let Some(v) = f.grpc_addr {
            with_key("grpc_addr", self.set("grpc_addr", &v))?;
        }
        if let Some(v) = f.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = f.max_message_bytes {
            with_key(
                "max_message_bytes",
                self.set("max_message_bytes", &text_of(v)),
            )?;
        }
        if let Some(v) = f.max_updates_per_write {
            with_key(
                "max_updates_per_write",
                self.set("max_updates_per_write", &v.to_string()),
            )?;
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
        ] {
            if let Some(v) = v {
                with_key(key, self.set(key, &v))?;
            }
        }
        for (key, v) in [
            ("consistency_timeout", f.consistency_timeout),
            ("request_timeout", f.request_timeout),
            ("gc_window", f.gc_window),
        ] {
            if let Some(v) = v {
                with_key(key, self.set(key, &text_of(v)))?;
            }
        }
        Ok(())
    }

    /// Sets one key from text.
    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "grpc_addr" => {
                self.grpc_addr = v.trim().parse().map_err(|e| {
                    format!("invalid address `{v}` (expected host:port, e.g. 127.0.0.1:50051): {e}")
                })?
            }
            "data_dir" => self.data_dir = PathBuf::from(v),
            "max_message_bytes" => self.max_message_bytes = parse_size(v)?,
            "max_updates_per_write" => {
                self.max_updates_per_write = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "consistency_timeout" => self.consistency_timeout = parse_duration(v)?,
            "request_timeout" => self.request_timeout = parse_duration(v)?,
            "gc_window" => self.gc_window = parse_duration(v)?,
            "node_id" => {
                self.node_id = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid node id `{v}` (a positive integer)"))?
            }
            "peer_addr" => {
                self.peer_addr = Some(v.trim().parse().map_err(|e| {
                    format!("invalid address `{v}` (expected host:port, e.g. 127.0.0.1:50052): {e}")
                })?)
            }
            "initial_cluster" => self.initial_cluster = parse_initial_cluster(v)?,
            "initial_cluster_token" => {
                let t = v.trim();
                if t.is_empty() {
                    return Err("an empty cluster token".into());
                }
                self.initial_cluster_token = Some(t.to_string())
            }
            "raft_log_retain" => {
                self.raft_log_retain = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid number `{v}`"))?
            }
            "initial_cluster_state" => {
                self.initial_cluster_state = match v.trim() {
                    "new" => ClusterState::New,
                    "existing" => ClusterState::Existing,
                    other => return Err(format!("`{other}` is not `new` or `existing`")),
                }
            }
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
            "grpc_addr = \"0.0.0.0:6000\"\nmax_message_bytes = \"8MiB\"\ngc_window = \"1h\"\nconsistency_timeout = 3\n",
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
        assert_eq!(c.gc_window, Duration::from_secs(7200));
        assert_eq!(c.consistency_timeout, Duration::from_secs(3));
        assert_eq!(c.max_updates_per_write, 10);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
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
    fn cluster_settings() {
        let ic = parse_initial_cluster("1=a:1, 2=dhow-1.dhow:50052,3=10.0.0.3:7").unwrap();
        assert_eq!(ic.len(), 3);
        assert_eq!(ic[&2], "dhow-1.dhow:50052");
        for (bad, says) in [
            ("", "no members"),
            ("1=a:1,1=b:2", "twice"),
            ("0=a:1", "start at 1"),
            ("x=a:1", "not a node id"),
            ("1=a", "HOST:PORT"),
            ("1", "ID=HOST:PORT"),
        ] {
            let e = parse_initial_cluster(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
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
        assert_eq!(c.node_id, 2);
        assert_eq!(c.initial_cluster_state, ClusterState::Existing);
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
        assert_eq!(c.initial_cluster_token.as_deref(), Some("prod-eu"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604800));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert!(parse_size("4MB").is_err());
    }
}
