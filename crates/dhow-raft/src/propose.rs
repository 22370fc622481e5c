//! Proposing: the one path by which client writes and schema changes become Raft entries
//! (a fresh proposal id, the encoded [`Proposal`], raft-rs's `propose`, a [`Waiter`] kept
//! under the id), and [`Proposals`], the callers waiting for an entry or a ReadIndex to
//! come back, answered by id (never by queue position) or all failed at once.
//!
//! A normal entry's raft-rs context holds the W3C `traceparent`s of the sampled traces its
//! writes were submitted under, one a line (empty without any): raft-rs forwards it with a
//! follower's proposal to the leader and every node keeps it in its log, so the apply on
//! each node (`apply.rs`) joins the caller's trace. It is plain text, never decoded as a
//! command; older nodes ignore it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use dhow_tuples::Revision;
use tokio::sync::oneshot;

use crate::codec::{self, Body, EncodedWrite, Proposal};
use crate::core::Core;
use crate::log::LogStore;
use crate::stats::Counters;
use crate::transport::Transport;
use crate::RaftError;

/// Where the outcome of a proposal or a read goes.
pub(crate) type Answer = oneshot::Sender<Result<Revision, RaftError>>;

/// Who waits for a proposed entry.
pub(crate) enum Waiter {
    /// The callers of the client writes batched into the entry, in the entry's order.
    Writes(Vec<Answer>),
    /// A schema or a membership change.
    One(Answer),
}

impl Waiter {
    /// Tells every caller `err()`.
    pub(crate) fn fail(self, err: impl Fn() -> RaftError) {
        match self {
            Waiter::Writes(txs) => {
                for tx in txs {
                    let _ = tx.send(Err(err()));
                }
            }
            Waiter::One(tx) => {
                let _ = tx.send(Err(err()));
            }
        }
    }

    /// Answers the callers of the entry applied at `index`: each write with the store's
    /// outcome for it (a refused write is [`RaftError::Rejected`]), a schema with the revision.
    pub(crate) fn applied(self, index: u64, outcomes: Vec<Result<(), dhow_tuples::Error>>) {
        match self {
            Waiter::Writes(txs) => {
                for (tx, outcome) in txs.into_iter().zip(outcomes) {
                    let _ = tx.send(
                        outcome
                            .map(|()| Revision(index))
                            .map_err(RaftError::Rejected),
                    );
                }
            }
            Waiter::One(tx) => {
                let _ = tx.send(Ok(Revision(index)));
            }
        }
    }
}

/// The proposal-id counter and everyone waiting for an answer from the log.
pub(crate) struct Proposals {
    node: u64,
    counter: u64,
    /// Each waiter with when its entry was proposed (if the stats are timed).
    entries: BTreeMap<u64, (Waiter, Option<Instant>)>,
    reads: BTreeMap<u64, Answer>,
    /// Proposals in flight and the commit latency, for the metrics.
    stats: Arc<Counters>,
}

impl Proposals {
    /// Ids of node `node`, counting from `first` (random in production: see
    /// [`crate::thread`]).
    pub(crate) fn new(node: u64, first: u64, stats: Arc<Counters>) -> Self {
        Proposals {
            node,
            counter: first,
            entries: BTreeMap::new(),
            reads: BTreeMap::new(),
            stats,
        }
    }

    fn count_in_flight(&self) {
        self.stats
            .proposals_in_flight
            .store(self.entries.len() as u64, Relaxed);
    }

    /// A new id, unique per proposing node: `node id << 40 | counter`.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        (self.node << 40) | (self.counter & ((1 << 40) - 1))
    }

    /// `waiter` waits for the entry proposed under `id`.
    pub(crate) fn wait(&mut self, id: u64, waiter: Waiter) {
        self.entries.insert(id, (waiter, self.stats.now()));
        self.count_in_flight();
    }

    /// Who waits for the entry proposed under `id` (here; none for another node's entry),
    /// taken when the entry is applied: its commit latency is recorded.
    pub(crate) fn take(&mut self, id: u64) -> Option<Waiter> {
        let (waiter, since) = self.entries.remove(&id)?;
        self.count_in_flight();
        Counters::since(&self.stats.commit, since);
        Some(waiter)
    }

    /// `tx` waits for the read state of the ReadIndex request `id`.
    pub(crate) fn wait_read(&mut self, id: u64, tx: Answer) {
        self.reads.insert(id, tx);
    }

    /// A read state came back with `ctx` (the request's id): its caller gets `index`.
    pub(crate) fn answer_read(&mut self, ctx: &[u8], index: Revision) {
        if let Ok(bytes) = <[u8; 8]>::try_from(ctx) {
            if let Some(tx) = self.reads.remove(&u64::from_be_bytes(bytes)) {
                let _ = tx.send(Ok(index));
            }
        }
    }

    /// Tells every waiting caller `err()`: entries in id order, then reads.
    pub(crate) fn fail_all(&mut self, err: impl Fn() -> RaftError) {
        for (_, (w, _)) in std::mem::take(&mut self.entries) {
            w.fail(&err);
        }
        self.count_in_flight();
        for (_, tx) in std::mem::take(&mut self.reads) {
            let _ = tx.send(Err(err()));
        }
    }
}

