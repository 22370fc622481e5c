//! Caveat parameter types (`int`, `list<string>`, `map<any>`, `ipaddress`, ...) and the static
//! types the type checker works with.

use std::fmt;

/// A declared parameter type, as SpiceDB's caveats spell them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    Any,
    Bool,
    String,
    Int,
    Uint,
    Double,
    Bytes,
    Duration,
    Timestamp,
    IpAddress,
    List(Box<Type>),
    /// A map with string keys.
    Map(Box<Type>),
}

impl Type {
    /// Parses `int`, `list<string>`, `map<list<int>>`, ... (spaces allowed around `<`, `>`).
    pub fn parse(text: &str) -> Result<Type, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (ty, rest) = Self::parse_prefix(&compact, 0)?;
        if !rest.is_empty() {
            return Err(format!("unexpected `{rest}` after caveat type `{ty}`"));
        }
        Ok(ty)
    }

    fn parse_prefix(s: &str, depth: usize) -> Result<(Type, &str), String> {
        if depth > 16 {
            return Err("caveat type nested too deeply".to_string());
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let (name, rest) = s.split_at(end);
        let simple = match name {
            "any" => Some(Type::Any),
            "bool" => Some(Type::Bool),
            "string" => Some(Type::String),
            "int" => Some(Type::Int),
            "uint" => Some(Type::Uint),
            "double" => Some(Type::Double),
            "bytes" => Some(Type::Bytes),
            "duration" => Some(Type::Duration),
            "timestamp" => Some(Type::Timestamp),
            "ipaddress" => Some(Type::IpAddress),
            "list" | "map" => None,
            "" => return Err("expected a caveat type".to_string()),
            other => return Err(format!("unknown caveat type `{other}`")),
        };
        if let Some(t) = simple {
            if rest.starts_with('<') {
                return Err(format!("caveat type `{name}` takes no type argument"));
            }
            return Ok((t, rest));
        }
        let Some(inner) = rest.strip_prefix('<') else {
            return Err(format!("caveat type `{name}` needs one type argument"));
        };
        let (arg, rest) = Self::parse_prefix(inner, depth + 1)?;
        let Some(rest) = rest.strip_prefix('>') else {
            return Err(format!(
                "caveat type `{name}` takes exactly one type argument"
            ));
        };
        let t = if name == "list" {
            Type::List(Box::new(arg))
        } else {
            Type::Map(Box::new(arg))
        };
        Ok((t, rest))
    }

    /// The static type the checker gives a parameter of this type.
    pub(crate) fn ty(&self) -> Ty {
        match self {
            Type::Any => Ty::Dyn,
            Type::Bool => Ty::Bool,
            Type::String => Ty::String,
            Type::Int => Ty::Int,
            Type::Uint => Ty::Uint,
            Type::Double => Ty::Double,
            Type::Bytes => Ty::Bytes,
            Type::Duration => Ty::Duration,
            Type::Timestamp => Ty::Timestamp,
            Type::IpAddress => Ty::Ip,
            Type::List(t) => Ty::List(Box::new(t.ty())),
            Type::Map(t) => Ty::Map(Box::new(Ty::String), Box::new(t.ty())),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::Bool => f.write_str("bool"),
            Type::String => f.write_str("string"),
            Type::Int => f.write_str("int"),
            Type::Uint => f.write_str("uint"),
            Type::Double => f.write_str("double"),
            Type::Bytes => f.write_str("bytes"),
            Type::Duration => f.write_str("duration"),
            Type::Timestamp => f.write_str("timestamp"),
            Type::IpAddress => f.write_str("ipaddress"),
            Type::List(t) => write!(f, "list<{t}>"),
            Type::Map(t) => write!(f, "map<{t}>"),
        }
    }
}

/// A static type of the checker. `Dyn` is known only at evaluation (`any`, or a mix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ty {
    Dyn,
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Ip,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
}

impl Ty {
    pub fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn)
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    /// The type of both `a` and `b` where they agree, `Dyn` where they do not.
    pub fn join(a: &Ty, b: &Ty) -> Ty {
        match (a, b) {
            (x, y) if x == y => x.clone(),
            (Ty::List(x), Ty::List(y)) => Ty::List(Box::new(Ty::join(x, y))),
            (Ty::Map(k1, v1), Ty::Map(k2, v2)) => {
                Ty::Map(Box::new(Ty::join(k1, k2)), Box::new(Ty::join(v1, v2)))
            }
            _ => Ty::Dyn,
        }
    }

    /// Can a value of type `a` be compared for equality with one of type `b`?
    pub fn comparable(a: &Ty, b: &Ty) -> bool {
        match (a, b) {
            (Ty::Dyn, _) | (_, Ty::Dyn) | (Ty::Null, _) | (_, Ty::Null) => true,
            (x, y) if x.is_numeric() && y.is_numeric() => true,
            (Ty::List(x), Ty::List(y)) => Ty::comparable(x, y),
            (Ty::Map(k1, v1), Ty::Map(k2, v2)) => Ty::comparable(k1, k2) && Ty::comparable(v1, v2),
            (x, y) => x == y,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Dyn => f.write_str("dyn"),
            Ty::Null => f.write_str("null"),
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::String => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Duration => f.write_str("duration"),
            Ty::Timestamp => f.write_str("timestamp"),
            Ty::Ip => f.write_str("ipaddress"),
            Ty::List(t) => write!(f, "list<{t}>"),
            Ty::Map(k, v) => write!(f, "map<{k}, {v}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types() {
        assert_eq!(Type::parse("int").unwrap(), Type::Int);
        assert_eq!(
            Type::parse("map< list<string> >").unwrap(),
            Type::Map(Box::new(Type::List(Box::new(Type::String))))
        );
        assert_eq!(
            Type::parse("list<ipaddress>").unwrap().to_string(),
            "list<ipaddress>"
        );
        for bad in [
            "",
            "foo",
            "list",
            "int<int>",
            "list<int",
            "list<int,int>",
            "map<>",
        ] {
            assert!(Type::parse(bad).is_err(), "{bad}");
        }
    }
}
