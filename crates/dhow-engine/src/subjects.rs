//! LookupSubjects: every subject of one type (and subject relation) that has a permission on
//! a resource, as a set that may hold a wildcard with exclusions (`user:* - {user:bob}`).

use std::collections::BTreeMap;

use dhow_caveat::Context;
use dhow_schema::{ArrowMode, Member, Rewrite};
use dhow_tuples::{ObjectRef, Relationship, SnapshotReader, Subject, Timestamp, WILDCARD};

use crate::budget::{grow, Meter};
use crate::caveat::{Permissionship, Tri};
use crate::table::{Enter, Leave, Same, Stop, Table};
use crate::{Engine, Error, Options};

/// A set of subjects of one type where each subject is in, out, or in only if caveats hold
/// (three-valued): the subjects met explicitly with their values, and the value of every
/// other subject of the type (the wildcard's; out when there is no wildcard). The operations
/// are pointwise Kleene logic, so `user:* - {user:bob}` is the wildcard in with `user:bob`
/// out, and a conditional wildcard minus a subject is that subject out, the others
/// conditional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectSet {
    members: BTreeMap<Subject, Tri>,
    wildcard: Tri,
}

impl Default for SubjectSet {
    fn default() -> Self {
        SubjectSet {
            members: BTreeMap::new(),
            wildcard: Tri::F,
        }
    }
}

impl SubjectSet {
    /// Is `s` (a concrete subject of the set's type) in the set, whatever the context?
    pub fn contains(&self, s: &Subject) -> bool {
        self.value(s).is_true()
    }

    /// Is `s` in the set: allowed, denied, or conditional on missing context.
    pub fn membership(&self, s: &Subject) -> Permissionship {
        self.value(s).permissionship()
    }

    /// Nobody, whatever the context.
    pub fn is_empty(&self) -> bool {
        self.wildcard.is_false() && self.members.values().all(Tri::is_false)
    }

    fn value(&self, s: &Subject) -> Tri {
        match self.members.get(s) {
            Some(v) => v.clone(),
            None if s.relation.is_none() => self.wildcard.clone(),
            None => Tri::F,
        }
    }

    fn one(s: Subject, v: Tri) -> SubjectSet {
        let mut members = BTreeMap::new();
        if !v.is_false() {
            members.insert(s, v);
        }
        SubjectSet {
            members,
            wildcard: Tri::F,
        }
    }

    fn everyone(v: Tri) -> SubjectSet {
        SubjectSet {
            members: BTreeMap::new(),
            wildcard: v,
        }
    }

    fn combine(self, other: SubjectSet, f: impl Fn(Tri, Tri) -> Tri) -> SubjectSet {
        let wildcard = f(self.wildcard.clone(), other.wildcard.clone());
        let mut members = BTreeMap::new();
        for s in self.members.keys().chain(other.members.keys()) {
            if members.contains_key(s) {
                continue;
            }
            let v = f(self.value(s), other.value(s));
            // A subject out of the set is kept only as an exception to the wildcard.
            if !v.is_false() || (s.relation.is_none() && !wildcard.is_false()) {
                members.insert(s.clone(), v);
            }
        }
        SubjectSet { members, wildcard }
    }

    /// `self ∪ other`.
    pub fn union(self, other: SubjectSet) -> SubjectSet {
        self.combine(other, Tri::or)
    }

    /// `self ∩ other`.
    pub fn intersect(self, other: SubjectSet) -> SubjectSet {
        self.combine(other, Tri::and)
    }

    /// `self \ other`.
    pub fn subtract(self, other: SubjectSet) -> SubjectSet {
        self.combine(other, |a, b| a.and(b.not()))
    }

    /// Every member only as far as `c` holds.
    fn only_if(self, c: &Tri) -> SubjectSet {
        match c {
            Tri::T => self,
            Tri::F => SubjectSet::default(),
            u => {
                let wildcard = self.wildcard.and(u.clone());
                let members = self
                    .members
                    .into_iter()
                    .map(|(s, v)| (s, v.and(u.clone())))
                    .filter(|(s, v)| {
                        !v.is_false() || (s.relation.is_none() && !wildcard.is_false())
                    })
                    .collect::<BTreeMap<_, _>>();
                SubjectSet { members, wildcard }
            }
        }
    }

    fn insert(&mut self, s: Subject, v: Tri) {
        let set = std::mem::take(self);
        *self = set.union(SubjectSet::one(s, v));
    }
}

impl Same for SubjectSet {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

/// One result of LookupSubjects: a subject, or the wildcard with the subjects it excludes;
/// either may be conditional.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FoundSubject {
    pub subject: Subject,
    /// For a wildcard: the subjects it does not include. (A subject listed on its own, also
    /// conditionally, has that value whatever the wildcard says.)
    pub excluded: Vec<Subject>,
    /// Empty when the subject has the permission; otherwise it has it only if caveats hold
    /// that need these context parameters (sorted).
    pub missing: Vec<String>,
}

impl FoundSubject {
    /// Allowed, or conditional on `missing`.
    pub fn permissionship(&self) -> Permissionship {
        if self.missing.is_empty() {
            Permissionship::Allowed
        } else {
            Permissionship::Conditional {
                missing: self.missing.clone(),
            }
        }
    }
}

