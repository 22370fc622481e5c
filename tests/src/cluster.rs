//! A cluster of real `dhow serve` processes on loopback for the fault tests: start, kill -9,
//! restart, find the leader, and a small gRPC client (write, check, status, export) whose
//! calls report the revision of every answer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dhow_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::permission_service_client::PermissionServiceClient;
use pb::relationship_service_client::RelationshipServiceClient;
use pb::schema_service_client::SchemaServiceClient;
use tonic::transport::Channel;

pub use crate::process::{dhow_bin, free_port};
pub use crate::revision;

/// One node: its ports, data dir and process (if running).
pub struct NodeProc {
    pub id: u64,
    pub grpc: u16,
    pub peer: u16,
    pub data: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }
    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer)
    }
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
    fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }
    /// The node's whole log.
    pub fn log_tail_all(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// A cluster of real processes under a temporary directory.
pub struct Cluster {
    /// One cluster at a time per test binary: a dozen processes on two cores would starve
    /// elections.
    _turn: std::sync::MutexGuard<'static, ()>,
    _dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    initial: String,
    /// Extra environment of every node (e.g. `DHOW_RAFT_LOG_RETAIN`).
    env: Vec<(String, String)>,
    /// With proxies on the peer links: each node's own `--initial-cluster`.
    views: BTreeMap<u64, String>,
    /// The fault-injecting proxies on every peer link, if the cluster was started with them.
    mesh: Option<crate::proxy::Mesh>,
    /// The bearer token of the cluster's own status calls, when its nodes authenticate.
    token: Option<String>,
}

impl Cluster {
    /// Starts `n` voters (ids 1..=n) and waits until one of them leads.
    pub async fn start(n: u64) -> Cluster {
        Cluster::start_with_env(n, &[]).await
    }

    /// [`Cluster::start`] with extra environment variables for every node.
    pub async fn start_with_env(n: u64, env: &[(&str, &str)]) -> Cluster {
        Cluster::start_inner(n, env, false, None).await
    }

    /// [`Cluster::start_with_env`] for nodes that authenticate callers: `token` (a bearer
    /// token with the `admin` role) goes with the clients' status calls.
    pub async fn start_authenticated(n: u64, env: &[(&str, &str)], token: &str) -> Cluster {
        Cluster::start_inner(n, env, false, Some(token.to_string())).await
    }

    /// [`Cluster::start`] with a fault-injecting proxy on every directed peer link
    /// ([`Cluster::mesh`]): each node reaches each other node through the proxy of that link.
    pub async fn start_proxied(n: u64) -> Cluster {
        Cluster::start_inner(n, &[], true, None).await
    }

    // The turn is held for the cluster's whole life, across awaits, on purpose: each test
    // runs on its own runtime, so a second cluster waits in another thread, never in this one.
    #[allow(clippy::await_holding_lock)]
    async fn start_inner(
        n: u64,
        env: &[(&str, &str)],
        proxied: bool,
        token: Option<String>,
    ) -> Cluster {
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<NodeProc> = (1..=n)
            .map(|id| NodeProc {
                id,
                grpc: free_port(),
                peer: free_port(),
                data: dir.path().join(format!("node{id}")),
                child: None,
            })
            .collect();
        let initial = nodes
            .iter()
            .map(|p| format!("{}={}", p.id, p.peer_addr()))
            .collect::<Vec<_>>()
            .join(",");
        let (mesh, views) = if proxied {
            let peers: BTreeMap<u64, String> =
                nodes.iter().map(|p| (p.id, p.peer_addr())).collect();
            // The nodes' ports are chosen but not bound yet: no proxy may take one.
            let avoid: Vec<u16> = nodes.iter().flat_map(|p| [p.grpc, p.peer]).collect();
            let mesh = crate::proxy::Mesh::start(&peers, &avoid).await;
            let views = peers
                .keys()
                .map(|&a| (a, mesh.view_of(a, &peers)))
                .collect();
            (Some(mesh), views)
        } else {
            (None, BTreeMap::new())
        };
        let mut c = Cluster {
            _turn: turn,
            _dir: dir,
            nodes,
            initial,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            views,
            mesh,
            token,
        };
        for i in 0..c.nodes.len() {
            c.spawn(i, &[]);
        }
        c.wait_leader(Duration::from_secs(20)).await;
        c
    }

    fn spawn(&mut self, i: usize, extra: &[&str]) {
        match self.views.get(&self.nodes[i].id).cloned() {
            // Members reach each other at different (proxy) addresses: name the cluster by a
            // token so that they still agree on its id.
            Some(view) => {
                let mut args = vec!["--initial-cluster-token", "dhow-test"];
                args.extend_from_slice(extra);
                self.spawn_with(i, &view, &args)
            }
            None => {
                let initial = self.initial.clone();
                self.spawn_with(i, &initial, extra)
            }
        }
    }

    /// The mesh of proxies ([`Cluster::start_proxied`]).
    pub fn mesh(&self) -> &crate::proxy::Mesh {
        self.mesh
            .as_ref()
            .expect("a cluster started with Cluster::start_proxied")
    }

    fn spawn_with(&mut self, i: usize, initial: &str, extra: &[&str]) {
        let env = self.env.clone();
        let p = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.log_path())
            .expect("node log file");
        let child = Command::new(dhow_bin())
            .arg("serve")
            .args(["--node-id", &p.id.to_string()])
            .arg("--data-dir")
            .arg(&p.data)
            .args(["--grpc-addr", &format!("127.0.0.1:{}", p.grpc)])
            .args(["--peer-addr", &p.peer_addr()])
            .args(["--initial-cluster", initial])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("DHOW_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // `{id}` in a value is this node's id (per-node files: certificates).
            .envs(
                env.iter()
                    .map(|(k, v)| (k.clone(), v.replace("{id}", &p.id.to_string()))),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dhow serve");
        p.child = Some(child);
    }

    /// Adds a node process (not yet a member: add it with `cluster add` first) that joins the
    /// running cluster.
    pub fn spawn_joining(&mut self, id: u64) -> usize {
        let dir = self.nodes[0]
            .data
            .parent()
            .expect("cluster dir")
            .to_path_buf();
        self.nodes.push(NodeProc {
            id,
            grpc: free_port(),
            peer: free_port(),
            data: dir.join(format!("node{id}")),
            child: None,
        });
        let i = self.nodes.len() - 1;
        let me = format!("{id}={}", self.nodes[i].peer_addr());
        let initial = format!("{},{me}", self.initial);
        self.spawn_with(i, &initial, &["--initial-cluster-state", "existing"]);
        i
    }

    /// Starts node `id` joining the running cluster and adds it as a learner through node
    /// index `via` (`dhow cluster add ID PEER --learner`); its index. Panics with the
    /// command's output if the add is refused.
    pub async fn add_learner(&mut self, id: u64, via: usize) -> usize {
        let i = self.spawn_joining(id);
        let peer = self.nodes[i].peer_addr();
        let endpoint = self.nodes[via].endpoint();
        let (status, out) = tokio::task::spawn_blocking(move || {
            crate::damage::dhow_cli(&[
                "cluster",
                "add",
                &id.to_string(),
                &peer,
                "--learner",
                "--endpoint",
                &endpoint,
            ])
        })
        .await
        .expect("dhow cluster add");
        assert!(status.success(), "dhow cluster add {id} --learner: {out}");
        i
    }

    /// `kill -9` of node index `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the process of node index `i` to exit on its own (a node
    /// that refuses to start): its exit status, or `None` if it still runs (or none was
    /// started).
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.nodes[i].child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i].child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to node index `i` (a graceful stop), then waits up to `timeout` for it to
    /// exit: its exit status, or `None` if it still runs (it is then left running).
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.nodes[i].child.as_ref()?.id();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        self.wait_exit(i, timeout)
    }

    /// Restarts node index `i` on its data dir (same flags).
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.spawn(i, &[]);
    }

    /// A client of node index `i`.
    pub async fn client(&self, i: usize) -> Client {
        let mut c = Client::connect(&self.nodes[i].endpoint()).await;
        c.token = self.token.clone();
        c
    }

    /// The index of the node that a running node reports as leader, waiting up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            for n in &self.nodes {
                if !n.running() {
                    continue;
                }
                if let Ok(mut c) = Client::try_connect(&n.endpoint()).await {
                    c.token = self.token.clone();
                    if let Ok(s) = c.status().await {
                        if s.leader_id != 0 {
                            if let Some(j) = self.nodes.iter().position(|p| p.id == s.leader_id) {
                                if self.nodes[j].running() {
                                    return j;
                                }
                            }
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- node {} ---\n{}", n.id, n.log_tail()))
                    .collect();
                panic!("no leader within {timeout:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

/// A gRPC client of one node.
#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
    /// A bearer token for [`Client::status`] (nodes that authenticate callers).
    pub token: Option<String>,
}

pub const SCHEMA: &str = "definition user {}\ndefinition document {\n  relation viewer: user\n  permission view = viewer\n}\n";

fn rel(resource: &str, relation: &str, user: &str) -> pb::Relationship {
    let (t, id) = resource.split_once(':').expect("type:id");
    pb::Relationship {
        resource: Some(pb::ObjectReference {
            object_type: t.into(),
            object_id: id.into(),
        }),
        relation: relation.into(),
        subject: Some(pb::SubjectReference {
            object: Some(pb::ObjectReference {
                object_type: "user".into(),
                object_id: user.into(),
            }),
            optional_relation: String::new(),
        }),
        ..Default::default()
    }
}

/// A consistency requirement.
pub fn at_least(t: &pb::ConsistencyToken) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(t.clone())),
    })
}

