//! Answers shared between requests: the boundary of a check cache the engine never sees
//! inside. The engine offers a sub-problem's answer (`resource#relation` for one subject at
//! one revision) only once it is final — what a fresh query for that node alone would give —
//! and looks one up before evaluating a node; the implementation (its bounds, eviction and
//! counters) lives with whoever passes it in [`crate::Options::shared`].
//!
//! Keyed by revision, an answer never needs invalidating: a revision's relationships and
//! schema never change. The engine uses the cache only where an answer depends on nothing but
//! the key: no proof is asked for (a proof is the evaluation, so an explained check evaluates),
//! no caveat context is given (a caveated relationship then has one answer, conditional on
//! what is missing), and the schema does not use expiration (an answer would depend on the
//! clock).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use dhow_tuples::{ObjectRef, Revision, Subject};

use crate::caveat::Tri;

/// One sub-problem: is `subject` in `resource#relation` at `revision`?
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedKey {
    pub revision: Revision,
    pub resource: ObjectRef,
    pub relation: String,
    pub subject: Subject,
}

/// The same key, borrowed: what a lookup is made with, so that a miss allocates nothing.
/// It hashes exactly as [`SharedKey`] does.
#[derive(Debug, Clone, Copy)]
pub struct SharedKeyRef<'a> {
    pub revision: Revision,
    pub resource: &'a ObjectRef,
    pub relation: &'a str,
    pub subject: &'a Subject,
}

impl Hash for SharedKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Field by field as the derived `Hash` of `SharedKey` (a `String` and a `&str` hash
        // alike).
        self.revision.hash(state);
        self.resource.hash(state);
        self.relation.hash(state);
        self.subject.hash(state);
    }
}

impl SharedKeyRef<'_> {
    /// True when `key` is this key.
    pub fn is(&self, key: &SharedKey) -> bool {
        self.revision == key.revision
            && *self.resource == key.resource
            && self.relation == key.relation
            && *self.subject == key.subject
    }

    /// The owned key.
    pub fn to_owned_key(&self) -> SharedKey {
        SharedKey {
            revision: self.revision,
            resource: self.resource.clone(),
            relation: self.relation.to_string(),
            subject: self.subject.clone(),
        }
    }
}

impl SharedKey {
    /// Roughly the bytes the key holds, for a cache bounded in memory.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<SharedKey>()
            + self.resource.object_type.len()
            + self.resource.object_id.len()
            + self.relation.len()
            + self.subject.object.object_type.len()
            + self.subject.object.object_id.len()
            + self.subject.relation.as_ref().map_or(0, String::len)
    }
}

/// A final answer (allowed, denied, or conditional on the parameters it lists), without a
/// proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedValue(pub(crate) Tri);

impl SharedValue {
    /// Roughly the bytes the value holds.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<SharedValue>()
            + match &self.0 {
                Tri::U(missing) => missing.iter().map(|p| p.len() + 32).sum(),
                _ => 0,
            }
    }
}

/// A store of final answers shared by the requests of a node. Implementations must be cheap
/// to call concurrently from many threads; they may forget anything at any time.
pub trait SharedResults: Send + Sync {
    /// The answer kept for `key`, if any.
    fn get(&self, key: &SharedKeyRef<'_>) -> Option<SharedValue>;
    /// Keeps `value` as the answer for `key`.
    fn put(&self, key: SharedKey, value: SharedValue);
}

/// The shared results of [`crate::Options`]: compared by identity.
#[derive(Clone)]
pub struct Shared(pub Arc<dyn SharedResults>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Shared {}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Shared(..)")
    }
}
