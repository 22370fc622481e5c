//! LookupResources: every resource of a type on which a subject has a permission.
//!
//! A reverse walk from the subject through the subject index collects every object connected
//! to it (the only objects on which a check can be true), then each candidate of the asked
//! type is checked with one shared memo (caveats are evaluated by the checks, so the walk
//! over-approximates). The walk reads index keys only ([`SnapshotReader::by_subject_keys`]):
//! a key that is not alive at the revision adds a candidate its check refutes. What the walk
//! read of the subject's own keys (and its type's wildcard's) then answers the checks' direct
//! reads of the subject: a candidate the subject has no key on is not read for it.
//! The walk's reads and the checks share the request's budgets.
//!
//! Paging by work: candidates are checked in id order, only those after the page's cursor,
//! and the checks stop when the page is full: a page of 1 out of 100,000 results checks one
//! candidate, not 100,000. The walk is still done whole, but it reads the relationships of an
//! object only if its type can lead to the asked type at all (some chain of relations allows
//! it, directly or through others): the candidates themselves, and every object of a type no
//! relation leads from, are collected without a read. This is sound because a stored
//! relationship always fits the schema (a schema that would orphan one is refused).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use dhow_tuples::{
    Error as TupleError, ObjectRef, Relationship, RelationshipFilter, Revision, SnapshotReader,
    Subject, SubjectRelation, WILDCARD,
};

use crate::budget::Meter;
use crate::caveat::Permissionship;
use crate::check::Evaluator;
use crate::{Engine, Error, Options};

/// Which results of a lookup to return: those with an id after `after`, at most `limit` of
/// them (0: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupPage {
    pub after: Option<String>,
    pub limit: usize,
}

impl LookupPage {
    /// Every result.
    pub fn all() -> LookupPage {
        LookupPage::default()
    }

    fn full(&self, n: usize) -> bool {
        self.limit > 0 && n >= self.limit
    }
}

/// One result of LookupResources: a resource id, allowed or conditional.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FoundResource {
    pub id: String,
    /// [`Permissionship::Allowed`] or [`Permissionship::Conditional`].
    pub permissionship: Permissionship,
}

impl PartialOrd for Permissionship {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Permissionship {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |p: &Permissionship| match p {
            Permissionship::Denied => 0,
            Permissionship::Conditional { .. } => 1,
            Permissionship::Allowed => 2,
        };
        rank(self)
            .cmp(&rank(other))
            .then_with(|| self.missing().cmp(other.missing()))
    }
}

impl Engine {
    /// The ids of the resources of `resource_type` on which `subject` has `permission`
    /// (allowed, not merely conditional), sorted.
    pub fn lookup_resources<R: SnapshotReader>(
        &self,
        reader: &R,
        resource_type: &str,
        permission: &str,
        subject: &Subject,
        opts: Options,
    ) -> Result<Vec<String>, Error> {
        Ok(self
            .lookup_found_resources(reader, resource_type, permission, subject, opts)?
            .into_iter()
            .filter(|f| f.permissionship.is_allowed())
            .map(|f| f.id)
            .collect())
    }

    /// The resources of `resource_type` on which `subject` has `permission`, allowed or
    /// conditional on caveat context (with the missing parameters), sorted by id.
    pub fn lookup_found_resources<R: SnapshotReader>(
        &self,
        reader: &R,
        resource_type: &str,
        permission: &str,
        subject: &Subject,
        opts: Options,
    ) -> Result<Vec<FoundResource>, Error> {
        self.lookup_found_resources_page(
            reader,
            resource_type,
            permission,
            subject,
            &LookupPage::all(),
            opts,
        )
    }

    /// One page of [`Engine::lookup_found_resources`]: the results after `page.after`, at
    /// most `page.limit`, checking only as many candidates as the page needs.
    pub fn lookup_found_resources_page<R: SnapshotReader>(
        &self,
        reader: &R,
        resource_type: &str,
        permission: &str,
        subject: &Subject,
        page: &LookupPage,
        opts: Options,
    ) -> Result<Vec<FoundResource>, Error> {
        opts.check_context(opts.context.as_ref())?;
        self.validate_ref(resource_type, Some(permission))?;
        self.validate_ref(&subject.object.object_type, subject.relation.as_deref())?;
        let opts = Options {
            explain: false,
            ..opts
        };
        let meter = Meter::new(&opts);
        self.lookup_with(
            reader,
            resource_type,
            permission,
            subject,
            &opts,
            &meter,
            page,
            |_, p| Ok(Some(p)),
        )
    }

    /// The types whose objects can be subjects of a chain of relationships that ends at a
    /// resource of `resource_type`: those some relation of `resource_type` allows, those
    /// some relation of theirs allows, and so on. Linear in the schema's size.
    fn types_leading_to<'s>(&'s self, resource_type: &'s str) -> HashSet<&'s str> {
        let mut leads: HashSet<&str> = HashSet::new();
        let mut queue = vec![resource_type];
        let mut expanded: HashSet<&str> = HashSet::new();
        while let Some(t) = queue.pop() {
            if !expanded.insert(t) {
                continue;
            }
            let Some(def) = self.schema().definitions.get(t) else {
                continue;
            };
            for rel in def.relations.values() {
                for a in &rel.allowed {
                    if leads.insert(a.type_name.as_str()) {
                        queue.push(a.type_name.as_str());
                    }
                }
            }
        }
        leads
    }

