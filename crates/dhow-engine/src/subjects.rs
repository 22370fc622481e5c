//! LookupSubjects: every subject of one type (and subject relation) that has a permission on
//! a resource, as a set that may hold a wildcard with exclusions (`user:* - {user:bob}`).

use std::collections::{BTreeSet, HashMap, HashSet};

use dhow_schema::{ArrowMode, Member, Rewrite};
use dhow_tuples::{ObjectRef, SnapshotReader, Subject, WILDCARD};

use crate::{Engine, Error, Options};

/// A set of subjects of one type: some named ones, plus optionally every subject of the type
/// except some. Invariant: `concrete` and the exclusions are disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectSet {
    pub concrete: BTreeSet<Subject>,
    /// `Some(excluded)` when the wildcard is in the set.
    pub wildcard: Option<BTreeSet<Subject>>,
}

impl SubjectSet {
    /// Is `s` a member? (`s` must be a concrete subject of the set's type.)
    pub fn contains(&self, s: &Subject) -> bool {
        self.concrete.contains(s) || self.wildcard.as_ref().is_some_and(|ex| !ex.contains(s))
    }

    fn normalize(mut self) -> Self {
        if let Some(ex) = &mut self.wildcard {
            ex.retain(|s| !self.concrete.contains(s));
        }
        self
    }

    /// `self ∪ other`.
    pub fn union(mut self, other: SubjectSet) -> SubjectSet {
        let wildcard = match (self.wildcard.take(), other.wildcard) {
            (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
            (Some(a), None) => Some(a),
            (None, Some(b)) => Some(b),
            (None, None) => None,
        };
        let mut concrete = self.concrete;
        concrete.extend(other.concrete);
        SubjectSet { concrete, wildcard }.normalize()
    }

    /// `self ∩ other`.
    pub fn intersect(self, other: SubjectSet) -> SubjectSet {
        let concrete = self
            .concrete
            .iter()
            .filter(|s| other.contains(s))
            .chain(other.concrete.iter().filter(|s| self.contains(s)))
            .cloned()
            .collect();
        let wildcard = match (self.wildcard, other.wildcard) {
            (Some(a), Some(b)) => Some(a.union(&b).cloned().collect()),
            _ => None,
        };
        SubjectSet { concrete, wildcard }.normalize()
    }

    /// `self \ other`.
    pub fn subtract(self, other: SubjectSet) -> SubjectSet {
        let mut candidates: BTreeSet<Subject> = self.concrete.clone();
        if let Some(ex) = &other.wildcard {
            candidates.extend(ex.iter().cloned());
        }
        let concrete = candidates
            .into_iter()
            .filter(|s| self.contains(s) && !other.contains(s))
            .collect();
        let wildcard = match (&self.wildcard, &other.wildcard) {
            (Some(a), None) => Some(a.union(&other.concrete).cloned().collect()),
            _ => None,
        };
        SubjectSet { concrete, wildcard }.normalize()
    }
}

/// One result of LookupSubjects: a subject, or the wildcard with the subjects it excludes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FoundSubject {
    pub subject: Subject,
    /// For a wildcard: the subjects it does not include.
    pub excluded: Vec<Subject>,
}

struct Lookup<'a, R: SnapshotReader> {
    engine: &'a Engine,
    reader: &'a R,
    opts: Options,
    target_type: String,
    target_relation: Option<String>,
    memo: HashMap<(ObjectRef, String), SubjectSet>,
    in_progress: HashSet<(ObjectRef, String)>,
    cycle_cuts: u64,
}

