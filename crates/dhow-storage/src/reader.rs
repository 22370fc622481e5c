//! Readers at one revision: `RocksReader` answers from a RocksDB snapshot, so concurrent
//! applies and GC never change what it sees; `OverlayReader` adds the writes staged so far
//! in an `apply` batch on top of a reader at the head, for preconditions and CREATE checks.

use std::cell::RefCell;
use std::collections::BTreeMap;

use dhow_tuples::{ObjectRef, Relationship, RelationshipFilter, Revision, SnapshotReader, Subject};
use rocksdb::{ColumnFamily, DBRawIteratorWithThreadMode, ReadOptions, SnapshotWithThreadMode, DB};

use crate::db::{read_window, Db, CF_BY_SUBJECT, CF_TUPLES};
use crate::error::{corrupt, rocks, StorageError};
use crate::keys::{
    decode_version, forward_key, forward_key_of, forward_prefix_of, prefix_end, resource_prefix,
    reverse_key, reverse_prefix_of, split_version_key, subject_prefix, version_deleted, KeyFields,
};

/// A reader at one revision over a RocksDB snapshot. It borrows the store; the snapshot is
/// released when the reader is dropped. It keeps one iterator per column family for all its
/// lookups: a check makes dozens, and creating a RocksDB iterator (one per level and file,
/// merged) cost more than the seek it was made for.
pub struct RocksReader<'a> {
    // The iterators read the snapshot: declared first, they are dropped before it.
    tuples_it: RefCell<Option<Iter<'a>>>,
    subjects_it: RefCell<Option<Iter<'a>>>,
    shared: &'a Db,
    snap: SnapshotWithThreadMode<'a, DB>,
    rev: u64,
}

type Iter<'a> = DBRawIteratorWithThreadMode<'a, DB>;

impl<'a> RocksReader<'a> {
    /// A reader at `rev`, which must lie in the readable window recorded in the snapshot.
    pub(crate) fn new(shared: &'a Db, rev: Revision) -> Result<Self, StorageError> {
        let snap = shared.db.snapshot();
        let (oldest, head) = read_window(shared, |cf, k| snap.get_cf(cf, k))?;
        if rev.0 > head || rev.0 < oldest {
            return Err(dhow_tuples::Error::RevisionUnavailable {
                asked: rev.0,
                oldest,
                newest: head,
            }
            .into());
        }
        Ok(RocksReader {
            tuples_it: RefCell::new(None),
            subjects_it: RefCell::new(None),
            shared,
            snap,
            rev: rev.0,
        })
    }

    /// A reader at `rev` without the window check (the applier reads at the head it holds).
    pub(crate) fn at_head(shared: &'a Db, rev: u64) -> Self {
        RocksReader {
            tuples_it: RefCell::new(None),
            subjects_it: RefCell::new(None),
            shared,
            snap: shared.db.snapshot(),
            rev,
        }
    }

