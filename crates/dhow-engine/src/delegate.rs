//! Delegated checks: agents acting for a principal through a chain of actors, decided at one
//! revision by plain checks of the live relationships, with one proof per hop.
//!
//! The rule (docs/agents.md): `Check(R#P, principal u, actors [a_1 .. a_n])`, `a_1` the
//! actor that made the request and `a_n` the one acting directly for `u`, is allowed iff `u`
//! has `P` on `R` and every hop holds. The hop of actor `h` acting for `d` (`d` is `u` for
//! `a_n`, else the next actor inward) holds iff
//!
//! - **delegation on the actor**: `d` is in `h#P` (the actor's definition declares which
//!   permissions can be delegated to it: everything `d` may `P`, `h` may `P` for `d`), or
//! - **a delegate set on the resource**: for a relation `D` of `d`'s type whose subject set
//!   `d#D` some relation of the schema allows (`folder#viewer: user#delegate`), the subject
//!   set `d#D` has `P` on `R` and `h` is in `d#D` (`d` granted its delegates `P` on this
//!   resource or a folder above it, and `h` is one of them).
//!
//! Values are three-valued (caveats, with the request's one context at every hop) and combine
//! with Kleene's logic. Every part is a plain check of the engine, so proofs come from the
//! same evaluation: the principal's, and one per hop.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use dhow_caveat::Context;
use dhow_schema::{AllowedKind, Schema};
use dhow_tuples::{ObjectRef, Revision, SnapshotReader, Subject};

use crate::budget::Meter;
use crate::caveat::{Permissionship, Tri};
use crate::check::{Evaluator, Outcome};
use crate::lookup::{FoundResource, LookupPage};
use crate::proof::{Proof, Step};
use crate::{CheckRequest, Engine, Error, Options};

/// A delegated check: may `actors`, acting for `check.subject` (the principal), use
/// `check.permission` on `check.resource`?
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DelegatedCheck {
    /// The plain check of the principal (resource, permission, principal, caveat context).
    pub check: CheckRequest,
    /// The chain, outermost first, as in the nested `act` claims of an RFC 8693 token:
    /// `actors[0]` made the request, each following actor is the one the actor before it
    /// acts for, and the last acts directly for the principal. Empty for a plain check.
    pub actors: Vec<ObjectRef>,
}

impl DelegatedCheck {
    pub fn new(check: CheckRequest, actors: Vec<ObjectRef>) -> Self {
        DelegatedCheck { check, actors }
    }

    /// The one `actors[i]` acts for: the next actor inward, or the principal.
    pub fn acting_for(&self, i: usize) -> Subject {
        match self.actors.get(i + 1) {
            Some(a) => Subject {
                object: a.clone(),
                relation: None,
            },
            None => self.check.subject.clone(),
        }
    }
}

/// A link of a delegation chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainLink {
    /// The principal's own permission on the resource.
    Principal,
    /// The hop of `actors[i]`, acting for the one after it (or the principal).
    Actor(usize),
}

/// The answer to a delegated check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegatedResult {
    /// Allowed, denied, or conditional on context parameters no one supplied: the principal's
    /// value and every hop's, combined with `and`.
    pub permissionship: Permissionship,
    /// `permissionship` is [`Permissionship::Allowed`].
    pub allowed: bool,
    /// The revision every part was evaluated at.
    pub revision: Revision,
    /// With `Options::explain`: the proof of the principal's permission.
    pub proof: Option<Proof>,
    /// With `Options::explain`: one proof per hop, aligned with the request's actors (every
    /// hop is evaluated when proofs are asked for). Empty otherwise.
    pub actor_proofs: Vec<Proof>,
    /// For a denial: the first link that denied, from the principal outward (the principal,
    /// then the hop acting for it, `actors[n-1]`, then `actors[n-2]`, ...). Without proofs
    /// the evaluation stops there.
    pub denied_at: Option<ChainLink>,
}

