//! Check and CheckBulk: does a subject have a permission on a resource at this revision?
//! Short-circuiting evaluation of the userset rewrites, with a per-call memo that is aware of
//! cycles (`table.rs`), within the request's budgets, building the proof as it goes when
//! asked.

use std::collections::HashMap;

use dhow_caveat::Context;
use dhow_schema::{AllowedKind, ArrowMode, Member, Relation, Rewrite};
use dhow_tuples::{ObjectRef, Relationship, Revision, SnapshotReader, Subject, Timestamp};

use crate::budget::{grow, Meter};
use crate::caveat::{Permissionship, Tri};
use crate::proof::{Proof, Step};
use crate::shared::{SharedKey, SharedKeyRef, SharedResults, SharedValue};
use crate::table::{Enter, Leave, Same, Stop, Table};
use crate::{CheckRequest, Engine, Error, Options};

/// The answer to one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Allowed, denied, or conditional on context parameters no one supplied.
    pub permissionship: Permissionship,
    /// `permissionship` is [`Permissionship::Allowed`] (a conditional answer is not allowed).
    pub allowed: bool,
    /// The revision the answer holds at.
    pub revision: Revision,
    /// The proof, when `Options::explain` was set.
    pub proof: Option<Proof>,
}

impl CheckResult {
    fn new(value: &Tri, revision: Revision, proof: Option<Proof>) -> CheckResult {
        CheckResult {
            permissionship: value.permissionship(),
            allowed: value.is_true(),
            revision,
            proof,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Outcome {
    pub value: Tri,
    /// Boxed: an outcome moves through every level of an evaluation and sits in the memo,
    /// and a proof node (its step holds a whole relationship) is many times the size of the
    /// rest; inline, a lookup's memo kept that room for every entry, without proofs, and
    /// copied it at each growth (docs/benchmarks.md, "A memo entry without a proof's room").
    pub proof: Option<Box<Proof>>,
}

impl Outcome {
    /// The proof, unboxed.
    pub fn take_proof(proof: Option<Box<Proof>>) -> Option<Proof> {
        proof.map(|p| *p)
    }
}

/// Two outcomes are the same answer whatever their proofs.
impl Same for Outcome {
    fn same(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// Collects the branches of a union (stops at the first allowed one) or an intersection
/// (stops at the first denied one), and their proofs.
struct Branches {
    value: Tri,
    proofs: Vec<Proof>,
}

impl Branches {
    fn union() -> Self {
        Branches {
            value: Tri::F,
            proofs: Vec::new(),
        }
    }

    fn intersection() -> Self {
        Branches {
            value: Tri::T,
            proofs: Vec::new(),
        }
    }
}

/// Which reads of a relation can find something for a subject, by the relation's allowed
/// subject types: the subject itself (`user`, `user:*` or `group#member` allowed as written),
/// the wildcard of a plain subject's type (`user:*` allowed), and subject sets to follow (any
/// `type#relation` allowed).
struct Reads {
    direct: bool,
    wildcard: bool,
    subject_sets: bool,
}

impl Reads {
    fn of(def: &Relation, subject: &Subject) -> Reads {
        let mut reads = Reads {
            direct: false,
            wildcard: false,
            subject_sets: false,
        };
        let plain = subject.relation.is_none() && !subject.is_wildcard();
        for a in &def.allowed {
            let same_type = a.type_name == subject.object.object_type;
            match &a.kind {
                AllowedKind::Object => reads.direct |= same_type && plain,
                AllowedKind::Wildcard => {
                    reads.wildcard |= same_type && plain;
                    reads.direct |= same_type && subject.is_wildcard();
                }
                AllowedKind::SubjectSet(rel) => {
                    reads.subject_sets = true;
                    reads.direct |= same_type && subject.relation.as_deref() == Some(rel);
                }
            }
        }
        reads
    }
}

/// Evaluates checks for one subject and one caveat context over one reader. Its memo is
/// valid for that pair only.
pub(crate) struct Evaluator<'a, R: SnapshotReader> {
    engine: &'a Engine,
    reader: &'a R,
    meter: &'a Meter,
    explain: bool,
    now: Timestamp,
    subject: Subject,
    context: Option<Context>,
    table: Table<Outcome>,
    /// Answers shared with other requests, when this evaluation may use them (see
    /// `shared.rs`), and the revision they are keyed by.
    shared: Option<std::sync::Arc<dyn SharedResults>>,
    revision: Revision,
}

impl<'a, R: SnapshotReader> Evaluator<'a, R> {
    pub fn new(
        engine: &'a Engine,
        reader: &'a R,
        opts: &Options,
        meter: &'a Meter,
        subject: Subject,
        context: Option<Context>,
    ) -> Self {
        // An answer depends on nothing but its key without a proof, a context or a clock.
        let shared = opts
            .shared
            .as_ref()
            .filter(|_| !opts.explain && context.is_none() && !engine.schema().uses_expiration)
            .map(|s| s.0.clone());
        // Cuts assume what the previous pass found: false, or conditional (an allowed result
        // is final at once), so a cycle through caveats settles.
        let mut table = Table::new(true);
        if shared.is_some() {
            table.track_final();
        }
        Evaluator {
            engine,
            reader,
            meter,
            explain: opts.explain,
            now: opts.now,
            subject,
            context,
            table,
            shared,
            revision: reader.revision(),
        }
    }

    fn visible(&self, rels: Vec<Relationship>) -> Vec<Relationship> {
        Engine::visible(rels, self.now)
    }

    fn proof(
        &self,
        step: impl FnOnce() -> Step,
        value: &Tri,
        children: Vec<Proof>,
    ) -> Option<Proof> {
        self.explain.then(|| Proof::new(step(), value, children))
    }

    fn outcome(&self, step: impl FnOnce() -> Step, value: Tri, children: Vec<Proof>) -> Outcome {
        Outcome {
            proof: self.proof(step, &value, children).map(Box::new),
            value,
        }
    }

    /// The value of `r`'s caveat (true without one) and its proof.
    fn caveat(&self, r: &Relationship) -> Result<(Tri, Option<Proof>), Stop> {
        Ok(self
            .engine
            .caveat_of(r, self.context.as_ref(), self.meter, self.explain)?)
    }

    /// Offers the answers that became final to the other requests.
    fn share_final(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        for ((resource, relation), out) in self.table.take_final() {
            let key = SharedKey {
                revision: self.revision,
                resource,
                relation,
                subject: self.subject.clone(),
            };
            shared.put(key, SharedValue(out.value));
        }
    }

    /// Counts one reader call on `resource#relation`.
    fn read(&self, resource: &ObjectRef, relation: &str) -> Result<(), Error> {
        self.meter.dispatch(|| format!("{resource}#{relation}"))
    }

    /// Is the subject in `resource#relation`? One top-level query: the memo keeps what it
    /// proved for the next ones.
    pub fn query(&mut self, resource: &ObjectRef, relation: &str) -> Result<Outcome, Error> {
        loop {
            match self.member(resource, relation, 0, false) {
                Ok(o) => return Ok(o),
                Err(Stop::Error(e)) => return Err(e),
                // Relationships outside the schema closed a cycle: again, conservatively
                // (after which no restart can happen).
                Err(Stop::Restart) => self.table.go_conservative(),
            }
        }
    }

    /// Is the subject in `resource#relation`? `negative` says the step that leads here is
    /// under an excluded operand.
    fn member(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
        negative: bool,
    ) -> Result<Outcome, Stop> {
        grow(|| self.member_inner(resource, relation, depth, negative))
    }

    fn member_inner(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
        negative: bool,
    ) -> Result<Outcome, Stop> {
        let at = || format!("{resource}#{relation}");
        self.meter.depth(depth, at)?;
        let member_step = || Step::Member {
            resource: resource.clone(),
            relation: relation.to_string(),
        };
        if self.subject.relation.as_deref() == Some(relation) && &self.subject.object == resource {
            let child = self.proof(|| Step::SameSubject, &Tri::T, Vec::new());
            return Ok(self.outcome(member_step, Tri::T, child.into_iter().collect()));
        }
        if let Some(shared) = &self.shared {
            if !self.table.is_conservative() {
                let key = SharedKeyRef {
                    revision: self.revision,
                    resource,
                    relation,
                    subject: &self.subject,
                };
                if let Some(v) = shared.get(&key) {
                    return Ok(Outcome {
                        value: v.0,
                        proof: None,
                    });
                }
            }
        }
        let engine = self.engine;
        let member = engine.member_of(resource, relation)?;
        let class = engine.class(&resource.object_type, relation);
        loop {
            let cut = self.outcome(
                || Step::Cycle {
                    resource: resource.clone(),
                    relation: relation.to_string(),
                },
                Tri::F,
                Vec::new(),
            );
            match self.table.enter(
                (resource.clone(), relation.to_string()),
                class,
                negative,
                |a, b, n| engine.allows(a, b, n),
                cut,
            )? {
                Enter::Known(o) => return Ok(o),
                Enter::Cut(o) => {
                    // A cut that assumes a conditional value shows it as a cycle step.
                    let value = o.value;
                    return Ok(self.outcome(
                        || Step::Cycle {
                            resource: resource.clone(),
                            relation: relation.to_string(),
                        },
                        value,
                        Vec::new(),
                    ));
                }
                Enter::Evaluate => {}
            }
            let inner = self
                .meter
                .dispatch(at)
                .map_err(Stop::from)
                .and_then(|()| match member {
                    Member::Relation(r) => self.relation(resource, r, depth),
                    Member::Permission(p) => self.rewrite(resource, &p.rewrite, depth + 1, false),
                });
            let inner = match inner {
                Ok(o) => o,
                Err(e) => {
                    self.table.abandon();
                    return Err(e);
                }
            };
            let out = self.outcome(
                member_step,
                inner.value,
                Outcome::take_proof(inner.proof).into_iter().collect(),
            );
            let settled = out.value.is_true();
            if self.table.leave(&out, settled) == Leave::Done {
                self.share_final();
                return Ok(out);
            }
        }
    }

    /// Adds one branch `value` (with proof) to a union; true when it decides the union.
    fn add_union(&self, acc: &mut Branches, value: Tri, proof: Option<Proof>) -> bool {
        if value.is_true() {
            acc.value = Tri::T;
            acc.proofs = proof.into_iter().collect();
            return true;
        }
        acc.value = std::mem::replace(&mut acc.value, Tri::F).or(value);
        acc.proofs.extend(proof);
        false
    }

    fn relation(
        &mut self,
        resource: &ObjectRef,
        def: &Relation,
        depth: u32,
    ) -> Result<Outcome, Stop> {
        // Direct hit, then the wildcard of the subject's type, then subject sets; each
        // relationship counts only as far as its caveat holds. Only the reads the relation's
        // allowed types can answer are made: every stored relationship fits the schema in
        // force at its revision (a write that does not fit is refused, and so is a schema
        // that would orphan one), so a read for a kind the relation does not allow finds
        // nothing.
        let relation = def.name.as_str();
        let reads = Reads::of(def, &self.subject);
        let mut acc = Branches::union();
        if reads.direct {
            self.read(resource, relation)?;
        }
        if let Some(r) = if reads.direct {
            self.reader.find(resource, relation, &self.subject)?
        } else {
            None
        } {
            if let Some(r) = self.visible(vec![r]).pop() {
                let (c, cp) = self.caveat(&r)?;
                let proof = self.proof(|| Step::Direct(r), &c, cp.into_iter().collect());
                if self.add_union(&mut acc, c, proof) {
                    return Ok(self.finish_union(acc));
                }
            }
        }
        if reads.wildcard {
            let wild = Subject::object(
                self.subject.object.object_type.clone(),
                dhow_tuples::WILDCARD,
            );
            self.read(resource, relation)?;
            if let Some(r) = self.reader.find(resource, relation, &wild)? {
                if let Some(r) = self.visible(vec![r]).pop() {
                    let (c, cp) = self.caveat(&r)?;
                    let proof = self.proof(|| Step::Wildcard(r), &c, cp.into_iter().collect());
                    if self.add_union(&mut acc, c, proof) {
                        return Ok(self.finish_union(acc));
                    }
                }
            }
        }
        if !reads.subject_sets {
            return Ok(self.finish_union(acc));
        }
        // The subject sets, one scan per type the relation allows them of (in key order, as
        // one scan of the relation would give them), so the plain subjects of other types
        // beside them are not read.
        let mut types: Vec<&str> = def
            .allowed
            .iter()
            .filter(|a| matches!(a.kind, AllowedKind::SubjectSet(_)))
            .map(|a| a.type_name.as_str())
            .collect();
        types.sort_unstable();
        types.dedup();
        for t in types {
            self.read(resource, relation)?;
            let rels = self.visible(self.reader.by_resource_of_type(resource, relation, t)?);
            if self.subject_sets(rels, depth, &mut acc)? {
                return Ok(self.finish_union(acc));
            }
        }
        Ok(self.finish_union(acc))
    }

    /// Follows the subject sets among `rels` into the union `acc`; true when one decides it.
    fn subject_sets(
        &mut self,
        rels: Vec<Relationship>,
        depth: u32,
        acc: &mut Branches,
    ) -> Result<bool, Stop> {
        for r in rels {
            let Some(sub_rel) = r.subject.relation.as_deref() else {
                continue;
            };
            let (c, cp) = self.caveat(&r)?;
            if c.is_false() {
                let proof = self.proof(|| Step::SubjectSet(r), &Tri::F, cp.into_iter().collect());
                acc.proofs.extend(proof);
                continue;
            }
            let o = self.member(&r.subject.object, sub_rel, depth + 1, false)?;
            let value = c.and(o.value);
            let proof = self.proof(
                || Step::SubjectSet(r),
                &value,
                cp.into_iter().chain(Outcome::take_proof(o.proof)).collect(),
            );
            if self.add_union(acc, value, proof) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The outcome of a relation's branches: the deciding one, `NoMatch`, or a union node
    /// listing every denied or conditional branch.
    fn finish_union(&self, acc: Branches) -> Outcome {
        let Branches { value, mut proofs } = acc;
        if proofs.is_empty() {
            return self.outcome(|| Step::NoMatch, value, Vec::new());
        }
        if value.is_true() && proofs.len() == 1 {
            let proof = proofs.pop();
            return Outcome {
                value,
                proof: proof.map(Box::new),
            };
        }
        self.outcome(|| Step::Union, value, proofs)
    }

    /// Evaluates one node of a permission's expression; each level of nesting is one step of
    /// depth.
    /// `negative` says `rw` is under an excluded operand.
    fn rewrite(
        &mut self,
        resource: &ObjectRef,
        rw: &Rewrite,
        depth: u32,
        negative: bool,
    ) -> Result<Outcome, Stop> {
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
    ) -> Result<Outcome, Stop> {
        match rw {
            Rewrite::Nil => Ok(self.outcome(|| Step::Nil, Tri::F, Vec::new())),
            Rewrite::Computed(name) => self.member(resource, name, depth + 1, negative),
            Rewrite::Union(items) => {
                let mut acc = Branches::union();
                for item in items {
                    let o = self.rewrite(resource, item, depth + 1, negative)?;
                    if self.add_union(&mut acc, o.value, Outcome::take_proof(o.proof)) {
                        break;
                    }
                }
                Ok(self.outcome(|| Step::Union, acc.value, acc.proofs))
            }
            Rewrite::Intersection(items) => {
                let mut acc = Branches::intersection();
                for item in items {
                    let o = self.rewrite(resource, item, depth + 1, negative)?;
                    if o.value.is_false() {
                        return Ok(self.outcome(
                            || Step::Intersection,
                            Tri::F,
                            Outcome::take_proof(o.proof).into_iter().collect(),
                        ));
                    }
                    acc.value = std::mem::replace(&mut acc.value, Tri::T).and(o.value);
                    acc.proofs.extend(Outcome::take_proof(o.proof));
                }
                Ok(self.outcome(|| Step::Intersection, acc.value, acc.proofs))
            }
            Rewrite::Exclusion(base, excluded) => {
                let b = self.rewrite(resource, base, depth + 1, negative)?;
                if b.value.is_false() {
                    return Ok(self.outcome(
                        || Step::Exclusion,
                        Tri::F,
                        Outcome::take_proof(b.proof).into_iter().collect(),
                    ));
                }
                let e = self.rewrite(resource, excluded, depth + 1, true)?;
                let value = b.value.and(e.value.not());
                let children = Outcome::take_proof(b.proof)
                    .into_iter()
                    .chain(Outcome::take_proof(e.proof))
                    .collect();
                Ok(self.outcome(|| Step::Exclusion, value, children))
            }
            Rewrite::Arrow {
                tupleset,
                computed,
                mode,
            } => self.arrow(resource, tupleset, computed, *mode, depth, negative),
        }
    }

    fn arrow(
        &mut self,
        resource: &ObjectRef,
        tupleset: &str,
        computed: &str,
        mode: ArrowMode,
        depth: u32,
        negative: bool,
    ) -> Result<Outcome, Stop> {
        let step = || Step::Arrow {
            tupleset: tupleset.to_string(),
            computed: computed.to_string(),
            mode,
        };
        self.read(resource, tupleset)?;
        let rels = self.visible(self.reader.by_resource(resource, tupleset)?);
        let schema = &self.engine.schema;
        let mut acc = match mode {
            ArrowMode::Any => Branches::union(),
            ArrowMode::All => Branches::intersection(),
        };
        let mut any_target = false;
        for r in rels {
            let target = r.subject.object.clone();
            if target.is_wildcard() {
                continue;
            }
            if schema.member(&target.object_type, computed).is_none() {
                // The computed name does not exist on this target type: it contributes nothing.
                if mode == ArrowMode::All {
                    return Ok(self.outcome(step, Tri::F, acc.proofs));
                }
                continue;
            }
            any_target = true;
            // The hop holds as far as the tupleset relationship's caveat does.
            let (c, cp) = self.caveat(&r)?;
            let (value, proof) = if c.is_false() {
                let p = self.proof(|| Step::ArrowHop(r), &Tri::F, cp.into_iter().collect());
                (Tri::F, p)
            } else {
                let o = self.member(&target, computed, depth + 1, negative)?;
                let value = c.and(o.value);
                let p = self.proof(
                    || Step::ArrowHop(r),
                    &value,
                    cp.into_iter().chain(Outcome::take_proof(o.proof)).collect(),
                );
                (value, p)
            };
            match mode {
                ArrowMode::Any => {
                    if self.add_union(&mut acc, value, proof) {
                        return Ok(self.outcome(step, Tri::T, acc.proofs));
                    }
                }
                ArrowMode::All => {
                    if value.is_false() {
                        return Ok(self.outcome(step, Tri::F, proof.into_iter().collect()));
                    }
                    acc.value = std::mem::replace(&mut acc.value, Tri::T).and(value);
                    acc.proofs.extend(proof);
                }
            }
        }
        let value = match mode {
            ArrowMode::Any => acc.value,
            ArrowMode::All if any_target => acc.value,
            ArrowMode::All => Tri::F,
        };
        Ok(self.outcome(step, value, acc.proofs))
    }
}

impl Engine {
    fn validate_check(&self, req: &CheckRequest, opts: &Options) -> Result<(), Error> {
        opts.check_context(req.context.as_ref())?;
        self.validate_ref(&req.resource.object_type, Some(&req.permission))?;
        self.validate_ref(
            &req.subject.object.object_type,
            req.subject.relation.as_deref(),
        )
    }

    /// Does `req.subject` have `req.permission` on `req.resource` at the reader's revision?
    pub fn check<R: SnapshotReader>(
        &self,
        reader: &R,
        req: &CheckRequest,
        opts: Options,
    ) -> Result<CheckResult, Error> {
        opts.check_context(opts.context.as_ref())?;
        self.validate_check(req, &opts)?;
        let meter = Meter::new(&opts);
        let context = req.context.clone().or_else(|| opts.context.clone());
        let mut c = Evaluator::new(self, reader, &opts, &meter, req.subject.clone(), context);
        let o = c.query(&req.resource, &req.permission)?;
        Ok(CheckResult::new(
            &o.value,
            reader.revision(),
            Outcome::take_proof(o.proof),
        ))
    }

    /// The answer of a whole check from the shared answers alone (no reader, no schema):
    /// `Some` only when the check may share (no proof asked for, no caveat context, a check
    /// cache given) and an allowed or denied answer is held for its key at `revision`. A
    /// conditional answer is left to [`Engine::check`], which says what context is missing.
    ///
    /// No schema is needed to trust a held answer: answers at a revision are offered only
    /// when that revision's schema lets checks share (it does not use expiration), and only
    /// for names valid in it, checked for a subject the evaluating request was validated
    /// with; so a hit vouches for both, and the answer is the one [`Engine::check`] gives.
    pub fn cached_check(
        req: &CheckRequest,
        revision: Revision,
        opts: &Options,
    ) -> Option<CheckResult> {
        if opts.explain || req.context.is_some() || opts.context.is_some() {
            return None;
        }
        let shared = opts.shared.as_ref()?;
        let key = SharedKeyRef {
            revision,
            resource: &req.resource,
            relation: &req.permission,
            subject: &req.subject,
        };
        match shared.0.get(&key)?.0 {
            v @ (Tri::T | Tri::F) => Some(CheckResult::new(&v, revision, None)),
            Tri::U(_) => None,
        }
    }

    /// Many checks at one revision; each has its own result. Checks for the same subject and
    /// caveat context share one memo, and all share the request's budgets: once one runs
    /// out, the checks after it fail with the same error.
    pub fn check_bulk<R: SnapshotReader>(
        &self,
        reader: &R,
        reqs: &[CheckRequest],
        opts: Options,
    ) -> Vec<Result<CheckResult, Error>> {
        let meter = Meter::new(&opts);
        let shared = opts.check_context(opts.context.as_ref());
        let mut evaluators: HashMap<(Subject, Option<Context>), Evaluator<'_, R>> = HashMap::new();
        reqs.iter()
            .map(|req| {
                shared.clone()?;
                self.validate_check(req, &opts)?;
                let context = req.context.clone().or_else(|| opts.context.clone());
                let c = evaluators
                    .entry((req.subject.clone(), context.clone()))
                    .or_insert_with(|| {
                        Evaluator::new(self, reader, &opts, &meter, req.subject.clone(), context)
                    });
                let o = c.query(&req.resource, &req.permission)?;
                Ok(CheckResult::new(
                    &o.value,
                    reader.revision(),
                    Outcome::take_proof(o.proof),
                ))
            })
            .collect()
    }
}