fn missing_of(v: &Tri) -> Vec<String> {
    match v {
        Tri::U(m) => m.iter().cloned().collect(),
        _ => Vec::new(),
    }
}

struct Lookup<'a, R: SnapshotReader> {
    engine: &'a Engine,
    reader: &'a R,
    meter: &'a Meter,
    now: Timestamp,
    context: Option<Context>,
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
            set.insert(
                Subject::set(
                    resource.object_type.clone(),
                    resource.object_id.clone(),
                    relation,
                ),
                Tri::T,
            );
        }
        set
    }

    /// The value of `r`'s caveat under the request's context.
    fn caveat(&self, r: &Relationship) -> Result<Tri, Stop> {
        Ok(self
            .engine
            .caveat_of(r, self.context.as_ref(), self.meter, false)?
            .0)
    }

    fn relation(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<SubjectSet, Stop> {
        let mut set = SubjectSet::default();
        self.meter.dispatch(|| format!("{resource}#{relation}"))?;
        for r in Engine::visible(self.reader.by_resource(resource, relation)?, self.now) {
            let c = self.caveat(&r)?;
            if c.is_false() {
                continue;
            }
            let s = &r.subject;
            if s.object.object_type == self.target_type && s.relation == self.target_relation {
                if s.is_wildcard() {
                    set = set.union(SubjectSet::everyone(c.clone()));
                } else {
                    set.insert(s.clone(), c.clone());
                }
            }
            if let Some(sub_rel) = &s.relation {
                let inner = self.member(&s.object, sub_rel, depth + 1, false)?;
                set = set.union(inner.only_if(&c));
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
                for r in Engine::visible(self.reader.by_resource(resource, tupleset)?, self.now) {
                    let t = &r.subject.object;
                    if t.is_wildcard() {
                        continue;
                    }
                    let s = if schema.member(&t.object_type, computed).is_none() {
                        SubjectSet::default()
                    } else {
                        let c = self.caveat(&r)?;
                        if c.is_false() {
                            SubjectSet::default()
                        } else {
                            self.member(t, computed, depth + 1, negative)?.only_if(&c)
                        }
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
        opts.check_context(opts.context.as_ref())?;
        self.validate_ref(&resource.object_type, Some(permission))?;
        self.validate_ref(subject_type, subject_relation)?;
        let meter = Meter::new(&opts);
        let mut l = Lookup {
            engine: self,
            reader,
            meter: &meter,
            now: opts.now,
            context: opts.context.clone(),
            target_type: subject_type.to_string(),
            target_relation: subject_relation.map(str::to_string),
            table: Table::new(true),
        };
        l.query(resource, permission)
    }

    /// LookupSubjects: the subjects, sorted, with a wildcard (if any) first; each allowed or
    /// conditional.
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
        if !set.wildcard.is_false() {
            out.push(FoundSubject {
                subject: Subject::object(subject_type, WILDCARD),
                excluded: set
                    .members
                    .iter()
                    .filter(|(_, v)| v.is_false())
                    .map(|(s, _)| s.clone())
                    .collect(),
                missing: missing_of(&set.wildcard),
            });
        }
        out.extend(
            set.members
                .iter()
                .filter(|(_, v)| !v.is_false())
                .map(|(s, v)| FoundSubject {
                    subject: s.clone(),
                    excluded: Vec::new(),
                    missing: missing_of(v),
                }),
        );
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
        let mut out = SubjectSet::default();
        for x in c {
            out.insert(s(x), Tri::T);
        }
        if let Some(ex) = w {
            let mut all = SubjectSet::everyone(Tri::T);
            for x in ex {
                all = all.subtract(SubjectSet::one(s(x), Tri::T));
            }
            out = out.union(all);
        }
        out
    }

    fn u(names: &[&str]) -> Tri {
        Tri::U(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn conditional_algebra_is_pointwise_kleene() {
        let values = [Tri::F, Tri::T, u(&["a"]), u(&["b"])];
        let universe = ["p", "q", "r"];
        let mut sets = vec![SubjectSet::default()];
        for wv in &values {
            for pv in &values {
                for qv in &values {
                    let mut x = SubjectSet::everyone(wv.clone());
                    x = x.union(SubjectSet::one(s("p"), pv.clone()));
                    x = x.intersect({
                        let mut y = SubjectSet::everyone(Tri::T);
                        y.members.insert(s("q"), qv.clone());
                        y
                    });
                    sets.push(x);
                }
            }
        }
        for x in &sets {
            for y in &sets {
                for id in universe {
                    let m = s(id);
                    let (a, b) = (x.value(&m), y.value(&m));
                    assert_eq!(
                        x.clone().union(y.clone()).value(&m),
                        a.clone().or(b.clone())
                    );
                    assert_eq!(
                        x.clone().intersect(y.clone()).value(&m),
                        a.clone().and(b.clone())
                    );
                    assert_eq!(x.clone().subtract(y.clone()).value(&m), a.and(b.not()));
                }
            }
        }
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