    /// LookupResources within a request's meter (the delegated lookup shares it); `opts` is
    /// validated and has proofs off. `keep` sees each candidate the subject has the permission
    /// on (in id order, after the page's cursor) and says what to return for it, if anything;
    /// the walk stops when the page is full.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn lookup_with<R: SnapshotReader>(
        &self,
        reader: &R,
        resource_type: &str,
        permission: &str,
        subject: &Subject,
        opts: &Options,
        meter: &Meter,
        page: &LookupPage,
        mut keep: impl FnMut(&ObjectRef, Permissionship) -> Result<Option<Permissionship>, Error>,
    ) -> Result<Vec<FoundResource>, Error> {
        let leads = self.types_leading_to(resource_type);
        let mut seen: HashSet<ObjectRef> = HashSet::new();
        let mut wild_types: HashSet<String> = HashSet::new();
        let mut queue = VecDeque::new();
        let subject_wild = ObjectRef::new(subject.object.object_type.clone(), WILDCARD);
        let mut known = Known::default();
        seen.insert(subject.object.clone());
        queue.push_back(subject.object.clone());
        // The walk reads keys only (the subject index, no second read to see each key alive
        // at the revision): a key that is not alive adds a candidate the check then refutes.
        while let Some(obj) = queue.pop_front() {
            if !leads.contains(obj.object_type.as_str()) {
                continue;
            }
            meter.dispatch(|| format!("relationships of {obj}"))?;
            let mut rels = reader.by_subject_keys(&obj)?;
            if obj == subject.object {
                known.learn(&obj, &rels);
            }
            if !obj.is_wildcard() && wild_types.insert(obj.object_type.clone()) {
                let wild = ObjectRef::new(obj.object_type.clone(), WILDCARD);
                meter.dispatch(|| format!("relationships of {wild}"))?;
                let wild_rels = reader.by_subject_keys(&wild)?;
                if wild == subject_wild {
                    known.learn(&wild, &wild_rels);
                }
                rels.extend(wild_rels);
            }
            for r in rels {
                if r.is_expired_at(opts.now) {
                    continue;
                }
                if seen.insert(r.resource.clone()) {
                    queue.push_back(r.resource);
                }
            }
        }
        let candidates: BTreeSet<&ObjectRef> = seen
            .iter()
            .filter(|o| o.object_type == resource_type && !o.is_wildcard())
            .filter(|o| page.after.as_ref().is_none_or(|a| o.object_id > *a))
            .collect();
        let context = opts.context.clone();
        let reader = KnownReader {
            inner: reader,
            known,
        };
        let mut evaluator = Evaluator::new(self, &reader, opts, meter, subject.clone(), context);
        let mut out = Vec::new();
        for c in candidates {
            if page.full(out.len()) {
                break;
            }
            let o = evaluator.query(c, permission)?;
            if o.value.is_false() {
                continue;
            }
            if let Some(permissionship) = keep(c, o.value.permissionship())? {
                out.push(FoundResource {
                    id: c.object_id.clone(),
                    permissionship,
                });
            }
        }
        Ok(out)
    }
}

/// What the walk read of the subject index of the lookup's subject and of its type's
/// wildcard: for each of these subject objects, for each resource, the relations and subject
/// relations of the keys naming it. An object not learned knows nothing.
#[derive(Default)]
struct Known(HashMap<ObjectRef, HashMap<ObjectRef, Vec<(String, SubjectRelation)>>>);

impl Known {
    fn learn(&mut self, subject: &ObjectRef, rels: &[Relationship]) {
        let keys = self.0.entry(subject.clone()).or_default();
        for r in rels {
            keys.entry(r.resource.clone())
                .or_default()
                .push((r.relation.clone(), r.subject.relation.clone()));
        }
    }

    /// False when the key `resource#relation@subject` is certainly not alive: the subject's
    /// object was learned and holds no such key.
    fn may_hold(&self, resource: &ObjectRef, relation: &str, subject: &Subject) -> bool {
        let Some(keys) = self.0.get(&subject.object) else {
            return true;
        };
        keys.get(resource).is_some_and(|ks| {
            ks.iter()
                .any(|(rel, srel)| rel == relation && *srel == subject.relation)
        })
    }
}

/// The reader a lookup's checks use: `find` of the subject (or its wildcard) on a resource
/// the walk saw no key for answers "absent" with no read (most candidates have neither the
/// subject nor the wildcard on their direct relations); everything else goes to the store.
struct KnownReader<'r, R> {
    inner: &'r R,
    known: Known,
}

impl<R: SnapshotReader> SnapshotReader for KnownReader<'_, R> {
    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, TupleError> {
        self.inner.by_resource(resource, relation)
    }

    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, TupleError> {
        if !self.known.may_hold(resource, relation, subject) {
            return Ok(None);
        }
        self.inner.find(resource, relation, subject)
    }

    fn by_resource_of_type(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, TupleError> {
        self.inner
            .by_resource_of_type(resource, relation, subject_type)
    }

    fn by_subject_object(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, TupleError> {
        self.inner.by_subject_object(subject)
    }

    fn by_subject_keys(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, TupleError> {
        self.inner.by_subject_keys(subject)
    }

    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, TupleError> {
        self.inner.read(filter, after, limit)
    }
}
