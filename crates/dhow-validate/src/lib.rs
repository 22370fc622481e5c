//! zed validation files: loading (`schema` or `schemaFile`, `relationships`, `assertions`,
//! `validation`) with errors that name line and column, and running them against the engine
//! through any [`Backend`] (in-process here; the server crate adds one over gRPC).

mod load;
mod run;

pub use load::{
    load_file, load_str, Assertion, AssertionKind, ExpectedRelation, LoadError, ValidationFile,
    MARKER,
};
pub use run::{run, Backend, InProcess, Outcome, Report};

/// What [`Backend::lookup_subjects`] returns, re-exported so that backends outside this
/// crate (the gRPC one in the `dhow` binary) need not depend on the engine.
pub use dhow_engine::FoundSubject;
/// What [`Backend::check_with_context`] takes and returns, re-exported likewise.
pub use dhow_engine::{CaveatContext, Permissionship};
