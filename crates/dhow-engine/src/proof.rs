//! Proofs: the tree of rewrite steps and relationships that decided a Check, built by the
//! same evaluation that produced the answer.

use std::fmt;

use dhow_schema::ArrowMode;
use dhow_tuples::{ObjectRef, Relationship};

/// One node of a proof. `allowed` is the value of this node; `children` are the nodes that
/// decided it. For an allowed union only the granting branch is kept; for a denied union
/// every branch (each says what was missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub step: Step,
    pub allowed: bool,
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
    /// The branch re-entered a `resource#relation` already being evaluated: it adds nothing.
    Cycle {
        resource: ObjectRef,
        relation: String,
    },
}

impl Proof {
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
        let mark = if self.allowed { "✓" } else { "✗" };
        writeln!(f, "{:indent$}{mark} {}", "", self.step, indent = depth * 2)?;
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
        }
    }
}