/// What a proposal carries before its id is known: client writes, each already encoded by
/// its submitter, or a schema.
pub(crate) enum Out {
    Writes(Vec<EncodedWrite>),
    Schema(String),
}

impl<L: LogStore, T: Transport> Core<L, T> {
    /// Proposes the client writes of one batch as one entry, carrying the `traceparent`s of
    /// the traced ones in its context.
    pub(crate) fn propose_writes(
        &mut self,
        writes: Vec<(EncodedWrite, Answer)>,
        traces: &[String],
    ) {
        if writes.is_empty() {
            return;
        }
        let (parts, txs): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
        self.propose_in(
            Out::Writes(parts),
            Waiter::Writes(txs),
            trace_context(traces),
        );
    }

    /// The one proposal path of writes and schemas: refused at once on a node whose storage
    /// failed, otherwise encoded under a new id and handed to raft-rs; `waiter` is answered
    /// when the entry is applied (see `apply.rs`), or now if raft-rs refuses it.
    pub(crate) fn propose(&mut self, body: Body, waiter: Waiter) {
        let out = match body {
            Body::Writes(reqs) => Out::Writes(reqs.iter().map(EncodedWrite::new).collect()),
            Body::Schema(text) => Out::Schema(text),
        };
        self.propose_in(out, waiter, Vec::new())
    }

    /// [`Core::propose`] with the entry's context (trace parents; both halves of a split
    /// batch keep them all).
    fn propose_in(&mut self, body: Out, waiter: Waiter, context: Vec<u8>) {
        if let Some(e) = &self.failed {
            waiter.fail(|| e.clone());
            return;
        }
        if self.paused {
            waiter.fail(|| {
                RaftError::Unavailable(
                    "this node's disk is full: its writes pause until space is freed; the write was not applied".into(),
                )
            });
            return;
        }
        let id = self.proposals.next_id();
        let (data, body) = match body {
            Out::Writes(parts) => (codec::encode_writes(id, &parts), Out::Writes(parts)),
            Out::Schema(text) => {
                let proposal = Proposal {
                    id,
                    body: Body::Schema(text),
                };
                let data = codec::encode(&proposal);
                let Body::Schema(text) = proposal.body else {
                    unreachable!("built as a schema just above")
                };
                (data, Out::Schema(text))
            }
        };
        let limit = self.config.max_entry_bytes;
        if data.len() > limit {
            match (body, waiter) {
                // Writes batched together: each half in an entry of its own, in order.
                (Out::Writes(mut parts), Waiter::Writes(mut txs)) if parts.len() > 1 => {
                    let (rest_parts, rest_txs) = (
                        parts.split_off(parts.len() / 2),
                        txs.split_off(txs.len() / 2),
                    );
                    self.propose_in(Out::Writes(parts), Waiter::Writes(txs), context.clone());
                    self.propose_in(Out::Writes(rest_parts), Waiter::Writes(rest_txs), context);
                }
                (body, waiter) => {
                    let what = match body {
                        Out::Writes(_) => "write",
                        Out::Schema(_) => "schema",
                    };
                    let size = data.len();
                    waiter.fail(|| RaftError::TooLarge { what, size, limit });
                }
            }
            return;
        }
        let outcome = self.raw.propose(context, data);
        self.proposed(id, outcome, waiter);
    }

    /// Keeps `waiter` under `id` if raft-rs took the proposal, or tells it why not.
    pub(crate) fn proposed(&mut self, id: u64, outcome: raft::Result<()>, waiter: Waiter) {
        match outcome {
            Ok(()) => self.proposals.wait(id, waiter),
            Err(e) => {
                let err = not_leader(e);
                waiter.fail(|| err.clone());
            }
        }
    }
}

/// The context of an entry of traced writes: their `traceparent`s, one a line.
fn trace_context(traces: &[String]) -> Vec<u8> {
    traces.join("\n").into_bytes()
}

