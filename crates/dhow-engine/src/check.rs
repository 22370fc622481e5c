//! Check and CheckBulk: does a subject have a permission on a resource at this revision?
//! Short-circuiting evaluation of the userset rewrites, with a per-call memo that is aware of
//! cycles (`table.rs`), within the request's budgets, building the proof as it goes when
//! asked.

use std::collections::HashMap;

use dhow_schema::{ArrowMode, Member, Rewrite};
use dhow_tuples::{ObjectRef, Relationship, Revision, SnapshotReader, Subject, Timestamp};

use crate::budget::{grow, Meter};
use crate::proof::{Proof, Step};
use crate::table::{Enter, Leave, Same, Stop, Table};
use crate::{CheckRequest, Engine, Error, Options};

/// The answer to one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub allowed: bool,
    /// The revision the answer holds at.
    pub revision: Revision,
    /// The proof, when `Options::explain` was set.
    pub proof: Option<Proof>,
}

#[derive(Clone)]
pub(crate) struct Outcome {
    pub allowed: bool,
    pub proof: Option<Proof>,
}

/// Two outcomes are the same answer whatever their proofs.
impl Same for Outcome {
    fn same(&self, other: &Self) -> bool {
        self.allowed == other.allowed
    }
}

/// Evaluates checks for one subject over one reader. Its memo is valid for that subject only.
pub(crate) struct Evaluator<'a, R: SnapshotReader> {
    engine: &'a Engine,
    reader: &'a R,
    meter: &'a Meter,
    explain: bool,
    now: Timestamp,
    subject: Subject,
    table: Table<Outcome>,
}

impl<'a, R: SnapshotReader> Evaluator<'a, R> {
    pub fn new(
        engine: &'a Engine,
        reader: &'a R,
        opts: &Options,
        meter: &'a Meter,
        subject: Subject,
    ) -> Self {
        Evaluator {
            engine,
            reader,
            meter,
            explain: opts.explain,
            now: opts.now,
            subject,
            table: Table::new(false),
        }
    }

    fn visible(&self, rels: Vec<Relationship>) -> Result<Vec<Relationship>, Error> {
        Engine::visible(rels, self.now)
    }

