//! Canonical schema text: `impl Display for Schema` and friends. The output re-parses to the
//! same [`Schema`]: `compile(&schema.to_string()) == Ok(schema)` for every compiled schema.
//!
//! Layout: `use expiration`, then caveats, then definitions, each sorted by name and separated by
//! a blank line; in a definition, relations then permissions, each sorted by name; four-space
//! indentation; doc comments as `///` lines. Expressions use `->` for `.any()` and parenthesize
//! every compound operand of a different operator (SpiceDB's `+` > `&` > `-` precedence is easy
//! to misread), except the left operand of `-` in a chain (`a - b - c`).

use std::fmt::{self, Display, Formatter, Write};

use crate::model::{
    AllowedKind, AllowedSubject, ArrowMode, Caveat, Definition, Permission, Relation, Rewrite,
    Schema,
};

const INDENT: &str = "    ";

impl Display for Schema {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut gap = |f: &mut Formatter<'_>| -> fmt::Result {
            if !first {
                f.write_char('\n')?;
            }
            first = false;
            Ok(())
        };
        if self.uses_expiration {
            gap(f)?;
            f.write_str("use expiration\n")?;
        }
        for caveat in self.caveats.values() {
            gap(f)?;
            write!(f, "{caveat}")?;
        }
        for def in self.definitions.values() {
            gap(f)?;
            write!(f, "{def}")?;
        }
        Ok(())
    }
}

impl Display for Caveat {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self
            .parameters
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        // The expression goes on its own lines so that a trailing `//` comment in it cannot
        // swallow the closing brace.
        writeln!(f, "caveat {}({}) {{", self.name, params.join(", "))?;
        writeln!(f, "{INDENT}{}", self.expression)?;
        f.write_str("}\n")
    }
}

fn write_doc(f: &mut Formatter<'_>, doc: Option<&str>, indent: &str) -> fmt::Result {
    if let Some(doc) = doc {
        for line in doc.lines() {
            if line.is_empty() {
                writeln!(f, "{indent}///")?;
            } else {
                writeln!(f, "{indent}/// {line}")?;
            }
        }
    }
    Ok(())
}

impl Display for Definition {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_doc(f, self.doc.as_deref(), "")?;
        if self.relations.is_empty() && self.permissions.is_empty() {
            return writeln!(f, "definition {} {{}}", self.name);
        }
        writeln!(f, "definition {} {{", self.name)?;
        for rel in self.relations.values() {
            write_doc(f, rel.doc.as_deref(), INDENT)?;
            writeln!(f, "{INDENT}{rel}")?;
        }
        if !self.relations.is_empty() && !self.permissions.is_empty() {
            f.write_char('\n')?;
        }
        for perm in self.permissions.values() {
            write_doc(f, perm.doc.as_deref(), INDENT)?;
            writeln!(f, "{INDENT}{perm}")?;
        }
        f.write_str("}\n")
    }
}

/// One line, without doc comment: `relation viewer: user | group#member`.
impl Display for Relation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "relation {}: ", self.name)?;
        for (i, allowed) in self.allowed.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{allowed}")?;
        }
        Ok(())
    }
}

/// `user`, `user:*`, `group#member`, each with ` with caveat`, ` with expiration` or
/// ` with caveat and expiration`.
impl Display for AllowedSubject {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.type_name)?;
        match &self.kind {
            AllowedKind::Object => {}
            AllowedKind::Wildcard => f.write_str(":*")?,
            AllowedKind::SubjectSet(rel) => write!(f, "#{rel}")?,
        }
        match (&self.caveat, self.expiration) {
            (Some(c), true) => write!(f, " with {c} and expiration"),
            (Some(c), false) => write!(f, " with {c}"),
            (None, true) => f.write_str(" with expiration"),
            (None, false) => Ok(()),
        }
    }
}

/// One line, without doc comment: `permission view = viewer + parent->view`.
impl Display for Permission {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "permission {} = {}", self.name, self.rewrite)
    }
}

