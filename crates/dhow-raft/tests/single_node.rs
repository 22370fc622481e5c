//! A one-node Raft cluster over the in-memory log and store: writes are replicated through
//! the log, batched, answered by proposal id, survive a restart, and are replayed from the
//! log into a store that lost them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhow_raft::{
    LogStore, MemLog, NoTransport, RaftConfig, RaftError, RaftHandle, RawEntry, StorageError,
    StorageKind,
};
use dhow_tuples::{
    parse_relationship, ObjectRef, Precondition, RelationshipFilter, Revision, SharedMemStore,
    TupleStore, WriteOp, WriteRequest,
};

/// A log that outlives the node using it, like a file on disk.
type SharedLog = Arc<Mutex<MemLog>>;

fn touch(s: &str) -> WriteRequest {
    WriteRequest {
        preconditions: vec![],
        ops: vec![WriteOp::Touch(parse_relationship(s).unwrap())],
    }
}

fn config() -> RaftConfig {
    RaftConfig {
        tick: Duration::from_millis(10),
        ..RaftConfig::default()
    }
}

fn start(log: &SharedLog, store: &Arc<SharedMemStore>) -> RaftHandle {
    RaftHandle::start(
        config(),
        log.clone(),
        store.clone() as Arc<dyn TupleStore>,
        NoTransport,
    )
    .unwrap()
}

