//! Node to node (`dhow.internal.v1.RaftService`): the gRPC transport that carries raft-rs
//! messages in batches to each peer (one task and one lazily reconnecting channel per peer,
//! with backoff), streams snapshots in chunks, and the service that receives both and hands
//! them to the local Raft node, served on the peer listener.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dhow_proto::internal::v1::raft_service_client::RaftServiceClient;
use dhow_proto::internal::v1::raft_service_server::{RaftService, RaftServiceServer};
use dhow_proto::internal::v1::{
    HelloRequest, HelloResponse, InstallSnapshotRequest, InstallSnapshotResponse, SendRequest,
    SendResponse,
};
use dhow_raft::{RaftHandle, Reporter, SnapshotBuilder, SnapshotSource, Transport};
use dhow_tuples::{Revision, TupleStore};

use crate::config::PeerTls;
use crate::listen::Limits;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

/// Largest message between nodes (a batch of entries, a snapshot chunk).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;
/// Messages queued per peer before new ones are dropped (Raft resends what matters).
const QUEUE: usize = 4096;
/// Messages per batch.
const BATCH: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

struct Link {
    addr: String,
    tx: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
    counts: Arc<LinkCounts>,
}

/// What happened on the link to one peer since the process started (kept when the link is
/// made again for a new address).
#[derive(Debug, Default)]
struct LinkCounts {
    /// Batches of Raft messages that could not be delivered (connect or send failed).
    errors: AtomicU64,
    /// Deliveries that succeeded again after a failure.
    reconnects: AtomicU64,
    /// Messages dropped because the peer's queue was full.
    dropped: AtomicU64,
}

/// What the link to one peer counted, read at one moment (counters since the process
/// started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerLinkStats {
    /// The peer's node id.
    pub peer: u64,
    /// Batches of Raft messages that could not be delivered (the peer was unreachable).
    pub errors: u64,
    /// Deliveries that succeeded again after one or more failures.
    pub reconnects: u64,
    /// Messages dropped because the queue to the peer was full.
    pub dropped: u64,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Inner {
    id: u64,
    cluster_id: u64,
    rt: tokio::runtime::Handle,
    store: Arc<dyn TupleStore>,
    links: Mutex<HashMap<u64, Link>>,
    /// Every peer's counts, by node id, kept across links.
    counts: Mutex<BTreeMap<u64, Arc<LinkCounts>>>,
    reporter: OnceLock<Reporter>,
    tls: Option<PeerTls>,
}

/// The gRPC [`Transport`] of a node. Create it inside a tokio runtime.
#[derive(Clone)]
pub struct PeerTransport {
    inner: Arc<Inner>,
}

