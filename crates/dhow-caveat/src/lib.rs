//! Dhow's caveats: the subset of CEL that SpiceDB's caveats use, compiled against a caveat's
//! declared parameters and evaluated with partial information.
//!
//! - [`Program::compile`] parses the expression (with the `cel` crate's parser), checks every
//!   name and operator against the parameters' [`Type`]s and requires a boolean; errors carry
//!   the byte offset in the expression.
//! - [`Program::evaluate`] merges the relationship's [`Context`] over the request's (the
//!   relationship's values win), converts the values to the declared types, and evaluates. A
//!   parameter that neither supplies is unknown: the result is [`Outcome::Missing`] with the
//!   names of the parameters it still needs, unless the expression is decided without them
//!   (`false && x`). Every step costs; the caller's budget bounds the work.
//! - [`Program::check_context`] refuses a relationship context with an unknown parameter or a
//!   value of the wrong type.
//!
//! No IO, no clock, no global state: evaluation is a pure function of the program, the two
//! contexts and the budget.

mod compile;
mod eval;
mod types;
mod value;

pub use compile::Program;
pub use types::Type;
pub use value::{convert, parse_duration, parse_timestamp, Context, Key, Value};

/// Size limits of caveat expressions (checked when a schema is compiled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one caveat's expression. Default 16 KiB.
    pub max_expression_bytes: usize,
    /// Nodes of one caveat's expression after macro expansion. Default 2,000.
    pub max_expression_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_expression_bytes: 16 * 1024,
            max_expression_nodes: 2_000,
        }
    }
}

/// The result of one caveat evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    True,
    False,
    /// Undecided without these parameters (sorted, at least one).
    Missing(Vec<String>),
}

/// The crate's one error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaveatError {
    /// The expression does not compile; `offset` is the byte offset in the expression.
    #[error("caveat `{caveat}`: {message}")]
    Compile {
        caveat: String,
        offset: usize,
        message: String,
    },
    /// A context value cannot be converted to its parameter's type, or names no parameter.
    /// `from_request` tells the request's context from the relationship's.
    #[error("caveat `{caveat}`, parameter `{parameter}`: {message}")]
    Parameter {
        caveat: String,
        parameter: String,
        from_request: bool,
        message: String,
    },
    /// The expression failed at evaluation (no such key, overflow, division by zero, ...).
    #[error("caveat `{caveat}` failed: {message}")]
    Evaluation { caveat: String, message: String },
    /// The evaluation ran out of its cost budget.
    #[error("caveat `{caveat}` ran out of its evaluation cost budget of {limit} units")]
    CostExceeded { caveat: String, limit: u64 },
}

impl Program {
    /// The values of the caveat's parameters that the relationship's and the request's
    /// contexts supply (the relationship's win): what an evaluation sees, for proofs.
    pub fn seen(&self, relationship: Option<&Context>, request: Option<&Context>) -> Context {
        let mut out = serde_json::Map::new();
        for (p, _) in self.params.iter() {
            let v = relationship
                .and_then(|c| c.fields().get(p))
                .or_else(|| request.and_then(|c| c.fields().get(p)));
            if let Some(v) = v {
                out.insert(p.clone(), v.clone());
            }
        }
        Context::from_map(out)
    }

    /// Checks a relationship's context: every field names a parameter and converts to its
    /// type. (Missing parameters are fine: the request may supply them.)
    pub fn check_context(&self, ctx: &Context) -> Result<(), CaveatError> {
        for (k, v) in ctx.fields() {
            let Some((_, ty)) = self.params.iter().find(|(p, _)| p == k) else {
                let names: Vec<&str> = self.params.iter().map(|(p, _)| p.as_str()).collect();
                return Err(CaveatError::Parameter {
                    caveat: self.name.clone(),
                    parameter: k.clone(),
                    from_request: false,
                    message: format!(
                        "no such parameter (the caveat's parameters are: {})",
                        names.join(", ")
                    ),
                });
            };
            convert(v, ty).map_err(|message| CaveatError::Parameter {
                caveat: self.name.clone(),
                parameter: k.clone(),
                from_request: false,
                message,
            })?;
        }
        Ok(())
    }
}