/// Where a rewrite is printed, which decides whether it needs parentheses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Top,
    Operand,
    ExclusionLeft,
}

/// The expression text, e.g. `(a + b) & c.all(d) - e`.
impl Display for Rewrite {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_rewrite(f, self, Position::Top)
    }
}

fn write_rewrite(f: &mut Formatter<'_>, r: &Rewrite, pos: Position) -> fmt::Result {
    match r {
        Rewrite::Nil => f.write_str("nil"),
        Rewrite::Computed(name) => f.write_str(name),
        Rewrite::Arrow {
            tupleset,
            computed,
            mode: ArrowMode::Any,
        } => {
            write!(f, "{tupleset}->{computed}")
        }
        Rewrite::Arrow {
            tupleset,
            computed,
            mode: ArrowMode::All,
        } => {
            write!(f, "{tupleset}.all({computed})")
        }
        Rewrite::Union(items) => write_nary(f, items, " + ", pos),
        Rewrite::Intersection(items) => write_nary(f, items, " & ", pos),
        Rewrite::Exclusion(a, b) => {
            let parens = pos == Position::Operand;
            if parens {
                f.write_char('(')?;
            }
            write_rewrite(f, a, Position::ExclusionLeft)?;
            f.write_str(" - ")?;
            write_rewrite(f, b, Position::Operand)?;
            if parens {
                f.write_char(')')?;
            }
            Ok(())
        }
    }
}

fn write_nary(f: &mut Formatter<'_>, items: &[Rewrite], op: &str, pos: Position) -> fmt::Result {
    match items {
        // Not produced by the compiler; print something that parses.
        [] => f.write_str("nil"),
        [only] => write_rewrite(f, only, pos),
        _ => {
            let parens = pos != Position::Top;
            if parens {
                f.write_char('(')?;
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(op)?;
                }
                write_rewrite(f, item, Position::Operand)?;
            }
            if parens {
                f.write_char(')')?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::compile;

    fn round(src: &str) -> String {
        let schema = compile(src).unwrap();
        let printed = schema.to_string();
        assert_eq!(compile(&printed).unwrap(), schema, "printed:\n{printed}");
        printed
    }

    #[test]
    fn prints_with_explicit_structure() {
        let src = "definition doc {\n  relation aaa: doc\n  relation bbb: doc\n  relation ccc: doc\n  \
                   permission one = aaa + bbb - ccc\n  permission two = aaa - bbb + ccc\n  \
                   permission three = aaa & bbb + ccc - aaa - bbb\n  permission four = aaa - (bbb - ccc)\n  \
                   permission five = aaa.any(bbb) + aaa.all(ccc) + nil\n}";
        let printed = round(src);
        assert_eq!(
            printed,
            "definition doc {\n    relation aaa: doc\n    relation bbb: doc\n    relation ccc: doc\n\n    \
             permission five = aaa->bbb + aaa.all(ccc) + nil\n    permission four = aaa - (bbb - ccc)\n    \
             permission one = (aaa + bbb) - ccc\n    permission three = (aaa & (bbb + ccc)) - aaa - bbb\n    \
             permission two = aaa - (bbb + ccc)\n}\n"
        );
    }

    #[test]
    fn prints_docs_caveats_and_expiration() {
        let src = "use expiration\n/** The doc.\n * Second line. */\ndefinition user {}\n\
                   caveat cav(a int, b list<string>) {\n  a > 1 && 'x' in b // trailing\n}\n\
                   definition doc {\n  /// who\n  relation viewer: user with cav and expiration | user:* with expiration\n}";
        let printed = round(src);
        assert_eq!(
            printed,
            "use expiration\n\ncaveat cav(a int, b list<string>) {\n    a > 1 && 'x' in b // trailing\n}\n\n\
             definition doc {\n    /// who\n    relation viewer: user with cav and expiration | user:* with expiration\n}\n\n\
             /// The doc.\n/// Second line.\ndefinition user {}\n"
        );
    }

    #[test]
    fn empty_schema_prints_nothing() {
        assert_eq!(round("// nothing here\n"), "");
    }
}
