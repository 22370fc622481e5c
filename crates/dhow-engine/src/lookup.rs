//! LookupResources: every resource of a type on which a subject has a permission.
//!
//! Correct first: a reverse walk from the subject through the by-subject index collects every
//! object connected to it (the only objects on which a check can be true), then each
//! candidate of the asked type is checked with one shared memo (caveats are evaluated by the
//! checks, so the walk over-approximates). A later issue makes it fast.
//! The walk's reads and the checks share the request's budgets.

use std::collections::{BTreeSet, HashSet, VecDeque};

use dhow_tuples::{ObjectRef, SnapshotReader, Subject, WILDCARD};

use crate::budget::Meter;
use crate::caveat::Permissionship;
use crate::check::Evaluator;
use crate::{Engine, Error, Options};

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
        opts.check_context(opts.context.as_ref())?;
        self.validate_ref(resource_type, Some(permission))?;
        self.validate_ref(&subject.object.object_type, subject.relation.as_deref())?;
        let opts = Options {
            explain: false,
            ..opts
        };
        let meter = Meter::new(&opts);
        self.lookup_with(reader, resource_type, permission, subject, &opts, &meter)
    }

    /// LookupResources within a request's meter (the delegated lookup shares it); `opts` is
    /// validated and has proofs off.
    pub(crate) fn lookup_with<R: SnapshotReader>(
        &self,
        reader: &R,
        resource_type: &str,
        permission: &str,
        subject: &Subject,
        opts: &Options,
        meter: &Meter,
    ) -> Result<Vec<FoundResource>, Error> {
        let mut seen: HashSet<ObjectRef> = HashSet::new();
        let mut wild_types: HashSet<String> = HashSet::new();
        let mut queue = VecDeque::new();
        seen.insert(subject.object.clone());
        queue.push_back(subject.object.clone());
        while let Some(obj) = queue.pop_front() {
            meter.dispatch(|| format!("relationships of {obj}"))?;
            let mut rels = reader.by_subject_object(&obj)?;
            if !obj.is_wildcard() && wild_types.insert(obj.object_type.clone()) {
                let wild = ObjectRef::new(obj.object_type.clone(), WILDCARD);
                meter.dispatch(|| format!("relationships of {wild}"))?;
                rels.extend(reader.by_subject_object(&wild)?);
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
            .collect();
        let context = opts.context.clone();
        let mut evaluator = Evaluator::new(self, reader, opts, meter, subject.clone(), context);
        let mut out = Vec::new();
        for c in candidates {
            let o = evaluator.query(c, permission)?;
            if !o.value.is_false() {
                out.push(FoundResource {
                    id: c.object_id.clone(),
                    permissionship: o.value.permissionship(),
                });
            }
        }
        Ok(out)
    }
}
