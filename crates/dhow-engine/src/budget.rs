//! Per-request budgets and cancellation: how deep an evaluation may recurse, how many
//! dispatches (reader calls and evaluations of a `resource#relation`) it may make, and a flag
//! another thread can set to stop it. Every evaluator of the engine meters its work here.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::{Error, Options};

/// Which budget of a request ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    /// Recursion depth: every step through a rewrite node, a computed userset, an arrow or a
    /// subject set counts one ([`Options::max_depth`]).
    Depth,
    /// Dispatches: every reader call and every evaluation of a `resource#relation` that is
    /// not answered from the request's memo counts one ([`Options::max_dispatches`]).
    Dispatches,
    /// Caveat evaluation cost: every step of a caveat expression counts one, work on large
    /// values counts their size ([`Options::max_caveat_cost`]).
    CaveatCost,
}

impl Budget {
    /// `"depth"` or `"dispatches"`: a stable name for error reasons and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Budget::Depth => "depth",
            Budget::Dispatches => "dispatches",
            Budget::CaveatCost => "caveat_cost",
        }
    }

    pub(crate) fn hint(self) -> &'static str {
        match self {
            Budget::Depth => {
                "the relationship graph or the schema's expressions nest too deeply \
                 (or the limit is too low)"
            }
            Budget::Dispatches => {
                "the request needs too many reads and evaluations (or the limit is too low)"
            }
            Budget::CaveatCost => {
                "the caveats' expressions need too much work on the request's and the \
                 relationships' context (or the limit is too low)"
            }
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cancellation flag shared between the caller and an evaluation. Clones share the flag:
/// keep one, pass another in [`Options::cancel`], and call [`Cancel::cancel`] from any thread;
/// the evaluation then stops with [`Error::Cancelled`] at its next dispatch.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Sets the flag: evaluations holding it stop at their next dispatch.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Is the flag set?
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Two handles are equal when they share one flag.
impl PartialEq for Cancel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Cancel {}

/// The meter of one request, shared by the evaluators it uses (CheckBulk has one per subject).
pub(crate) struct Meter {
    max_depth: u32,
    max_dispatches: u64,
    used: Cell<u64>,
    cancel: Option<Cancel>,
    max_caveat_cost: u64,
    caveat_left: Cell<u64>,
}

impl Meter {
    pub fn new(opts: &Options) -> Meter {
        Meter {
            max_depth: opts.max_depth.min(crate::MAX_DEPTH_CEILING),
            max_dispatches: opts.max_dispatches,
            used: Cell::new(0),
            cancel: opts.cancel.clone(),
            max_caveat_cost: opts.max_caveat_cost,
            caveat_left: Cell::new(opts.max_caveat_cost),
        }
    }

    /// What is left of the request's caveat cost budget.
    pub fn caveat_budget(&self) -> u64 {
        self.caveat_left.get()
    }

    /// Records what an evaluation left of the caveat budget; fails if the request was
    /// cancelled meanwhile.
    pub fn spend_caveat(&self, left: u64, _at: impl FnOnce() -> String) -> Result<(), Error> {
        self.caveat_left.set(left.min(self.caveat_left.get()));
        if self.cancel.as_ref().is_some_and(Cancel::is_cancelled) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// The error of a spent caveat budget, at `at`.
    pub fn caveat_exhausted(&self, at: impl FnOnce() -> String) -> Error {
        Error::BudgetExhausted {
            budget: Budget::CaveatCost,
            limit: self.max_caveat_cost,
            at: at(),
        }
    }

    /// Counts one dispatch at `at` (`resource#relation`, or what was read); fails once the
    /// budget is spent or the request was cancelled.
    pub fn dispatch(&self, at: impl FnOnce() -> String) -> Result<(), Error> {
        let used = self.used.get() + 1;
        self.used.set(used);
        if used > self.max_dispatches {
            return Err(Error::BudgetExhausted {
                budget: Budget::Dispatches,
                limit: self.max_dispatches,
                at: at(),
            });
        }
        if self.cancel.as_ref().is_some_and(Cancel::is_cancelled) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Fails if `depth` is past the depth budget.
    pub fn depth(&self, depth: u32, at: impl FnOnce() -> String) -> Result<(), Error> {
        if depth > self.max_depth {
            return Err(Error::BudgetExhausted {
                budget: Budget::Depth,
                limit: u64::from(self.max_depth),
                at: at(),
            });
        }
        Ok(())
    }
}

/// Stack space kept free below an evaluation step; with less left, the next step runs on a
/// new segment. It covers the frames between two steps (up to 13 KiB in a debug build,
/// measured), a reader call (RocksDB's included), and cloning or dropping a proof as deep as
/// the depth ceiling allows (about 900 bytes per level in a debug build, two levels per step
/// at most: under 500 KiB at 250 steps).
const RED_ZONE: usize = 1024 * 1024;
/// Size of each extra stack segment (about 300 steps of a debug build).
const SEGMENT: usize = 4 * 1024 * 1024;

/// Runs `f`, on a fresh stack segment if the current one is nearly used up, so that recursion
/// as deep as the depth budget allows never overflows, whatever thread runs it (tokio's
/// blocking pool and test threads have 2 MiB).
pub(crate) fn grow<T>(f: impl FnOnce() -> T) -> T {
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}
