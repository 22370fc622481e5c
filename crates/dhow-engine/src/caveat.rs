//! Caveats in the engine: the three-valued result of a membership (allowed, denied, or
//! conditional on missing context), its algebra, and evaluating a relationship's caveat with
//! the request's context through `dhow-caveat`, within the request's caveat cost budget.

use std::collections::BTreeSet;

use dhow_caveat::{CaveatError, Context, Outcome};
use dhow_tuples::Relationship;

use crate::budget::Meter;
use crate::proof::{Proof, Step};
use crate::{Engine, Error};

/// The answer of a check: allowed, denied, or allowed only if the caveats that could not be
/// decided turn out true (they need the listed parameters, which no context supplied).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Permissionship {
    Allowed,
    Denied,
    /// Undecided without these context parameters (sorted, at least one).
    Conditional {
        missing: Vec<String>,
    },
}

impl Permissionship {
    /// True only for [`Permissionship::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Permissionship::Allowed)
    }

    /// True for [`Permissionship::Conditional`].
    pub fn is_conditional(&self) -> bool {
        matches!(self, Permissionship::Conditional { .. })
    }

    /// The missing parameters of a conditional answer (empty otherwise).
    pub fn missing(&self) -> &[String] {
        match self {
            Permissionship::Conditional { missing } => missing,
            _ => &[],
        }
    }
}

/// A membership value in Kleene's three-valued logic; `U` carries the parameters it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Tri {
    F,
    U(BTreeSet<String>),
    T,
}

impl Tri {
    /// The value of an answer.
    pub fn from_permissionship(p: &Permissionship) -> Tri {
        match p {
            Permissionship::Allowed => Tri::T,
            Permissionship::Denied => Tri::F,
            Permissionship::Conditional { missing } => Tri::U(missing.iter().cloned().collect()),
        }
    }

    pub fn is_true(&self) -> bool {
        matches!(self, Tri::T)
    }

    pub fn is_false(&self) -> bool {
        matches!(self, Tri::F)
    }

    /// `a ∨ b`: true wins, then unknown (the missing parameters of both), then false.
    pub fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::T, _) | (_, Tri::T) => Tri::T,
            (Tri::U(mut a), Tri::U(b)) => {
                a.extend(b);
                Tri::U(a)
            }
            (Tri::U(a), Tri::F) | (Tri::F, Tri::U(a)) => Tri::U(a),
            (Tri::F, Tri::F) => Tri::F,
        }
    }

    /// `a ∧ b`: false wins, then unknown, then true.
    pub fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::F, _) | (_, Tri::F) => Tri::F,
            (Tri::U(mut a), Tri::U(b)) => {
                a.extend(b);
                Tri::U(a)
            }
            (Tri::U(a), Tri::T) | (Tri::T, Tri::U(a)) => Tri::U(a),
            (Tri::T, Tri::T) => Tri::T,
        }
    }

    /// `¬a`.
    pub fn not(self) -> Tri {
        match self {
            Tri::T => Tri::F,
            Tri::F => Tri::T,
            u => u,
        }
    }

    pub fn permissionship(&self) -> Permissionship {
        match self {
            Tri::T => Permissionship::Allowed,
            Tri::F => Permissionship::Denied,
            Tri::U(m) => Permissionship::Conditional {
                missing: m.iter().cloned().collect(),
            },
        }
    }
}

impl Engine {
    /// The value of `r`'s caveat under the request's `context` (true without a caveat), and
    /// the proof node that shows the caveat, the context it was evaluated with and its result
    /// (when `explain`). Spends the request's caveat budget.
    pub(crate) fn caveat_of(
        &self,
        r: &Relationship,
        context: Option<&Context>,
        meter: &Meter,
        explain: bool,
    ) -> Result<(Tri, Option<Proof>), Error> {
        let Some(c) = &r.caveat else {
            return Ok((Tri::T, None));
        };
        let failed = |message: String| Error::CaveatEvaluation {
            caveat: c.name.clone(),
            message,
        };
        let program = self
            .schema()
            .caveats
            .get(&c.name)
            .and_then(|cv| cv.program.as_ref())
            .ok_or_else(|| {
                failed(format!(
                    "relationship `{r}` names a caveat the schema does not define"
                ))
            })?;
        let own = match &c.context {
            Some(text) => Some(
                Context::from_json(text)
                    .map_err(|e| failed(format!("relationship `{r}` has a bad context: {e}")))?,
            ),
            None => None,
        };
        let mut budget = meter.caveat_budget();
        let result = program.evaluate(own.as_ref(), context, &mut budget);
        meter.spend_caveat(budget, || format!("caveat `{}` of {r}", c.name))?;
        let tri = match result {
            Ok(Outcome::True) => Tri::T,
            Ok(Outcome::False) => Tri::F,
            Ok(Outcome::Missing(m)) => Tri::U(m.into_iter().collect()),
            Err(CaveatError::Parameter {
                parameter,
                from_request: true,
                message,
                ..
            }) => {
                return Err(Error::InvalidContext {
                    parameter: Some(parameter),
                    message: format!("caveat `{}`: {message}", c.name),
                })
            }
            Err(CaveatError::CostExceeded { .. }) => {
                return Err(meter.caveat_exhausted(|| format!("caveat `{}` of {r}", c.name)))
            }
            Err(e) => return Err(failed(format!("on relationship `{r}`: {e}"))),
        };
        let proof = explain.then(|| {
            Proof::new(
                Step::Caveat {
                    name: c.name.clone(),
                    context: program.seen(own.as_ref(), context),
                },
                &tri,
                Vec::new(),
            )
        });
        Ok((tri, proof))
    }

    /// Evaluates the caveat `c` (of a relationship or an Expand leaf) alone under the
    /// request's `context`, with the default caveat budget: for callers that walk an Expand
    /// tree.
    pub fn caveat_permissionship(
        &self,
        c: &dhow_tuples::CaveatRef,
        context: Option<&Context>,
    ) -> Result<Permissionship, Error> {
        let meter = Meter::new(&crate::Options::at(dhow_tuples::Timestamp(0)));
        // Any relationship carrying the caveat will do: only its caveat is read.
        let r = Relationship {
            caveat: Some(c.clone()),
            ..Relationship::new(
                dhow_tuples::ObjectRef::new("caveat", "evaluation"),
                "caveat",
                dhow_tuples::Subject::object("caveat", "evaluation"),
            )
        };
        let (t, _) = self.caveat_of(&r, context, &meter, false)?;
        Ok(t.permissionship())
    }
}