/// For each type, the relations `D` such that some relation allows the subject set
/// `type#D`, sorted.
pub(crate) fn delegate_sets(schema: &Schema) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for def in schema.definitions.values() {
        for rel in def.relations.values() {
            for a in &rel.allowed {
                if let AllowedKind::SubjectSet(d) = &a.kind {
                    let v = out.entry(a.type_name.clone()).or_default();
                    if !v.contains(d) {
                        v.push(d.clone());
                    }
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The evaluators of one request, one per (subject, context): a delegated check asks about
/// several subjects (the principal, each delegator, each delegate set, each actor), and each
/// keeps its memo across the items of a CheckBulk and the candidates of a lookup.
pub(crate) struct Pool<'a, R: SnapshotReader> {
    engine: &'a Engine,
    reader: &'a R,
    opts: &'a Options,
    meter: &'a Meter,
    evaluators: HashMap<(Subject, Option<Context>), Evaluator<'a, R>>,
}

impl<'a, R: SnapshotReader> Pool<'a, R> {
    pub fn new(engine: &'a Engine, reader: &'a R, opts: &'a Options, meter: &'a Meter) -> Self {
        Pool {
            engine,
            reader,
            opts,
            meter,
            evaluators: HashMap::new(),
        }
    }

    /// Is `subject` in `resource#relation`, with caveat context `context`?
    pub fn query(
        &mut self,
        subject: &Subject,
        context: &Option<Context>,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Outcome, Error> {
        let (engine, reader, opts, meter) = (self.engine, self.reader, self.opts, self.meter);
        self.evaluators
            .entry((subject.clone(), context.clone()))
            .or_insert_with(|| {
                Evaluator::new(
                    engine,
                    reader,
                    opts,
                    meter,
                    subject.clone(),
                    context.clone(),
                )
            })
            .query(resource, relation)
    }

    fn proof(
        &self,
        step: impl FnOnce() -> Step,
        value: &Tri,
        children: Vec<Proof>,
    ) -> Option<Proof> {
        self.opts
            .explain
            .then(|| Proof::new(step(), value, children))
    }

    /// The hop of `actor` acting for `delegator`: the delegation on the actor, else each
    /// delegate set of the delegator (docs/agents.md). Stops at the first way that allows.
    pub fn hop(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        actor: &ObjectRef,
        delegator: &Subject,
        context: &Option<Context>,
    ) -> Result<Outcome, Error> {
        let engine = self.engine;
        let step = || Step::Hop {
            actor: actor.clone(),
            acting_for: delegator.clone(),
            permission: permission.to_string(),
        };
        let mut value = Tri::F;
        let mut proofs = Vec::new();
        if engine
            .schema
            .member(&actor.object_type, permission)
            .is_some()
        {
            let o = self.query(delegator, context, actor, permission)?;
            if o.value.is_true() {
                let proof = self.proof(
                    step,
                    &Tri::T,
                    Outcome::take_proof(o.proof).into_iter().collect(),
                );
                return Ok(Outcome {
                    value: Tri::T,
                    proof: proof.map(Box::new),
                });
            }
            value = value.or(o.value);
            proofs.extend(Outcome::take_proof(o.proof));
        }
        if delegator.relation.is_none() && !delegator.is_wildcard() {
            let sets = engine
                .delegate_sets
                .get(&delegator.object.object_type)
                .cloned()
                .unwrap_or_default();
            let member = Subject {
                object: actor.clone(),
                relation: None,
            };
            for d in sets {
                let set = Subject {
                    object: delegator.object.clone(),
                    relation: Some(d.clone()),
                };
                let s = self.query(&set, context, resource, permission)?;
                let (v, children) = if s.value.is_false() {
                    (
                        Tri::F,
                        Outcome::take_proof(s.proof).into_iter().collect::<Vec<_>>(),
                    )
                } else {
                    let l = self.query(&member, context, &delegator.object, &d)?;
                    (
                        s.value.and(l.value),
                        Outcome::take_proof(s.proof)
                            .into_iter()
                            .chain(Outcome::take_proof(l.proof))
                            .collect(),
                    )
                };
                let proof = self.proof(
                    || Step::DelegateSet {
                        subject_set: set.clone(),
                    },
                    &v,
                    children,
                );
                if v.is_true() {
                    let proof = self.proof(step, &Tri::T, proof.into_iter().collect());
                    return Ok(Outcome {
                        value: Tri::T,
                        proof: proof.map(Box::new),
                    });
                }
                value = value.or(v);
                proofs.extend(proof);
            }
        }
        let proof = self.proof(step, &value, proofs);
        Ok(Outcome {
            value,
            proof: proof.map(Box::new),
        })
    }

    /// The whole chain of `req`: the principal, then each hop from the principal outward,
    /// stopping at the first denial unless proofs are asked for.
    pub fn chain(&mut self, req: &DelegatedCheck) -> Result<DelegatedResult, Error> {
        let c = &req.check;
        let context = c.context.clone().or_else(|| self.opts.context.clone());
        let explain = self.opts.explain;
        let p = self.query(&c.subject, &context, &c.resource, &c.permission)?;
        let mut value = p.value;
        let mut denied_at = value.is_false().then_some(ChainLink::Principal);
        let mut actor_proofs: Vec<Option<Proof>> = vec![None; req.actors.len()];
        for i in (0..req.actors.len()).rev() {
            if denied_at.is_some() && !explain {
                break;
            }
            let delegator = req.acting_for(i);
            let h = self.hop(
                &c.resource,
                &c.permission,
                &req.actors[i],
                &delegator,
                &context,
            )?;
            if h.value.is_false() && denied_at.is_none() {
                denied_at = Some(ChainLink::Actor(i));
            }
            value = value.and(h.value);
            actor_proofs[i] = Outcome::take_proof(h.proof);
        }
        Ok(DelegatedResult {
            permissionship: value.permissionship(),
            allowed: value.is_true(),
            revision: self.reader.revision(),
            proof: Outcome::take_proof(p.proof),
            actor_proofs: if explain {
                actor_proofs.into_iter().flatten().collect()
            } else {
                Vec::new()
            },
            denied_at,
        })
    }
}

impl Engine {
    /// Refuses a chain past `opts.max_actors`, with a wildcard, or with an actor twice (the
    /// principal counts); checks the actors' types against the schema.
    fn validate_chain(&self, req: &DelegatedCheck, opts: &Options) -> Result<(), Error> {
        if req.actors.len() > opts.max_actors {
            return Err(Error::InvalidChain {
                index: None,
                message: format!(
                    "the chain has {} actors, more than the limit of {}",
                    req.actors.len(),
                    opts.max_actors
                ),
            });
        }
        for (i, a) in req.actors.iter().enumerate() {
            if a.is_wildcard() {
                return Err(Error::InvalidChain {
                    index: Some(i),
                    message: format!("an actor is one object, not the wildcard {a}"),
                });
            }
            if req.check.subject.relation.is_none() && &req.check.subject.object == a {
                return Err(Error::InvalidChain {
                    index: Some(i),
                    message: format!("{a} is the principal: an actor cannot act for itself"),
                });
            }
            if let Some(j) = req.actors[..i].iter().position(|b| b == a) {
                return Err(Error::InvalidChain {
                    index: Some(i),
                    message: format!("{a} appears twice in the chain (also at actors[{j}])"),
                });
            }
            self.validate_ref(&a.object_type, None)?;
        }
        Ok(())
    }

    fn validate_delegated(&self, req: &DelegatedCheck, opts: &Options) -> Result<(), Error> {
        opts.check_context(req.check.context.as_ref())?;
        self.validate_ref(&req.check.resource.object_type, Some(&req.check.permission))?;
        self.validate_ref(
            &req.check.subject.object.object_type,
            req.check.subject.relation.as_deref(),
        )?;
        self.validate_chain(req, opts)
    }

    /// The delegated check `req` at the reader's revision (docs/agents.md). With no actors it
    /// is the plain check of the principal.
    pub fn check_delegated<R: SnapshotReader>(
        &self,
        reader: &R,
        req: &DelegatedCheck,
        opts: Options,
    ) -> Result<DelegatedResult, Error> {
        opts.check_context(opts.context.as_ref())?;
        self.validate_delegated(req, &opts)?;
        let meter = Meter::new(&opts);
        let mut pool = Pool::new(self, reader, &opts, &meter);
        pool.chain(req)
    }

    /// Many delegated checks at one revision; each has its own result. All share the
    /// request's budgets and the evaluators' memos (one per subject and context).
    pub fn check_bulk_delegated<R: SnapshotReader>(
        &self,
        reader: &R,
        reqs: &[DelegatedCheck],
        opts: Options,
    ) -> Vec<Result<DelegatedResult, Error>> {
        let meter = Meter::new(&opts);
        let shared = opts.check_context(opts.context.as_ref());
        let mut pool = Pool::new(self, reader, &opts, &meter);
        reqs.iter()
            .map(|req| {
                shared.clone()?;
                self.validate_delegated(req, &opts)?;
                pool.chain(req)
            })
            .collect()
    }

    /// The resources of `resource_type` on which the delegated check of `permission` by
    /// `actors` for `principal` is allowed or conditional, sorted by id: exactly those for
    /// which [`Engine::check_delegated`] is not denied (the context is `opts.context`).
    pub fn lookup_resources_delegated<R: SnapshotReader>(
        &self,
        reader: &R,
        resource_type: &str,
        permission: &str,
        principal: &Subject,
        actors: &[ObjectRef],
        opts: Options,
    ) -> Result<Vec<FoundResource>, Error> {
        self.lookup_resources_delegated_page(
            reader,
            resource_type,
            permission,
            principal,
            actors,
            &LookupPage::all(),
            opts,
        )
    }

    /// One page of [`Engine::lookup_resources_delegated`]: the results after `page.after`, at
    /// most `page.limit`, checking only as many candidates as the page needs.
    #[allow(clippy::too_many_arguments)]
    pub fn lookup_resources_delegated_page<R: SnapshotReader>(
        &self,
        reader: &R,
        resource_type: &str,
        permission: &str,
        principal: &Subject,
        actors: &[ObjectRef],
        page: &LookupPage,
        opts: Options,
    ) -> Result<Vec<FoundResource>, Error> {
        let probe = DelegatedCheck::new(
            CheckRequest::new(
                ObjectRef::new(resource_type, "lookup"),
                permission,
                principal.clone(),
            ),
            actors.to_vec(),
        );
        opts.check_context(opts.context.as_ref())?;
        self.validate_ref(resource_type, Some(permission))?;
        self.validate_ref(&principal.object.object_type, principal.relation.as_deref())?;
        self.validate_chain(&probe, &opts)?;
        let opts = Options {
            explain: false,
            ..opts
        };
        let meter = Meter::new(&opts);
        let context = opts.context.clone();
        let mut pool = Pool::new(self, reader, &opts, &meter);
        // The principal's resources (the reverse walk), each then through every hop, from the
        // principal outward, until the page is full.
        self.lookup_with(
            reader,
            resource_type,
            permission,
            principal,
            &opts,
            &meter,
            page,
            |resource, principal_value| {
                let mut value = Tri::from_permissionship(&principal_value);
                for i in (0..actors.len()).rev() {
                    let delegator = probe.acting_for(i);
                    let h = pool.hop(resource, permission, &actors[i], &delegator, &context)?;
                    value = value.and(h.value);
                    if value.is_false() {
                        return Ok(None);
                    }
                }
                Ok(Some(value.permissionship()))
            },
        )
    }
}

/// A delegated check's answer as a readable tree: the chain, the principal's proof, then
/// each hop's from the principal outward, marking the first link that denied. The one text
/// form of a chain's proofs (the CLI prints it).
pub struct ChainProof<'a> {
    pub request: &'a DelegatedCheck,
    pub result: &'a DelegatedResult,
}

fn mark(p: &Permissionship) -> &'static str {
    match p {
        Permissionship::Allowed => "✓",
        Permissionship::Denied => "✗",
        Permissionship::Conditional { .. } => "?",
    }
}

fn indented(f: &mut fmt::Formatter<'_>, text: &str, pad: &str) -> fmt::Result {
    for line in text.lines() {
        writeln!(f, "{pad}{line}")?;
    }
    Ok(())
}

impl fmt::Display for ChainProof<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (req, res) = (self.request, self.result);
        let c = &req.check;
        let chain: Vec<String> = req.actors.iter().map(|a| a.to_string()).collect();
        write!(
            f,
            "{} {}#{}: ",
            mark(&res.permissionship),
            c.resource,
            c.permission
        )?;
        for a in &chain {
            write!(f, "{a} for ")?;
        }
        write!(f, "{}", c.subject)?;
        if let Permissionship::Conditional { missing } = &res.permissionship {
            write!(f, " (conditional: missing {})", missing.join(", "))?;
        }
        writeln!(f, " at revision {}", res.revision.0)?;
        let flag = |link: ChainLink| {
            if res.denied_at == Some(link) {
                "   ← first link that denies"
            } else {
                ""
            }
        };
        let last = req.actors.is_empty();
        let (branch, pad) = if last {
            ("└─", "   ")
        } else {
            ("├─", "│  ")
        };
        let pmark = res
            .proof
            .as_ref()
            .map(|p| mark(&p.permissionship()))
            .unwrap_or(if res.denied_at == Some(ChainLink::Principal) {
                "✗"
            } else {
                "·"
            });
        writeln!(
            f,
            "{branch} {pmark} principal {} has {} on {}{}",
            c.subject,
            c.permission,
            c.resource,
            flag(ChainLink::Principal)
        )?;
        if let Some(p) = &res.proof {
            indented(f, &p.to_string(), pad)?;
        }
        let n = req.actors.len();
        for (k, i) in (0..n).rev().enumerate() {
            let (branch, pad) = if i == 0 {
                ("└─", "   ")
            } else {
                ("├─", "│  ")
            };
            let proof = res.actor_proofs.get(i);
            let hmark = proof.map(|p| mark(&p.permissionship())).unwrap_or(
                if res.denied_at == Some(ChainLink::Actor(i)) {
                    "✗"
                } else {
                    "·"
                },
            );
            writeln!(
                f,
                "{branch} {hmark} hop {}: actors[{i}] {} acting for {}{}",
                k + 1,
                req.actors[i],
                req.acting_for(i),
                flag(ChainLink::Actor(i))
            )?;
            if let Some(p) = proof {
                indented(f, &p.to_string(), pad)?;
            }
        }
        Ok(())
    }
}