pub fn fully_consistent() -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
    })
}

impl Client {
    pub async fn try_connect(endpoint: &str) -> Result<Client, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .expect("endpoint")
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        Ok(Client {
            channel,
            token: None,
        })
    }

    /// Connects, retrying for up to 30 s while the node starts.
    pub async fn connect(endpoint: &str) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::try_connect(endpoint).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("connect {endpoint}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn status(&mut self) -> Result<pb::StatusResponse, tonic::Status> {
        let mut req = tonic::Request::new(pb::StatusRequest {});
        if let Some(t) = &self.token {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("ascii token"),
            );
        }
        ClusterServiceClient::new(self.channel.clone())
            .status(req)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn write_schema(
        &mut self,
        schema: &str,
    ) -> Result<pb::ConsistencyToken, tonic::Status> {
        SchemaServiceClient::new(self.channel.clone())
            .write_schema(pb::WriteSchemaRequest {
                schema: schema.into(),
            })
            .await
            .map(|r| r.into_inner().written_at.expect("token"))
    }

    /// One TOUCH (`grant = true`) or DELETE of `resource#viewer@user:USER`.
    pub async fn set(
        &mut self,
        resource: &str,
        user: &str,
        grant: bool,
    ) -> Result<pb::ConsistencyToken, tonic::Status> {
        use pb::relationship_update::Operation;
        let op = if grant {
            Operation::Touch
        } else {
            Operation::Delete
        };
        RelationshipServiceClient::new(self.channel.clone())
            .write(pb::WriteRequest {
                updates: vec![pb::RelationshipUpdate {
                    operation: op as i32,
                    relationship: Some(rel(resource, "viewer", user)),
                }],
                optional_preconditions: vec![],
            })
            .await
            .map(|r| r.into_inner().written_at.expect("token"))
    }

    /// `resource#view@user:USER`: the answer and the revision it was evaluated at.
    pub async fn check(
        &mut self,
        resource: &str,
        user: &str,
        consistency: Option<pb::Consistency>,
    ) -> Result<(bool, u64), tonic::Status> {
        let (t, id) = resource.split_once(':').expect("type:id");
        let r = PermissionServiceClient::new(self.channel.clone())
            .check(pb::CheckRequest {
                consistency,
                resource: Some(pb::ObjectReference {
                    object_type: t.into(),
                    object_id: id.into(),
                }),
                permission: "view".into(),
                subject: Some(pb::SubjectReference {
                    object: Some(pb::ObjectReference {
                        object_type: "user".into(),
                        object_id: user.into(),
                    }),
                    optional_relation: String::new(),
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok((
            r.permissionship == pb::Permissionship::HasPermission as i32,
            revision(r.checked_at.as_ref().expect("token")),
        ))
    }

    /// Every `document` relationship, as `resource#relation@subject` text, read at
    /// `consistency`.
    pub async fn export(
        &mut self,
        consistency: Option<pb::Consistency>,
    ) -> Result<BTreeMap<String, ()>, tonic::Status> {
        let mut out = BTreeMap::new();
        let mut stream = RelationshipServiceClient::new(self.channel.clone())
            .read(pb::ReadRequest {
                consistency,
                filter: Some(pb::RelationshipFilter {
                    resource_type: "document".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        while let Some(r) = stream.message().await? {
            if let Some(rel) = r.relationship {
                let res = rel.resource.unwrap_or_default();
                let sub = rel.subject.unwrap_or_default().object.unwrap_or_default();
                out.insert(
                    format!(
                        "{}:{}#{}@{}:{}",
                        res.object_type,
                        res.object_id,
                        rel.relation,
                        sub.object_type,
                        sub.object_id
                    ),
                    (),
                );
            }
        }
        Ok(out)
    }
}

impl Client {
    /// A client whose calls give up after `timeout` (connecting lazily, so a node that is
    /// down fails each call instead of the connect).
    pub fn lazy(endpoint: &str, timeout: Duration) -> Client {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .expect("endpoint")
            .connect_timeout(Duration::from_millis(500))
            .timeout(timeout)
            .connect_lazy();
        Client {
            channel,
            token: None,
        }
    }

    /// Watches from `start` until a response reaches revision `until`: every change with the
    /// revision it was committed at. A revision reported twice or out of order is an error.
    pub async fn watch_log(
        &mut self,
        start: &pb::ConsistencyToken,
        until: u64,
    ) -> Result<crate::history::Log, String> {
        let mut stream = RelationshipServiceClient::new(self.channel.clone())
            .watch(pb::WatchRequest {
                optional_object_types: vec![],
                optional_start_cursor: Some(start.clone()),
            })
            .await
            .map_err(|s| format!("watch: {s}"))?
            .into_inner();
        let mut log = crate::history::Log::new();
        let mut prev = revision(start);
        while prev < until {
            let m = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .map_err(|_| format!("watch stalled after revision {prev} (waiting for {until})"))?
                .map_err(|s| format!("watch failed after revision {prev}: {s}"))?
                .ok_or_else(|| format!("watch ended after revision {prev}"))?;
            let at = revision(m.changes_through.as_ref().ok_or("no changes_through")?);
            if at <= prev {
                return Err(format!(
                    "watch sent revision {at} after {prev}: a duplicate or out of order"
                ));
            }
            let mut changes = Vec::new();
            for c in m.changes {
                let r = c.relationship.unwrap_or_default();
                let res = r.resource.unwrap_or_default();
                let sub = r.subject.unwrap_or_default().object.unwrap_or_default();
                let present = c.operation != pb::relationship_change::Operation::Delete as i32;
                changes.push(((res.object_id, sub.object_id), present));
            }
            log.insert(at, changes);
            prev = at;
        }
        Ok(log)
    }
}
