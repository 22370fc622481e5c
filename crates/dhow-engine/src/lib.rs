//! Dhow's permission engine. It answers Check, CheckBulk, Expand, LookupResources and
//! LookupSubjects at one revision, reading relationships only through
//! [`dhow_tuples::SnapshotReader`]. It never sees RocksDB, Raft or protobuf.
//!
//! Check builds the proof of its answer while it evaluates (when asked), so an explanation is
//! the evaluation itself, never a second computation beside it.

mod budget;
mod caveat;
mod check;
mod delegate;
mod error;
mod expand;
mod lookup;
mod proof;
mod shared;
mod strata;
mod subjects;
mod table;
mod validate;

use std::sync::Arc;

use dhow_schema::Schema;
use dhow_tuples::{ObjectRef, Subject, Timestamp};

pub use budget::{Budget, Cancel};
pub use caveat::Permissionship;
pub use check::CheckResult;
pub use delegate::{ChainLink, ChainProof, DelegatedCheck, DelegatedResult};
/// A caveat context: parameter values by name (JSON), from a request or a relationship.
pub use dhow_caveat::Context as CaveatContext;
pub use error::Error;
pub use expand::{ExpandNode, ExpandTree, LeafSubject};
pub use lookup::{FoundResource, LookupPage};
pub use proof::{Proof, Step};
pub use shared::{Shared, SharedKey, SharedKeyRef, SharedResults, SharedValue};
pub use subjects::{FoundSubject, SubjectSet};

/// Default depth budget: how many nested steps (rewrite nodes, computed usersets, arrows,
/// subject sets, each counting one) one evaluation may take. Measured: the SpiceDB
/// conformance scenarios need at most 16, the benchmarks' synthetic graph (nested groups,
/// folder inheritance) 24; a folder hierarchy costs about 3 steps per level, a group
/// nesting 1, so this allows some 30 nested folders or 100 nested groups.
pub const DEFAULT_MAX_DEPTH: u32 = 100;

/// The largest depth budget an evaluation accepts; a larger [`Options::max_depth`] is
/// lowered to it. It bounds how deeply results nest (a proof at most about two levels per
/// step, an expand tree about one), so that cloning, dropping, printing or converting them
/// recursively stays far within a 2 MiB stack, even in a debug build.
pub const MAX_DEPTH_CEILING: u32 = 250;

/// Default dispatch budget: reader calls plus evaluations of a `resource#relation` not
/// answered from the memo, per request. Measured on the benchmarks' synthetic graph of 1M
/// relationships: a check takes about 525, CheckBulk of 100 checks 54,000, a
/// LookupResources returning 3,713 documents 52,000 (so about 140,000 for 10,000); the
/// conformance scenarios at most 95.
pub const DEFAULT_MAX_DISPATCHES: u64 = 1_000_000;

/// Default limit on the length of a delegation chain (the actors of a delegated check).
/// Agent frameworks nest two or three agents; eight leaves room without letting one request
/// ask for hundreds of hops.
pub const DEFAULT_MAX_ACTORS: usize = 8;

/// Default caveat cost budget of a request: steps of caveat expressions plus the size of the
/// values they work on, for all the caveats one request evaluates. A conformance caveat costs
/// 3 to 10 units per evaluation; 10,000,000 units take about a second in a release build at
/// worst (a comprehension over a large list), so one request cannot stall a thread longer.
pub const DEFAULT_MAX_CAVEAT_COST: u64 = 10_000_000;

/// Default limit on the size of a request's caveat context (its canonical JSON text), and of
/// one relationship's context at write ([`Engine::validate_relationship`]). SpiceDB's
/// default for relationship contexts is 4 KiB; a request may carry more (lists of groups).
pub const DEFAULT_MAX_CONTEXT_BYTES: usize = 64 * 1024;

/// Default limit on one relationship's caveat context at write, in bytes (SpiceDB's default).
pub const DEFAULT_MAX_RELATIONSHIP_CONTEXT_BYTES: usize = 4 * 1024;

/// Per-call options. Cheap to clone (the cancellation flag is shared, not copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The evaluation time: relationships that expire at or before it are invisible.
    pub now: Timestamp,
    /// Build the proof of a Check answer.
    pub explain: bool,
    /// Depth budget (at most [`MAX_DEPTH_CEILING`]); past it the call fails with
    /// [`Error::BudgetExhausted`] naming [`Budget::Depth`].
    pub max_depth: u32,
    /// Dispatch budget of the whole request (all items of a CheckBulk together); past it the
    /// call fails with [`Error::BudgetExhausted`] naming [`Budget::Dispatches`].
    pub max_dispatches: u64,
    /// Set from another thread to stop the evaluation with [`Error::Cancelled`].
    pub cancel: Option<Cancel>,
    /// The request's caveat context: values for caveat parameters that relationships leave
    /// open (a relationship's own values win). A [`CheckRequest`] may carry its own instead.
    pub context: Option<CaveatContext>,
    /// Caveat cost budget of the whole request; past it the call fails with
    /// [`Error::BudgetExhausted`] naming [`Budget::CaveatCost`].
    pub max_caveat_cost: u64,
    /// Largest request context accepted, in bytes of canonical JSON; past it the call fails
    /// with [`Error::InvalidContext`].
    pub max_context_bytes: usize,
    /// Longest delegation chain accepted (actors of a [`DelegatedCheck`]); past it the call
    /// fails with [`Error::InvalidChain`].
    pub max_actors: usize,
    /// Answers shared with other requests (a check cache; see `shared.rs`): looked up before
    /// a sub-problem is evaluated and offered once it is final, where its answer depends on
    /// nothing but the revision and the question.
    pub shared: Option<Shared>,
}

