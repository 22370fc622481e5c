//! LookupResources: every resource of a type on which a subject has a permission.
//!
//! Correct first: a reverse walk from the subject through the by-subject index collects every
//! object connected to it (the only objects on which a check can be true), then each
//! candidate of the asked type is checked with one shared memo. A later issue makes it fast.

use std::collections::{BTreeSet, HashSet, VecDeque};

use dhow_tuples::{ObjectRef, SnapshotReader, Subject, WILDCARD};

use crate::check::Evaluator;
use crate::{Engine, Error, Options};

impl Engine {
    /// The ids of the resources of `resource_type` on which `subject` has `permission`, sorted.
    pub fn lookup_resources<R: SnapshotReader>(
        &self,
        reader: &R,
        resource_type: &str,
        permission: &str,
        subject: &Subject,
        opts: Options,
    ) -> Result<Vec<String>, Error> {
        self.validate_ref(resource_type, Some(permission))?;
        self.validate_ref(&subject.object.object_type, subject.relation.as_deref())?;
        let mut seen: HashSet<ObjectRef> = HashSet::new();
        let mut wild_types: HashSet<String> = HashSet::new();
        let mut queue = VecDeque::new();
        seen.insert(subject.object.clone());
        queue.push_back(subject.object.clone());
        while let Some(obj) = queue.pop_front() {
            let mut rels = reader.by_subject_object(&obj)?;
            if !obj.is_wildcard() && wild_types.insert(obj.object_type.clone()) {
                rels.extend(
                    reader.by_subject_object(&ObjectRef::new(obj.object_type.clone(), WILDCARD))?,
                );
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
        let mut evaluator = Evaluator::new(
            self,
            reader,
            Options {
                explain: false,
                ..opts
            },
            subject.clone(),
        );
        let mut out = Vec::new();
        for c in candidates {
            if evaluator.member(c, permission, 0)?.allowed {
                out.push(c.object_id.clone());
            }
        }
        Ok(out)
    }
}
