//! Watch: every watcher of a server shares one reader of the change log. The hub (one task
//! per server, started with the first watcher) reads each new page of changes once and
//! broadcasts it; a watcher that starts behind the hub, falls behind (its client reads
//! slowly) or sees a gap reads its own pages from the store until it has caught up, then
//! follows the broadcast again. So 4,000 watchers cost one store read per revision, not
//! 4,000.
//!
//! Invariant: a watcher sends every change after its start revision exactly once, in order,
//! one response per revision: a broadcast page is used only if it starts at or before the
//! watcher's position (`from <= after`), and only its changes past that position are sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dhow_node::{Node, NodeError};
use dhow_proto::v1 as pb;
use dhow_tuples::{Change, Revision};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use super::{blocking, status, State};
use crate::error::{ApiError, ApiResult};

/// Changes read per page (a revision's changes are never split).
const WATCH_PAGE: usize = 1000;
/// How long the hub waits for a new revision before looking at its stop signal again.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// Pages the broadcast keeps for watchers that are behind; one further behind reads the
/// store itself until it has caught up.
const BROADCAST_PAGES: usize = 256;

/// One page of the change log: the changes after `from` through `through`.
pub struct Page {
    pub from: Revision,
    pub through: Revision,
    pub changes: Vec<Change>,
    /// The page was full: more changes follow right away.
    pub more: bool,
}

/// Reads the page of changes after `after`, up to what the node has applied.
async fn read_page<N: Node>(node: &Arc<N>, after: Revision) -> ApiResult<Page> {
    // Everything at or below `applied` is in the store before we read it.
    let applied = node.applied();
    let n = node.clone();
    let changes = blocking(move || Ok(n.store().changes(after, WATCH_PAGE)?)).await?;
    let truncated = changes.len() >= WATCH_PAGE;
    let total = changes.len();
    let kept: Vec<Change> = changes
        .into_iter()
        .filter(|c| c.revision <= applied)
        .collect();
    let more = truncated && kept.len() == total;
    let through = match kept.last() {
        Some(last) if more => last.revision,
        _ => applied.max(after),
    };
    Ok(Page {
        from: after,
        through,
        changes: kept,
        more,
    })
}

/// The server's one reader of the change log, and the broadcast of what it read.
pub struct WatchHub {
    tx: broadcast::Sender<Arc<Page>>,
    started: AtomicBool,
    /// The revision through which the hub has published.
    position: AtomicU64,
    /// Pages the hub read from the store (for tests and metrics).
    reads: AtomicU64,
    /// Pages watchers read themselves, catching up (for tests and metrics).
    own_reads: AtomicU64,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            tx: broadcast::channel(BROADCAST_PAGES).0,
            started: AtomicBool::new(false),
            position: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            own_reads: AtomicU64::new(0),
        }
    }
}

impl WatchHub {
    /// How many pages the hub has read from the store, and how many the watchers read
    /// themselves while catching up.
    pub fn reads(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.own_reads.load(Ordering::Relaxed),
        )
    }

    fn position(&self) -> Revision {
        Revision(self.position.load(Ordering::Acquire))
    }

    /// A receiver of the pages published from now on; starts the hub on first use.
    fn subscribe<N: Node>(self: &Arc<Self>, st: &Arc<State<N>>) -> broadcast::Receiver<Arc<Page>> {
        let rx = self.tx.subscribe();
        if !self.started.swap(true, Ordering::AcqRel) {
            // The position is set before anyone can read it: a watcher behind it must know.
            let start = st.node.applied();
            self.position.store(start.0, Ordering::Release);
            let hub = self.clone();
            let node = st.node.clone();
            let stop = st.stop.clone();
            tokio::spawn(async move { hub.run(node, stop, start).await });
        }
        rx
    }

    async fn run<N: Node>(
        self: Arc<Self>,
        node: Arc<N>,
        mut stop: watch::Receiver<bool>,
        mut after: Revision,
    ) {
        loop {
            match read_page(&node, after).await {
                Ok(page) => {
                    self.reads.fetch_add(1, Ordering::Relaxed);
                    let more = page.more;
                    if page.through > after {
                        after = page.through;
                        self.position.store(after.0, Ordering::Release);
                        // No receiver is not an error: the next watcher catches up itself.
                        let _ = self.tx.send(Arc::new(page));
                    }
                    if more {
                        continue;
                    }
                }
                Err(e) => {
                    // The changes were collected away under the hub, or the store failed:
                    // skip ahead. Watchers see the gap and read (and report) it themselves.
                    tracing::warn!(error = %e, "watch hub: cannot read changes; skipping ahead");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    after = node.applied();
                    self.position.store(after.0, Ordering::Release);
                }
            }
            tokio::select! {
                _ = node.wait_applied(Revision(after.0 + 1), WATCH_WAIT) => {}
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
            }
        }
    }
}

