//! Dhow's schema language (SpiceDB-compatible): lexer, parser, type checker, canonical printer
//! and the compiled [`Schema`] the engine uses. No IO, no async, no panics on any input.
//!
//! ```
//! let schema = dhow_schema::compile(
//!     "definition user {}\n\
//!      definition document {\n\
//!          relation viewer: user\n\
//!          permission view = viewer\n\
//!      }",
//! )
//! .unwrap();
//! assert!(schema.member("document", "view").is_some());
//! // The canonical text compiles back to the same schema.
//! assert_eq!(dhow_schema::compile(&schema.to_string()).unwrap(), schema);
//! ```

pub mod ast;
pub mod error;
pub mod lexer;
pub mod limits;
pub mod model;
pub mod parser;
pub mod print;
pub mod typecheck;

pub use ast::SchemaFile;
pub use error::{Diagnostic, ErrorKind, SchemaError, MAX_DIAGNOSTICS};
pub use lexer::Span;
pub use limits::CompileLimits;
pub use model::{
    AllowedKind, AllowedSubject, ArrowMode, Caveat, Definition, Member, Permission, Relation,
    Rewrite, Schema,
};
pub use parser::parse;

/// Parses and type-checks schema text into a compiled [`Schema`], within the default
/// [`CompileLimits`]. On failure the error holds the first syntax error or limit exceeded, or
/// every type error found, each with its line and column.
pub fn compile(text: &str) -> Result<Schema, SchemaError> {
    compile_with(text, &CompileLimits::default())
}

/// [`compile`] within `limits`. Time and memory are linear in the text's size.
pub fn compile_with(text: &str, limits: &CompileLimits) -> Result<Schema, SchemaError> {
    limits.check_size(text)?;
    let file = parser::parse(text)?;
    limits.check_counts(text, &file)?;
    typecheck::check(text, &file, limits.caveat())
}
