//! Evaluating a compiled caveat with partial information. A parameter that no context
//! supplies is *unknown*; unknowns flow through the expression as CEL's partial evaluation
//! defines: `false && x` is false and `true || x` true whatever `x` is, any other operation on
//! an unknown is unknown (the names of the missing parameters are carried along), and errors
//! are absorbed by `&&` and `||` the same way (unknowns win over errors). Every step costs
//! one unit, and work proportional to a value's size (comparing lists, `in`, concatenation)
//! costs its size: a budget bounds the work of one evaluation.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::TimeDelta;

use crate::compile::{key_of, key_value, Comprehension, Node, Op, Program};
use crate::value::{convert, parse_duration, parse_timestamp, Context, Key, Value};
use crate::{CaveatError, Outcome};

/// A partial value.
#[derive(Debug, Clone)]
enum V {
    Val(Value),
    /// Depends on these missing parameters.
    Unknown(BTreeSet<Arc<str>>),
    /// A CEL error (no such key, overflow, division by zero, ...).
    Err(String),
}

/// The cost budget ran out.
struct OutOfBudget;

struct Eval<'a> {
    params: Vec<V>,
    locals: Vec<(Arc<str>, V)>,
    used: &'a mut u64,
    limit: u64,
}

type R = Result<V, OutOfBudget>;

impl Program {
    /// Evaluates the caveat with the relationship's context and the request's (the
    /// relationship's values win), spending at most `*budget` cost units and subtracting what
    /// it spent. A missing parameter makes the result [`Outcome::Missing`] unless the
    /// expression is decided without it.
    pub fn evaluate(
        &self,
        relationship: Option<&Context>,
        request: Option<&Context>,
        budget: &mut u64,
    ) -> Result<Outcome, CaveatError> {
        let mut params = Vec::with_capacity(self.params.len());
        for (name, ty) in self.params.iter() {
            let v = if let Some(v) = relationship.and_then(|c| c.fields().get(name)) {
                V::Val(convert(v, ty).map_err(|message| CaveatError::Parameter {
                    caveat: self.name.clone(),
                    parameter: name.clone(),
                    from_request: false,
                    message,
                })?)
            } else if let Some(v) = request.and_then(|c| c.fields().get(name)) {
                V::Val(convert(v, ty).map_err(|message| CaveatError::Parameter {
                    caveat: self.name.clone(),
                    parameter: name.clone(),
                    from_request: true,
                    message,
                })?)
            } else {
                V::Unknown(BTreeSet::from([Arc::from(name.as_str())]))
            };
            params.push(v);
        }
        let limit = *budget;
        let mut used = 0u64;
        let result = {
            let mut ev = Eval {
                params,
                locals: Vec::new(),
                used: &mut used,
                limit,
            };
            ev.eval(&self.root)
        };
        *budget = budget.saturating_sub(used);
        match result {
            Err(OutOfBudget) => Err(CaveatError::CostExceeded {
                caveat: self.name.clone(),
                limit,
            }),
            Ok(V::Val(Value::Bool(true))) => Ok(Outcome::True),
            Ok(V::Val(Value::Bool(false))) => Ok(Outcome::False),
            Ok(V::Val(other)) => Err(CaveatError::Evaluation {
                caveat: self.name.clone(),
                message: format!(
                    "the expression gave a value of type {}, not a boolean",
                    other.type_name()
                ),
            }),
            Ok(V::Unknown(names)) => Ok(Outcome::Missing(
                names.into_iter().map(|n| n.to_string()).collect(),
            )),
            Ok(V::Err(message)) => Err(CaveatError::Evaluation {
                caveat: self.name.clone(),
                message,
            }),
        }
    }
}

