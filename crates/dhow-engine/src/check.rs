//! Check and CheckBulk: does a subject have a permission on a resource at this revision?
//! Short-circuiting evaluation of the userset rewrites, with a per-call memo, cycle cutting
//! and a depth limit, building the proof as it goes when asked.

use std::collections::{HashMap, HashSet};

use dhow_schema::{ArrowMode, Member, Rewrite};
use dhow_tuples::{ObjectRef, Relationship, Revision, SnapshotReader, Subject};

use crate::proof::{Proof, Step};
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

/// Evaluates checks for one subject over one reader. Its memo is valid for that subject only.
pub(crate) struct Evaluator<'a, R: SnapshotReader> {
    engine: &'a Engine,
    reader: &'a R,
    opts: Options,
    subject: Subject,
    memo: HashMap<(ObjectRef, String), Outcome>,
    in_progress: HashSet<(ObjectRef, String)>,
    cycle_cuts: u64,
}

impl<'a, R: SnapshotReader> Evaluator<'a, R> {
    pub fn new(engine: &'a Engine, reader: &'a R, opts: Options, subject: Subject) -> Self {
        Evaluator {
            engine,
            reader,
            opts,
            subject,
            memo: HashMap::new(),
            in_progress: HashSet::new(),
            cycle_cuts: 0,
        }
    }

    fn visible(&self, rels: Vec<Relationship>) -> Result<Vec<Relationship>, Error> {
        Engine::visible(rels, self.opts.now)
    }

    fn proof(
        &self,
        step: impl FnOnce() -> Step,
        allowed: bool,
        children: Vec<Proof>,
    ) -> Option<Proof> {
        self.opts.explain.then(|| Proof {
            step: step(),
            allowed,
            children,
        })
    }

    /// Is the subject in `resource#relation`?
    pub fn member(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<Outcome, Error> {
        if depth > self.opts.max_depth {
            return Err(Error::MaxDepth {
                max_depth: self.opts.max_depth,
                resource: resource.clone(),
                relation: relation.to_string(),
            });
        }
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
        let key = (resource.clone(), relation.to_string());
        if let Some(o) = self.memo.get(&key) {
            return Ok(o.clone());
        }
        if self.in_progress.contains(&key) {
            self.cycle_cuts += 1;
            return Ok(Outcome {
                allowed: false,
                proof: self.proof(
                    || Step::Cycle {
                        resource: resource.clone(),
                        relation: relation.to_string(),
                    },
                    false,
                    Vec::new(),
                ),
            });
        }
        let engine = self.engine;
        let member = engine.member_of(resource, relation)?;
        self.in_progress.insert(key.clone());
        let cuts_before = self.cycle_cuts;
        let inner = match member {
            Member::Relation(_) => self.relation(resource, relation, depth),
            Member::Permission(p) => self.rewrite(resource, &p.rewrite, depth),
        };
        self.in_progress.remove(&key);
        let inner = inner?;
        let out = Outcome {
            allowed: inner.allowed,
            proof: self.proof(
                member_step,
                inner.allowed,
                inner.proof.into_iter().collect(),
            ),
        };
        if self.cycle_cuts == cuts_before {
            self.memo.insert(key, out.clone());
        }
        Ok(out)
    }

    fn relation(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<Outcome, Error> {
        // Direct hit, then the wildcard of the subject's type, then subject sets.
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
        let rels = self.visible(self.reader.by_resource(resource, relation)?)?;
        let mut denied = Vec::new();
        for r in rels {
            let Some(sub_rel) = r.subject.relation.as_deref() else {
                continue;
            };
            let o = self.member(&r.subject.object, sub_rel, depth + 1)?;
            if o.allowed {
                let proof = self.proof(|| Step::SubjectSet(r), true, o.proof.into_iter().collect());
                return Ok(Outcome {
                    allowed: true,
                    proof,
                });
            }
            if self.opts.explain {
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

    fn rewrite(
        &mut self,
        resource: &ObjectRef,
        rw: &Rewrite,
        depth: u32,
    ) -> Result<Outcome, Error> {
        match rw {
            Rewrite::Nil => Ok(Outcome {
                allowed: false,
                proof: self.proof(|| Step::Nil, false, Vec::new()),
            }),
            Rewrite::Computed(name) => self.member(resource, name, depth + 1),
            Rewrite::Union(items) => {
                let mut denied = Vec::new();
                for item in items {
                    let o = self.rewrite(resource, item, depth)?;
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
                    let o = self.rewrite(resource, item, depth)?;
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
                let b = self.rewrite(resource, base, depth)?;
                if !b.allowed {
                    let proof =
                        self.proof(|| Step::Exclusion, false, b.proof.into_iter().collect());
                    return Ok(Outcome {
                        allowed: false,
                        proof,
                    });
                }
                let e = self.rewrite(resource, excluded, depth)?;
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
            } => self.arrow(resource, tupleset, computed, *mode, depth),
        }
    }

    fn arrow(
        &mut self,
        resource: &ObjectRef,
        tupleset: &str,
        computed: &str,
        mode: ArrowMode,
        depth: u32,
    ) -> Result<Outcome, Error> {
        let step = || Step::Arrow {
            tupleset: tupleset.to_string(),
            computed: computed.to_string(),
            mode,
        };
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
            let o = self.member(target, computed, depth + 1)?;
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
        let mut c = Evaluator::new(self, reader, opts, req.subject.clone());
        let o = c.member(&req.resource, &req.permission, 0)?;
        Ok(CheckResult {
            allowed: o.allowed,
            revision: reader.revision(),
            proof: o.proof,
        })
    }

    /// Many checks at one revision; each has its own result. Checks for the same subject
    /// share one memo.
    pub fn check_bulk<R: SnapshotReader>(
        &self,
        reader: &R,
        reqs: &[CheckRequest],
        opts: Options,
    ) -> Vec<Result<CheckResult, Error>> {
        let mut evaluators: HashMap<Subject, Evaluator<'_, R>> = HashMap::new();
        reqs.iter()
            .map(|req| {
                self.validate_check(req)?;
                let c = evaluators
                    .entry(req.subject.clone())
                    .or_insert_with(|| Evaluator::new(self, reader, opts, req.subject.clone()));
                let o = c.member(&req.resource, &req.permission, 0)?;
                Ok(CheckResult {
                    allowed: o.allowed,
                    revision: reader.revision(),
                    proof: o.proof,
                })
            })
            .collect()
    }
}
