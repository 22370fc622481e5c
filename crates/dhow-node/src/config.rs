//! The node's half of the configuration: who this node is, where it keeps its data, how it
//! finds the rest of its cluster, and how it replicates and collects garbage. The server's
//! `Config` loader fills it from the file, the environment and the flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
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
    /// The most bytes one Raft entry may hold: a larger write or schema is refused before
    /// it reaches the log (at least [`MIN_ENTRY_BYTES`]).
    pub max_entry_bytes: usize,
    /// How long old revisions stay readable (at_exact_snapshot, cursors, Watch).
    pub gc_window: Duration,
    /// How long a write or membership change may take to commit before the caller is told it
    /// may or may not have been applied.
    pub write_timeout: Duration,
    /// Mutual TLS on the peer port with a cluster CA; plaintext without it.
    pub peer_tls: Option<PeerTls>,
    /// Free space kept on the data dir's disk: below it the node pauses its writes until
    /// space is freed (0: no reserve). Default 64 MiB.
    pub min_free_bytes: u64,
    /// Memory for writes not yet flushed to files (RocksDB's memtables, all column families
    /// together), at least 8 MiB. Default 512 MiB.
    pub memtable_bytes: usize,
}

/// The peer port's mutual TLS: every node has a certificate from the cluster CA that names it
/// (`CN=node-<id>` or a `DNS:node-<id>[.domain]` name); a peer without one cannot connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTls {
    /// The cluster CA (PEM): the only issuer of node certificates.
    pub ca_file: PathBuf,
    /// This node's certificate chain (PEM), used as server and as client.
    pub cert_file: PathBuf,
    /// This node's private key (PEM).
    pub key_file: PathBuf,
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

/// The least `max_entry_bytes` may be: room for a large schema or a write of the most
/// updates allowed.
pub const MIN_ENTRY_BYTES: usize = 1024 * 1024;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./data"),
            node_id: 1,
            peer_addr: None,
            initial_cluster: BTreeMap::new(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: None,
            raft_log_retain: 50_000,
            max_entry_bytes: dhow_raft::DEFAULT_MAX_ENTRY_BYTES,
            gc_window: Duration::from_secs(24 * 3600),
            write_timeout: Duration::from_secs(30),
            peer_tls: None,
            min_free_bytes: dhow_storage::DEFAULT_MIN_FREE_BYTES,
            memtable_bytes: dhow_storage::DEFAULT_MEMTABLE_BYTES,
        }
    }
}

/// A setting that does not fit the others: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub message: String,
}

impl NodeConfig {
    /// Checks values that no single setting can check alone.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |key, message: String| Err(InvalidSetting { key, message });
        let zero = "must be greater than zero".to_string();
        if self.node_id == 0 {
            return invalid("node_id", zero);
        }
        if self.raft_log_retain == 0 {
            return invalid("raft_log_retain", zero);
        }
        if self.max_entry_bytes < MIN_ENTRY_BYTES {
            return invalid(
                "max_entry_bytes",
                format!(
                    "{} is below the least allowed, {MIN_ENTRY_BYTES} bytes (1MiB): a schema or a full write must fit one entry",
                    self.max_entry_bytes
                ),
            );
        }
        if self.write_timeout.is_zero() {
            return invalid("request_timeout", zero);
        }
        if self.memtable_bytes < dhow_storage::MIN_MEMTABLE_BYTES {
            return invalid(
                "memtable_bytes",
                format!(
                    "{} is below the least allowed, {} bytes (8MiB)",
                    self.memtable_bytes,
                    dhow_storage::MIN_MEMTABLE_BYTES
                ),
            );
        }
        if !self.initial_cluster.is_empty() && !self.initial_cluster.contains_key(&self.node_id) {
            return invalid(
                "initial_cluster",
                format!(
                    "does not list this node (node_id {}); list every member, this one included",
                    self.node_id
                ),
            );
        }
        if let Some(t) = &self.peer_tls {
            for (key, f) in [
                ("peer_tls_ca_file", &t.ca_file),
                ("peer_tls_cert_file", &t.cert_file),
                ("peer_tls_key_file", &t.key_file),
            ] {
                if f.as_os_str().is_empty() {
                    return invalid(
                        key,
                        "the peer port's TLS needs all three of peer_tls_ca_file, peer_tls_cert_file and peer_tls_key_file".into(),
                    );
                }
            }
        }
        if self.initial_cluster.len() > 1 && self.peer_addr.is_none() {
            return invalid(
                "peer_addr",
                "a node of a cluster needs a peer address to listen on".into(),
            );
        }
        if self.initial_cluster_state == ClusterState::Existing && self.initial_cluster.len() < 2 {
            return invalid(
                "initial_cluster",
                "joining a running cluster (initial_cluster_state existing) needs the addresses of its members".into(),
            );
        }
        Ok(())
    }
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

/// Parses `new` or `existing`.
pub fn parse_cluster_state(s: &str) -> Result<ClusterState, String> {
    match s.trim() {
        "new" => Ok(ClusterState::New),
        "existing" => Ok(ClusterState::Existing),
        other => Err(format!("`{other}` is not `new` or `existing`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster() {
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
        assert!(parse_cluster_state("old").unwrap_err().contains("`old`"));
    }

    #[test]
    fn settings_that_do_not_fit() {
        let mut c = NodeConfig {
            node_id: 3,
            initial_cluster: parse_initial_cluster("1=a:1,2=b:2").unwrap(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "initial_cluster");
        c.node_id = 2;
        assert_eq!(c.validate().unwrap_err().key, "peer_addr");
        c.peer_addr = Some("127.0.0.1:7002".parse().unwrap());
        c.validate().unwrap();
        c.initial_cluster_state = ClusterState::Existing;
        c.validate().unwrap();
        c.initial_cluster = parse_initial_cluster("2=b:2").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "initial_cluster");
    }
}