fn boolean(v: &V) -> Option<bool> {
    match v {
        V::Val(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

impl Eval<'_> {
    fn charge(&mut self, units: u64) -> Result<(), OutOfBudget> {
        *self.used = self.used.saturating_add(units);
        if *self.used > self.limit {
            Err(OutOfBudget)
        } else {
            Ok(())
        }
    }

    fn eval(&mut self, n: &Node) -> R {
        self.charge(1)?;
        Ok(match n {
            Node::Lit(v) => V::Val(v.clone()),
            Node::Param(i) => self
                .params
                .get(*i)
                .cloned()
                .unwrap_or_else(|| V::Err("unknown parameter".to_string())),
            Node::Local(name) => self
                .locals
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| V::Err(format!("undeclared reference to `{name}`"))),
            Node::Select {
                operand,
                field,
                test,
            } => match self.eval(operand)? {
                V::Val(Value::Map(m)) => {
                    let v = m.get(&Key::String(field.clone()));
                    match (v, test) {
                        (found, true) => V::Val(Value::Bool(found.is_some())),
                        (Some(v), false) => V::Val(v.clone()),
                        (None, false) => V::Err(format!("no such key: `{field}`")),
                    }
                }
                V::Val(other) => V::Err(format!(
                    "a value of type {} has no field `{field}`",
                    other.type_name()
                )),
                other => other,
            },
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut pending = Pending::default();
                for i in items {
                    if let Some(v) = pending.take(self.eval(i)?) {
                        out.push(v);
                    }
                }
                match pending.result() {
                    Some(v) => v,
                    None => V::Val(Value::List(Arc::new(out))),
                }
            }
            Node::Map(entries) => {
                let mut out = BTreeMap::new();
                let mut pending = Pending::default();
                for (k, v) in entries {
                    let k = pending.take(self.eval(k)?);
                    let v = pending.take(self.eval(v)?);
                    if let (Some(k), Some(v)) = (k, v) {
                        match key_of(&k) {
                            Some(key) => {
                                if out.insert(key, v).is_some() {
                                    pending.error("duplicate key in a map literal".to_string());
                                }
                            }
                            None => pending.error(format!(
                                "a value of type {} cannot be a map key",
                                k.type_name()
                            )),
                        }
                    }
                }
                match pending.result() {
                    Some(v) => v,
                    None => V::Val(Value::Map(Arc::new(out))),
                }
            }
            Node::Call(op, args) => self.call(*op, args)?,
            Node::Comprehension(c) => self.comprehension(c)?,
        })
    }

    fn comprehension(&mut self, c: &Comprehension) -> R {
        let items: Vec<Value> = match self.eval(&c.range)? {
            V::Val(Value::List(l)) => l.iter().cloned().collect(),
            V::Val(Value::Map(m)) => m.keys().map(key_value).collect(),
            V::Val(other) => {
                return Ok(V::Err(format!(
                    "a comprehension needs a list or a map, found a value of type {}",
                    other.type_name()
                )))
            }
            other => return Ok(other),
        };
        self.charge(items.len() as u64)?;
        let mut accu = self.eval(&c.init)?;
        for item in items {
            self.locals.push((c.accu_var.clone(), accu));
            self.locals.push((c.iter_var.clone(), V::Val(item)));
            let cond = self.eval(&c.cond);
            let step = match cond {
                Ok(ref v) if boolean(v) == Some(false) => None,
                Ok(_) => Some(self.eval(&c.step)),
                Err(e) => Some(Err(e)),
            };
            self.locals.pop();
            let (_, previous) = self
                .locals
                .pop()
                .unwrap_or((c.accu_var.clone(), V::Err(String::new())));
            match step {
                None => {
                    accu = previous;
                    break;
                }
                Some(next) => accu = next?,
            }
        }
        self.locals.push((c.accu_var.clone(), accu));
        let out = self.eval(&c.result);
        self.locals.pop();
        out
    }

    fn call(&mut self, op: Op, args: &[Node]) -> R {
        match op {
            Op::And | Op::Or => {
                let stop = op == Op::Or; // the value that decides alone
                let mut pending = Pending::default();
                for a in args {
                    let v = self.eval(a)?;
                    match v {
                        V::Val(Value::Bool(b)) if b == stop => return Ok(V::Val(Value::Bool(b))),
                        V::Val(Value::Bool(_)) => {}
                        V::Val(other) => pending.error(format!(
                            "no matching overload for {} on {}",
                            if stop { "`||`" } else { "`&&`" },
                            other.type_name()
                        )),
                        other => {
                            pending.take(other);
                        }
                    }
                }
                return Ok(pending.result().unwrap_or(V::Val(Value::Bool(!stop))));
            }
            Op::NotStrictlyFalse => {
                let v = match args.first() {
                    Some(a) => self.eval(a)?,
                    None => V::Val(Value::Bool(true)),
                };
                return Ok(V::Val(Value::Bool(boolean(&v) != Some(false))));
            }
            Op::Cond => {
                let (Some(c), Some(x), Some(y)) = (args.first(), args.get(1), args.get(2)) else {
                    return Ok(V::Err("malformed conditional".to_string()));
                };
                return match self.eval(c)? {
                    V::Val(Value::Bool(true)) => self.eval(x),
                    V::Val(Value::Bool(false)) => self.eval(y),
                    V::Val(other) => Ok(V::Err(format!(
                        "a condition must be a boolean, found {}",
                        other.type_name()
                    ))),
                    other => Ok(other),
                };
            }
            _ => {}
        }
        let mut values = Vec::with_capacity(args.len());
        let mut pending = Pending::default();
        for a in args {
            if let Some(v) = pending.take(self.eval(a)?) {
                values.push(v);
            }
        }
        if let Some(v) = pending.result() {
            return Ok(v);
        }
        let weight: u64 = values.iter().map(Value::weight).sum();
        self.charge(weight)?;
        Ok(match apply(op, &values, self) {
            Ok(v) => V::Val(v),
            Err(Fault::Cel(message)) => V::Err(message),
            Err(Fault::Budget) => return Err(OutOfBudget),
        })
    }
}