/// The `traceparent`s an entry's context carries (none for an untraced entry; anything that
/// is not one is skipped).
pub(crate) fn trace_parents(context: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(context)
        .unwrap_or_default()
        .split('\n')
        .filter(|t| t.len() == 55 && t.is_ascii())
}

/// raft-rs refused a proposal: a dropped one means there is no leader here to take it.
fn not_leader(e: raft::Error) -> RaftError {
    match e {
        raft::Error::ProposalDropped => {
            RaftError::Unavailable("this node is not the leader (or there is none yet)".into())
        }
        other => RaftError::Raft(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> (Answer, oneshot::Receiver<Result<Revision, RaftError>>) {
        oneshot::channel()
    }

    #[test]
    fn an_entry_context_carries_the_trace_parents_of_its_writes() {
        let a = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string();
        let b = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string();
        assert!(trace_context(&[]).is_empty());
        assert_eq!(trace_parents(&[]).count(), 0);
        let ctx = trace_context(&[a.clone(), b.clone()]);
        assert_eq!(trace_parents(&ctx).collect::<Vec<_>>(), [&a, &b]);
        // Whatever else a context holds is no trace parent.
        assert_eq!(trace_parents(&[1]).count(), 0);
        assert_eq!(trace_parents(&[0xff; 55]).count(), 0);
    }

    #[test]
    fn ids_carry_the_node_and_never_repeat_within_a_run() {
        let mut p = Proposals::new(3, (1 << 40) - 2, Arc::default());
        let a = p.next_id();
        let b = p.next_id();
        let c = p.next_id();
        assert_eq!(a >> 40, 3);
        assert_eq!(a & ((1 << 40) - 1), (1 << 40) - 1);
        // The counter wraps within its 40 bits, never into the node's.
        assert_eq!(b, 3 << 40);
        assert_eq!(c, (3 << 40) | 1);
        // Wrapping the whole counter does not panic.
        let mut p = Proposals::new(1, u64::MAX, Arc::default());
        assert_eq!(p.next_id(), 1 << 40);
    }

    #[test]
    fn an_applied_entry_answers_each_write_with_its_own_outcome() {
        let (t1, mut r1) = answer();
        let (t2, mut r2) = answer();
        Waiter::Writes(vec![t1, t2]).applied(
            9,
            vec![
                Ok(()),
                Err(dhow_tuples::Error::Invalid("precondition failed".into())),
            ],
        );
        assert_eq!(r1.try_recv().unwrap(), Ok(Revision(9)));
        assert!(matches!(
            r2.try_recv().unwrap(),
            Err(RaftError::Rejected(_))
        ));
        let (t, mut r) = answer();
        Waiter::One(t).applied(4, vec![]);
        assert_eq!(r.try_recv().unwrap(), Ok(Revision(4)));
    }

    #[test]
    fn answers_go_by_id_and_fail_all_reaches_everyone() {
        let stats = Arc::new(Counters::timed());
        let in_flight = || stats.read().proposals_in_flight;
        let mut p = Proposals::new(1, 0, stats.clone());
        let (ta, mut ra) = answer();
        let (tb, mut rb) = answer();
        let (tr, mut rr) = answer();
        let (tq, mut rq) = answer();
        let (a, b, r, q) = (p.next_id(), p.next_id(), p.next_id(), p.next_id());
        p.wait(a, Waiter::One(ta));
        p.wait(b, Waiter::Writes(vec![tb]));
        p.wait_read(r, tr);
        p.wait_read(q, tq);
        assert_eq!(in_flight(), 2, "two entries wait; reads are not proposals");
        // Another node's entry (or one from before a restart) has nobody waiting.
        assert!(p.take(a ^ (7 << 40)).is_none());
        p.take(a).unwrap().applied(5, vec![]);
        assert_eq!(ra.try_recv().unwrap(), Ok(Revision(5)));
        assert_eq!(in_flight(), 1);
        assert_eq!(
            stats.read().commit.count,
            1,
            "the applied entry's commit latency"
        );
        // A read state answers only its own request; a malformed context answers nobody.
        p.answer_read(&r.to_be_bytes(), Revision(6));
        p.answer_read(&[1, 2, 3], Revision(6));
        assert_eq!(rr.try_recv().unwrap(), Ok(Revision(6)));
        p.fail_all(|| RaftError::Stopped);
        assert_eq!(rb.try_recv().unwrap(), Err(RaftError::Stopped));
        assert_eq!(rq.try_recv().unwrap(), Err(RaftError::Stopped));
        assert!(p.take(b).is_none());
        assert_eq!(in_flight(), 0);
        assert_eq!(
            stats.read().commit.count,
            1,
            "a failed entry has no commit latency"
        );
    }
}
