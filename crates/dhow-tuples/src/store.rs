//! The store boundary: what a durable tuple store does (apply a batch of writes at a given
//! revision, read at a revision, list changes, keep schema history, forget old versions).
//! `SharedMemStore` implements it in memory; the RocksDB store in `dhow-storage` is the
//! other implementation, and both run the same suite (`testsuite`).

use std::sync::RwLock;

use crate::error::Error;
use crate::memstore::{MemStore, WriteOp};
use crate::model::{Relationship, Revision};
use crate::reader::{RelationshipFilter, SnapshotReader};

/// A condition on the current state that a write requires.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Precondition {
    /// At least one relationship matches the filter.
    MustMatch(RelationshipFilter),
    /// No relationship matches the filter.
    MustNotMatch(RelationshipFilter),
}

/// One client write: all its operations apply, or none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WriteRequest {
    pub preconditions: Vec<Precondition>,
    pub ops: Vec<WriteOp>,
}

/// What one revision applies: client writes (each atomic on its own, in order) and, if any,
/// a new schema text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Batch {
    pub writes: Vec<WriteRequest>,
    pub schema: Option<String>,
}

/// A change, for Watch: the relationship was written (created or touched) or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Change {
    pub revision: Revision,
    pub deleted: bool,
    pub relationship: Relationship,
}

/// A reader borrowed from a store.
pub type BoxedReader<'a> = Box<dyn SnapshotReader + 'a>;

/// A tuple store with MVCC reads. All methods take `&self`: implementations synchronise
/// internally, so readers and the single applier can run at once.
pub trait TupleStore: Send + Sync {
    /// The newest applied revision.
    fn head(&self) -> Revision;
    /// The oldest revision that can still be read.
    fn oldest(&self) -> Revision;
    /// Applies `batch` at `rev`, which must be greater than `head()`; afterwards
    /// `head() == rev` even if every write failed or there were none. Returns one outcome per
    /// write: a failed write (precondition, CREATE of an existing relationship, duplicate in
    /// one write) changes nothing; the others apply. `Err` means the store itself failed and
    /// nothing was applied.
    fn apply(&self, rev: Revision, batch: &Batch) -> Result<Vec<Result<(), Error>>, Error>;
    /// A reader at `rev` (between `oldest()` and `head()`).
    fn reader(&self, rev: Revision) -> Result<BoxedReader<'_>, Error>;
    /// Changes with revision greater than `after`, in revision order, at most `limit` (a
    /// revision's changes are never split).
    fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>, Error>;
    /// The schema in force at `rev` and the revision that wrote it.
    fn schema_at(&self, rev: Revision) -> Result<Option<(Revision, String)>, Error>;
    /// Forgets versions and changes at or below `before`.
    fn gc(&self, before: Revision) -> Result<(), Error>;
    /// Replaces the whole content with a snapshot taken elsewhere at `rev`: exactly
    /// `relationships` and `schema`, readable at `rev` only (`oldest() == head() == rev`
    /// afterwards; older revisions and their changes are gone). Atomic: on `Err`, or after a
    /// crash during it, the store holds what it held before, never half a snapshot.
    fn restore(
        &self,
        rev: Revision,
        schema: Option<&str>,
        relationships: &mut dyn Iterator<Item = Relationship>,
    ) -> Result<(), Error>;
}