    fn proof(
        &self,
        step: impl FnOnce() -> Step,
        allowed: bool,
        children: Vec<Proof>,
    ) -> Option<Proof> {
        self.explain.then(|| Proof {
            step: step(),
            allowed,
            children,
        })
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
            let child = self.proof(|| Step::SameSubject, true, Vec::new());
            return Ok(Outcome {
                allowed: true,
                proof: self.proof(member_step, true, child.into_iter().collect()),
            });
        }
        let engine = self.engine;
        let member = engine.member_of(resource, relation)?;
        let class = engine.class(&resource.object_type, relation);
        loop {
            let cut = Outcome {
                allowed: false,
                proof: self.proof(
                    || Step::Cycle {
                        resource: resource.clone(),
                        relation: relation.to_string(),
                    },
                    false,
                    Vec::new(),
                ),
            };
            match self.table.enter(
                (resource.clone(), relation.to_string()),
                class,
                negative,
                |a, b, n| engine.allows(a, b, n),
                cut,
            )? {
                Enter::Known(o) | Enter::Cut(o) => return Ok(o),
                Enter::Evaluate => {}
            }
            let inner = self
                .meter
                .dispatch(at)
                .map_err(Stop::from)
                .and_then(|()| match member {
                    Member::Relation(_) => self.relation(resource, relation, depth),
                    Member::Permission(p) => self.rewrite(resource, &p.rewrite, depth + 1, false),
                });
            let inner = match inner {
                Ok(o) => o,
                Err(e) => {
                    self.table.abandon();
                    return Err(e);
                }
            };
            let out = Outcome {
                allowed: inner.allowed,
                proof: self.proof(
                    member_step,
                    inner.allowed,
                    inner.proof.into_iter().collect(),
                ),
            };
            if self.table.leave(&out, out.allowed) == Leave::Done {
                return Ok(out);
            }
        }
    }

    fn relation(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<Outcome, Stop> {
        // Direct hit, then the wildcard of the subject's type, then subject sets.
        self.read(resource, relation)?;
        if let Some(r) = self.reader.find(resource, relation, &self.subject)? {
            if let Some(r) = self.visible(vec![r])?.pop() {
                let proof = self.proof(|| Step::Direct(r), true, Vec::new());
                return Ok(Outcome {
                    allowed: true,
                    proof,
                });
            }
        }
        if self.subject.relation.is_none() && !self.subject.is_wildcard() {
            let wild = Subject::object(
                self.subject.object.object_type.clone(),
                dhow_tuples::WILDCARD,
            );
            self.read(resource, relation)?;
            if let Some(r) = self.reader.find(resource, relation, &wild)? {
                if let Some(r) = self.visible(vec![r])?.pop() {
                    let proof = self.proof(|| Step::Wildcard(r), true, Vec::new());
                    return Ok(Outcome {
                        allowed: true,
                        proof,
                    });
                }
            }
        }
        self.read(resource, relation)?;
        let rels = self.visible(self.reader.by_resource(resource, relation)?)?;
        let mut denied = Vec::new();
        for r in rels {
            let Some(sub_rel) = r.subject.relation.as_deref() else {
                continue;
            };
            let o = self.member(&r.subject.object, sub_rel, depth + 1, false)?;
            if o.allowed {
                let proof = self.proof(|| Step::SubjectSet(r), true, o.proof.into_iter().collect());
                return Ok(Outcome {
                    allowed: true,
                    proof,
                });
            }
            if self.explain {
                denied.push(Proof {
                    step: Step::SubjectSet(r),
                    allowed: false,
                    children: o.proof.into_iter().collect(),
                });
            }
        }
        if denied.is_empty() {
            let proof = self.proof(|| Step::NoMatch, false, Vec::new());
            return Ok(Outcome {
                allowed: false,
                proof,
            });
        }
        // Several denied subject-set branches: the member node above lists them.
        Ok(Outcome {
            allowed: false,
            proof: self.proof(|| Step::Union, false, denied),
        })
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
            Rewrite::Nil => Ok(Outcome {
                allowed: false,
                proof: self.proof(|| Step::Nil, false, Vec::new()),
            }),
            Rewrite::Computed(name) => self.member(resource, name, depth + 1, negative),
            Rewrite::Union(items) => {
                let mut denied = Vec::new();
                for item in items {
                    let o = self.rewrite(resource, item, depth + 1, negative)?;
                    if o.allowed {
                        let proof = self.proof(|| Step::Union, true, o.proof.into_iter().collect());
                        return Ok(Outcome {
                            allowed: true,
                            proof,
                        });
                    }
                    denied.extend(o.proof);
                }
                Ok(Outcome {
                    allowed: false,
                    proof: self.proof(|| Step::Union, false, denied),
                })
            }
            Rewrite::Intersection(items) => {
                let mut granted = Vec::new();
                for item in items {
                    let o = self.rewrite(resource, item, depth + 1, negative)?;
                    if !o.allowed {
                        let proof =
                            self.proof(|| Step::Intersection, false, o.proof.into_iter().collect());
                        return Ok(Outcome {
                            allowed: false,
                            proof,
                        });
                    }
                    granted.extend(o.proof);
                }
                Ok(Outcome {
                    allowed: true,
                    proof: self.proof(|| Step::Intersection, true, granted),
                })
            }
            Rewrite::Exclusion(base, excluded) => {
                let b = self.rewrite(resource, base, depth + 1, negative)?;
                if !b.allowed {
                    let proof =
                        self.proof(|| Step::Exclusion, false, b.proof.into_iter().collect());
                    return Ok(Outcome {
                        allowed: false,
                        proof,
                    });
                }
                let e = self.rewrite(resource, excluded, depth + 1, true)?;
                let allowed = !e.allowed;
                let children = b.proof.into_iter().chain(e.proof).collect();
                Ok(Outcome {
                    allowed,
                    proof: self.proof(|| Step::Exclusion, allowed, children),
                })
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
        let rels = self.visible(self.reader.by_resource(resource, tupleset)?)?;
        let schema = &self.engine.schema;
        let mut children = Vec::new();
        let mut any_target = false;
        for r in rels {
            let target = &r.subject.object;
            if target.is_wildcard() {
                continue;
            }
            if schema.member(&target.object_type, computed).is_none() {
                // The computed name does not exist on this target type: it contributes nothing.
                if mode == ArrowMode::All {
                    return Ok(Outcome {
                        allowed: false,
                        proof: self.proof(step, false, children),
                    });
                }
                continue;
            }
            any_target = true;
            let o = self.member(target, computed, depth + 1, negative)?;
            let hop = self.proof(
                || Step::ArrowHop(r.clone()),
                o.allowed,
                o.proof.into_iter().collect(),
            );
            match (mode, o.allowed) {
                (ArrowMode::Any, true) => {
                    return Ok(Outcome {
                        allowed: true,
                        proof: self.proof(step, true, hop.into_iter().collect()),
                    })
                }
                (ArrowMode::All, false) => {
                    return Ok(Outcome {
                        allowed: false,
                        proof: self.proof(step, false, hop.into_iter().collect()),
                    })
                }
                _ => children.extend(hop),
            }
        }
        let allowed = mode == ArrowMode::All && any_target;
        Ok(Outcome {
            allowed,
            proof: self.proof(step, allowed, children),
        })
    }
}

impl Engine {
    fn validate_check(&self, req: &CheckRequest) -> Result<(), Error> {
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
        self.validate_check(req)?;
        let meter = Meter::new(&opts);
        let mut c = Evaluator::new(self, reader, &opts, &meter, req.subject.clone());
        let o = c.query(&req.resource, &req.permission)?;
        Ok(CheckResult {
            allowed: o.allowed,
            revision: reader.revision(),
            proof: o.proof,
        })
    }

    /// Many checks at one revision; each has its own result. Checks for the same subject
    /// share one memo, and all share the request's budgets: once one runs out, the checks
    /// after it fail with the same error.
    pub fn check_bulk<R: SnapshotReader>(
        &self,
        reader: &R,
        reqs: &[CheckRequest],
        opts: Options,
    ) -> Vec<Result<CheckResult, Error>> {
        let meter = Meter::new(&opts);
        let mut evaluators: HashMap<Subject, Evaluator<'_, R>> = HashMap::new();
        reqs.iter()
            .map(|req| {
                self.validate_check(req)?;
                let c = evaluators.entry(req.subject.clone()).or_insert_with(|| {
                    Evaluator::new(self, reader, &opts, &meter, req.subject.clone())
                });
                let o = c.query(&req.resource, &req.permission)?;
                Ok(CheckResult {
                    allowed: o.allowed,
                    revision: reader.revision(),
                    proof: o.proof,
                })
            })
            .collect()
    }
}
