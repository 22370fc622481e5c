//! The decision audit log of one node: every decision the node makes (or the ones its mode
//! selects) as a [`Record`], appended off the request path and queried by principal, actor,
//! resource, result and time range.
//!
//! A check never waits for the log: [`AuditLog::record`] puts the record in a bounded queue
//! and returns; a writer thread appends the queue to the current segment file (JSON lines)
//! and flushes after each batch, so a record is in the file system within milliseconds and
//! survives the process being killed (not a power cut: segments are not fsynced). When the
//! queue is full the record is dropped and counted ([`AuditLog::dropped`]), never waited for.
//! Segments rotate at a size; whole oldest segments are deleted while the set is larger than
//! its bound or their newest record is older than the age bound. A torn last line (a kill
//! in the middle of a write) is skipped when read.
//!
//! The log knows nothing of checks, protobuf or storage engines: records are strings and
//! numbers, filled in by the server.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Which decisions are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// None (no files are written).
    Off,
    /// Every decision.
    All,
    /// Denials only.
    DeniedOnly,
    /// Every denial, and this fraction (0 to 1) of the other decisions, chosen at random.
    Sampled(f64),
}

/// The fraction of `Sampled` is never NaN (`parse` takes 0 to 1 only).
impl Eq for Mode {}

impl Mode {
    /// `off`, `all`, `denied`, or `sampled:F` (`sampled:0.01`).
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s.trim() {
            "off" => Ok(Mode::Off),
            "all" => Ok(Mode::All),
            "denied" => Ok(Mode::DeniedOnly),
            other => match other.strip_prefix("sampled:").map(str::parse::<f64>) {
                Some(Ok(f)) if (0.0..=1.0).contains(&f) => Ok(Mode::Sampled(f)),
                _ => Err(format!(
                    "`{s}` is not an audit mode (off, all, denied, or sampled:F with F from 0 to 1)"
                )),
            },
        }
    }
}

/// How the log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub mode: Mode,
    /// Record every decision's proof, not only those of requests that asked for one.
    pub proofs: bool,
    /// The most bytes the segment files hold together (the oldest segments go first).
    pub max_bytes: u64,
    /// Segments whose newest record is older than this are deleted.
    pub max_age: Duration,
    /// The most records waiting for the writer; past it records are dropped and counted.
    pub queue: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            mode: Mode::Off,
            proofs: false,
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(30 * 24 * 3600),
            queue: 65536,
        }
    }
}

impl AuditSettings {
    /// The size at which a segment is closed: an eighth of the bound (at least 4 KiB), so the
    /// set is never more than one segment above what it keeps.
    pub fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).max(4096)
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    Denied,
    /// Conditional on caveat context nobody supplied.
    Conditional,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Conditional => "conditional",
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it was decided, microseconds since the Unix epoch.
    pub time_us: i64,
    /// The node that decided.
    pub node: u64,
    /// The authenticated caller (`jwt:ISSUER#SUB`, `psk:NAME`, `cert:...`, `anonymous`).
    pub caller: String,
    /// The principal (`user:alice`).
    pub principal: String,
    /// The delegation chain, outermost first; empty for a plain check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    /// The resource (`document:plan`).
    pub resource: String,
    pub permission: String,
    pub outcome: Outcome,
    /// The revision it was decided at.
    pub revision: u64,
    /// For a denied delegated check: the first link that denied (`principal`, `actors[i]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_at: Option<String>,
    /// The proof, as text, when the request asked for it or the log records every proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// Which records a query wants; an unset field matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub principal: Option<String>,
    /// Records whose chain contains this actor.
    pub actor: Option<String>,
    pub resource: Option<String>,
    pub outcome: Option<Outcome>,
    /// From this time (microseconds, inclusive).
    pub since_us: Option<i64>,
    /// Until this time (microseconds, exclusive).
    pub until_us: Option<i64>,
    /// The most records returned (the newest); 0 for all.
    pub limit: usize,
}