impl<T: SnapshotReader + ?Sized> SnapshotReader for Box<T> {
    fn revision(&self) -> Revision {
        (**self).revision()
    }
    fn by_resource(
        &self,
        resource: &crate::ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, Error> {
        (**self).by_resource(resource, relation)
    }
    fn by_resource_of_type(
        &self,
        resource: &crate::ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, Error> {
        (**self).by_resource_of_type(resource, relation, subject_type)
    }
    fn find(
        &self,
        resource: &crate::ObjectRef,
        relation: &str,
        subject: &crate::Subject,
    ) -> Result<Option<Relationship>, Error> {
        (**self).find(resource, relation, subject)
    }
    fn by_subject_object(&self, subject: &crate::ObjectRef) -> Result<Vec<Relationship>, Error> {
        (**self).by_subject_object(subject)
    }
    fn by_subject_keys(&self, subject: &crate::ObjectRef) -> Result<Vec<Relationship>, Error> {
        (**self).by_subject_keys(subject)
    }
    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, Error> {
        (**self).read(filter, after, limit)
    }
}

/// Checks one write's preconditions against `reader`.
pub fn check_preconditions(reader: &dyn SnapshotReader, pre: &[Precondition]) -> Result<(), Error> {
    for p in pre {
        let (filter, must) = match p {
            Precondition::MustMatch(f) => (f, true),
            Precondition::MustNotMatch(f) => (f, false),
        };
        let found = !reader.read(filter, None, 1)?.is_empty();
        if found != must {
            return Err(Error::PreconditionFailed(format!(
                "{} {:?}",
                if must {
                    "MUST_MATCH found nothing for"
                } else {
                    "MUST_NOT_MATCH found a match for"
                },
                filter
            )));
        }
    }
    Ok(())
}

/// The in-memory `TupleStore`: a `MemStore` behind a lock, with a change log and schema
/// history. A reader holds the read lock while it lives, so drop it before the same thread
/// waits for a write to apply.
#[derive(Debug, Default)]
pub struct SharedMemStore {
    inner: RwLock<SharedInner>,
}

#[derive(Debug, Default)]
struct SharedInner {
    store: MemStore,
    changes: Vec<Change>,
    schemas: Vec<(Revision, String)>,
}

impl SharedMemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

struct GuardReader<'a> {
    guard: std::sync::RwLockReadGuard<'a, SharedInner>,
    rev: Revision,
}

impl SnapshotReader for GuardReader<'_> {
    fn revision(&self) -> Revision {
        self.rev
    }
    fn by_resource(
        &self,
        resource: &crate::ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, Error> {
        self.guard
            .store
            .snapshot(self.rev)?
            .by_resource(resource, relation)
    }
    fn by_resource_of_type(
        &self,
        resource: &crate::ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, Error> {
        self.guard
            .store
            .snapshot(self.rev)?
            .by_resource_of_type(resource, relation, subject_type)
    }
    fn find(
        &self,
        resource: &crate::ObjectRef,
        relation: &str,
        subject: &crate::Subject,
    ) -> Result<Option<Relationship>, Error> {
        self.guard
            .store
            .snapshot(self.rev)?
            .find(resource, relation, subject)
    }
    fn by_subject_object(&self, subject: &crate::ObjectRef) -> Result<Vec<Relationship>, Error> {
        self.guard
            .store
            .snapshot(self.rev)?
            .by_subject_object(subject)
    }
    fn by_subject_keys(&self, subject: &crate::ObjectRef) -> Result<Vec<Relationship>, Error> {
        self.guard
            .store
            .snapshot(self.rev)?
            .by_subject_keys(subject)
    }
    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, Error> {
        self.guard
            .store
            .snapshot(self.rev)?
            .read(filter, after, limit)
    }
}

fn poisoned() -> Error {
    Error::Storage("in-memory store lock poisoned".into())
}

impl TupleStore for SharedMemStore {
    fn head(&self) -> Revision {
        self.inner
            .read()
            .map(|g| g.store.head())
            .unwrap_or_default()
    }

    fn oldest(&self) -> Revision {
        self.inner
            .read()
            .map(|g| g.store.oldest())
            .unwrap_or_default()
    }

    fn apply(&self, rev: Revision, batch: &Batch) -> Result<Vec<Result<(), Error>>, Error> {
        let mut g = self.inner.write().map_err(|_| poisoned())?;
        if rev <= g.store.head() {
            return Err(Error::Invalid(format!(
                "apply at revision {rev}, but the store is already at {}",
                g.store.head()
            )));
        }
        // Writes stage at `rev` in order, each seeing the ones before it. `stage` validates
        // before it mutates, so a failed write leaves nothing behind. Readers wait on the lock.
        let staged = &mut g.store;
        staged.set_head(rev);
        let mut outcomes = Vec::with_capacity(batch.writes.len());
        let mut changes = Vec::new();
        for w in &batch.writes {
            let outcome = check_preconditions(&staged.latest(), &w.preconditions)
                .and_then(|()| staged.stage(&w.ops, rev));
            if outcome.is_ok() {
                for op in &w.ops {
                    let (r, deleted) = match op {
                        WriteOp::Create(r) | WriteOp::Touch(r) => (r, false),
                        WriteOp::Delete(r) => (r, true),
                    };
                    changes.push(Change {
                        revision: rev,
                        deleted,
                        relationship: r.clone(),
                    });
                }
            }
            outcomes.push(outcome);
        }
        g.changes.extend(changes);
        if let Some(s) = &batch.schema {
            g.schemas.push((rev, s.clone()));
        }
        Ok(outcomes)
    }

    fn reader(&self, rev: Revision) -> Result<BoxedReader<'_>, Error> {
        let guard = self.inner.read().map_err(|_| poisoned())?;
        guard.store.snapshot(rev)?;
        Ok(Box::new(GuardReader { guard, rev }))
    }

    fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>, Error> {
        let g = self.inner.read().map_err(|_| poisoned())?;
        if after < g.store.oldest() {
            return Err(Error::RevisionUnavailable {
                asked: after.0,
                oldest: g.store.oldest().0,
                newest: g.store.head().0,
            });
        }
        let mut out: Vec<Change> = Vec::new();
        for c in g.changes.iter().filter(|c| c.revision > after) {
            if out.len() >= limit && out.last().is_some_and(|l| l.revision != c.revision) {
                break;
            }
            out.push(c.clone());
        }
        Ok(out)
    }

    fn schema_at(&self, rev: Revision) -> Result<Option<(Revision, String)>, Error> {
        let g = self.inner.read().map_err(|_| poisoned())?;
        Ok(g.schemas.iter().rev().find(|(r, _)| *r <= rev).cloned())
    }

    fn gc(&self, before: Revision) -> Result<(), Error> {
        let mut g = self.inner.write().map_err(|_| poisoned())?;
        g.store.gc(before);
        let oldest = g.store.oldest();
        g.changes.retain(|c| c.revision > oldest);
        Ok(())
    }

    fn restore(
        &self,
        rev: Revision,
        schema: Option<&str>,
        relationships: &mut dyn Iterator<Item = Relationship>,
    ) -> Result<(), Error> {
        let fresh = MemStore::restored(rev, relationships)?;
        let mut g = self.inner.write().map_err(|_| poisoned())?;
        *g = SharedInner {
            store: fresh,
            changes: Vec::new(),
            schemas: schema
                .map(|s| vec![(rev, s.to_string())])
                .unwrap_or_default(),
        };
        Ok(())
    }
}
