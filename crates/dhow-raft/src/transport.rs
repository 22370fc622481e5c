//! The Raft loop's link to its peers: the [`Transport`] trait (raft-rs messages as bytes,
//! snapshots as chunks beside them), the [`Reporter`] through which a transport tells the loop
//! about deliveries, and [`NoTransport`] for a one-node cluster.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;

use dhow_tuples::Revision;

use crate::core::Request;

/// Node-to-node delivery of raft-rs messages, as encoded bytes. Called from the Raft thread:
/// implementations queue and return at once. Delivery may fail silently (Raft retries).
pub trait Transport: Send + 'static {
    /// Sends one message to node `to`.
    fn send(&self, to: u64, message: Vec<u8>);
    /// Sends a snapshot message to `to` together with the data of the store at `revision`
    /// (see [`crate::SnapshotSource`]), then reports the outcome through the reporter given
    /// to [`Transport::attach`]. The default refuses at once.
    fn send_snapshot(&self, to: u64, message: Vec<u8>, revision: Revision) {
        let _ = (message, revision);
        tracing::warn!(to, "this transport cannot send snapshots");
    }
    /// The peer addresses changed (a member added or removed).
    fn set_peers(&self, peers: &BTreeMap<u64, String>) {
        let _ = peers;
    }
    /// Called once before the loop starts, with a handle to report delivery problems.
    fn attach(&self, reporter: Reporter) {
        let _ = reporter;
    }
}

/// What a transport tells the Raft loop about deliveries.
#[derive(Clone)]
pub struct Reporter {
    pub(crate) tx: Sender<Request>,
}

impl Reporter {
    /// Node `to` could not be reached (raft-rs then probes it gently).
    pub fn unreachable(&self, to: u64) {
        let _ = self.tx.send(Request::Report(Report::Unreachable(to)));
    }
    /// A snapshot sent to `to` was installed there (`ok`) or failed.
    pub fn snapshot_done(&self, to: u64, ok: bool) {
        let _ = self.tx.send(Request::Report(Report::Snapshot(to, ok)));
    }
}

/// A delivery report, as the loop receives it.
pub(crate) enum Report {
    Unreachable(u64),
    Snapshot(u64, bool),
}

/// A transport for a one-node cluster: there is nobody to talk to.
pub struct NoTransport;

impl Transport for NoTransport {
    fn send(&self, to: u64, _message: Vec<u8>) {
        tracing::warn!(to, "raft message to a peer on a one-node cluster dropped");
    }
}

/// The sender (`from`) of a raft-rs message, for a transport that knows who sent it (the peer
/// port's client certificate) and refuses a message that claims another sender; `None` when
/// the bytes are no raft-rs message.
pub fn message_sender(bytes: &[u8]) -> Option<u64> {
    use protobuf::Message as _;
    raft::eraftpb::Message::parse_from_bytes(bytes)
        .ok()
        .map(|m| m.from)
}