async fn write_retrying(node: &RaftHandle, w: WriteRequest) -> Revision {
    // The node campaigns at start; the first proposals may race the election.
    for _ in 0..200 {
        match node.write(w.clone()).await {
            Ok(rev) => return rev,
            Err(RaftError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    panic!("no leader after 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_applied_at_their_revision_and_read_index_covers_them() {
    let log = SharedLog::default();
    let store = Arc::new(SharedMemStore::new());
    let node = start(&log, &store);
    let r1 = write_retrying(&node, touch("document:a#viewer@user:alice")).await;
    let r2 = node
        .write(touch("document:a#viewer@user:bob"))
        .await
        .unwrap();
    assert!(r2 > r1, "{r2} > {r1}");
    assert!(node.applied() >= r2);
    let ri = node.read_index().await.unwrap();
    assert!(
        ri >= r2,
        "read index {ri} must cover acknowledged write {r2}"
    );
    let reader = store.reader(r1).unwrap();
    assert_eq!(
        reader
            .by_resource(&ObjectRef::new("document", "a"), "viewer")
            .unwrap()
            .len(),
        1
    );
    node.wait_applied(r2, Duration::from_secs(1)).await.unwrap();
    let err = node
        .wait_applied(Revision(r2.0 + 100), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, RaftError::Timeout(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_batched_and_each_answered() {
    let log = SharedLog::default();
    let store = Arc::new(SharedMemStore::new());
    let node = Arc::new(start(&log, &store));
    write_retrying(&node, touch("document:warmup#viewer@user:x")).await;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            node.write(touch(&format!("document:d{i}#viewer@user:u{i}")))
                .await
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap().unwrap());
    }
    let head = store.head();
    let reader = store.reader(head).unwrap();
    for (i, rev) in revisions.iter().enumerate() {
        let doc = ObjectRef::new("document", format!("d{i}"));
        // Visible at its own revision, not before.
        assert_eq!(
            store
                .reader(*rev)
                .unwrap()
                .by_resource(&doc, "viewer")
                .unwrap()
                .len(),
            1
        );
        assert!(store
            .reader(Revision(rev.0 - 1))
            .unwrap()
            .by_resource(&doc, "viewer")
            .unwrap()
            .is_empty());
        assert_eq!(reader.by_resource(&doc, "viewer").unwrap().len(), 1);
    }
    let mut distinct = revisions.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() <= 300);
    eprintln!("300 writes in {} entries", distinct.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_changes_nothing_and_says_why() {
    let log = SharedLog::default();
    let store = Arc::new(SharedMemStore::new());
    let node = start(&log, &store);
    write_retrying(&node, touch("document:a#viewer@user:alice")).await;
    let w = WriteRequest {
        preconditions: vec![Precondition::MustMatch(RelationshipFilter {
            resource_type: Some("document".into()),
            resource_id: Some("nope".into()),
            ..Default::default()
        })],
        ops: vec![WriteOp::Touch(
            parse_relationship("document:b#viewer@user:bob").unwrap(),
        )],
    };
    let err = node.write(w).await.unwrap_err();
    assert!(
        matches!(
            err,
            RaftError::Rejected(dhow_tuples::Error::PreconditionFailed(_))
        ),
        "{err}"
    );
    {
        // A SharedMemStore reader holds its lock: drop it before the next write applies.
        let reader = store.reader(store.head()).unwrap();
        assert!(reader
            .by_resource(&ObjectRef::new("document", "b"), "viewer")
            .unwrap()
            .is_empty());
    }
    let rev = node
        .write_schema("definition user {}".into())
        .await
        .unwrap();
    assert_eq!(
        store.schema_at(rev).unwrap().unwrap().1,
        "definition user {}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_revisions_and_replays_the_log_into_a_lost_store() {
    let log = SharedLog::default();
    let store = Arc::new(SharedMemStore::new());
    let mut node = start(&log, &store);
    let mut last = Revision(0);
    for i in 0..20 {
        last = write_retrying(&node, touch(&format!("document:d{i}#viewer@user:u{i}"))).await;
    }
    node.shutdown();
    drop(node);

    // Same log, same store: numbering continues.
    let mut node = start(&log, &store);
    let next = write_retrying(&node, touch("document:after#viewer@user:x")).await;
    assert!(
        next > last,
        "revisions continue after a restart: {next} > {last}"
    );
    node.shutdown();
    drop(node);

    // Same log, empty store (the state machine lost everything): the log replays it all.
    let fresh = Arc::new(SharedMemStore::new());
    let node = start(&log, &fresh);
    node.wait_applied(next, Duration::from_secs(5))
        .await
        .unwrap();
    let reader = fresh.reader(next).unwrap();
    for i in 0..20 {
        let doc = ObjectRef::new("document", format!("d{i}"));
        assert_eq!(
            reader.by_resource(&doc, "viewer").unwrap().len(),
            1,
            "d{i} replayed"
        );
    }
    assert_eq!(
        reader
            .by_resource(&ObjectRef::new("document", "after"), "viewer")
            .unwrap()
            .len(),
        1
    );
}

/// The log of the tests below, over a `MemLog`: appends fail with ENOSPC once `full` is set
/// (a disk that fills up); with `watch`, every sync notes whether the store was applying at
/// the time.
struct TestLog {
    log: MemLog,
    full: Arc<std::sync::atomic::AtomicBool>,
    watch: Option<SyncWatch>,
}

/// What a [`TestLog`]'s syncs watch: the store's flag while it applies, and how many syncs
/// saw it set.
#[derive(Clone)]
struct SyncWatch {
    applying: Arc<std::sync::atomic::AtomicBool>,
    overlapped: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestLog {
    fn new(full: Arc<std::sync::atomic::AtomicBool>, watch: Option<SyncWatch>) -> Self {
        TestLog {
            log: MemLog::default(),
            full,
            watch,
        }
    }
}

impl LogStore for TestLog {
    fn append(&mut self, entries: &[RawEntry]) -> Result<(), StorageError> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StorageError::io(
                "appending to the raft log",
                &std::io::Error::from_raw_os_error(28),
            ));
        }
        self.log.append(entries)
    }
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<RawEntry>, StorageError> {
        self.log.entries(lo, hi)
    }
    fn term(&self, index: u64) -> Result<Option<u64>, StorageError> {
        self.log.term(index)
    }
    fn first_index(&self) -> Result<u64, StorageError> {
        self.log.first_index()
    }
    fn last_index(&self) -> Result<u64, StorageError> {
        self.log.last_index()
    }
    fn hard_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.log.hard_state()
    }
    fn set_hard_state(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.log.set_hard_state(bytes)
    }
    fn conf_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.log.conf_state()
    }
    fn set_conf_state(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.log.set_conf_state(bytes)
    }
    fn compact(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        self.log.compact(index, term)
    }
    fn snapshot_meta(&self) -> Result<(u64, u64), StorageError> {
        self.log.snapshot_meta()
    }
    fn install_snapshot(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        self.log.install_snapshot(index, term)
    }
    fn syncer(&self) -> dhow_raft::Syncer {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(SyncWatch {
            applying,
            overlapped,
        }) = self.watch.clone()
        else {
            return Box::new(|| Ok(()));
        };
        Box::new(move || {
            let until = std::time::Instant::now() + Duration::from_millis(20);
            while std::time::Instant::now() < until {
                if applying.load(SeqCst) {
                    overlapped.fetch_add(1, SeqCst);
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(())
        })
    }
}

/// A log write that fails anyway (a log without a free-space check, or a disk filled between
/// the check and the write) stops the loop: the write in flight gets UNAVAILABLE "may or may
/// not have been applied" naming the cause (it is in the log, applied after a restart), every
/// write after it the log's own error with its kind; a node shut down says `Stopped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_such_to_every_writer() {
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = Arc::new(SharedMemStore::new());
    let mut node = RaftHandle::start(
        config(),
        TestLog::new(full.clone(), None),
        store.clone() as Arc<dyn TupleStore>,
        NoTransport,
    )
    .unwrap();
    write_retrying(&node, touch("document:a#viewer@user:alice")).await;
    full.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = node
        .write(touch("document:b#viewer@user:bob"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RaftError::Unavailable(m)
            if m.contains("may or may not have been applied") && m.contains("appending to the raft log")),
        "the write in flight: {err}"
    );
    for i in 0..3 {
        let err = node
            .write(touch(&format!("document:b{i}#viewer@user:bob")))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                RaftError::Storage(StorageError {
                    kind: StorageKind::NoSpace,
                    ..
                })
            ),
            "write {i}: {err}"
        );
        assert!(
            err.to_string().contains("appending to the raft log"),
            "{err}"
        );
    }
    node.shutdown();
    let err = node
        .write(touch("document:c#viewer@user:carol"))
        .await
        .unwrap_err();
    assert_eq!(err, RaftError::Stopped);
}

/// A Raft entry has a size bound: a write over it is refused before it reaches the log,
/// naming the limit; writes batched together past it are split into several entries and all
/// applied. Before, any write of any size became one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_over_the_size_bound_is_refused_and_batches_are_split() {
    let log = Arc::new(std::sync::Mutex::new(MemLog::default()));
    let store = Arc::new(SharedMemStore::new());
    let node = RaftHandle::start(
        RaftConfig {
            max_entry_bytes: 20_000,
            ..config()
        },
        log.clone(),
        store.clone() as Arc<dyn TupleStore>,
        NoTransport,
    )
    .unwrap();
    write_retrying(&node, touch("document:a#viewer@user:alice")).await;
    let last = log.lock().unwrap().last_index().unwrap();
    let big = WriteRequest {
        preconditions: vec![],
        ops: (0..2000)
            .map(|i| {
                WriteOp::Touch(
                    parse_relationship(&format!("document:big{i}#viewer@user:u")).unwrap(),
                )
            })
            .collect(),
    };
    let err = node.write(big).await.unwrap_err();
    assert!(
        matches!(&err, RaftError::TooLarge { limit: 20_000, size, .. } if *size > 20_000),
        "{err}"
    );
    assert!(err.to_string().contains("max_entry_bytes"), "{err}");
    assert_eq!(
        log.lock().unwrap().last_index().unwrap(),
        last,
        "the refused write reached the log"
    );
    // 40 writes of 100 relationships each fit alone, not together: all are applied.
    let pending: Vec<_> = (0..40)
        .map(|w| {
            node.submit_write(WriteRequest {
                preconditions: vec![],
                ops: (0..100)
                    .map(|i| {
                        WriteOp::Touch(
                            parse_relationship(&format!("document:w{w}_{i}#viewer@user:u"))
                                .unwrap(),
                        )
                    })
                    .collect(),
            })
        })
        .collect();
    for p in pending {
        p.await.unwrap();
    }
    let r = store.reader(store.head()).unwrap();
    for w in [0, 17, 39] {
        assert_eq!(
            r.by_resource(&ObjectRef::new("document", format!("w{w}_99")), "viewer")
                .unwrap()
                .len(),
            1
        );
    }
}

/// A sole voter elects itself as it starts, and publishes its leadership once its first entry
/// of the term is committed: a ReadIndex and a write sent right after the start (and after a
/// restart on the same log) are answered, never refused with "the leader changed" (before its
/// first Ready the loop took its own election for a change of leader), and never dropped (a
/// leader that has not committed an entry of its term defers ReadIndex until it has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_voter_answers_its_first_read_at_once_and_publishes_its_leadership() {
    for run in 0..20 {
        let log = SharedLog::default();
        let store = Arc::new(SharedMemStore::new());
        for restart in [false, true] {
            let node = start(&log, &store);
            let read = tokio::time::timeout(Duration::from_secs(2), node.read_index()).await;
            assert!(
                matches!(read, Ok(Ok(_))),
                "run {run} (restart: {restart}): first ReadIndex {read:?}"
            );
            node.write(touch(&format!("document:{run}#viewer@user:alice")))
                .await
                .unwrap_or_else(|e| panic!("run {run} (restart: {restart}): first write: {e}"));
            let mut watch = node.leadership();
            let now =
                *tokio::time::timeout(Duration::from_secs(2), watch.wait_for(|l| l.established()))
                    .await
                    .expect("leadership published within 2 s")
                    .expect("the loop runs");
            assert_eq!(now.leader, node.id());
            assert_eq!(now.restoring, None);
            assert_eq!(node.election_timeout(), config().tick * 10);
        }
    }
}