impl Options {
    /// Options for an evaluation at `now`, without proof, with the default budgets and no
    /// cancellation.
    pub fn at(now: Timestamp) -> Self {
        Options {
            now,
            explain: false,
            max_depth: DEFAULT_MAX_DEPTH,
            max_dispatches: DEFAULT_MAX_DISPATCHES,
            cancel: None,
            context: None,
            max_caveat_cost: DEFAULT_MAX_CAVEAT_COST,
            max_context_bytes: DEFAULT_MAX_CONTEXT_BYTES,
            max_actors: DEFAULT_MAX_ACTORS,
            shared: None,
        }
    }

    /// The same options with `context` as the request's caveat context.
    pub fn with_context(mut self, context: CaveatContext) -> Self {
        self.context = Some(context);
        self
    }

    /// Refuses a context past [`Options::max_context_bytes`].
    pub(crate) fn check_context(&self, context: Option<&CaveatContext>) -> Result<(), Error> {
        match context {
            Some(c) if c.len_bytes() > self.max_context_bytes => Err(Error::InvalidContext {
                parameter: None,
                message: format!(
                    "the context is {} bytes, more than the limit of {} bytes",
                    c.len_bytes(),
                    self.max_context_bytes
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Options for an evaluation now, without proof, with the default budgets.
    pub fn now() -> Self {
        Options::at(Timestamp::now())
    }

    /// The same options with proofs on.
    pub fn with_explain(mut self) -> Self {
        self.explain = true;
        self
    }

    /// The same options, stopped when `cancel` is set.
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }
}

/// One check: may `subject` have `permission` (a relation or permission) on `resource`?
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckRequest {
    pub resource: ObjectRef,
    pub permission: String,
    pub subject: Subject,
    /// This check's caveat context; `None` uses [`Options::context`].
    pub context: Option<CaveatContext>,
}

impl CheckRequest {
    pub fn new(resource: ObjectRef, permission: impl Into<String>, subject: Subject) -> Self {
        CheckRequest {
            resource,
            permission: permission.into(),
            subject,
            context: None,
        }
    }

    /// The same check with its own caveat context.
    pub fn with_context(mut self, context: CaveatContext) -> Self {
        self.context = Some(context);
        self
    }
}

/// The engine over one compiled schema. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    schema: Arc<Schema>,
    strata: Arc<strata::Strata>,
    /// For each type, the relations `D` such that the subject set `type:id#D` is allowed by
    /// some relation of the schema: the delegate sets a delegated check may go through.
    delegate_sets: Arc<std::collections::BTreeMap<String, Vec<String>>>,
    max_relationship_context_bytes: usize,
}

impl Engine {
    /// The engine over `schema`; analyses its recursion once (linear in its size).
    pub fn new(schema: Arc<Schema>) -> Self {
        let strata = Arc::new(strata::Strata::new(&schema));
        let delegate_sets = Arc::new(delegate::delegate_sets(&schema));
        Engine {
            schema,
            strata,
            delegate_sets,
            max_relationship_context_bytes: DEFAULT_MAX_RELATIONSHIP_CONTEXT_BYTES,
        }
    }

    /// The same engine, refusing relationships whose caveat context is larger than `bytes`
    /// (canonical JSON) in [`Engine::validate_relationship`].
    pub fn with_max_relationship_context_bytes(mut self, bytes: usize) -> Self {
        self.max_relationship_context_bytes = bytes;
        self
    }

    /// The recursion class of `type_name#member`.
    pub(crate) fn class(&self, type_name: &str, member: &str) -> strata::Class {
        self.strata.class(type_name, member)
    }

    /// Does the schema allow an evaluation step from `from` to `to`?
    pub(crate) fn allows(&self, from: strata::Class, to: strata::Class, negative: bool) -> bool {
        self.strata.allows(from, to, negative)
    }

    /// The schema this engine evaluates.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The relation or permission `relation` of `resource`'s type, or the error naming what is
    /// missing (the type, or the relation on it).
    pub(crate) fn member_of(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<dhow_schema::Member<'_>, Error> {
        let def = self
            .schema
            .definition(&resource.object_type)
            .ok_or_else(|| Error::UnknownType(resource.object_type.clone()))?;
        def.member(relation).ok_or_else(|| Error::UnknownRelation {
            type_name: resource.object_type.clone(),
            relation: relation.to_string(),
        })
    }

    /// The relationships of `rels` visible at `now`: expired ones dropped. (Caveats are
    /// evaluated where a relationship is used.)
    pub(crate) fn visible(
        mut rels: Vec<dhow_tuples::Relationship>,
        now: Timestamp,
    ) -> Vec<dhow_tuples::Relationship> {
        rels.retain(|r| !r.is_expired_at(now));
        rels
    }

    /// Validates that `type_name` is defined and, if given, that `relation` exists on it.
    pub fn validate_ref(&self, type_name: &str, relation: Option<&str>) -> Result<(), Error> {
        let def = self
            .schema
            .definition(type_name)
            .ok_or_else(|| Error::UnknownType(type_name.to_string()))?;
        if let Some(r) = relation {
            if def.member(r).is_none() {
                return Err(Error::UnknownRelation {
                    type_name: type_name.to_string(),
                    relation: r.to_string(),
                });
            }
        }
        Ok(())
    }
}