impl<R: SnapshotReader> Lookup<'_, R> {
    fn member(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<SubjectSet, Error> {
        if depth > self.opts.max_depth {
            return Err(Error::MaxDepth {
                max_depth: self.opts.max_depth,
                resource: resource.clone(),
                relation: relation.to_string(),
            });
        }
        let key = (resource.clone(), relation.to_string());
        if let Some(s) = self.memo.get(&key) {
            return Ok(s.clone());
        }
        if self.in_progress.contains(&key) {
            self.cycle_cuts += 1;
            return Ok(SubjectSet::default());
        }
        let engine = self.engine;
        let member = engine.member_of(resource, relation)?;
        self.in_progress.insert(key.clone());
        let cuts = self.cycle_cuts;
        let set = match member {
            Member::Relation(_) => self.relation(resource, relation, depth),
            Member::Permission(p) => self.rewrite(resource, &p.rewrite, depth),
        };
        self.in_progress.remove(&key);
        let mut set = set?;
        if resource.object_type == self.target_type
            && self.target_relation.as_deref() == Some(relation)
        {
            set.concrete.insert(Subject::set(
                resource.object_type.clone(),
                resource.object_id.clone(),
                relation,
            ));
            set = set.normalize();
        }
        if cuts == self.cycle_cuts {
            self.memo.insert(key, set.clone());
        }
        Ok(set)
    }

    fn relation(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<SubjectSet, Error> {
        let mut set = SubjectSet::default();
        for r in Engine::visible(self.reader.by_resource(resource, relation)?, self.opts.now)? {
            let s = r.subject;
            if s.object.object_type == self.target_type && s.relation == self.target_relation {
                if s.is_wildcard() {
                    set = set.union(SubjectSet {
                        concrete: BTreeSet::new(),
                        wildcard: Some(BTreeSet::new()),
                    });
                } else {
                    set.concrete.insert(s.clone());
                    set = set.normalize();
                }
            }
            if let Some(sub_rel) = &s.relation {
                let inner = self.member(&s.object, sub_rel, depth + 1)?;
                set = set.union(inner);
            }
        }
        Ok(set)
    }

    fn rewrite(
        &mut self,
        resource: &ObjectRef,
        rw: &Rewrite,
        depth: u32,
    ) -> Result<SubjectSet, Error> {
        Ok(match rw {
            Rewrite::Nil => SubjectSet::default(),
            Rewrite::Computed(name) => self.member(resource, name, depth + 1)?,
            Rewrite::Union(items) => {
                let mut acc = SubjectSet::default();
                for i in items {
                    acc = acc.union(self.rewrite(resource, i, depth)?);
                }
                acc
            }
            Rewrite::Intersection(items) => {
                let mut acc: Option<SubjectSet> = None;
                for i in items {
                    let s = self.rewrite(resource, i, depth)?;
                    acc = Some(match acc {
                        None => s,
                        Some(a) => a.intersect(s),
                    });
                }
                acc.unwrap_or_default()
            }
            Rewrite::Exclusion(a, b) => {
                let a = self.rewrite(resource, a, depth)?;
                let b = self.rewrite(resource, b, depth)?;
                a.subtract(b)
            }
            Rewrite::Arrow {
                tupleset,
                computed,
                mode,
            } => {
                let schema = self.engine.schema().clone();
                let mut acc: Option<SubjectSet> = None;
                for r in
                    Engine::visible(self.reader.by_resource(resource, tupleset)?, self.opts.now)?
                {
                    let t = &r.subject.object;
                    if t.is_wildcard() {
                        continue;
                    }
                    let s = if schema.member(&t.object_type, computed).is_none() {
                        SubjectSet::default()
                    } else {
                        self.member(t, computed, depth + 1)?
                    };
                    acc = Some(match (acc, mode) {
                        (None, _) => s,
                        (Some(a), ArrowMode::Any) => a.union(s),
                        (Some(a), ArrowMode::All) => a.intersect(s),
                    });
                }
                acc.unwrap_or_default()
            }
        })
    }
}

impl Engine {
    /// Every subject of type `subject_type` (with `subject_relation`, `None` for plain objects)
    /// that has `permission` on `resource`, as a set.
    pub fn lookup_subject_set<R: SnapshotReader>(
        &self,
        reader: &R,
        resource: &ObjectRef,
        permission: &str,
        subject_type: &str,
        subject_relation: Option<&str>,
        opts: Options,
    ) -> Result<SubjectSet, Error> {
        self.validate_ref(&resource.object_type, Some(permission))?;
        self.validate_ref(subject_type, subject_relation)?;
        let mut l = Lookup {
            engine: self,
            reader,
            opts,
            target_type: subject_type.to_string(),
            target_relation: subject_relation.map(str::to_string),
            memo: HashMap::new(),
            in_progress: HashSet::new(),
            cycle_cuts: 0,
        };
        l.member(resource, permission, 0)
    }

    /// LookupSubjects: the subjects, sorted, with a wildcard (if any) first.
    pub fn lookup_subjects<R: SnapshotReader>(
        &self,
        reader: &R,
        resource: &ObjectRef,
        permission: &str,
        subject_type: &str,
        subject_relation: Option<&str>,
        opts: Options,
    ) -> Result<Vec<FoundSubject>, Error> {
        let set = self.lookup_subject_set(
            reader,
            resource,
            permission,
            subject_type,
            subject_relation,
            opts,
        )?;
        let mut out = Vec::new();
        if let Some(ex) = set.wildcard {
            out.push(FoundSubject {
                subject: Subject::object(subject_type, WILDCARD),
                excluded: ex.into_iter().collect(),
            });
        }
        out.extend(set.concrete.into_iter().map(|s| FoundSubject {
            subject: s,
            excluded: Vec::new(),
        }));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str) -> Subject {
        Subject::object("user", id)
    }
    fn set(c: &[&str], w: Option<&[&str]>) -> SubjectSet {
        SubjectSet {
            concrete: c.iter().map(|x| s(x)).collect(),
            wildcard: w.map(|e| e.iter().map(|x| s(x)).collect()),
        }
        .normalize()
    }

    #[test]
    fn algebra_matches_membership() {
        let universe = ["a", "b", "c", "d"];
        let sets = [
            set(&[], None),
            set(&["a"], None),
            set(&["a", "b"], None),
            set(&[], Some(&[])),
            set(&[], Some(&["a"])),
            set(&["c"], Some(&["a", "b"])),
        ];
        for x in &sets {
            for y in &sets {
                let u = x.clone().union(y.clone());
                let i = x.clone().intersect(y.clone());
                let d = x.clone().subtract(y.clone());
                for id in universe {
                    let m = s(id);
                    assert_eq!(
                        u.contains(&m),
                        x.contains(&m) || y.contains(&m),
                        "{x:?} ∪ {y:?} at {id}"
                    );
                    assert_eq!(
                        i.contains(&m),
                        x.contains(&m) && y.contains(&m),
                        "{x:?} ∩ {y:?} at {id}"
                    );
                    assert_eq!(
                        d.contains(&m),
                        x.contains(&m) && !y.contains(&m),
                        "{x:?} - {y:?} at {id}"
                    );
                }
            }
        }
    }
}
