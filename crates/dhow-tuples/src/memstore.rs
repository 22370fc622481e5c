//! An in-memory MVCC relationship store: every version is stamped with the revision that
//! wrote it and the revision that deleted it, so a read at an old revision is exact. It is
//! the second implementation behind `SnapshotReader` (the RocksDB store is the first) and
//! the store the engine's tests and the validation runner use.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Error;
use crate::model::{ObjectRef, Relationship, Revision, Subject};
use crate::reader::{RelationshipFilter, SnapshotReader};

type Key = (String, String, String, String, String, Option<String>);
type RevKey = (String, String, Option<String>, String, String, String);

fn key_of(r: &Relationship) -> Key {
    (
        r.resource.object_type.clone(),
        r.resource.object_id.clone(),
        r.relation.clone(),
        r.subject.object.object_type.clone(),
        r.subject.object.object_id.clone(),
        r.subject.relation.clone(),
    )
}

fn rev_key_of(r: &Relationship) -> RevKey {
    (
        r.subject.object.object_type.clone(),
        r.subject.object.object_id.clone(),
        r.subject.relation.clone(),
        r.resource.object_type.clone(),
        r.resource.object_id.clone(),
        r.relation.clone(),
    )
}

#[derive(Debug, Clone)]
struct Version {
    created: Revision,
    deleted: Option<Revision>,
    rel: Relationship,
}

impl Version {
    fn alive_at(&self, rev: Revision) -> bool {
        self.created <= rev && self.deleted.is_none_or(|d| d > rev)
    }
}

/// One update of an atomic write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WriteOp {
    /// Insert; fails if the relationship already exists.
    Create(Relationship),
    /// Insert or replace (caveat and expiration may change).
    Touch(Relationship),
    /// Remove if present; absent is not an error.
    Delete(Relationship),
}

/// The in-memory MVCC store.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    versions: BTreeMap<Key, Vec<Version>>,
    reverse: BTreeMap<RevKey, ()>,
    head: Revision,
    oldest: Revision,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The newest revision.
    pub fn head(&self) -> Revision {
        self.head
    }

    /// The oldest revision that can still be read.
    pub fn oldest(&self) -> Revision {
        self.oldest
    }

    fn alive(&self, key: &Key, rev: Revision) -> Option<&Version> {
        self.versions
            .get(key)
            .and_then(|vs| vs.iter().rev().find(|v| v.alive_at(rev)))
    }

    /// Applies `ops` atomically at the next revision and returns it. Nothing changes if any
    /// operation fails. Within one write, a relationship may appear only once.
    pub fn write(&mut self, ops: &[WriteOp]) -> Result<Revision, Error> {
        let rev = Revision(self.head.0 + 1);
        self.stage(ops, rev)?;
        self.head = rev;
        Ok(rev)
    }

    /// Moves the head (used when staging several writes at one revision).
    pub(crate) fn set_head(&mut self, rev: Revision) {
        self.head = rev;
    }

    /// Validates `ops` against the state at `head` plus what is already staged at `rev`, then
    /// stages them at `rev` without moving the head. Nothing changes on error.
    pub(crate) fn stage(&mut self, ops: &[WriteOp], rev: Revision) -> Result<(), Error> {
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            let (WriteOp::Create(r) | WriteOp::Touch(r) | WriteOp::Delete(r)) = op;
            if !seen.insert(key_of(r)) {
                return Err(Error::Invalid(format!(
                    "relationship `{r}` appears more than once in one write"
                )));
            }
            if let WriteOp::Create(r) = op {
                if self.alive(&key_of(r), rev).is_some() {
                    return Err(Error::AlreadyExists(r.to_string()));
                }
            }
        }
        for op in ops {
            let (r, insert) = match op {
                WriteOp::Create(r) | WriteOp::Touch(r) => (r, true),
                WriteOp::Delete(r) => (r, false),
            };
            let vs = self.versions.entry(key_of(r)).or_default();
            // A version staged at this same revision is replaced outright.
            vs.retain(|v| v.created != rev);
            if let Some(v) = vs.iter_mut().rev().find(|v| v.deleted.is_none()) {
                v.deleted = Some(rev);
            }
            if insert {
                vs.push(Version {
                    created: rev,
                    deleted: None,
                    rel: r.clone(),
                });
                self.reverse.insert(rev_key_of(r), ());
            }
        }
        Ok(())
    }

    /// Forgets versions deleted at or before `before`; reads below it then fail.
    pub fn gc(&mut self, before: Revision) {
        let before = before.min(self.head);
        self.versions.retain(|_, vs| {
            vs.retain(|v| v.deleted.is_none_or(|d| d > before));
            !vs.is_empty()
        });
        let versions = &self.versions;
        self.reverse.retain(|k, _| {
            let key = (
                k.3.clone(),
                k.4.clone(),
                k.5.clone(),
                k.0.clone(),
                k.1.clone(),
                k.2.clone(),
            );
            versions.contains_key(&key)
        });
        self.oldest = self.oldest.max(before);
    }

    /// A store holding exactly `relationships`, created at `rev`, readable only at `rev`.
    /// Refuses a relationship given twice.
    pub fn restored(
        rev: Revision,
        relationships: &mut dyn Iterator<Item = Relationship>,
    ) -> Result<MemStore, Error> {
        let mut s = MemStore {
            head: rev,
            oldest: rev,
            ..MemStore::default()
        };
        for r in relationships {
            let key = key_of(&r);
            if s.versions.contains_key(&key) {
                return Err(Error::Invalid(format!(
                    "snapshot holds relationship `{r}` twice"
                )));
            }
            s.reverse.insert(rev_key_of(&r), ());
            s.versions.insert(
                key,
                vec![Version {
                    created: rev,
                    deleted: None,
                    rel: r,
                }],
            );
        }
        Ok(s)
    }

    /// A reader at `rev`, which must lie between `oldest()` and `head()`.
    pub fn snapshot(&self, rev: Revision) -> Result<MemSnapshot<'_>, Error> {
        if rev > self.head || rev < self.oldest {
            return Err(Error::RevisionUnavailable {
                asked: rev.0,
                oldest: self.oldest.0,
                newest: self.head.0,
            });
        }
        Ok(MemSnapshot { store: self, rev })
    }

    /// A reader at the newest revision.
    pub fn latest(&self) -> MemSnapshot<'_> {
        MemSnapshot {
            store: self,
            rev: self.head,
        }
    }
}

