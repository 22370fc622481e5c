//! Limits on what one schema may hold, checked before type checking so that no schema can
//! make the compiler (or the engine's per-schema analysis) do unbounded work.

use crate::ast::{Item, SchemaFile};
use crate::error::{ErrorKind, Pending, SchemaError};

/// How large a schema [`compile_with`](crate::compile_with) accepts. The defaults are far
/// above what real schemas need (SpiceDB's public scenarios have at most a dozen definitions
/// of a dozen members, in a few KiB) and compile in well under a second: a schema at every
/// default limit is about 1 MiB of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Bytes of schema text. Default 4 MiB.
    pub max_schema_bytes: usize,
    /// Definitions (object types). Default 10,000.
    pub max_definitions: usize,
    /// Relations and permissions of one definition. Default 1,000.
    pub max_members_per_definition: usize,
    /// Relations and permissions of all definitions together. Default 100,000.
    pub max_members: usize,
    /// Bytes of one caveat's CEL expression. Default 16 KiB.
    pub max_caveat_expression_bytes: usize,
    /// Nodes of one caveat's CEL expression after macro expansion. Default 2,000.
    pub max_caveat_expression_nodes: usize,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_schema_bytes: 4 * 1024 * 1024,
            max_definitions: 10_000,
            max_members_per_definition: 1_000,
            max_members: 100_000,
            max_caveat_expression_bytes: dhow_caveat::Limits::default().max_expression_bytes,
            max_caveat_expression_nodes: dhow_caveat::Limits::default().max_expression_nodes,
        }
    }
}

impl CompileLimits {
    /// The limits of one caveat expression.
    pub(crate) fn caveat(&self) -> dhow_caveat::Limits {
        dhow_caveat::Limits {
            max_expression_bytes: self.max_caveat_expression_bytes,
            max_expression_nodes: self.max_caveat_expression_nodes,
        }
    }

    /// Refuses text longer than the limit, pointing at the first byte past it.
    pub(crate) fn check_size(&self, src: &str) -> Result<(), SchemaError> {
        if src.len() <= self.max_schema_bytes {
            return Ok(());
        }
        let mut at = self.max_schema_bytes;
        while !src.is_char_boundary(at) {
            at -= 1;
        }
        Err(SchemaError::single(
            src,
            Pending::new(
                at,
                ErrorKind::TooLarge,
                format!(
                    "schema is {} bytes, more than the limit of {} bytes",
                    src.len(),
                    self.max_schema_bytes
                ),
            ),
        ))
    }

    /// Refuses a parsed file with too many definitions or members, pointing at the first one
    /// past a limit.
    pub(crate) fn check_counts(&self, src: &str, file: &SchemaFile) -> Result<(), SchemaError> {
        let too_large = |offset: usize, message: String| {
            Err(SchemaError::single(
                src,
                Pending::new(offset, ErrorKind::TooLarge, message),
            ))
        };
        let mut definitions = 0;
        let mut members = 0;
        for item in &file.items {
            let Item::Definition(d) = item else {
                continue;
            };
            definitions += 1;
            if definitions > self.max_definitions {
                return too_large(
                    d.name.span.start,
                    format!(
                        "definition `{}` is one more than the limit of {} definitions",
                        d.name.name, self.max_definitions
                    ),
                );
            }
            if let Some(m) = d.members.get(self.max_members_per_definition) {
                return too_large(
                    m.name().span.start,
                    format!(
                        "definition `{}` has {} relations and permissions, more than the limit \
                         of {} per definition",
                        d.name.name,
                        d.members.len(),
                        self.max_members_per_definition
                    ),
                );
            }
            if let Some(m) = d.members.get(self.max_members.saturating_sub(members)) {
                return too_large(
                    m.name().span.start,
                    format!(
                        "`{}#{}` is one more than the limit of {} relations and permissions in \
                         all definitions together",
                        d.name.name,
                        m.name().name,
                        self.max_members
                    ),
                );
            }
            members += d.members.len();
        }
        Ok(())
    }
}
