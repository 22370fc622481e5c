//! Runtime values of caveat expressions, and the conversion of context values (JSON, as
//! relationships and requests carry them) to the declared parameter types.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value as Json;

use crate::types::Type;

/// A map key: CEL allows bool, int, uint and string keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Bool(bool),
    Int(i64),
    Uint(u64),
    String(Arc<str>),
}

/// A CEL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(Arc<str>),
    Bytes(Arc<[u8]>),
    Duration(TimeDelta),
    Timestamp(DateTime<Utc>),
    Ip(IpAddr),
    List(Arc<Vec<Value>>),
    Map(Arc<BTreeMap<Key, Value>>),
}

impl Value {
    /// The CEL name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Double(_) => "double",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Duration(_) => "duration",
            Value::Timestamp(_) => "timestamp",
            Value::Ip(_) => "ipaddress",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// How much work touching this value costs: its length for strings, bytes and
    /// collections (shallow), 1 otherwise.
    pub(crate) fn weight(&self) -> u64 {
        match self {
            Value::String(s) => s.len() as u64 / 16 + 1,
            Value::Bytes(b) => b.len() as u64 / 16 + 1,
            Value::List(l) => l.len() as u64 + 1,
            Value::Map(m) => m.len() as u64 + 1,
            _ => 1,
        }
    }
}

/// Converts a context value to a parameter's declared type, as SpiceDB does: numbers to `int`
/// or `uint` when integral (a `google.protobuf.Struct` carries every number as a double),
/// RFC 3339 strings to `timestamp`, Go-style strings (`1h30m`) to `duration`, strings to
/// `ipaddress` and `bytes` (their UTF-8 bytes); `any` takes the JSON value as it is (integral
/// numbers as `int`). The error says what was expected.
pub fn convert(v: &Json, ty: &Type) -> Result<Value, String> {
    let wrong = || format!("expected a value of type {ty}, found {}", json_kind(v));
    Ok(match ty {
        Type::Any => any(v)?,
        Type::Bool => Value::Bool(v.as_bool().ok_or_else(wrong)?),
        Type::String => Value::String(v.as_str().ok_or_else(wrong)?.into()),
        Type::Int => {
            if let Some(i) = v.as_i64() {
                Value::Int(i)
            } else if let Some(f) = v.as_f64() {
                if f.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f)
                {
                    Value::Int(f as i64)
                } else {
                    return Err(format!("expected an integer (int), found {f}"));
                }
            } else {
                return Err(wrong());
            }
        }
        Type::Uint => {
            if let Some(u) = v.as_u64() {
                Value::Uint(u)
            } else if let Some(f) = v.as_f64() {
                if f.fract() == 0.0 && (0.0..1.844_674_407_370_955_2e19).contains(&f) {
                    Value::Uint(f as u64)
                } else {
                    return Err(format!("expected a non-negative integer (uint), found {f}"));
                }
            } else {
                return Err(wrong());
            }
        }
        Type::Double => Value::Double(v.as_f64().ok_or_else(wrong)?),
        Type::Bytes => Value::Bytes(v.as_str().ok_or_else(wrong)?.as_bytes().into()),
        Type::Duration => Value::Duration(parse_duration(v.as_str().ok_or_else(wrong)?)?),
        Type::Timestamp => Value::Timestamp(parse_timestamp(v.as_str().ok_or_else(wrong)?)?),
        Type::IpAddress => {
            let s = v.as_str().ok_or_else(wrong)?;
            Value::Ip(
                s.parse()
                    .map_err(|_| format!("expected an IP address, found `{s}`"))?,
            )
        }
        Type::List(t) => {
            let items = v.as_array().ok_or_else(wrong)?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(convert(item, t).map_err(|e| format!("item {i}: {e}"))?);
            }
            Value::List(Arc::new(out))
        }
        Type::Map(t) => {
            let obj = v.as_object().ok_or_else(wrong)?;
            let mut out = BTreeMap::new();
            for (k, item) in obj {
                out.insert(
                    Key::String(k.as_str().into()),
                    convert(item, t).map_err(|e| format!("key `{k}`: {e}"))?,
                );
            }
            Value::Map(Arc::new(out))
        }
    })
}

fn any(v: &Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::Uint(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Value::Int(f as i64)
                } else {
                    Value::Double(f)
                }
            }
        }
        Json::String(s) => Value::String(s.as_str().into()),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(any).collect::<Result<_, _>>()?)),
        Json::Object(o) => {
            let mut out = BTreeMap::new();
            for (k, item) in o {
                out.insert(Key::String(k.as_str().into()), any(item)?);
            }
            Value::Map(Arc::new(out))
        }
    })
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// Parses an RFC 3339 timestamp (any offset; kept in UTC).
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 timestamp, found `{s}`: {e}"))
}

