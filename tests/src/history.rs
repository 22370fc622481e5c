//! The history of a fault run and its checker: every call the clients made (what they asked,
//! what they were told, when), the changes each node's Watch reported, and each node's final
//! export, checked against a model built by replaying the committed changes in revision order
//! through the in-memory store and the real check engine.
//!
//! Rules (each violation is reported with the call it concerns):
//! - every node's Watch reports the same changes at the same revisions, each revision once and
//!   in increasing order (no gap: a change one node reports and another misses is a
//!   difference; no duplicate: a revision twice is reported by the collector);
//! - an acknowledged write holds in the model right after its revision;
//! - every committed change is explained by a write that asked for it: acknowledged at that
//!   revision, or failed (a failed write may or may not have been applied);
//! - real time: a write, or a fully_consistent check, that started after an acknowledged write
//!   or fully_consistent check ended has a revision at least as high (writes: higher);
//! - at_least_as_fresh: the answer's revision is at least the token's;
//! - every check's answer is the model's answer at the revision it reports;
//! - revisions never go backwards for a session client (one that passes its newest token);
//! - every node's final export is the model's final state.
//!
//! Timed-out and failed calls need no linearizability search (as stateright's or Knossos's
//! would do): Dhow reports the revision of every committed change, so the order of all
//! writes is known, and a failed write is resolved from the Watch log: applied once at a
//! revision consistent with real time, or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhow_engine::{CheckRequest, Engine, Options};
use dhow_tuples::{
    parse_relationship, Batch, ObjectRef, Revision, SharedMemStore, Subject, TupleStore, WriteOp,
    WriteRequest,
};

/// A relationship of the test schema: `document:DOC#viewer@user:USER` as (DOC, USER).
pub type Key = (String, String);

/// How a check asked to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Read {
    Minimize,
    AtLeast(u64),
    Full,
}

/// What a client asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// Grant (TOUCH) or revoke (DELETE) `key`.
    Write { key: Key, grant: bool },
    /// Does the user have `view` on the document?
    Check { key: Key, read: Read },
}

/// What it was told.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Acknowledged at this revision.
    Written(u64),
    /// The answer and the revision it reports.
    Checked { allowed: bool, at: u64 },
    /// An error (a failed write may or may not have been applied).
    Failed(String),
}

/// One call, from start to end (time since the run started).
#[derive(Debug, Clone)]
pub struct Event {
    pub client: usize,
    pub node: u64,
    pub call: Call,
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
    /// The client passes its newest token with every check: its revisions must never go
    /// backwards.
    pub session: bool,
}

/// The calls of a run, recorded from many tasks.
#[derive(Clone)]
pub struct Recorder {
    t0: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            t0: Instant::now(),
            events: Arc::default(),
        }
    }
}

impl Recorder {
    /// Time since the run started (a call's start, before it is sent).
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Records a finished call that started at `start`.
    pub fn record(
        &self,
        client: usize,
        node: u64,
        session: bool,
        call: Call,
        start: Duration,
        outcome: Outcome,
    ) {
        let end = self.now();
        self.events.lock().unwrap().push(Event {
            client,
            node,
            call,
            start,
            end,
            outcome,
            session,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

/// The committed changes one node's Watch reported: revision → (key, present after) in
/// commit order.
pub type Log = BTreeMap<u64, Vec<(Key, bool)>>;

/// What the checker counted.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub writes_acked: usize,
    pub writes_failed: usize,
    pub failed_writes_applied: usize,
    pub checks: usize,
    pub checks_failed: usize,
    pub revisions: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writes acknowledged, {} failed ({} of those applied anyway), {} checks answered, \
             {} failed, {} revisions with changes",
            self.writes_acked,
            self.writes_failed,
            self.failed_writes_applied,
            self.checks,
            self.checks_failed,
            self.revisions
        )
    }
}

pub fn rel_text(k: &Key) -> String {
    format!("document:{}#viewer@user:{}", k.0, k.1)
}

/// The model: the changes replayed through the in-memory store, checked by the engine.
struct Model {
    store: SharedMemStore,
    engine: Engine,
}

impl Model {
    /// Replays `log` after the schema; readable up to revision `upto` (revisions without
    /// changes, e.g. writes that changed nothing, read as the revision before them).
    fn build(schema: &str, schema_rev: u64, log: &Log, upto: u64) -> Result<Model, String> {
        let compiled = dhow_schema::compile(schema).map_err(|e| format!("schema: {e}"))?;
        let store = SharedMemStore::new();
        let batch = Batch {
            writes: vec![],
            schema: Some(schema.to_string()),
        };
        store
            .apply(Revision(schema_rev), &batch)
            .map_err(|e| format!("model schema at {schema_rev}: {e}"))?;
        for (&rev, changes) in log.range(schema_rev + 1..) {
            // One write per change, in commit order: two writes of one entry may touch the
            // same relationship (one write may not).
            let mut writes = Vec::new();
            for (k, present) in changes {
                let r = parse_relationship(&rel_text(k)).map_err(|e| e.to_string())?;
                writes.push(WriteRequest {
                    preconditions: vec![],
                    ops: vec![if *present {
                        WriteOp::Touch(r)
                    } else {
                        WriteOp::Delete(r)
                    }],
                });
            }
            let batch = Batch {
                writes,
                schema: None,
            };
            let outcomes = store
                .apply(Revision(rev), &batch)
                .map_err(|e| format!("model apply at {rev}: {e}"))?;
            if let Some(Err(e)) = outcomes.into_iter().find(Result::is_err) {
                return Err(format!("model apply at {rev}: {e}"));
            }
        }
        if upto > store.head().0 {
            store
                .apply(Revision(upto), &Batch::default())
                .map_err(|e| format!("model apply at {upto}: {e}"))?;
        }
        Ok(Model {
            store,
            engine: Engine::new(Arc::new(compiled)),
        })
    }