impl Query {
    pub fn matches(&self, r: &Record) -> bool {
        self.principal.as_ref().is_none_or(|p| &r.principal == p)
            && self.actor.as_ref().is_none_or(|a| r.actors.contains(a))
            && self.resource.as_ref().is_none_or(|x| &r.resource == x)
            && self.outcome.is_none_or(|o| r.outcome == o)
            && self.since_us.is_none_or(|t| r.time_us >= t)
            && self.until_us.is_none_or(|t| r.time_us < t)
    }
}

/// The time now, in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

enum Msg {
    Record(Box<Record>),
    /// Write everything queued before it, then answer.
    Flush(mpsc::Sender<()>),
}

/// The audit log of a node. Dropping it writes what is queued and stops the writer.
pub struct AuditLog {
    settings: AuditSettings,
    dir: PathBuf,
    tx: Option<SyncSender<Msg>>,
    writer: Option<JoinHandle<()>>,
    dropped: AtomicU64,
    /// State of the sampling generator (xorshift).
    rng: AtomicU64,
    /// Held by the writer while it deletes segments, and by queries while they read.
    files: Arc<Mutex<()>>,
}

impl AuditLog {
    /// Opens (creating it) the log in `dir` and starts its writer thread.
    pub fn open(dir: &Path, settings: AuditSettings) -> io::Result<AuditLog> {
        fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::sync_channel(settings.queue.max(1));
        let files = Arc::new(Mutex::new(()));
        let mut w = Writer::open(dir, &settings, files.clone())?;
        let writer = std::thread::Builder::new()
            .name("dhow-audit".into())
            .spawn(move || w.run(rx))?;
        let seed = (now_us() as u64) | 1;
        Ok(AuditLog {
            settings,
            dir: dir.to_path_buf(),
            tx: Some(tx),
            writer: Some(writer),
            dropped: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
            files,
        })
    }

    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    /// Whether a decision with this outcome is to be recorded (the mode, and the sample).
    pub fn wants(&self, outcome: Outcome) -> bool {
        match self.settings.mode {
            Mode::Off => false,
            Mode::All => true,
            Mode::DeniedOnly => outcome == Outcome::Denied,
            Mode::Sampled(f) => outcome == Outcome::Denied || self.sample() < f,
        }
    }

    /// A number in [0, 1), from a xorshift generator shared by the request threads.
    fn sample(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Queues `r` for the writer; never blocks. A full queue drops it (counted).
    pub fn record(&self, r: Record) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Msg::Record(Box::new(r))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the queue was full, since the log was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything queued so far is in the segment files.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::channel();
            if tx.send(Msg::Flush(ack)).is_ok() {
                let _ = done.recv();
            }
        }
    }

    /// The records matching `q`, oldest first (the newest `q.limit` when it is set). Reads
    /// the files: call from a blocking context. Includes everything recorded before the call.
    pub fn query(&self, q: &Query) -> io::Result<Vec<Record>> {
        self.flush();
        let _guard = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: VecDeque<Record> = VecDeque::new();
        for (_, path) in segments(&self.dir)? {
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                // A torn line (a kill while writing) or a foreign one is skipped.
                let Ok(r) = serde_json::from_str::<Record>(&line) else {
                    continue;
                };
                if q.matches(&r) {
                    out.push_back(r);
                    if q.limit > 0 && out.len() > q.limit {
                        out.pop_front();
                    }
                }
            }
        }
        let mut v: Vec<Record> = out.into();
        v.sort_by_key(|r| r.time_us);
        Ok(v)
    }

    /// The bytes the segment files hold now.
    pub fn disk_bytes(&self) -> io::Result<u64> {
        let mut n = 0;
        for (_, p) in segments(&self.dir)? {
            n += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        Ok(n)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The segment files of `dir`, oldest first: `NNNNNNNNNNNNNNNNNNNN.jsonl`, numbered.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            v.push((n, p));
        }
    }
    v.sort();
    Ok(v)
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.jsonl"))
}

struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    max_age_us: i64,
    segment_bytes: u64,
    /// Closed segments, oldest first: number, size, newest record's time.
    closed: VecDeque<(u64, u64, i64)>,
    current: u64,
    out: BufWriter<File>,
    size: u64,
    newest_us: i64,
    files: Arc<Mutex<()>>,
}

impl Writer {
    fn open(dir: &Path, s: &AuditSettings, files: Arc<Mutex<()>>) -> io::Result<Writer> {
        let segs = segments(dir)?;
        let mut closed = VecDeque::new();
        for (n, p) in &segs {
            let size = fs::metadata(p)?.len();
            let newest = newest_time(p).unwrap_or_else(|| {
                fs::metadata(p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_micros() as i64)
                    .unwrap_or(0)
            });
            closed.push_back((*n, size, newest));
        }
        // A new segment per start: an old one may end in a torn line.
        let current = segs.last().map(|(n, _)| n + 1).unwrap_or(1);
        let out = BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(dir, current))?,
        );
        let mut w = Writer {
            dir: dir.to_path_buf(),
            max_bytes: s.max_bytes,
            max_age_us: s.max_age.as_micros().min(i64::MAX as u128) as i64,
            segment_bytes: s.segment_bytes(),
            closed,
            current,
            out,
            size: 0,
            newest_us: 0,
            files,
        };
        w.trim();
        Ok(w)
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut acks = Vec::new();
            let mut next = Some(first);
            // Everything queued now, then one flush.
            while let Some(m) = next {
                match m {
                    Msg::Record(r) => {
                        if let Err(e) = self.append(&r) {
                            eprintln!("dhow-audit: cannot append to {}: {e}", self.dir.display());
                        }
                    }
                    Msg::Flush(a) => acks.push(a),
                }
                next = rx.try_recv().ok();
            }
            let _ = self.out.flush();
            for a in acks {
                let _ = a.send(());
            }
        }
        let _ = self.out.flush();
    }

    fn append(&mut self, r: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.size += line.len() as u64;
        self.newest_us = self.newest_us.max(r.time_us);
        if self.size >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.closed
            .push_back((self.current, self.size, self.newest_us));
        self.current += 1;
        self.out = BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, self.current))?,
        );
        self.size = 0;
        self.newest_us = 0;
        self.trim();
        Ok(())
    }

    /// Deletes the oldest closed segments while the set is over its size or they are over
    /// the age.
    fn trim(&mut self) {
        let cutoff = now_us().saturating_sub(self.max_age_us);
        let mut total: u64 = self.closed.iter().map(|c| c.1).sum::<u64>() + self.size;
        let _guard = self.files.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(n, size, newest)) = self.closed.front() {
            if total <= self.max_bytes && newest >= cutoff {
                break;
            }
            let _ = fs::remove_file(segment_path(&self.dir, n));
            total -= size;
            self.closed.pop_front();
        }
    }
}