/// Parses a duration as Go and CEL write them: an optional sign and one or more decimal
/// numbers with a unit each (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`): `1h30m`, `-1.5s`, `300ms`.
pub fn parse_duration(s: &str) -> Result<TimeDelta, String> {
    let bad = || format!("expected a duration such as `1h30m` or `2.5s`, found `{s}`");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(TimeDelta::zero());
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num.len() > 30 {
            return Err(bad());
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let nanos_per: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let int: i128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut part = int.checked_mul(nanos_per).ok_or_else(bad)?;
        let mut scale = nanos_per;
        for d in frac.chars().take(18) {
            scale /= 10;
            part += i128::from(d.to_digit(10).ok_or_else(bad)?) * scale;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        if total > i128::from(i64::MAX) {
            return Err(format!("duration `{s}` is out of range"));
        }
        rest = tail;
    }
    let nanos = if neg { -total } else { total };
    Ok(TimeDelta::nanoseconds(nanos as i64))
}

/// A context: parameter values by name, as JSON. The request's context and each
/// relationship's context are of this kind; a caveat merges them (the relationship's values
/// win) and converts the values of its parameters to their declared types.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Canonical JSON text of the object (keys sorted): the identity of the context.
    text: String,
    /// The fields, parsed once.
    fields: Arc<serde_json::Map<String, Json>>,
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Context {}

impl std::hash::Hash for Context {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

impl PartialOrd for Context {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Context {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl Context {
    /// The empty context.
    pub fn new() -> Self {
        Context::default()
    }

    /// A context from a JSON object's fields.
    pub fn from_map(map: serde_json::Map<String, Json>) -> Self {
        let text = if map.is_empty() {
            String::new()
        } else {
            // Keys sorted whatever serde_json's map order is, so the text is canonical.
            let sorted: BTreeMap<&String, &Json> = map.iter().collect();
            serde_json::to_string(&sorted).unwrap_or_default()
        };
        Context {
            text,
            fields: Arc::new(map),
        }
    }

    /// Parses a JSON object (`{"k": 1}`); anything else is an error saying what was found.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Json = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        match v {
            Json::Object(map) => Ok(Context::from_map(map)),
            other => Err(format!(
                "a caveat context must be a JSON object, found {}",
                json_kind(&other)
            )),
        }
    }

    /// The fields.
    pub fn fields(&self) -> &serde_json::Map<String, Json> {
        &self.fields
    }

    /// The fields, copied.
    pub fn to_map(&self) -> serde_json::Map<String, Json> {
        (*self.fields).clone()
    }

    /// The canonical JSON text (`{}` when empty).
    pub fn to_json(&self) -> String {
        if self.text.is_empty() {
            "{}".to_string()
        } else {
            self.text.clone()
        }
    }

    /// Size of the canonical text in bytes (what the context limits measure).
    pub fn len_bytes(&self) -> usize {
        self.text.len().max(2)
    }

    /// No fields.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.num_nanoseconds().unwrap());
        assert_eq!(d("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(d("-1.5s"), Ok(-1_500_000_000));
        assert_eq!(d("300ms"), Ok(300_000_000));
        assert_eq!(d("0"), Ok(0));
        for bad in [
            "",
            "1",
            "h",
            "1x",
            "1.2.3s",
            "-",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conversions() {
        let j = |s: &str| serde_json::from_str::<Json>(s).unwrap();
        assert_eq!(convert(&j("42.0"), &Type::Int), Ok(Value::Int(42)));
        assert!(convert(&j("42.5"), &Type::Int).is_err());
        assert!(convert(&j("-1"), &Type::Uint).is_err());
        assert!(convert(&j("\"x\""), &Type::Int).is_err());
        assert!(convert(&j("\"2024-10-03T07:16:28.068632-07:00\""), &Type::Timestamp).is_ok());
        assert!(convert(&j("\"10.0.0.1\""), &Type::IpAddress).is_ok());
        assert!(convert(&j("[1, \"a\"]"), &Type::List(Box::new(Type::Int))).is_err());
        assert_eq!(
            Context::from_json("{\"b\":1,\"a\":2}").unwrap().to_json(),
            "{\"a\":2,\"b\":1}"
        );
        assert!(Context::from_json("[1]").is_err());
    }
}