    fn cf(&self, name: &str) -> Result<&'a ColumnFamily, StorageError> {
        self.shared.cf(name)
    }

    /// Runs `f` with this reader's iterator over `cf` (made on first use, at the snapshot, with
    /// no bounds: callers seek and stop themselves). A call made while the iterator is in use
    /// (a nested lookup on the same column family) gets a fresh one.
    fn with_iter<T>(
        &self,
        cf: &'static str,
        f: impl FnOnce(&mut Iter<'a>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let cell = if cf == CF_TUPLES {
            &self.tuples_it
        } else {
            &self.subjects_it
        };
        match cell.try_borrow_mut() {
            Ok(mut slot) => {
                if slot.is_none() {
                    *slot = Some(self.new_iter(cf)?);
                }
                match slot.as_mut() {
                    Some(it) => f(it),
                    None => f(&mut self.new_iter(cf)?),
                }
            }
            Err(_) => f(&mut self.new_iter(cf)?),
        }
    }

    fn new_iter(&self, cf: &str) -> Result<Iter<'a>, StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snap);
        Ok(self.shared.db.raw_iterator_cf_opt(self.cf(cf)?, opts))
    }

    /// The version of `fwd` alive at this revision: its created revision and raw value.
    ///
    /// A key's versions never overlap (a version ends at the revision its successor starts),
    /// so the alive one is the version created at or before this revision that is not yet
    /// deleted. They are found forward, a seek and a step per version (one, mostly): a
    /// `seek_for_prev` costs about twice as much in RocksDB, whose memtable (a skip list
    /// without back links) searches from the top for every step back.
    pub(crate) fn alive_raw(&self, fwd: &[u8]) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let rev = self.rev;
        self.with_iter(CF_TUPLES, |it| {
            it.seek(fwd);
            let mut found = None;
            while let Some((k, v)) = it.item() {
                if !k.starts_with(fwd) {
                    break;
                }
                let (kf, created) = split_version_key(k).map_err(corrupt(CF_TUPLES))?;
                if kf == fwd {
                    if created > rev {
                        break;
                    }
                    if version_deleted(v).map_err(corrupt(CF_TUPLES))? > rev {
                        found = Some((created, v.to_vec()));
                        break;
                    }
                }
                it.next();
            }
            it.status()
                .map_err(rocks(format!("reading a relationship at revision {rev}")))?;
            Ok(found)
        })
    }

    /// The relationship with forward key `fwd` alive at this revision.
    pub(crate) fn find_key(&self, fwd: &[u8]) -> Result<Option<Relationship>, StorageError> {
        match self.alive_raw(fwd)? {
            Some((_, v)) => decode_version(fwd, &v)
                .map(Some)
                .map_err(corrupt(CF_TUPLES)),
            None => Ok(None),
        }
    }

    /// Visits the relationships alive at this revision with forward keys in `[lower, upper)`,
    /// in key order, until `f` returns false.
    fn scan_forward(
        &self,
        lower: &[u8],
        upper: Option<Vec<u8>>,
        mut f: impl FnMut(&[u8], Relationship) -> bool,
    ) -> Result<(), StorageError> {
        let rev = self.rev;
        self.with_iter(CF_TUPLES, |it| {
            it.seek(lower);
            while let Some((k, v)) = it.item() {
                if upper.as_deref().is_some_and(|u| k >= u) {
                    break;
                }
                let (fwd, created) = split_version_key(k).map_err(corrupt(CF_TUPLES))?;
                if created <= rev {
                    let deleted = version_deleted(v).map_err(corrupt(CF_TUPLES))?;
                    if deleted > rev {
                        let rel = decode_version(fwd, v).map_err(corrupt(CF_TUPLES))?;
                        if !f(fwd, rel) {
                            return Ok(());
                        }
                    }
                }
                it.next();
            }
            it.status()
                .map_err(rocks(format!("scanning relationships at revision {rev}")))
        })
    }

    /// Visits the reverse-index entries starting with `prefix`, decoded.
    fn scan_reverse(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(KeyFields) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let rev = self.rev;
        self.with_iter(CF_BY_SUBJECT, |it| {
            it.seek(prefix);
            while let Some(k) = it.key() {
                if !k.starts_with(prefix) {
                    break;
                }
                let fields = KeyFields::decode_reverse(k).map_err(corrupt(CF_BY_SUBJECT))?;
                if !f(fields)? {
                    return Ok(());
                }
                it.next();
            }
            it.status().map_err(rocks(format!(
                "scanning the subject index at revision {rev}"
            )))
        })
    }

    fn by_resource_inner(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, StorageError> {
        let prefix = resource_prefix(resource, relation);
        let mut out = Vec::new();
        self.scan_forward(&prefix, prefix_end(&prefix), |_, r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    fn by_subject_inner(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, StorageError> {
        let mut out = Vec::new();
        self.scan_reverse(&subject_prefix(subject), |fields| {
            if let Some(r) = self.find_key(&fields.forward())? {
                out.push(r);
            }
            Ok(true)
        })?;
        Ok(out)
    }

    fn read_inner(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, StorageError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let after_key = after.map(forward_key);
        // The reverse index when the subject object is given and the resource id is not: the
        // forward prefix would then be the resource type alone, a scan of the whole type (a
        // MUST_NOT_MATCH precondition on `document#viewer@user:alice` read every document).
        let by_subject = filter.subject_type.is_some()
            && (filter.resource_type.is_none()
                || (filter.subject_id.is_some() && filter.resource_id.is_none()));
        if !by_subject {
            // The forward index, from the longest prefix of leading fields given (the whole
            // column family when there is none).
            let prefix = forward_prefix_of(
                [
                    filter.resource_type.as_deref(),
                    filter.resource_id.as_deref(),
                    filter.relation.as_deref(),
                    filter.subject_type.as_deref(),
                    filter.subject_id.as_deref(),
                ],
                filter.subject_relation.as_ref().map(|s| s.as_deref()),
            );
            let upper = prefix_end(&prefix);
            let lower = match &after_key {
                Some(a) if *a > prefix => a.clone(),
                _ => prefix,
            };
            self.scan_forward(&lower, upper, |fwd, r| {
                if after_key.as_deref() != Some(fwd) && filter.matches(&r) {
                    out.push(r);
                }
                out.len() < limit
            })?;
        } else {
            // The reverse index gives the candidates, which are then put in forward key order
            // (the order of every page) and resolved until the page is full.
            let prefix = reverse_prefix_of(
                filter.subject_type.as_deref(),
                filter.subject_id.as_deref(),
                filter.subject_relation.as_ref().map(|s| s.as_deref()),
                [
                    filter.resource_type.as_deref(),
                    filter.resource_id.as_deref(),
                    filter.relation.as_deref(),
                ],
            );
            let mut candidates = Vec::new();
            self.scan_reverse(&prefix, |fields| {
                if filter.matches(&fields.to_bare_relationship()) {
                    let fwd = fields.forward();
                    if after_key.as_ref().is_none_or(|a| fwd > *a) {
                        candidates.push(fwd);
                    }
                }
                Ok(true)
            })?;
            candidates.sort_unstable();
            for fwd in candidates {
                if let Some(r) = self.find_key(&fwd)? {
                    out.push(r);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

impl SnapshotReader for RocksReader<'_> {
    fn revision(&self) -> Revision {
        Revision(self.rev)
    }

    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        Ok(self.by_resource_inner(resource, relation)?)
    }

    fn by_resource_of_type(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        let prefix = forward_prefix_of(
            [
                Some(&resource.object_type),
                Some(&resource.object_id),
                Some(relation),
                Some(subject_type),
                None,
            ],
            None,
        );
        let mut out = Vec::new();
        self.scan_forward(&prefix, prefix_end(&prefix), |_, r| {
            out.push(r);
            true
        })
        .map_err(dhow_tuples::Error::from)?;
        Ok(out)
    }

    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, dhow_tuples::Error> {
        Ok(self.find_key(&forward_key_of(resource, relation, subject))?)
    }

    fn by_subject_object(
        &self,
        subject: &ObjectRef,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        Ok(self.by_subject_inner(subject)?)
    }

    /// The subject index alone: its entries are written with the first version of a key and
    /// removed only when garbage collection removes the key's last version, so they cover
    /// every key alive at any readable revision.
    fn by_subject_keys(
        &self,
        subject: &ObjectRef,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        let mut out = Vec::new();
        self.scan_reverse(&subject_prefix(subject), |fields| {
            out.push(fields.into_relationship(Default::default()));
            Ok(true)
        })
        .map_err(dhow_tuples::Error::from)?;
        Ok(out)
    }

    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        Ok(self.read_inner(filter, after, limit)?)
    }
}

/// What an apply batch has staged for one relationship key (see [`StagedOp`]).
pub(crate) type Staged<'b> = BTreeMap<Vec<u8>, StagedOp<'b>>;

/// One staged key: the relationship as last written, whether it is alive (created or
/// touched) or deleted, and whether a Create of the batch found no version alive at the head
/// (then no version needs ending when the batch is written).
pub(crate) struct StagedOp<'b> {
    /// Borrowed from the batch being applied.
    pub rel: &'b Relationship,
    pub alive: bool,
    pub absent_at_head: bool,
}

/// The state at the head plus the writes staged so far in one batch, at the batch's revision.
pub(crate) struct OverlayReader<'r, 'a> {
    pub base: &'r RocksReader<'a>,
    pub staged: &'r Staged<'r>,
    pub rev: Revision,
}

impl OverlayReader<'_, '_> {
    /// Base results not shadowed by the overlay, plus `extra`, ordered by `order`.
    fn merge<'x>(
        &self,
        base: Vec<Relationship>,
        extra: impl Iterator<Item = &'x Relationship>,
        order: fn(&Relationship) -> Vec<u8>,
    ) -> Vec<Relationship> {
        let mut v: Vec<(Vec<u8>, Relationship)> = base
            .into_iter()
            .filter(|r| !self.staged.contains_key(&forward_key(r)))
            .map(|r| (order(&r), r))
            .collect();
        v.extend(extra.map(|r| (order(r), r.clone())));
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, r)| r).collect()
    }

    fn alive(&self) -> impl Iterator<Item = &Relationship> {
        self.staged.values().filter(|s| s.alive).map(|s| s.rel)
    }
}

impl SnapshotReader for OverlayReader<'_, '_> {
    fn revision(&self) -> Revision {
        self.rev
    }

    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        let base = self.base.by_resource_inner(resource, relation)?;
        let extra = self
            .alive()
            .filter(|r| r.resource == *resource && r.relation == relation);
        Ok(self.merge(base, extra, forward_key))
    }

    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, dhow_tuples::Error> {
        let fwd = forward_key_of(resource, relation, subject);
        match self.staged.get(&fwd) {
            Some(s) => Ok(s.alive.then(|| s.rel.clone())),
            None => Ok(self.base.find_key(&fwd)?),
        }
    }

    fn by_subject_object(
        &self,
        subject: &ObjectRef,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        let base = self.base.by_subject_inner(subject)?;
        let extra = self.alive().filter(|r| r.subject.object == *subject);
        Ok(self.merge(base, extra, reverse_key))
    }

    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, dhow_tuples::Error> {
        // The overlay can hide at most as many base results as it has matching keys, so a
        // base page that much longer still holds the first `limit` of the merged view.
        let shadowing = self
            .staged
            .values()
            .filter(|s| filter.matches(s.rel))
            .count();
        let base = self
            .base
            .read_inner(filter, after, limit.saturating_add(shadowing))?;
        let after_key = after.map(forward_key);
        let extra = self.alive().filter(|r| {
            filter.matches(r) && after_key.as_ref().is_none_or(|a| forward_key(r) > *a)
        });
        let mut merged = self.merge(base, extra, forward_key);
        merged.truncate(limit);
        Ok(merged)
    }
}