/// The time of the last complete record of a segment.
fn newest_time(p: &Path) -> Option<i64> {
    let f = File::open(p).ok()?;
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Record>(&l).ok())
        .map(|r| r.time_us)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64, principal: &str, outcome: Outcome) -> Record {
        Record {
            time_us: 1_000_000 + i,
            node: 1,
            caller: "psk:app".into(),
            principal: principal.into(),
            actors: vec!["agent:a".into()],
            resource: format!("document:{i}"),
            permission: "view".into(),
            outcome,
            revision: i as u64,
            denied_at: None,
            proof: None,
        }
    }

    fn settings(mode: Mode) -> AuditSettings {
        AuditSettings {
            mode,
            max_age: Duration::from_secs(10_000_000_000),
            ..AuditSettings::default()
        }
    }

    #[test]
    fn records_are_queried_by_each_field_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path(), settings(Mode::All)).unwrap();
            for i in 0..10 {
                let o = if i % 2 == 0 {
                    Outcome::Allowed
                } else {
                    Outcome::Denied
                };
                let p = if i < 5 { "user:alice" } else { "user:bob" };
                log.record(rec(i, p, o));
            }
            let all = log.query(&Query::default()).unwrap();
            assert_eq!(all.len(), 10);
            let q = Query {
                principal: Some("user:alice".into()),
                outcome: Some(Outcome::Denied),
                ..Query::default()
            };
            let got: Vec<i64> = log.query(&q).unwrap().iter().map(|r| r.time_us).collect();
            assert_eq!(got, [1_000_001, 1_000_003]);
            let q = Query {
                since_us: Some(1_000_002),
                until_us: Some(1_000_006),
                ..Query::default()
            };
            assert_eq!(log.query(&q).unwrap().len(), 4);
            let q = Query {
                actor: Some("agent:b".into()),
                ..Query::default()
            };
            assert!(log.query(&q).unwrap().is_empty());
            let q = Query {
                limit: 3,
                ..Query::default()
            };
            let newest: Vec<i64> = log.query(&q).unwrap().iter().map(|r| r.time_us).collect();
            assert_eq!(newest, [1_000_007, 1_000_008, 1_000_009]);
        }
        // Reopened (a restart): the records are there, and a torn line is skipped.
        let seg = segments(dir.path()).unwrap().last().unwrap().1.clone();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"time_us\": 12, \"nod").unwrap();
        drop(f);
        let log = AuditLog::open(dir.path(), settings(Mode::All)).unwrap();
        log.record(rec(10, "user:carol", Outcome::Allowed));
        let all = log.query(&Query::default()).unwrap();
        assert_eq!(all.len(), 11);
        assert_eq!(all[10].principal, "user:carol");
    }

    #[test]
    fn the_files_stay_within_their_size_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let s = AuditSettings {
            max_bytes: 64 * 1024,
            ..settings(Mode::All)
        };
        let log = AuditLog::open(dir.path(), s).unwrap();
        for i in 0..5000 {
            log.record(rec(i, "user:alice", Outcome::Allowed));
            if i % 500 == 0 {
                log.flush();
            }
        }
        log.flush();
        let bytes = log.disk_bytes().unwrap();
        // At most the bound plus the open segment.
        assert!(bytes <= 64 * 1024 + 8 * 1024 + 400, "{bytes}");
        let kept = log.query(&Query::default()).unwrap();
        assert!(kept.len() < 5000 && !kept.is_empty());
        // The newest survive; the oldest went.
        assert_eq!(log.dropped(), 0);
        assert_eq!(kept.last().unwrap().time_us, 1_000_000 + 4999);
        drop(log);
        // Age: every closed segment's records are from 1970; a restart deletes them.
        let s = AuditSettings {
            max_age: Duration::from_secs(3600),
            ..settings(Mode::All)
        };
        let log = AuditLog::open(dir.path(), s).unwrap();
        assert!(log.query(&Query::default()).unwrap().is_empty());
    }

    #[test]
    fn a_full_queue_drops_and_counts_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let s = AuditSettings {
            queue: 1,
            ..settings(Mode::All)
        };
        let log = AuditLog::open(dir.path(), s).unwrap();
        let n = 20_000;
        let t = std::time::Instant::now();
        for i in 0..n {
            log.record(rec(i, "user:alice", Outcome::Allowed));
        }
        let elapsed = t.elapsed();
        let kept = log.query(&Query::default()).unwrap().len() as u64;
        assert_eq!(kept + log.dropped(), n as u64);
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }

    #[test]
    fn modes_choose_what_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), settings(Mode::DeniedOnly)).unwrap();
        assert!(log.wants(Outcome::Denied) && !log.wants(Outcome::Allowed));
        let log = AuditLog::open(dir.path(), settings(Mode::Sampled(0.25))).unwrap();
        assert!(log.wants(Outcome::Denied));
        let n = (0..10_000).filter(|_| log.wants(Outcome::Allowed)).count();
        assert!((2000..3000).contains(&n), "{n}");
        assert_eq!(Mode::parse("sampled:0.5").unwrap(), Mode::Sampled(0.5));
        assert!(Mode::parse("sampled:2").is_err() && Mode::parse("most").is_err());
        assert_eq!(Mode::parse("denied").unwrap(), Mode::DeniedOnly);
    }
}
