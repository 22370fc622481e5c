//! The memo of one evaluator (one subject for Check, one target type for LookupSubjects),
//! aware of cycles in the data, so that a cycle never loops and never costs exponential work.
//!
//! A `resource#relation` met again while it is being evaluated is cut there. What a cut
//! contributes defines the answer (see "Evaluation semantics" in docs/ARCHITECTURE.md); this
//! memo decides which results may be reused, using Tarjan's strongly connected components
//! over the evaluation as it unfolds:
//!
//! - In a component of the schema's dependency graph whose cycles never pass through an
//!   excluded operand ("clean", see `strata.rs`), evaluation is monotone and the answer is the
//!   least fixpoint. A result that depends on a node still in progress stays provisional (it
//!   is reused within its component); when the component's root completes, it is final if
//!   every cut node ended with the value the cut assumed, and otherwise the component is
//!   evaluated again from its root, the cuts now assuming what the last pass found. Values
//!   only grow from pass to pass and stay below the least fixpoint; a pass that confirms its
//!   assumptions is a fixpoint below the least one, so it is the least one. Check never
//!   assumes anything but false (a proof must not rest on an assumption): an allowed result is
//!   final at once (it is derived from values below the fixpoint), so each new pass knows more.
//! - In a component whose cycles pass through an excluded operand ("dirty") there is no
//!   fixpoint to converge to: a cut contributes nothing, and a result is kept only if its
//!   evaluation cut nothing at or above itself (so it does not depend on the path to it).
//! - A step the schema does not allow (a relationship written under another schema) makes the
//!   query start again with every node treated as dirty.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use dhow_tuples::ObjectRef;

use crate::strata::Class;
use crate::Error;

/// A node of the evaluation: `resource#relation`.
pub(crate) type Key = (ObjectRef, String);

/// The memo's maps: every evaluation step looks up and updates several of them, so their
/// hash is on the hot path. foldhash is several times faster than the standard SipHash on
/// these short keys, and still seeded at random per map, so a client cannot choose ids that
/// collide.
type Map<K, V> = HashMap<K, V, RandomState>;

/// Why an evaluation step stopped early.
pub(crate) enum Stop {
    /// A real error, returned to the caller.
    Error(Error),
    /// A step the schema does not allow: run the query again, conservatively.
    Restart,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Error(e)
    }
}

impl From<dhow_tuples::Error> for Stop {
    fn from(e: dhow_tuples::Error) -> Stop {
        Stop::Error(Error::Store(e))
    }
}

/// What the memo says about a node about to be evaluated.
pub(crate) enum Enter<V> {
    /// Known (final, or provisional in the current component): the value.
    Known(V),
    /// Being evaluated further up: a cycle, cut here; the value it is assumed to have.
    Cut(V),
    /// To evaluate: a frame was pushed; call [`Table::leave`] or [`Table::abandon`] after.
    Evaluate,
}

/// What to do once a node's value is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    Done,
    /// The node closed a component whose cuts assumed less than was found: evaluate it
    /// again (enter it anew).
    Again,
}

struct Frame<V> {
    key: Key,
    class: Class,
    /// Discovery order (Tarjan's index).
    index: usize,
    /// The lowest index of an unfinished node this evaluation depended on.
    low: usize,
    /// The value a cut of this node assumed, if it was cut.
    assumed: Option<V>,
    /// Some cut in the component so far assumed a value its node did not end with.
    unstable: bool,
    /// Length of the component stack when this frame started.
    mark: usize,
}

pub(crate) struct Table<V> {
    /// Final values.
    known: Map<Key, V>,
    /// Values of completed nodes of components still open, with their index.
    provisional: Map<Key, (V, usize)>,
    /// Keys of `provisional`, in completion order (Tarjan's stack without the frames).
    open: Vec<Key>,
    frames: Vec<Frame<V>>,
    in_progress: Map<Key, usize>,
    /// What the previous pass over a component found, assumed by this pass's cuts.
    previous: Map<Key, V>,
    next_index: usize,
    /// Cuts assume the previous pass's value (LookupSubjects); otherwise bottom (Check).
    assume_previous: bool,
    /// Every node is treated as dirty (after a step the schema does not allow).
    conservative: bool,
    /// The keys that became final since the last [`Table::take_final`], when tracked (for
    /// answers shared with other requests).
    fresh: Option<Vec<Key>>,
}

/// Values the memo can compare: the same answer (proofs aside).
pub(crate) trait Same {
    fn same(&self, other: &Self) -> bool;
}

impl<V: Clone + Same> Table<V> {
    pub fn new(assume_previous: bool) -> Self {
        Table {
            known: Map::default(),
            provisional: Map::default(),
            open: Vec::new(),
            frames: Vec::new(),
            in_progress: Map::default(),
            previous: Map::default(),
            next_index: 0,
            assume_previous,
            conservative: false,
            fresh: None,
        }
    }

    /// Records from now on which keys become final, for [`Table::take_final`].
    pub fn track_final(&mut self) {
        self.fresh = Some(Vec::new());
    }

