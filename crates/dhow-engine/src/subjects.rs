//! LookupSubjects: every subject of one type (and subject relation) that has a permission on
//! a resource, as a set that may hold a wildcard with exclusions (`user:* - {user:bob}`).

use std::collections::BTreeSet;

use dhow_schema::{ArrowMode, Member, Rewrite};
use dhow_tuples::{ObjectRef, SnapshotReader, Subject, Timestamp, WILDCARD};

use crate::budget::{grow, Meter};
use crate::table::{Enter, Leave, Same, Stop, Table};
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

    /// Nobody: no subject and no wildcard.
    pub fn is_empty(&self) -> bool {
        self.concrete.is_empty() && self.wildcard.is_none()
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

impl Same for SubjectSet {
    fn same(&self, other: &Self) -> bool {
        self == other
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
    meter: &'a Meter,
    now: Timestamp,
    target_type: String,
    target_relation: Option<String>,
    table: Table<SubjectSet>,
}

impl<R: SnapshotReader> Lookup<'_, R> {
    /// The subjects of `resource#relation`, as one top-level query.
    fn query(&mut self, resource: &ObjectRef, relation: &str) -> Result<SubjectSet, Error> {
        loop {
            match self.member(resource, relation, 0, false) {
                Ok(s) => return Ok(s),
                Err(Stop::Error(e)) => return Err(e),
                // Relationships outside the schema closed a cycle: again, conservatively.
                Err(Stop::Restart) => self.table.go_conservative(),
            }
        }
    }

    /// The subjects of `resource#relation`; `negative` says the step that leads here is under
    /// an excluded operand.
    fn member(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
        negative: bool,
    ) -> Result<SubjectSet, Stop> {
        grow(|| self.member_inner(resource, relation, depth, negative))
    }

    fn member_inner(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
        negative: bool,
    ) -> Result<SubjectSet, Stop> {
        let at = || format!("{resource}#{relation}");
        self.meter.depth(depth, at)?;
        let engine = self.engine;
        let member = engine.member_of(resource, relation)?;
        let class = engine.class(&resource.object_type, relation);
        loop {
            // A cycle adds nothing beyond what the cut assumes, except the subject set itself
            // (as Check's first rule).
            let entered = self.table.enter(
                (resource.clone(), relation.to_string()),
                class,
                negative,
                |a, b, n| engine.allows(a, b, n),
                SubjectSet::default(),
            )?;
            match entered {
                Enter::Known(s) => return Ok(s),
                Enter::Cut(s) => return Ok(self.with_itself(resource, relation, s)),
                Enter::Evaluate => {}
            }
            let set = self
                .meter
                .dispatch(at)
                .map_err(Stop::from)
                .and_then(|()| match member {
                    Member::Relation(_) => self.relation(resource, relation, depth),
                    Member::Permission(p) => self.rewrite(resource, &p.rewrite, depth + 1, false),
                });
            let set = match set {
                Ok(s) => s,
                Err(e) => {
                    self.table.abandon();
                    return Err(e);
                }
            };
            let set = self.with_itself(resource, relation, set);
            if self.table.leave(&set, false) == Leave::Done {
                return Ok(set);
            }
        }
    }

    /// `set`, plus the subject set `resource#relation` itself when that is of the asked kind.
    fn with_itself(&self, resource: &ObjectRef, relation: &str, mut set: SubjectSet) -> SubjectSet {
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
        set
    }

    fn relation(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<SubjectSet, Stop> {
        let mut set = SubjectSet::default();
        self.meter.dispatch(|| format!("{resource}#{relation}"))?;
        for r in Engine::visible(self.reader.by_resource(resource, relation)?, self.now)? {
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
                let inner = self.member(&s.object, sub_rel, depth + 1, false)?;
                set = set.union(inner);
            }
        }
        Ok(set)
    }

    /// Evaluates one node of a permission's expression; each level of nesting is one step of
    /// depth.
    fn rewrite(
        &mut self,
        resource: &ObjectRef,
        rw: &Rewrite,
        depth: u32,
        negative: bool,
    ) -> Result<SubjectSet, Stop> {
        self.meter
            .depth(depth, || format!("{resource} (in an expression)"))?;
        grow(|| self.rewrite_inner(resource, rw, depth, negative))
    }

    fn rewrite_inner(
        &mut self,
        resource: &ObjectRef,
        rw: &Rewrite,
        depth: u32,
        negative: bool,
    ) -> Result<SubjectSet, Stop> {
        Ok(match rw {
            Rewrite::Nil => SubjectSet::default(),
            Rewrite::Computed(name) => self.member(resource, name, depth + 1, negative)?,
            Rewrite::Union(items) => {
                let mut acc = SubjectSet::default();
                for i in items {
                    acc = acc.union(self.rewrite(resource, i, depth + 1, negative)?);
                }
                acc
            }
            Rewrite::Intersection(items) => {
                let mut acc: Option<SubjectSet> = None;
                for i in items {
                    let s = self.rewrite(resource, i, depth + 1, negative)?;
                    acc = Some(match acc {
                        None => s,
                        Some(a) => a.intersect(s),
                    });
                }
                acc.unwrap_or_default()
            }
            Rewrite::Exclusion(a, b) => {
                let a = self.rewrite(resource, a, depth + 1, negative)?;
                let b = self.rewrite(resource, b, depth + 1, true)?;
                a.subtract(b)
            }
            Rewrite::Arrow {
                tupleset,
                computed,
                mode,
            } => {
                let schema = self.engine.schema().clone();
                let mut acc: Option<SubjectSet> = None;
                self.meter.dispatch(|| format!("{resource}#{tupleset}"))?;
                for r in Engine::visible(self.reader.by_resource(resource, tupleset)?, self.now)? {
                    let t = &r.subject.object;
                    if t.is_wildcard() {
                        continue;
                    }
                    let s = if schema.member(&t.object_type, computed).is_none() {
                        SubjectSet::default()
                    } else {
                        self.member(t, computed, depth + 1, negative)?
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
        let meter = Meter::new(&opts);
        let mut l = Lookup {
            engine: self,
            reader,
            meter: &meter,
            now: opts.now,
            target_type: subject_type.to_string(),
            target_relation: subject_relation.map(str::to_string),
            table: Table::new(true),
        };
        l.query(resource, permission)
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