/// Unknowns and errors met among the operands of a strict operation: unknowns win, then the
/// first error.
#[derive(Default)]
struct Pending {
    unknown: Option<BTreeSet<Arc<str>>>,
    error: Option<String>,
}

impl Pending {
    /// Keeps an unknown or error; gives back a value.
    fn take(&mut self, v: V) -> Option<Value> {
        match v {
            V::Val(v) => Some(v),
            V::Unknown(names) => {
                self.unknown.get_or_insert_with(BTreeSet::new).extend(names);
                None
            }
            V::Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    fn error(&mut self, e: String) {
        self.error.get_or_insert(e);
    }

    fn result(self) -> Option<V> {
        match (self.unknown, self.error) {
            (Some(u), _) => Some(V::Unknown(u)),
            (None, Some(e)) => Some(V::Err(e)),
            (None, None) => None,
        }
    }
}

enum Fault {
    Cel(String),
    Budget,
}

impl From<String> for Fault {
    fn from(s: String) -> Fault {
        Fault::Cel(s)
    }
}

fn overload(op: Op, args: &[Value]) -> Fault {
    let types: Vec<&str> = args.iter().map(Value::type_name).collect();
    Fault::Cel(format!(
        "no matching overload for {op:?} on ({})",
        types.join(", ")
    ))
}

fn overflow() -> Fault {
    Fault::Cel("integer overflow".to_string())
}

fn apply(op: Op, a: &[Value], ev: &mut Eval<'_>) -> Result<Value, Fault> {
    use Value as X;
    let x = a.first().ok_or_else(|| overload(op, a))?;
    let y = a.get(1);
    Ok(match (op, x, y) {
        (Op::Not, X::Bool(b), None) => X::Bool(!b),
        (Op::Eq | Op::Ne, _, Some(y)) => {
            let mut work = 0;
            let eq = equal(x, y, &mut work);
            ev.charge(work).map_err(|_| Fault::Budget)?;
            X::Bool(eq == (op == Op::Eq))
        }
        (Op::Lt | Op::Le | Op::Gt | Op::Ge, _, Some(y)) => {
            let ord = compare(x, y).ok_or_else(|| overload(op, a))?;
            X::Bool(match ord {
                None => false, // NaN
                Some(o) => match op {
                    Op::Lt => o == Ordering::Less,
                    Op::Le => o != Ordering::Greater,
                    Op::Gt => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                },
            })
        }
        (Op::Add, X::Int(p), Some(X::Int(q))) => X::Int(p.checked_add(*q).ok_or_else(overflow)?),
        (Op::Add, X::Uint(p), Some(X::Uint(q))) => X::Uint(p.checked_add(*q).ok_or_else(overflow)?),
        (Op::Add, X::Double(p), Some(X::Double(q))) => X::Double(p + q),
        (Op::Add, X::String(p), Some(X::String(q))) => X::String(format!("{p}{q}").into()),
        (Op::Add, X::Bytes(p), Some(X::Bytes(q))) => X::Bytes(
            p.iter()
                .chain(q.iter())
                .copied()
                .collect::<Vec<u8>>()
                .into(),
        ),
        (Op::Add, X::List(p), Some(X::List(q))) => {
            ev.charge(p.len() as u64 + q.len() as u64)
                .map_err(|_| Fault::Budget)?;
            X::List(Arc::new(p.iter().chain(q.iter()).cloned().collect()))
        }
        (Op::Add, X::Timestamp(t), Some(X::Duration(d)))
        | (Op::Add, X::Duration(d), Some(X::Timestamp(t))) => {
            X::Timestamp(t.checked_add_signed(*d).ok_or_else(overflow)?)
        }
        (Op::Add, X::Duration(p), Some(X::Duration(q))) => {
            X::Duration(p.checked_add(q).ok_or_else(overflow)?)
        }
        (Op::Sub, X::Int(p), Some(X::Int(q))) => X::Int(p.checked_sub(*q).ok_or_else(overflow)?),
        (Op::Sub, X::Uint(p), Some(X::Uint(q))) => X::Uint(p.checked_sub(*q).ok_or_else(overflow)?),
        (Op::Sub, X::Double(p), Some(X::Double(q))) => X::Double(p - q),
        (Op::Sub, X::Timestamp(p), Some(X::Timestamp(q))) => {
            X::Duration(p.signed_duration_since(*q))
        }
        (Op::Sub, X::Timestamp(t), Some(X::Duration(d))) => {
            X::Timestamp(t.checked_sub_signed(*d).ok_or_else(overflow)?)
        }
        (Op::Sub, X::Duration(p), Some(X::Duration(q))) => {
            X::Duration(p.checked_sub(q).ok_or_else(overflow)?)
        }
        (Op::Mul, X::Int(p), Some(X::Int(q))) => X::Int(p.checked_mul(*q).ok_or_else(overflow)?),
        (Op::Mul, X::Uint(p), Some(X::Uint(q))) => X::Uint(p.checked_mul(*q).ok_or_else(overflow)?),
        (Op::Mul, X::Double(p), Some(X::Double(q))) => X::Double(p * q),
        (Op::Div | Op::Mod, X::Int(_), Some(X::Int(0)))
        | (Op::Div | Op::Mod, X::Uint(_), Some(X::Uint(0))) => {
            return Err(Fault::Cel(
                if op == Op::Div {
                    "division by zero"
                } else {
                    "modulus by zero"
                }
                .to_string(),
            ))
        }
        (Op::Div, X::Int(p), Some(X::Int(q))) => X::Int(p.checked_div(*q).ok_or_else(overflow)?),
        (Op::Div, X::Uint(p), Some(X::Uint(q))) => X::Uint(p / q),
        (Op::Div, X::Double(p), Some(X::Double(q))) => X::Double(p / q),
        (Op::Mod, X::Int(p), Some(X::Int(q))) => X::Int(p.checked_rem(*q).ok_or_else(overflow)?),
        (Op::Mod, X::Uint(p), Some(X::Uint(q))) => X::Uint(p % q),
        (Op::Neg, X::Int(p), None) => X::Int(p.checked_neg().ok_or_else(overflow)?),
        (Op::Neg, X::Double(p), None) => X::Double(-p),
        (Op::Neg, X::Duration(p), None) => {
            X::Duration(TimeDelta::zero().checked_sub(p).ok_or_else(overflow)?)
        }
        (Op::Index, X::List(l), Some(i)) => {
            let idx = match i {
                X::Int(i) => usize::try_from(*i).ok(),
                X::Uint(u) => usize::try_from(*u).ok(),
                X::Double(d) if d.fract() == 0.0 && *d >= 0.0 => Some(*d as usize),
                _ => return Err(overload(op, a)),
            };
            idx.and_then(|i| l.get(i))
                .cloned()
                .ok_or_else(|| Fault::Cel(format!("index out of range: {i:?}")))?
        }
        (Op::Index, X::Map(m), Some(k)) => map_get(m, k)
            .cloned()
            .ok_or_else(|| Fault::Cel(format!("no such key: {}", show_key(k))))?,
        (Op::In, _, Some(X::List(l))) => {
            let mut work = 0;
            let found = l.iter().any(|e| equal(x, e, &mut work));
            ev.charge(work).map_err(|_| Fault::Budget)?;
            X::Bool(found)
        }
        (Op::In, _, Some(X::Map(m))) => X::Bool(map_get(m, x).is_some()),
        (Op::Size, X::String(s), None) => X::Int(s.chars().count() as i64),
        (Op::Size, X::Bytes(b), None) => X::Int(b.len() as i64),
        (Op::Size, X::List(l), None) => X::Int(l.len() as i64),
        (Op::Size, X::Map(m), None) => X::Int(m.len() as i64),
        (Op::Contains, X::String(s), Some(X::String(t))) => X::Bool(s.contains(&**t)),
        (Op::StartsWith, X::String(s), Some(X::String(t))) => X::Bool(s.starts_with(&**t)),
        (Op::EndsWith, X::String(s), Some(X::String(t))) => X::Bool(s.ends_with(&**t)),
        (Op::InCidr, X::Ip(ip), Some(X::String(cidr))) => X::Bool(in_cidr(ip, cidr)?),
        (Op::ToInt, X::Int(i), None) => X::Int(*i),
        (Op::ToInt, X::Uint(u), None) => X::Int(i64::try_from(*u).map_err(|_| overflow())?),
        (Op::ToInt, X::Double(d), None) => {
            if d.is_finite() && *d > -9.223_372_036_854_776e18 && *d < 9.223_372_036_854_776e18 {
                X::Int(d.trunc() as i64)
            } else {
                return Err(overflow());
            }
        }
        (Op::ToInt, X::String(s), None) => X::Int(
            s.parse()
                .map_err(|_| Fault::Cel(format!("cannot convert `{s}` to int")))?,
        ),
        (Op::ToInt, X::Timestamp(t), None) => X::Int(t.timestamp()),
        (Op::ToUint, X::Uint(u), None) => X::Uint(*u),
        (Op::ToUint, X::Int(i), None) => X::Uint(u64::try_from(*i).map_err(|_| overflow())?),
        (Op::ToUint, X::Double(d), None) => {
            if d.is_finite() && *d > -1.0 && *d < 1.844_674_407_370_955_2e19 {
                X::Uint(d.trunc() as u64)
            } else {
                return Err(overflow());
            }
        }
        (Op::ToUint, X::String(s), None) => X::Uint(
            s.parse()
                .map_err(|_| Fault::Cel(format!("cannot convert `{s}` to uint")))?,
        ),
        (Op::ToDouble, X::Double(d), None) => X::Double(*d),
        (Op::ToDouble, X::Int(i), None) => X::Double(*i as f64),
        (Op::ToDouble, X::Uint(u), None) => X::Double(*u as f64),
        (Op::ToDouble, X::String(s), None) => X::Double(
            s.parse()
                .map_err(|_| Fault::Cel(format!("cannot convert `{s}` to double")))?,
        ),
        (Op::ToString, v, None) => X::String(to_string(v)?.into()),
        (Op::ToDuration, X::Duration(d), None) => X::Duration(*d),
        (Op::ToDuration, X::String(s), None) => X::Duration(parse_duration(s)?),
        (Op::ToTimestamp, X::Timestamp(t), None) => X::Timestamp(*t),
        (Op::ToTimestamp, X::String(s), None) => X::Timestamp(parse_timestamp(s)?),
        (Op::Dyn, v, None) => v.clone(),
        _ => return Err(overload(op, a)),
    })
}

fn show_key(k: &Value) -> String {
    match k {
        Value::String(s) => format!("`{s}`"),
        other => to_string(other).unwrap_or_else(|_| other.type_name().to_string()),
    }
}

/// A map's value at `k`, numeric keys compared by value (`1`, `1u` and `1.0` are one key).
fn map_get<'m>(m: &'m BTreeMap<Key, Value>, k: &Value) -> Option<&'m Value> {
    match k {
        Value::String(s) => m.get(&Key::String(s.clone())),
        Value::Bool(b) => m.get(&Key::Bool(*b)),
        Value::Int(i) => m
            .get(&Key::Int(*i))
            .or_else(|| u64::try_from(*i).ok().and_then(|u| m.get(&Key::Uint(u)))),
        Value::Uint(u) => m
            .get(&Key::Uint(*u))
            .or_else(|| i64::try_from(*u).ok().and_then(|i| m.get(&Key::Int(i)))),
        Value::Double(d) if d.fract() == 0.0 => {
            if *d >= 0.0 && *d < 1.844_674_407_370_955_2e19 {
                map_get(m, &Value::Uint(*d as u64))
            } else if *d < 0.0 && *d > -9.223_372_036_854_776e18 {
                map_get(m, &Value::Int(*d as i64))
            } else {
                None
            }
        }
        _ => None,
    }
}