    fn allowed(&self, k: &Key, at: u64) -> Result<bool, String> {
        let reader = self
            .store
            .reader(Revision(at))
            .map_err(|e| format!("model read at {at}: {e}"))?;
        let req = CheckRequest::new(
            ObjectRef::new("document", k.0.clone()),
            "view",
            Subject::object("user", k.1.clone()),
        );
        self.engine
            .check(&reader, &req, Options::now())
            .map(|r| r.allowed)
            .map_err(|e| format!("model check: {e}"))
    }

    fn present(&self, k: &Key, at: u64) -> Result<bool, String> {
        let reader = self
            .store
            .reader(Revision(at))
            .map_err(|e| format!("model read at {at}: {e}"))?;
        let r = parse_relationship(&rel_text(k)).map_err(|e| e.to_string())?;
        Ok(reader
            .find(&r.resource, &r.relation, &r.subject)
            .map_err(|e| e.to_string())?
            .is_some())
    }

    fn state(&self) -> Result<BTreeSet<String>, String> {
        let head = self.store.head();
        let reader = self.store.reader(head).map_err(|e| e.to_string())?;
        let filter = dhow_tuples::RelationshipFilter {
            resource_type: Some("document".into()),
            ..Default::default()
        };
        Ok(reader
            .read(&filter, None, usize::MAX)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|r| r.to_string())
            .collect())
    }
}