impl PeerTransport {
    /// A transport for node `id` of cluster `cluster_id`, streaming snapshots from `store`,
    /// over mutual TLS when `tls` is given.
    pub fn new(id: u64, cluster_id: u64, store: Arc<dyn TupleStore>, tls: Option<PeerTls>) -> Self {
        PeerTransport {
            inner: Arc::new(Inner {
                id,
                cluster_id,
                rt: tokio::runtime::Handle::current(),
                store,
                links: Mutex::new(HashMap::new()),
                counts: Mutex::new(BTreeMap::new()),
                reporter: OnceLock::new(),
                tls,
            }),
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Link>> {
        self.inner.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unreachable(&self, to: u64) {
        if let Some(r) = self.inner.reporter.get() {
            r.unreachable(to);
        }
    }

    /// What the link to each peer counted, by peer id (every peer this node has had a link
    /// to since it started).
    pub fn stats(&self) -> Vec<PeerLinkStats> {
        let counts = self.inner.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .map(|(&peer, c)| PeerLinkStats {
                peer,
                errors: c.errors.load(Relaxed),
                reconnects: c.reconnects.load(Relaxed),
                dropped: c.dropped.load(Relaxed),
            })
            .collect()
    }

    /// The counts of the link to `peer`, made at its first link.
    fn counts(&self, peer: u64) -> Arc<LinkCounts> {
        let mut counts = self.inner.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.entry(peer).or_default().clone()
    }
}

/// A lazily connecting channel to the peer at `addr`: plaintext, or mutual TLS that checks
/// the server names node `to` (any node when `to` is unknown).
fn channel(addr: &str, to: Option<u64>, tls: Option<&PeerTls>) -> Result<Channel, String> {
    let e = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad peer address `{addr}`: {e}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(match tls {
        None => e.connect_lazy(),
        Some(t) => {
            let config = dhow_tls::node_client_config(&t.ca_file, &t.cert_file, &t.key_file, to)
                .map_err(|e| e.to_string())?;
            e.connect_with_connector_lazy(dhow_tls::TlsConnector::new(config))
        }
    })
}

fn client(
    addr: &str,
    to: Option<u64>,
    tls: Option<&PeerTls>,
) -> Result<RaftServiceClient<Channel>, String> {
    Ok(RaftServiceClient::new(channel(addr, to, tls)?)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE))
}

/// Sends what is queued for one peer, in batches, until the link is dropped.
async fn run_link(
    t: PeerTransport,
    to: u64,
    addr: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    counts: Arc<LinkCounts>,
) {
    let mut client = match client(&addr, Some(to), t.inner.tls.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(to, error = %e, "peer link not started");
            return;
        }
    };
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut messages = vec![first];
        while messages.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => messages.push(m),
                Err(_) => break,
            }
        }
        let req = SendRequest {
            cluster_id: t.inner.cluster_id,
            from: t.inner.id,
            messages,
        };
        match client.send(req).await {
            Ok(_) => {
                backoff = BACKOFF_MIN;
                if std::mem::take(&mut failing) {
                    counts.reconnects.fetch_add(1, Relaxed);
                }
            }
            Err(status) => {
                failing = true;
                counts.errors.fetch_add(1, Relaxed);
                tracing::debug!(to, %addr, error = %status.message(), "peer unreachable");
                t.unreachable(to);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn stream_snapshot(
    t: &PeerTransport,
    to: u64,
    addr: &str,
    message: Vec<u8>,
    revision: Revision,
) -> Result<(), String> {
    let mut client = client(addr, Some(to), t.inner.tls.as_ref())?;
    let (tx, rx) = mpsc::channel::<InstallSnapshotRequest>(4);
    let cluster_id = t.inner.cluster_id;
    tx.send(InstallSnapshotRequest {
        cluster_id,
        message,
        data: Vec::new(),
        done: false,
    })
    .await
    .map_err(|_| "snapshot stream closed".to_string())?;
    let store = t.inner.store.clone();
    let producer = tokio::task::spawn_blocking(move || -> Result<(), String> {
        for chunk in SnapshotSource::new(&*store, revision) {
            let data = chunk.map_err(|e| e.to_string())?;
            tx.blocking_send(InstallSnapshotRequest {
                cluster_id,
                message: Vec::new(),
                data,
                done: false,
            })
            .map_err(|_| "the receiver closed the snapshot stream".to_string())?;
        }
        tx.blocking_send(InstallSnapshotRequest {
            cluster_id,
            message: Vec::new(),
            data: Vec::new(),
            done: true,
        })
        .map_err(|_| "the receiver closed the snapshot stream".to_string())
    });
    let sent = client
        .install_snapshot(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("install snapshot: {}", s.message()));
    let produced = producer
        .await
        .map_err(|e| format!("snapshot producer: {e}"))?;
    produced?;
    sent.map(|_| ())
}

impl Transport for PeerTransport {
    fn send(&self, to: u64, message: Vec<u8>) {
        let links = self.links();
        match links.get(&to) {
            Some(link) => {
                if link.tx.try_send(message).is_err() {
                    link.counts.dropped.fetch_add(1, Relaxed);
                    drop(links);
                    self.unreachable(to);
                }
            }
            None => tracing::debug!(to, "no address for peer; message dropped"),
        }
    }

    fn send_snapshot(&self, to: u64, message: Vec<u8>, revision: Revision) {
        let addr = self.links().get(&to).map(|l| l.addr.clone());
        let t = self.clone();
        self.inner.rt.spawn(async move {
            let outcome = match addr {
                Some(addr) => stream_snapshot(&t, to, &addr, message, revision).await,
                None => Err(format!("no address for node {to}")),
            };
            match &outcome {
                Ok(()) => tracing::info!(to, revision = revision.0, "snapshot sent"),
                Err(e) => tracing::warn!(to, revision = revision.0, error = %e, "snapshot failed"),
            }
            if let Some(r) = t.inner.reporter.get() {
                r.snapshot_done(to, outcome.is_ok());
            }
        });
    }

    fn set_peers(&self, peers: &BTreeMap<u64, String>) {
        let mut links = self.links();
        links.retain(|id, link| peers.get(id) == Some(&link.addr));
        for (&id, addr) in peers {
            if id == self.inner.id || addr.is_empty() || links.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let counts = self.counts(id);
            let task =
                self.inner
                    .rt
                    .spawn(run_link(self.clone(), id, addr.clone(), rx, counts.clone()));
            links.insert(
                id,
                Link {
                    addr: addr.clone(),
                    tx,
                    task,
                    counts,
                },
            );
        }
    }

    fn attach(&self, reporter: Reporter) {
        let _ = self.inner.reporter.set(reporter);
    }
}

/// Receives Raft traffic for the local node. Over mutual TLS, every Raft message must come
/// from the node its sender's certificate names.
pub struct PeerService {
    handle: Arc<RaftHandle>,
    cluster_id: u64,
    tls: bool,
}

impl PeerService {
    /// `tls`: the peer port runs mutual TLS, so each request's certificate names its node.
    pub fn new(handle: Arc<RaftHandle>, cluster_id: u64, tls: bool) -> Self {
        PeerService {
            handle,
            cluster_id,
            tls,
        }
    }

    /// The node a request comes from, by its certificate (`None` without TLS).
    fn sender<T>(&self, req: &Request<T>) -> Result<Option<u64>, Status> {
        if !self.tls {
            return Ok(None);
        }
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated("the peer port needs a node certificate of the cluster CA")
        })?;
        let id = certs
            .first()
            .and_then(dhow_tls::node_id_of)
            .ok_or_else(|| {
                Status::permission_denied("the peer's certificate names no node (DNS:node-<id>)")
            })?;
        Ok(Some(id))
    }

    /// Refuses a Raft message that claims another sender than the certificate names.
    fn check_sender(&self, sender: Option<u64>, message: &[u8]) -> Result<(), Status> {
        let Some(id) = sender else {
            return Ok(());
        };
        match dhow_raft::message_sender(message) {
            Some(from) if from == id => Ok(()),
            Some(from) => Err(Status::permission_denied(format!(
                "a Raft message from node {from} sent with the certificate of node {id}"
            ))),
            None => Err(Status::invalid_argument("not a Raft message")),
        }
    }

    /// The tonic service, with the peer message size limit.
    pub fn into_server(self) -> RaftServiceServer<PeerService> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }

    fn check_cluster(&self, theirs: u64) -> Result<(), Status> {
        let ours = self.cluster_id;
        if theirs != ours {
            return Err(Status::failed_precondition(format!(
                "this node belongs to cluster {ours:016x}, the sender to cluster {theirs:016x}"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn send(&self, req: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let sender = self.sender(&req)?;
        let req = req.into_inner();
        self.check_cluster(req.cluster_id)?;
        for m in &req.messages {
            self.check_sender(sender, m)?;
        }
        for m in req.messages {
            self.handle.step(m);
        }
        Ok(Response::new(SendResponse {}))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<InstallSnapshotRequest>>,
    ) -> Result<Response<InstallSnapshotResponse>, Status> {
        let sender = self.sender(&req)?;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        self.check_cluster(first.cluster_id)?;
        self.check_sender(sender, &first.message)?;
        if first.message.is_empty() {
            return Err(Status::invalid_argument(
                "the first snapshot chunk must carry the raft message",
            ));
        }
        let mut builder = SnapshotBuilder::new();
        let mut done = false;
        while let Some(chunk) = stream.message().await? {
            if done {
                return Err(Status::invalid_argument("data after the snapshot's end"));
            }
            if !chunk.data.is_empty() {
                builder
                    .push(&chunk.data)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
            done = chunk.done;
        }
        if !done {
            return Err(Status::aborted(
                "the snapshot stream ended before its last chunk",
            ));
        }
        let staged = builder
            .finish()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.handle
            .step_snapshot(first.message, staged)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(InstallSnapshotResponse {}))
    }

    async fn hello(&self, _req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        Ok(Response::new(HelloResponse {
            cluster_id: self.cluster_id,
            node_id: self.handle.id(),
        }))
    }
}

/// Asks the peers at `addrs` for the cluster id, until one knows it or `timeout` passes.
pub async fn discover_cluster_id(
    addrs: &[String],
    timeout: Duration,
    tls: Option<&PeerTls>,
) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no peer address given");
    loop {
        for addr in addrs {
            match client(addr, None, tls) {
                Ok(mut c) => match c.hello(HelloRequest {}).await {
                    Ok(r) if r.get_ref().cluster_id != 0 => return Ok(r.get_ref().cluster_id),
                    Ok(_) => last = format!("{addr} does not know its cluster id yet"),
                    Err(s) => last = format!("{addr}: {}", s.message()),
                },
                Err(e) => last = e,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no peer of the running cluster answered within {timeout:?} (last: {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Serves the node-to-node service on `listener` until `shutdown` completes: plaintext, or
/// mutual TLS (a client certificate of the cluster CA required) with `tls`.
pub async fn serve_peers(
    service: PeerService,
    listener: TcpListener,
    tls: Option<Arc<dhow_tls::ReloadingTls>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let addr = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        tls = tls.is_some(),
        "serving dhow.internal.v1 (peers)"
    );
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service.into_server());
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    dhow_tls::tls_incoming(crate::listen::accept(listener, Limits::default()), tls),
                    shutdown,
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    crate::listen::incoming(listener, Limits::default()),
                    shutdown,
                )
                .await
        }
    }
}

/// The peer port's server TLS: the node's certificate, client certificates of the cluster CA
/// required.
pub fn peer_server_tls(t: &PeerTls) -> Result<Arc<dhow_tls::ReloadingTls>, dhow_tls::TlsError> {
    dhow_tls::ReloadingTls::load(dhow_tls::TlsFiles {
        cert_file: t.cert_file.clone(),
        key_file: t.key_file.clone(),
        client_ca_file: Some(t.ca_file.clone()),
        require_client_cert: true,
    })
}
