//! Proposing: the one path by which client writes and schema changes become Raft entries
//! (a fresh proposal id, the encoded [`Proposal`], raft-rs's `propose`, a [`Waiter`] kept
//! under the id), and [`Proposals`], the callers waiting for an entry or a ReadIndex to
//! come back, answered by id (never by queue position) or all failed at once.

use std::collections::BTreeMap;

use dhow_tuples::{Revision, WriteRequest};
use tokio::sync::oneshot;

use crate::codec::{self, Body, Proposal};
use crate::core::Core;
use crate::log::LogStore;
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
    entries: BTreeMap<u64, Waiter>,
    reads: BTreeMap<u64, Answer>,
}

impl Proposals {
    /// Ids of node `node`, counting from `first` (random in production: see
    /// [`crate::thread`]).
    pub(crate) fn new(node: u64, first: u64) -> Self {
        Proposals {
            node,
            counter: first,
            entries: BTreeMap::new(),
            reads: BTreeMap::new(),
        }
    }

    /// A new id, unique per proposing node: `node id << 40 | counter`.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        (self.node << 40) | (self.counter & ((1 << 40) - 1))
    }

    /// `waiter` waits for the entry proposed under `id`.
    pub(crate) fn wait(&mut self, id: u64, waiter: Waiter) {
        self.entries.insert(id, waiter);
    }

    /// Who waits for the entry proposed under `id` (here; none for another node's entry).
    pub(crate) fn take(&mut self, id: u64) -> Option<Waiter> {
        self.entries.remove(&id)
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
        for (_, w) in std::mem::take(&mut self.entries) {
            w.fail(&err);
        }
        for (_, tx) in std::mem::take(&mut self.reads) {
            let _ = tx.send(Err(err()));
        }
    }
}

impl<L: LogStore, T: Transport> Core<L, T> {
    /// Proposes the client writes of one batch as one entry.
    pub(crate) fn propose_writes(&mut self, writes: Vec<(WriteRequest, Answer)>) {
        if writes.is_empty() {
            return;
        }
        let (reqs, txs): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
        self.propose(Body::Writes(reqs), Waiter::Writes(txs));
    }

    /// The one proposal path of writes and schemas: refused at once on a node whose storage
    /// failed, otherwise encoded under a new id and handed to raft-rs; `waiter` is answered
    /// when the entry is applied (see `apply.rs`), or now if raft-rs refuses it.
    pub(crate) fn propose(&mut self, body: Body, waiter: Waiter) {
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
        let proposal = Proposal { id, body };
        let data = codec::encode(&proposal);
        let limit = self.config.max_entry_bytes;
        if data.len() > limit {
            match (proposal.body, waiter) {
                // Writes batched together: each half in an entry of its own, in order.
                (Body::Writes(mut reqs), Waiter::Writes(mut txs)) if reqs.len() > 1 => {
                    let (rest_reqs, rest_txs) =
                        (reqs.split_off(reqs.len() / 2), txs.split_off(txs.len() / 2));
                    self.propose(Body::Writes(reqs), Waiter::Writes(txs));
                    self.propose(Body::Writes(rest_reqs), Waiter::Writes(rest_txs));
                }
                (body, waiter) => {
                    let what = match body {
                        Body::Writes(_) => "write",
                        Body::Schema(_) => "schema",
                    };
                    let size = data.len();
                    waiter.fail(|| RaftError::TooLarge { what, size, limit });
                }
            }
            return;
        }
        let outcome = self.raw.propose(vec![], data);
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
    fn ids_carry_the_node_and_never_repeat_within_a_run() {
        let mut p = Proposals::new(3, (1 << 40) - 2);
        let a = p.next_id();
        let b = p.next_id();
        let c = p.next_id();
        assert_eq!(a >> 40, 3);
        assert_eq!(a & ((1 << 40) - 1), (1 << 40) - 1);
        // The counter wraps within its 40 bits, never into the node's.
        assert_eq!(b, 3 << 40);
        assert_eq!(c, (3 << 40) | 1);
        // Wrapping the whole counter does not panic.
        let mut p = Proposals::new(1, u64::MAX);
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
        let mut p = Proposals::new(1, 0);
        let (ta, mut ra) = answer();
        let (tb, mut rb) = answer();
        let (tr, mut rr) = answer();
        let (tq, mut rq) = answer();
        let (a, b, r, q) = (p.next_id(), p.next_id(), p.next_id(), p.next_id());
        p.wait(a, Waiter::One(ta));
        p.wait(b, Waiter::Writes(vec![tb]));
        p.wait_read(r, tr);
        p.wait_read(q, tq);
        // Another node's entry (or one from before a restart) has nobody waiting.
        assert!(p.take(a ^ (7 << 40)).is_none());
        p.take(a).unwrap().applied(5, vec![]);
        assert_eq!(ra.try_recv().unwrap(), Ok(Revision(5)));
        // A read state answers only its own request; a malformed context answers nobody.
        p.answer_read(&r.to_be_bytes(), Revision(6));
        p.answer_read(&[1, 2, 3], Revision(6));
        assert_eq!(rr.try_recv().unwrap(), Ok(Revision(6)));
        p.fail_all(|| RaftError::Stopped);
        assert_eq!(rb.try_recv().unwrap(), Err(RaftError::Stopped));
        assert_eq!(rq.try_recv().unwrap(), Err(RaftError::Stopped));
        assert!(p.take(b).is_none());
    }
}