    /// The keys that became final since the last call, with their values; none in
    /// conservative mode (its answers are not offered to other requests).
    pub fn take_final(&mut self) -> Vec<(Key, V)> {
        let Some(fresh) = self.fresh.as_mut() else {
            return Vec::new();
        };
        let keys = std::mem::take(fresh);
        if self.conservative {
            return Vec::new();
        }
        keys.into_iter()
            .filter_map(|k| self.known.get(&k).cloned().map(|v| (k, v)))
            .collect()
    }

    /// True after a step the schema does not allow: every node is treated as dirty.
    pub fn is_conservative(&self) -> bool {
        self.conservative
    }

    /// Keeps `value` as the final value of `key`.
    fn keep(&mut self, key: Key, value: V) {
        if let Some(fresh) = self.fresh.as_mut() {
            fresh.push(key.clone());
        }
        self.known.insert(key, value);
    }

    /// Looks `key` (of class `class`, reached under an excluded operand when `negative`) up
    /// before evaluating it; `bottom` is the value of nobody.
    pub fn enter(
        &mut self,
        key: Key,
        class: Class,
        negative: bool,
        allows: impl FnOnce(Class, Class, bool) -> bool,
        bottom: V,
    ) -> Result<Enter<V>, Stop> {
        if let Some(v) = self.known.get(&key) {
            return Ok(Enter::Known(v.clone()));
        }
        if !self.conservative {
            if let Some(top) = self.frames.last() {
                if !allows(top.class, class, negative) {
                    return Err(Stop::Restart);
                }
            }
        }
        if let Some((v, index)) = self.provisional.get(&key) {
            let (v, index) = (v.clone(), *index);
            if let Some(top) = self.frames.last_mut() {
                top.low = top.low.min(index);
            }
            return Ok(Enter::Known(v));
        }
        if let Some(&q) = self.in_progress.get(&key) {
            let index = self.frames[q].index;
            let clean = !self.conservative && class.clean;
            let assumed = match self.previous.get(&key) {
                Some(v) if clean && self.assume_previous => v.clone(),
                _ => bottom,
            };
            if clean {
                self.frames[q].assumed = Some(assumed.clone());
            }
            if let Some(top) = self.frames.last_mut() {
                top.low = top.low.min(index);
            }
            return Ok(Enter::Cut(assumed));
        }
        let p = self.frames.len();
        self.in_progress.insert(key.clone(), p);
        self.frames.push(Frame {
            key,
            class,
            index: self.next_index,
            low: usize::MAX,
            assumed: None,
            unstable: false,
            mark: self.open.len(),
        });
        self.next_index += 1;
        Ok(Enter::Evaluate)
    }

    /// The node entered last evaluated to `value`. `settled` says no further pass can change
    /// it (Check: allowed).
    pub fn leave(&mut self, value: &V, settled: bool) -> Leave {
        let Some(mut f) = self.frames.pop() else {
            return Leave::Done;
        };
        self.in_progress.remove(&f.key);
        let verdict = if self.conservative || !f.class.clean {
            if let Some(parent) = self.frames.last_mut() {
                parent.low = parent.low.min(f.low);
            }
            if f.low > f.index {
                self.keep(f.key, value.clone());
            }
            Leave::Done
        } else {
            if f.assumed.as_ref().is_some_and(|a| !a.same(value)) {
                f.unstable = true;
            }
            if f.low < f.index {
                // Part of a component still open.
                if let Some(parent) = self.frames.last_mut() {
                    parent.low = parent.low.min(f.low);
                    parent.unstable |= f.unstable;
                }
                if settled {
                    self.keep(f.key, value.clone());
                } else {
                    self.open.push(f.key.clone());
                    self.provisional.insert(f.key, (value.clone(), f.index));
                }
                Leave::Done
            } else {
                // The root of a component: every member is complete.
                let members: Vec<Key> = self.open.drain(f.mark..).collect();
                if f.unstable && settled {
                    // Found anyway; what the members found under the wrong assumption goes.
                    for m in members {
                        self.provisional.remove(&m);
                    }
                    self.keep(f.key, value.clone());
                    Leave::Done
                } else if f.unstable {
                    for m in members {
                        if let Some((v, _)) = self.provisional.remove(&m) {
                            self.previous.insert(m, v);
                        }
                    }
                    self.previous.insert(f.key, value.clone());
                    Leave::Again
                } else {
                    for m in members {
                        if let Some((v, _)) = self.provisional.remove(&m) {
                            self.previous.remove(&m);
                            self.keep(m, v);
                        }
                    }
                    self.previous.remove(&f.key);
                    self.keep(f.key, value.clone());
                    Leave::Done
                }
            }
        };
        if self.frames.is_empty() && verdict == Leave::Done {
            self.previous.clear();
        }
        verdict
    }

    /// The node entered last failed: forget it (and, at the top, every open component).
    pub fn abandon(&mut self) {
        if let Some(f) = self.frames.pop() {
            self.in_progress.remove(&f.key);
        }
        if self.frames.is_empty() {
            self.provisional.clear();
            self.open.clear();
            self.previous.clear();
            self.in_progress.clear();
        }
    }

    /// From now on, treat every node as dirty, and forget everything kept so far.
    pub fn go_conservative(&mut self) {
        self.conservative = true;
        self.known.clear();
        self.provisional.clear();
        self.open.clear();
        self.frames.clear();
        self.in_progress.clear();
        self.previous.clear();
    }
}
