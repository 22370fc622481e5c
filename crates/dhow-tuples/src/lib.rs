//! Dhow's tuple model: names, object references, subjects, relationships, revisions, the
//! snapshot-reader trait through which the engine reads, and an in-memory MVCC store.
//!
//! No IO, no async: everything here is plain data and plain functions.

mod error;
mod memstore;
mod model;
mod parse;
mod reader;
mod store;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;
pub mod validate;

pub use error::{Error, ParseError};
pub use memstore::{MemSnapshot, MemStore, WriteOp};
pub use model::{
    CaveatRef, ObjectRef, Relationship, RelationshipKey, Revision, Subject, SubjectRelation,
    Timestamp, ELLIPSIS, WILDCARD,
};
pub use parse::{parse_object, parse_relationship, parse_subject};
pub use reader::{RelationshipFilter, SnapshotReader};
pub use store::{
    check_preconditions, Batch, BoxedReader, Change, Precondition, SharedMemStore, TupleStore,
    WriteRequest,
};
