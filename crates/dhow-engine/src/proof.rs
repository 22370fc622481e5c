//! Proofs: the tree of rewrite steps and relationships that decided a Check, built by the
//! same evaluation that produced the answer.

use std::fmt;

use dhow_caveat::Context;
use dhow_schema::ArrowMode;
use dhow_tuples::{ObjectRef, Relationship, Subject};

use crate::caveat::{Permissionship, Tri};

/// One node of a proof. Its value is `allowed`, or conditional when `missing` is not empty
/// (the node holds only if the caveats it rests on hold, which need those context
/// parameters), or denied; `children` are the nodes that decided it. For an allowed union
/// only the granting branch is kept; otherwise every branch (each says what was missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub step: Step,
    pub allowed: bool,
    /// For a conditional node: the parameters it waits for (sorted); empty otherwise.
    pub missing: Vec<String>,
    pub children: Vec<Proof>,
}

/// What a proof node evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `resource#relation`, a relation or permission of the resource.
    Member {
        resource: ObjectRef,
        relation: String,
    },
    /// A stored relationship whose subject is the checked subject.
    Direct(Relationship),
    /// A stored relationship whose subject is the wildcard of the subject's type.
    Wildcard(Relationship),
    /// A stored relationship to a subject set, followed into it (one child).
    SubjectSet(Relationship),
    /// The checked subject set is `resource#relation` itself.
    SameSubject,
    /// No stored relationship of the relation reached the subject.
    NoMatch,
    /// `a + b`.
    Union,
    /// `a & b`.
    Intersection,
    /// `a - b`: children are the base and, if evaluated, the excluded part.
    Exclusion,
    /// `nil`.
    Nil,
    /// `tupleset->computed`: children are one `Member` per followed relationship.
    Arrow {
        tupleset: String,
        computed: String,
        mode: ArrowMode,
    },
    /// A stored relationship of an arrow's tupleset, followed to its target (one child).
    ArrowHop(Relationship),
    /// The branch re-entered a `resource#relation` already being evaluated: it adds nothing
    /// (or, in a cycle through caveats, what the previous pass found conditional).
    Cycle {
        resource: ObjectRef,
        relation: String,
    },
    /// The caveat of the relationship above, evaluated with `context`: the values of its
    /// parameters that the relationship and the request supplied (the relationship's win).
    /// The node's value is the caveat's result.
    Caveat { name: String, context: Context },
    /// One hop of a delegated check: `actor`, acting for `acting_for`, may use `permission`
    /// on the resource. Its children are the ways tried (docs/agents.md): the delegation on
    /// the actor (`actor#permission`, evaluated for `acting_for`), then one [`Step::DelegateSet`]
    /// per delegate set of `acting_for`. No children: the actor's type declares no such
    /// permission and `acting_for` has no delegate set.
    Hop {
        actor: ObjectRef,
        acting_for: Subject,
        permission: String,
    },
    /// A delegate set of the one the actor acts for: the subject set `subject_set`
    /// (`user:alice#delegate`) has the permission on the resource (first child) and the actor
    /// is in it (second child, absent when the first denies).
    DelegateSet { subject_set: Subject },
}

impl Proof {
    /// A node of value `value`.
    pub(crate) fn new(step: Step, value: &Tri, children: Vec<Proof>) -> Proof {
        let (allowed, missing) = match value {
            Tri::T => (true, Vec::new()),
            Tri::F => (false, Vec::new()),
            Tri::U(m) => (false, m.iter().cloned().collect()),
        };
        Proof {
            step,
            allowed,
            missing,
            children,
        }
    }

    /// The node's value.
    pub fn permissionship(&self) -> Permissionship {
        if self.allowed {
            Permissionship::Allowed
        } else if self.missing.is_empty() {
            Permissionship::Denied
        } else {
            Permissionship::Conditional {
                missing: self.missing.clone(),
            }
        }
    }

    /// Every caveat step of this proof with its result, in proof order.
    pub fn caveats(&self) -> Vec<&Proof> {
        let mut out = Vec::new();
        self.collect_caveats(&mut out);
        out
    }

    fn collect_caveats<'a>(&'a self, out: &mut Vec<&'a Proof>) {
        if matches!(self.step, Step::Caveat { .. }) {
            out.push(self);
        }
        for c in &self.children {
            c.collect_caveats(out);
        }
    }

    /// Every relationship this proof rests on, in proof order.
    pub fn relationships(&self) -> Vec<&Relationship> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Relationship>) {
        match &self.step {
            Step::Direct(r) | Step::Wildcard(r) | Step::SubjectSet(r) | Step::ArrowHop(r) => {
                out.push(r)
            }
            _ => {}
        }
        for c in &self.children {
            c.collect(out);
        }
    }

    fn fmt_indent(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        let mark = if self.allowed {
            "✓"
        } else if self.missing.is_empty() {
            "✗"
        } else {
            "?"
        };
        write!(f, "{:indent$}{mark} {}", "", self.step, indent = depth * 2)?;
        if !self.allowed && !self.missing.is_empty() {
            write!(f, " (conditional: missing {})", self.missing.join(", "))?;
        }
        writeln!(f)?;
        for c in &self.children {
            c.fmt_indent(f, depth + 1)?;
        }
        Ok(())
    }
}

impl fmt::Display for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_indent(f, 0)
    }
}

/// One node's text, without its mark or indentation: `document:a#view`, `union (+)`,
/// `relationship document:a#viewer@user:b`, ...
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Member { resource, relation } => write!(f, "{resource}#{relation}"),
            Step::Direct(r) => write!(f, "relationship {r}"),
            Step::Wildcard(r) => write!(f, "wildcard relationship {r}"),
            Step::SubjectSet(r) => write!(f, "relationship {r}, through its subject set"),
            Step::SameSubject => write!(f, "the subject set itself"),
            Step::NoMatch => write!(f, "no relationship reaches the subject"),
            Step::Union => write!(f, "union (+)"),
            Step::Intersection => write!(f, "intersection (&)"),
            Step::Exclusion => write!(f, "exclusion (-)"),
            Step::Nil => write!(f, "nil"),
            Step::Arrow {
                tupleset,
                computed,
                mode,
            } => match mode {
                ArrowMode::Any => write!(f, "{tupleset}->{computed}"),
                ArrowMode::All => write!(f, "{tupleset}.all({computed})"),
            },
            Step::ArrowHop(r) => write!(f, "relationship {r}, followed"),
            Step::Cycle { resource, relation } => {
                write!(f, "{resource}#{relation} again (cycle, adds nothing)")
            }
            Step::Caveat { name, context } => write!(f, "caveat {name} with {context}"),
            Step::Hop {
                actor,
                acting_for,
                permission,
            } => write!(f, "{actor} acting for {acting_for} may use {permission}"),
            Step::DelegateSet { subject_set } => {
                write!(
                    f,
                    "delegate set {subject_set} (has it on the resource, and holds the actor)"
                )
            }
        }
    }
}
