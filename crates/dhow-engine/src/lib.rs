//! Dhow's permission engine. It answers Check, CheckBulk, Expand, LookupResources and
//! LookupSubjects at one revision, reading relationships only through
//! [`dhow_tuples::SnapshotReader`]. It never sees RocksDB, Raft or protobuf.
//!
//! Check builds the proof of its answer while it evaluates (when asked), so an explanation is
//! the evaluation itself, never a second computation beside it.

mod check;
mod error;
mod expand;
mod lookup;
mod proof;
mod subjects;
mod validate;

use std::sync::Arc;

use dhow_schema::Schema;
use dhow_tuples::{ObjectRef, Subject, Timestamp};

pub use check::CheckResult;
pub use error::Error;
pub use expand::{ExpandNode, ExpandTree};
pub use proof::{Proof, Step};
pub use subjects::{FoundSubject, SubjectSet};

/// Default limit on how deep an evaluation may recurse (as SpiceDB's default of 50).
pub const DEFAULT_MAX_DEPTH: u32 = 50;

/// Per-call options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The evaluation time: relationships that expire at or before it are invisible.
    pub now: Timestamp,
    /// Build the proof of a Check answer.
    pub explain: bool,
    /// Recursion limit; past it the call fails with [`Error::MaxDepth`].
    pub max_depth: u32,
}

impl Options {
    /// Options for an evaluation now, without proof, at the default depth limit.
    pub fn now() -> Self {
        Options {
            now: Timestamp::now(),
            explain: false,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }

    /// The same options with proofs on.
    pub fn with_explain(mut self) -> Self {
        self.explain = true;
        self
    }
}

/// One check: may `subject` have `permission` (a relation or permission) on `resource`?
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckRequest {
    pub resource: ObjectRef,
    pub permission: String,
    pub subject: Subject,
}

impl CheckRequest {
    pub fn new(resource: ObjectRef, permission: impl Into<String>, subject: Subject) -> Self {
        CheckRequest {
            resource,
            permission: permission.into(),
            subject,
        }
    }
}

/// The engine over one compiled schema. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    schema: Arc<Schema>,
}

impl Engine {
    pub fn new(schema: Arc<Schema>) -> Self {
        Engine { schema }
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

    /// The relationships of `rels` visible at `now`: expired ones dropped; a caveated one is an
    /// error, since caveats are not evaluated yet.
    pub(crate) fn visible(
        rels: Vec<dhow_tuples::Relationship>,
        now: Timestamp,
    ) -> Result<Vec<dhow_tuples::Relationship>, Error> {
        let mut out = Vec::with_capacity(rels.len());
        for r in rels {
            if r.is_expired_at(now) {
                continue;
            }
            if r.caveat.is_some() {
                return Err(Error::CaveatUnsupported(r.to_string()));
            }
            out.push(r);
        }
        Ok(out)
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