/// Sends `changes` past `after` as one response per revision; false when the client is gone.
async fn send_changes<N: Node>(
    st: &State<N>,
    tx: &mpsc::Sender<Result<pb::WatchResponse, Status>>,
    changes: &[Change],
    after: Revision,
    types: &[String],
) -> bool {
    let mut responses: Vec<(Revision, Vec<pb::RelationshipChange>)> = Vec::new();
    for c in changes.iter().filter(|c| c.revision > after) {
        if !types.is_empty() && !types.contains(&c.relationship.resource.object_type) {
            continue;
        }
        match responses.last_mut() {
            Some((rev, batch)) if *rev == c.revision => batch.push(change_pb(c)),
            _ => responses.push((c.revision, vec![change_pb(c)])),
        }
    }
    for (rev, changes) in responses {
        let msg = pb::WatchResponse {
            changes,
            changes_through: Some(st.token(rev)),
        };
        if tx.send(Ok(msg)).await.is_err() {
            return false;
        }
    }
    true
}

fn change_pb(c: &Change) -> pb::RelationshipChange {
    use pb::relationship_change::Operation;
    pb::RelationshipChange {
        operation: if c.deleted {
            Operation::Delete
        } else {
            Operation::Touch
        } as i32,
        relationship: Some(dhow_wire::relationship_pb(&c.relationship)),
    }
}