/// A store whose every apply takes 10 ms, flagged while it runs.
struct SlowStore {
    inner: SharedMemStore,
    applying: Arc<std::sync::atomic::AtomicBool>,
}

impl TupleStore for SlowStore {
    fn head(&self) -> Revision {
        self.inner.head()
    }
    fn oldest(&self) -> Revision {
        self.inner.oldest()
    }
    fn apply(
        &self,
        rev: Revision,
        batch: &dhow_tuples::Batch,
    ) -> Result<Vec<Result<(), dhow_tuples::Error>>, dhow_tuples::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        self.applying.store(true, SeqCst);
        std::thread::sleep(Duration::from_millis(10));
        let out = self.inner.apply(rev, batch);
        self.applying.store(false, SeqCst);
        out
    }
    fn reader(&self, rev: Revision) -> Result<dhow_tuples::BoxedReader<'_>, dhow_tuples::Error> {
        self.inner.reader(rev)
    }
    fn changes(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<dhow_tuples::Change>, dhow_tuples::Error> {
        self.inner.changes(after, limit)
    }
    fn schema_at(&self, rev: Revision) -> Result<Option<(Revision, String)>, dhow_tuples::Error> {
        self.inner.schema_at(rev)
    }
    fn gc(&self, before: Revision) -> Result<(), dhow_tuples::Error> {
        self.inner.gc(before)
    }
    fn restore(
        &self,
        rev: Revision,
        schema: Option<&str>,
        relationships: &mut dyn Iterator<Item = dhow_tuples::Relationship>,
    ) -> Result<(), dhow_tuples::Error> {
        self.inner.restore(rev, schema, relationships)
    }
}