/// Checks a run. `logs` holds each node's Watch log (node id, log) read to the same final
/// revision; `exports` each node's final relationships as text. Returns what was counted,
/// or every violation found.
pub fn check(
    schema: &str,
    schema_rev: u64,
    events: &[Event],
    logs: &[(u64, Log)],
    exports: &[(u64, BTreeSet<String>)],
) -> Result<Summary, Vec<String>> {
    let mut bad: Vec<String> = Vec::new();
    let mut sum = Summary::default();
    let Some((first_node, log)) = logs.first() else {
        return Err(vec!["no Watch log to check against".into()]);
    };
    // Watch: the same changes everywhere.
    for (node, other) in &logs[1..] {
        if other != log {
            let diff = log
                .keys()
                .chain(other.keys())
                .find(|r| log.get(r) != other.get(r))
                .copied();
            bad.push(format!(
                "Watch on node {node} differs from node {first_node} at revision {diff:?}: {:?} vs {:?}",
                diff.and_then(|r| other.get(&r)),
                diff.and_then(|r| log.get(&r))
            ));
        }
    }
    sum.revisions = log.len();
    let upto = events
        .iter()
        .filter_map(|e| match e.outcome {
            Outcome::Written(r) => Some(r),
            Outcome::Checked { at, .. } => Some(at),
            Outcome::Failed(_) => None,
        })
        .max()
        .unwrap_or(0);
    let model = match Model::build(schema, schema_rev, log, upto) {
        Ok(m) => m,
        Err(e) => return Err(vec![e]),
    };

    // Acknowledged writes hold right after their revision.
    let mut writes_at: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in events {
        if let (Call::Write { .. }, Outcome::Written(r)) = (&e.call, &e.outcome) {
            writes_at.entry(*r).or_default().push(e);
        }
    }
    for (rev, ws) in &writes_at {
        for e in ws {
            let Call::Write { key, grant } = &e.call else {
                continue;
            };
            sum.writes_acked += 1;
            let same_key = ws
                .iter()
                .filter(|o| matches!(&o.call, Call::Write { key: k, .. } if k == key))
                .count();
            if same_key > 1 {
                continue; // order within one revision is not observable
            }
            match model.present(key, *rev) {
                Ok(p) if p == *grant => {}
                Ok(p) => bad.push(format!(
                    "client {} {} {} acknowledged at revision {rev} by node {}, but after that \
                     revision the relationship is {}",
                    e.client,
                    if *grant { "granted" } else { "revoked" },
                    rel_text(key),
                    e.node,
                    if p { "present" } else { "absent" }
                )),
                Err(m) => bad.push(m),
            }
        }
    }

    // Every committed change was asked for.
    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.call, Call::Write { .. }) && matches!(e.outcome, Outcome::Failed(_)))
        .collect();
    sum.writes_failed = failed.len();
    let mut used = vec![false; failed.len()];
    let done_before = RealTime::new(events);
    for (rev, changes) in log.range(schema_rev + 1..) {
        for (key, present) in changes {
            let acked = writes_at.get(rev).is_some_and(|ws| {
                ws.iter().any(
                    |e| matches!(&e.call, Call::Write { key: k, grant } if k == key && grant == present),
                )
            });
            if acked {
                continue;
            }
            let found = failed.iter().enumerate().position(|(i, e)| {
                !used[i]
                    && matches!(&e.call, Call::Write { key: k, grant } if k == key && grant == present)
                    && done_before.max_before(e.start) < *rev
            });
            match found {
                Some(i) => {
                    used[i] = true;
                    sum.failed_writes_applied += 1;
                }
                None => bad.push(format!(
                    "revision {rev} {} {} but no client asked for that there (no write \
                     acknowledged at {rev}, no failed write that could have been applied then)",
                    if *present { "grants" } else { "revokes" },
                    rel_text(key)
                )),
            }
        }
    }

    // Real time, tokens, answers, sessions.
    let mut by_client: BTreeMap<usize, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_client.entry(e.client).or_default().push(e);
        let rev = match (&e.call, &e.outcome) {
            (Call::Write { .. }, Outcome::Written(r)) => Some((*r, true)),
            (
                Call::Check {
                    read: Read::Full, ..
                },
                Outcome::Checked { at, .. },
            ) => Some((*at, false)),
            _ => None,
        };
        if let Some((r, is_write)) = rev {
            let before = done_before.max_before(e.start);
            // A write that starts after revision `before` was seen commits after it.
            if r < before || (is_write && r == before && before > 0) {
                bad.push(format!(
                    "client {} {:?} on node {} started after a call acknowledged at revision \
                     {before} ended, yet reports revision {r}",
                    e.client, e.call, e.node
                ));
            }
        }
        if let Call::Check { key, read } = &e.call {
            match &e.outcome {
                Outcome::Checked { allowed, at } => {
                    sum.checks += 1;
                    if let Read::AtLeast(t) = read {
                        if at < t {
                            bad.push(format!(
                                "client {} check of {} on node {} with at_least_as_fresh {t} \
                                 answered at revision {at}, older than its token",
                                e.client,
                                rel_text(key),
                                e.node
                            ));
                        }
                    }
                    match model.allowed(key, *at) {
                        Ok(m) if m == *allowed => {}
                        Ok(m) => bad.push(format!(
                            "client {} check of {} on node {} ({read:?}) answered {allowed} at \
                             revision {at}; the model says {m} there",
                            e.client,
                            rel_text(key),
                            e.node
                        )),
                        Err(m) => bad.push(m),
                    }
                }
                _ => sum.checks_failed += 1,
            }
        }
    }
    for (client, mut evs) in by_client {
        evs.sort_by_key(|e| e.start);
        let mut high = 0u64;
        for e in evs.iter().filter(|e| e.session) {
            let r = match e.outcome {
                Outcome::Written(r) => r,
                Outcome::Checked { at, .. } => at,
                Outcome::Failed(_) => continue,
            };
            if r < high {
                bad.push(format!(
                    "session client {client}: {:?} on node {} answered at revision {r} after \
                     the client had seen {high}",
                    e.call, e.node
                ));
            }
            high = high.max(r);
        }
    }

    // Convergence.
    match model.state() {
        Ok(want) => {
            for (node, got) in exports {
                if *got != want {
                    let missing: Vec<&String> = want.difference(got).take(5).collect();
                    let extra: Vec<&String> = got.difference(&want).take(5).collect();
                    bad.push(format!(
                        "node {node}'s export differs from the model: missing {missing:?}, \
                         extra {extra:?}"
                    ));
                }
            }
        }
        Err(m) => bad.push(m),
    }
    if bad.is_empty() {
        Ok(sum)
    } else {
        Err(bad)
    }
}

