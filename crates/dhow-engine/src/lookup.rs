//! LookupResources: every resource of a type on which a subject has a permission.
//!
//! Correct first: a reverse walk from the subject through the by-subject index collects every
//! object connected to it (the only objects on which a check can be true), then each
//! candidate of the asked type is checked with one shared memo. A later issue makes it fast.
//! The walk's reads and the checks share the request's budgets.

use std::collections::{BTreeSet, HashSet, VecDeque};

use dhow_tuples::{ObjectRef, SnapshotReader, Subject, WILDCARD};

use crate::budget::Meter;
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
        let meter = Meter::new(&opts);
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
        let opts = Options {
            explain: false,
            ..opts
        };
        let mut evaluator = Evaluator::new(self, reader, &opts, &meter, subject.clone());
        let mut out = Vec::new();
        for c in candidates {
            if evaluator.query(c, permission)?.allowed {
                out.push(c.object_id.clone());
            }
        }
        Ok(out)
    }
}