/// Under a stream of large writes, the loop syncs the entries of one Ready on a thread of its
/// own while it applies the entries committed before (before, it applied, then synced, one after
/// the other, and the sync's wait on the disk held up the applying); every write is still
/// applied, and readable at the revision it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_syncs_while_committed_entries_apply() {
    let applying = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let overlapped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = SyncWatch {
        applying: applying.clone(),
        overlapped: overlapped.clone(),
    };
    let log = TestLog::new(Arc::default(), Some(watch));
    let store = Arc::new(SlowStore {
        inner: SharedMemStore::new(),
        applying,
    });
    let node = Arc::new(
        RaftHandle::start(
            config(),
            log,
            store.clone() as Arc<dyn TupleStore>,
            NoTransport,
        )
        .unwrap(),
    );
    write_retrying(&node, touch("document:first#viewer@user:a")).await;
    // Writes of 500 relationships each: entries above the size whose application is worth a
    // thread of its own.
    let writes: Vec<_> = (0..40)
        .map(|i| {
            let node = node.clone();
            let ops = (0..500)
                .map(|j| {
                    let r = format!("document:d{i}#viewer@user:u{j}");
                    WriteOp::Touch(parse_relationship(&r).unwrap())
                })
                .collect();
            let w = WriteRequest {
                preconditions: vec![],
                ops,
            };
            tokio::spawn(async move { write_retrying(&node, w).await })
        })
        .collect();
    for (i, w) in writes.into_iter().enumerate() {
        // Applied when acknowledged: readable at the revision the write was given.
        let rev = w.await.unwrap();
        let found = store
            .reader(rev)
            .unwrap()
            .by_resource(&ObjectRef::new("document", format!("d{i}")), "viewer")
            .unwrap();
        assert_eq!(found.len(), 500, "write {i} at {rev}");
    }
    let reader = store.reader(store.head()).unwrap();
    let all = reader
        .read(&RelationshipFilter::default(), None, usize::MAX)
        .unwrap();
    assert_eq!(all.len(), 40 * 500 + 1);
    assert!(
        overlapped.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no sync ran while entries were applied"
    );
}