fn to_string(v: &Value) -> Result<String, Fault> {
    Ok(match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Double(d) => d.to_string(),
        Value::String(s) => s.to_string(),
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map_err(|_| Fault::Cel("bytes are not valid UTF-8".to_string()))?,
        Value::Duration(d) => {
            let nanos = d.num_nanoseconds().unwrap_or(i64::MAX);
            if nanos % 1_000_000_000 == 0 {
                format!("{}s", nanos / 1_000_000_000)
            } else {
                format!("{}s", nanos as f64 / 1e9)
            }
        }
        Value::Timestamp(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        Value::Ip(ip) => ip.to_string(),
        Value::List(_) | Value::Map(_) => {
            return Err(Fault::Cel(format!(
                "cannot convert a {} to a string",
                v.type_name()
            )))
        }
    })
}

/// Numeric value as a comparable pair: integers exactly, doubles as they are.
enum Num {
    I(i128),
    F(f64),
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Int(i) => Some(Num::I(i128::from(*i))),
        Value::Uint(u) => Some(Num::I(i128::from(*u))),
        Value::Double(d) => Some(Num::F(*d)),
        _ => None,
    }
}

fn compare_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
        (Num::I(x), Num::F(y)) => (x as f64).partial_cmp(&y),
        (Num::F(x), Num::I(y)) => x.partial_cmp(&(y as f64)),
    }
}