/// The highest revision acknowledged (by a write or a fully_consistent check) before a given
/// time.
struct RealTime<'a> {
    /// (end, revision, event), by end.
    ends: Vec<(Duration, u64, &'a Event)>,
    /// Running maximum of revision over `ends`.
    max: Vec<u64>,
}

impl<'a> RealTime<'a> {
    fn new(events: &'a [Event]) -> RealTime<'a> {
        let mut ends: Vec<(Duration, u64, &Event)> = events
            .iter()
            .filter_map(|e| match (&e.call, &e.outcome) {
                (Call::Write { .. }, Outcome::Written(r)) => Some((e.end, *r, e)),
                (
                    Call::Check {
                        read: Read::Full, ..
                    },
                    Outcome::Checked { at, .. },
                ) => Some((e.end, *at, e)),
                _ => None,
            })
            .collect();
        ends.sort_by_key(|x| x.0);
        let mut max = Vec::with_capacity(ends.len());
        let mut m = 0;
        for x in &ends {
            m = m.max(x.1);
            max.push(m);
        }
        RealTime { ends, max }
    }

    /// The highest such revision among calls that ended before `t` (0 if none).
    fn max_before(&self, t: Duration) -> u64 {
        let n = self.ends.partition_point(|x| x.0 < t);
        if n == 0 {
            0
        } else {
            self.max[n - 1]
        }
    }
}

#[cfg(test)]
mod tests {
    //! Negative controls on hand-made histories: each rule fires on the history that breaks
    //! it, and a clean history passes.
    use super::*;

    const SCHEMA: &str = crate::cluster::SCHEMA;

    fn k(d: &str, u: &str) -> Key {
        (d.into(), u.into())
    }

    fn ev(client: usize, call: Call, start: u64, end: u64, outcome: Outcome) -> Event {
        Event {
            client,
            node: 1,
            call,
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
            outcome,
            session: true,
        }
    }

    fn grant(d: &str) -> Call {
        Call::Write {
            key: k(d, "u"),
            grant: true,
        }
    }

    fn revoke(d: &str) -> Call {
        Call::Write {
            key: k(d, "u"),
            grant: false,
        }
    }

    fn check_of(d: &str, read: Read) -> Call {
        Call::Check {
            key: k(d, "u"),
            read,
        }
    }

    /// A clean run: grant d1 at 2, revoke it at 3, checks at the right revisions.
    fn clean() -> (Vec<Event>, Log, BTreeSet<String>) {
        let events = vec![
            ev(0, grant("d1"), 0, 10, Outcome::Written(2)),
            ev(0, revoke("d1"), 11, 20, Outcome::Written(3)),
            ev(
                1,
                check_of("d1", Read::Minimize),
                5,
                15,
                Outcome::Checked {
                    allowed: true,
                    at: 2,
                },
            ),
            ev(
                0,
                check_of("d1", Read::AtLeast(3)),
                21,
                25,
                Outcome::Checked {
                    allowed: false,
                    at: 3,
                },
            ),
            ev(
                2,
                check_of("d1", Read::Full),
                21,
                26,
                Outcome::Checked {
                    allowed: false,
                    at: 3,
                },
            ),
        ];
        let mut log = Log::new();
        log.insert(2, vec![(k("d1", "u"), true)]);
        log.insert(3, vec![(k("d1", "u"), false)]);
        (events, log, BTreeSet::new())
    }

    fn run(events: &[Event], log: &Log, export: &BTreeSet<String>) -> Result<Summary, Vec<String>> {
        check(
            SCHEMA,
            1,
            events,
            &[(1, log.clone()), (2, log.clone())],
            &[(1, export.clone())],
        )
    }