/// Streams changes after `after` until the client goes away or the server stops. Each
/// response holds the changes of one revision; its `changes_through` is that revision,
/// through which every change was sent, so a client resuming from it misses nothing and sees
/// nothing twice.
pub async fn watch_loop<N: Node>(
    st: Arc<State<N>>,
    mut after: Revision,
    types: Vec<String>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) {
    let mut stop = st.stop.clone();
    let shutting_down = || {
        Err(status(ApiError::unavailable(
            "server shutting down; resume from the last changes_through",
        )))
    };
    loop {
        if tx.is_closed() {
            return;
        }
        // Subscribe before looking at the hub's position: every page published after this
        // point is received, so a watcher at the position misses nothing.
        let mut rx = st.watch.subscribe(&st);
        if after >= st.watch.position() {
            // Live: follow the broadcast until a gap or a lag sends us back to the store.
            loop {
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok(page) => {
                            if page.through <= after {
                                continue;
                            }
                            if page.from > after {
                                break; // a gap: catch up from the store
                            }
                            if !send_changes(&st, &tx, &page.changes, after, &types).await {
                                return;
                            }
                            after = page.through;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            let _ = tx.send(shutting_down()).await;
                            return;
                        }
                    },
                    _ = tx.closed() => return,
                    _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                        let _ = tx.send(shutting_down()).await;
                        return;
                    }
                }
            }
            continue;
        }
        drop(rx);
        // Behind the hub: read our own pages until we reach it.
        st.watch.own_reads.fetch_add(1, Ordering::Relaxed);
        let page = match read_page(&st.node, after).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(status(e))).await;
                return;
            }
        };
        if !send_changes(&st, &tx, &page.changes, after, &types).await {
            return;
        }
        if page.through > after {
            after = page.through;
        } else {
            // Nothing new yet although the hub is ahead of us (it read a revision this node
            // has not yet shown us): wait for it.
            match st
                .node
                .wait_applied(Revision(after.0 + 1), Duration::from_millis(100))
                .await
            {
                Ok(()) | Err(NodeError::Timeout(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(status(e.into()))).await;
                    return;
                }
            }
        }
        let stopping = *stop.borrow();
        if stopping {
            let _ = tx.send(shutting_down()).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Limits;
    use dhow_node::MemNode;
    use dhow_tuples::{parse_relationship, WriteOp, WriteRequest};

    fn state(node: Arc<MemNode>) -> (Arc<State<MemNode>>, watch::Sender<bool>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let limits = Limits {
            max_updates_per_write: 1000,
            max_preconditions_per_write: 1000,
            max_check_bulk_items: 1000,
            max_lookup_subjects_results: 1000,
            consistency_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
        };
        (Arc::new(State::new(node, limits, stop_rx)), stop_tx)
    }

    async fn touch(node: &MemNode, i: usize) -> Revision {
        let r = parse_relationship(&format!("doc:d{i}#viewer@user:u{i}")).unwrap();
        node.write(WriteRequest {
            preconditions: vec![],
            ops: vec![WriteOp::Touch(r)],
        })
        .await
        .unwrap()
    }

    /// The revisions a watcher received, in order, until `want` of them arrived.
    async fn collect(
        mut rx: mpsc::Receiver<Result<pb::WatchResponse, Status>>,
        want: usize,
    ) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < want {
            let r = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("a watcher stalled")
                .expect("the watch ended")
                .expect("a watch error");
            for c in r.changes {
                let rel = c.relationship.unwrap();
                out.push(rel.resource.unwrap().object_id);
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_watchers_share_one_reader_and_miss_nothing() {
        let node = Arc::new(MemNode::new(1));
        let (st, _stop) = state(node.clone());
        let start = node.applied();
        let watchers: Vec<_> = (0..200)
            .map(|_| {
                let (tx, rx) = mpsc::channel(16);
                tokio::spawn(watch_loop(st.clone(), start, Vec::new(), tx));
                rx
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..50 {
            touch(&node, i).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let want: Vec<String> = (0..50).map(|i| format!("d{i}")).collect();
        for rx in watchers {
            assert_eq!(collect(rx, 50).await, want);
        }
        let (hub, own) = st.watch.reads();
        eprintln!("200 watchers, 50 revisions: the hub read {hub} pages, watchers {own}");
        // One reader: about one page per revision for the hub (pages may hold several),
        // and almost no watcher reading on its own. Each watcher reading for itself would be
        // 200 x 50 = 10,000 pages.
        assert!(hub <= 60, "the hub read {hub} pages for 50 revisions");
        assert!(own <= 400, "watchers read {own} pages themselves");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_watcher_and_a_late_one_catch_up_from_the_store() {
        let node = Arc::new(MemNode::new(1));
        let (st, _stop) = state(node.clone());
        let start = node.applied();
        // A watcher whose client reads nothing until 600 revisions later: the broadcast
        // (256 pages) laps it.
        let (slow_tx, slow_rx) = mpsc::channel(1);
        tokio::spawn(watch_loop(st.clone(), start, Vec::new(), slow_tx));
        let (fast_tx, fast_rx) = mpsc::channel(1024);
        tokio::spawn(watch_loop(st.clone(), start, Vec::new(), fast_tx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..600 {
            touch(&node, i).await;
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // A watcher that starts late, from the beginning: behind the hub from the start.
        let (late_tx, late_rx) = mpsc::channel(16);
        tokio::spawn(watch_loop(st.clone(), start, Vec::new(), late_tx));
        let want: Vec<String> = (0..600).map(|i| format!("d{i}")).collect();
        assert_eq!(collect(fast_rx, 600).await, want);
        assert_eq!(collect(slow_rx, 600).await, want);
        assert_eq!(collect(late_rx, 600).await, want);
    }
}