/// `Some(order)` for comparable values (`None` inside for NaN), `None` when the types cannot
/// be ordered.
fn compare(a: &Value, b: &Value) -> Option<Option<Ordering>> {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Some(compare_num(x, y));
    }
    Some(Some(match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Duration(x), Value::Duration(y)) => x.cmp(y),
        _ => return None,
    }))
}

/// CEL equality (heterogeneous: values of different types are unequal, numbers compare by
/// value). `work` counts the elements compared.
fn equal(a: &Value, b: &Value, work: &mut u64) -> bool {
    *work += 1;
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return compare_num(x, y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => {
            *work += x.len() as u64 / 16;
            x == y
        }
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::Duration(x), Value::Duration(y)) => x == y,
        (Value::Timestamp(x), Value::Timestamp(y)) => x == y,
        (Value::Ip(x), Value::Ip(y)) => x == y,
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| equal(p, q, work))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w, work)))
        }
        _ => false,
    }
}

/// Is `ip` inside `cidr` (`10.0.0.0/8`, `2001:db8::/32`, or a bare address)? Addresses of
/// the other family are not inside.
fn in_cidr(ip: &IpAddr, cidr: &str) -> Result<bool, Fault> {
    let bad = || Fault::Cel(format!("invalid CIDR `{cidr}`"));
    let (addr, bits) = match cidr.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u32>().map_err(|_| bad())?)),
        None => (cidr, None),
    };
    let net: IpAddr = addr.parse().map_err(|_| bad())?;
    Ok(match (ip, net) {
        (IpAddr::V4(x), IpAddr::V4(n)) => {
            let bits = bits.unwrap_or(32);
            if bits > 32 {
                return Err(bad());
            }
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(*x) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(x), IpAddr::V6(n)) => {
            let bits = bits.unwrap_or(128);
            if bits > 128 {
                return Err(bad());
            }
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(*x) & mask == u128::from(n) & mask
        }
        _ => false,
    })
}