    fn fails_with(r: Result<Summary, Vec<String>>, says: &str) {
        match r {
            Ok(s) => panic!("the checker passed a broken history ({s}); expected `{says}`"),
            Err(v) => assert!(
                v.iter().any(|m| m.contains(says)),
                "expected a violation saying `{says}`, got {v:#?}"
            ),
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let (e, l, x) = clean();
        let s = run(&e, &l, &x).unwrap();
        assert_eq!((s.writes_acked, s.checks, s.revisions), (2, 3, 2));
    }

    #[test]
    fn a_stale_read_past_its_token_fails() {
        // A lagging replica answered without waiting for the token.
        let (mut e, l, x) = clean();
        e[3].outcome = Outcome::Checked {
            allowed: true,
            at: 2,
        };
        fails_with(run(&e, &l, &x), "older than its token");
    }

    #[test]
    fn a_wrong_answer_fails() {
        let (mut e, l, x) = clean();
        e[2].outcome = Outcome::Checked {
            allowed: false,
            at: 2,
        };
        fails_with(run(&e, &l, &x), "the model says true");
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let (e, mut l, _) = clean();
        l.remove(&3);
        // The revocation at 3 is gone: its node still has the grant.
        let x: BTreeSet<String> = ["document:d1#viewer@user:u".to_string()].into();
        fails_with(run(&e, &l, &x), "acknowledged at revision 3");
    }

    #[test]
    fn a_stale_fully_consistent_read_fails() {
        let (mut e, l, x) = clean();
        e[4].outcome = Outcome::Checked {
            allowed: true,
            at: 2,
        };
        fails_with(
            run(&e, &l, &x),
            "started after a call acknowledged at revision 3",
        );
    }

    #[test]
    fn a_session_going_backwards_fails() {
        let (mut e, l, x) = clean();
        e.push(ev(
            0,
            check_of("d1", Read::Minimize),
            30,
            31,
            Outcome::Checked {
                allowed: true,
                at: 2,
            },
        ));
        fails_with(run(&e, &l, &x), "after the client had seen 3");
    }

    #[test]
    fn a_change_nobody_asked_for_fails_and_a_failed_write_may_explain_one() {
        let (e, mut l, _) = clean();
        l.insert(4, vec![(k("d9", "u"), true)]);
        let x: BTreeSet<String> = ["document:d9#viewer@user:u".to_string()].into();
        fails_with(run(&e, &l, &x), "no client asked for that");
        let mut e2 = e.clone();
        e2.push(ev(
            3,
            grant("d9"),
            22,
            40,
            Outcome::Failed("timeout".into()),
        ));
        let s = run(&e2, &l, &x).unwrap();
        assert_eq!(s.failed_writes_applied, 1);
        // But not a failed write that started after revision 4 was already acknowledged.
        let mut e3 = e.clone();
        e3.push(ev(4, grant("d2"), 50, 51, Outcome::Written(5)));
        e3.push(ev(
            3,
            grant("d9"),
            60,
            70,
            Outcome::Failed("timeout".into()),
        ));
        let mut l3 = l.clone();
        l3.insert(5, vec![(k("d2", "u"), true)]);
        let x3: BTreeSet<String> = [
            "document:d9#viewer@user:u".to_string(),
            "document:d2#viewer@user:u".to_string(),
        ]
        .into();
        fails_with(run(&e3, &l3, &x3), "no client asked for that");
    }

    /// Regression: two writes of one entry on the same relationship (revoke, then grant) were
    /// replayed as one write, which the model store refused as a whole, so the model kept the
    /// state before the entry and the checker blamed correct answers (seen in partition runs).
    #[test]
    fn two_writes_of_one_entry_on_one_relationship_replay_in_order() {
        let events = vec![
            ev(0, revoke("d1"), 0, 10, Outcome::Written(2)),
            ev(1, grant("d1"), 0, 10, Outcome::Written(2)),
            ev(
                2,
                check_of("d1", Read::Full),
                11,
                12,
                Outcome::Checked {
                    allowed: true,
                    at: 2,
                },
            ),
        ];
        let mut log = Log::new();
        log.insert(2, vec![(k("d1", "u"), false), (k("d1", "u"), true)]);
        let x: BTreeSet<String> = ["document:d1#viewer@user:u".to_string()].into();
        let s = run(&events, &log, &x).unwrap();
        assert_eq!(s.checks, 1);
    }

    #[test]
    fn diverging_watch_logs_and_exports_fail() {
        let (e, l, x) = clean();
        let mut other = l.clone();
        other.remove(&2);
        fails_with(
            check(
                SCHEMA,
                1,
                &e,
                &[(1, l.clone()), (2, other)],
                &[(1, x.clone())],
            ),
            "Watch on node 2 differs",
        );
        let wrong: BTreeSet<String> = ["document:d1#viewer@user:u".to_string()].into();
        fails_with(run(&e, &l, &wrong), "export differs from the model");
    }

    #[test]
    fn a_write_ordered_before_one_that_finished_earlier_fails() {
        let (mut e, l, x) = clean();
        // The revocation started after the grant ended but reports an older revision.
        e[0].outcome = Outcome::Written(3);
        e[1].outcome = Outcome::Written(2);
        fails_with(run(&e, &l, &x), "started after a call acknowledged");
    }
}