/// A read-only view of a `MemStore` at one revision.
#[derive(Debug, Clone, Copy)]
pub struct MemSnapshot<'a> {
    store: &'a MemStore,
    rev: Revision,
}

impl MemSnapshot<'_> {
    /// The relationships `resource#relation@...` alive at this revision (only those whose
    /// subject type is `subject_type`, if given), in key order.
    fn alive_under(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject_type: Option<&str>,
    ) -> Vec<Relationship> {
        let lo: Key = (
            resource.object_type.clone(),
            resource.object_id.clone(),
            relation.to_string(),
            subject_type.unwrap_or_default().to_string(),
            String::new(),
            None,
        );
        let mut out = Vec::new();
        for (k, vs) in self
            .store
            .versions
            .range((Bound::Included(lo), Bound::Unbounded))
        {
            if k.0 != resource.object_type
                || k.1 != resource.object_id
                || k.2 != relation
                || subject_type.is_some_and(|t| k.3 != t)
            {
                break;
            }
            if let Some(v) = vs.iter().rev().find(|v| v.alive_at(self.rev)) {
                out.push(v.rel.clone());
            }
        }
        out
    }
}

impl SnapshotReader for MemSnapshot<'_> {
    fn revision(&self) -> Revision {
        self.rev
    }

    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, Error> {
        Ok(self.alive_under(resource, relation, None))
    }

    fn by_resource_of_type(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, Error> {
        Ok(self.alive_under(resource, relation, Some(subject_type)))
    }

    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, Error> {
        let key: Key = (
            resource.object_type.clone(),
            resource.object_id.clone(),
            relation.to_string(),
            subject.object.object_type.clone(),
            subject.object.object_id.clone(),
            subject.relation.clone(),
        );
        Ok(self.store.alive(&key, self.rev).map(|v| v.rel.clone()))
    }

    fn by_subject_object(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error> {
        let lo: RevKey = (
            subject.object_type.clone(),
            subject.object_id.clone(),
            None,
            String::new(),
            String::new(),
            String::new(),
        );
        let mut out = Vec::new();
        for (k, _) in self
            .store
            .reverse
            .range((Bound::Included(lo), Bound::Unbounded))
        {
            if k.0 != subject.object_type || k.1 != subject.object_id {
                break;
            }
            let key = (
                k.3.clone(),
                k.4.clone(),
                k.5.clone(),
                k.0.clone(),
                k.1.clone(),
                k.2.clone(),
            );
            if let Some(v) = self.store.alive(&key, self.rev) {
                out.push(v.rel.clone());
            }
        }
        Ok(out)
    }

    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, Error> {
        let lower = match after {
            Some(a) => Bound::Excluded(key_of(a)),
            None => match (&filter.resource_type, &filter.resource_id) {
                (Some(t), Some(id)) => Bound::Included((
                    t.clone(),
                    id.clone(),
                    filter.relation.clone().unwrap_or_default(),
                    String::new(),
                    String::new(),
                    None,
                )),
                (Some(t), None) => Bound::Included((
                    t.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    None,
                )),
                _ => Bound::Unbounded,
            },
        };
        let mut out = Vec::new();
        for (k, vs) in self.store.versions.range((lower, Bound::Unbounded)) {
            if out.len() >= limit {
                break;
            }
            if let Some(t) = &filter.resource_type {
                if &k.0 > t {
                    break;
                }
            }
            if let Some(v) = vs.iter().rev().find(|v| v.alive_at(self.rev)) {
                if filter.matches(&v.rel) {
                    out.push(v.rel.clone());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_relationship;

    fn rel(s: &str) -> Relationship {
        parse_relationship(s).unwrap()
    }

    #[test]
    fn mvcc_reads_are_exact() {
        let mut s = MemStore::new();
        let a = rel("document:1#viewer@user:alice");
        let b = rel("document:1#viewer@user:bob");
        let r1 = s.write(&[WriteOp::Create(a.clone())]).unwrap();
        let r2 = s.write(&[WriteOp::Create(b.clone())]).unwrap();
        let r3 = s.write(&[WriteOp::Delete(a.clone())]).unwrap();
        let doc = ObjectRef::new("document", "1");
        assert_eq!(
            s.snapshot(r1).unwrap().by_resource(&doc, "viewer").unwrap(),
            vec![a.clone()]
        );
        assert_eq!(
            s.snapshot(r2).unwrap().by_resource(&doc, "viewer").unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(
            s.snapshot(r3).unwrap().by_resource(&doc, "viewer").unwrap(),
            vec![b.clone()]
        );
        assert_eq!(
            s.snapshot(Revision(0))
                .unwrap()
                .by_resource(&doc, "viewer")
                .unwrap(),
            vec![]
        );
        assert!(s
            .snapshot(r2)
            .unwrap()
            .find(&doc, "viewer", &a.subject)
            .unwrap()
            .is_some());
        assert!(s
            .snapshot(r3)
            .unwrap()
            .find(&doc, "viewer", &a.subject)
            .unwrap()
            .is_none());
        let alice = ObjectRef::new("user", "alice");
        assert_eq!(
            s.snapshot(r2).unwrap().by_subject_object(&alice).unwrap(),
            vec![a.clone()]
        );
        assert!(s
            .snapshot(r3)
            .unwrap()
            .by_subject_object(&alice)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn failed_write_changes_nothing() {
        let mut s = MemStore::new();
        let a = rel("document:1#viewer@user:alice");
        s.write(&[WriteOp::Create(a.clone())]).unwrap();
        let b = rel("document:1#viewer@user:bob");
        let err = s
            .write(&[WriteOp::Create(b.clone()), WriteOp::Create(a.clone())])
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(_)));
        assert_eq!(s.head(), Revision(1));
        assert!(s
            .latest()
            .find(&b.resource, "viewer", &b.subject)
            .unwrap()
            .is_none());
    }

    #[test]
    fn touch_replaces_and_gc_forgets() {
        let mut s = MemStore::new();
        let a = rel("document:1#viewer@user:alice");
        let a2 = rel("document:1#viewer@user:alice[expiration:2030-01-01T00:00:00Z]");
        let r1 = s.write(&[WriteOp::Touch(a.clone())]).unwrap();
        let r2 = s.write(&[WriteOp::Touch(a2.clone())]).unwrap();
        assert_eq!(
            s.snapshot(r1)
                .unwrap()
                .find(&a.resource, "viewer", &a.subject)
                .unwrap(),
            Some(a.clone())
        );
        assert_eq!(
            s.snapshot(r2)
                .unwrap()
                .find(&a.resource, "viewer", &a.subject)
                .unwrap(),
            Some(a2.clone())
        );
        s.gc(r2);
        assert!(matches!(
            s.snapshot(r1),
            Err(Error::RevisionUnavailable { .. })
        ));
        assert_eq!(
            s.latest().find(&a.resource, "viewer", &a.subject).unwrap(),
            Some(a2)
        );
    }

    #[test]
    fn read_paginates_with_filter() {
        let mut s = MemStore::new();
        let ops: Vec<_> = (0..10)
            .map(|i| WriteOp::Create(rel(&format!("document:{i}#viewer@user:u{i}"))))
            .chain([WriteOp::Create(rel("folder:f#viewer@user:x"))])
            .collect();
        s.write(&ops).unwrap();
        let f = RelationshipFilter {
            resource_type: Some("document".into()),
            ..Default::default()
        };
        let snap = s.latest();
        let mut all = Vec::new();
        let mut after: Option<Relationship> = None;
        loop {
            let page = snap.read(&f, after.as_ref(), 3).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            all.extend(page);
        }
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|r| r.resource.object_type == "document"));
    }
}
