//! Compiling a caveat: CEL text parsed by the `cel` crate's parser, then type-checked against
//! the declared parameters and lowered to this crate's own expression tree (`Node`), which the
//! evaluator walks. Every error carries the byte offset in the expression where it was found.

use std::sync::Arc;

use cel::common::ast::{operators as ops, EntryExpr, Expr, LiteralValue, SourceInfo};
use cel::IdedExpr;

use crate::types::{Ty, Type};
use crate::value::{Key, Value};
use crate::{CaveatError, Limits};

/// An operation of the lowered tree. Member calls (`x.size()`) take their receiver as the
/// first argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    And,
    Or,
    Not,
    NotStrictlyFalse,
    Cond,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Neg,
    Index,
    In,
    Size,
    Contains,
    StartsWith,
    EndsWith,
    ToInt,
    ToUint,
    ToDouble,
    ToString,
    ToDuration,
    ToTimestamp,
    Dyn,
    InCidr,
}

/// The lowered, type-checked expression.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Lit(Value),
    /// A parameter, by index in the caveat's parameter list.
    Param(usize),
    /// A comprehension variable (innermost binding of that name).
    Local(Arc<str>),
    Select {
        operand: Box<Node>,
        field: Arc<str>,
        /// `has(x.f)`: does the field exist?
        test: bool,
    },
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
    Call(Op, Vec<Node>),
    Comprehension(Box<Comprehension>),
}

#[derive(Debug, Clone)]
pub(crate) struct Comprehension {
    pub range: Node,
    pub iter_var: Arc<str>,
    pub accu_var: Arc<str>,
    pub init: Node,
    pub cond: Node,
    pub step: Node,
    pub result: Node,
}

/// Nesting bound of the lowered tree (the parser bounds its own recursion too).
const MAX_NESTING: usize = 100;

pub(crate) struct Lowering<'a> {
    params: &'a [(String, Type)],
    info: &'a SourceInfo,
    source: &'a str,
    /// Comprehension variables in scope, innermost last.
    locals: Vec<(Arc<str>, Ty)>,
    nodes: usize,
    max_nodes: usize,
}

type Fail = (usize, String);

impl<'a> Lowering<'a> {
    /// The byte offset in the expression of the node `id`.
    fn offset(&self, id: u64) -> usize {
        let Some((start, _)) = self.info.offset_for(id) else {
            return 0;
        };
        // The parser counts characters; the error wants bytes.
        self.source
            .char_indices()
            .nth(start as usize)
            .map(|(b, _)| b)
            .unwrap_or(self.source.len())
    }

    fn fail<T>(&self, e: &IdedExpr, msg: impl Into<String>) -> Result<T, Fail> {
        Err((self.offset(e.id), msg.into()))
    }

    fn lower(&mut self, e: &IdedExpr, depth: usize) -> Result<(Node, Ty), Fail> {
        if depth > MAX_NESTING {
            return self.fail(
                e,
                format!("the expression nests too deeply (at most {MAX_NESTING} levels)"),
            );
        }
        self.nodes += 1;
        if self.nodes > self.max_nodes {
            return self.fail(
                e,
                format!(
                    "the expression is too large (more than {} nodes)",
                    self.max_nodes
                ),
            );
        }
        let d = depth + 1;
        match &e.expr {
            Expr::Literal(l) => Ok(literal(l)),
            Expr::Ident(name) => self.ident(e, name),
            Expr::Select(s) => {
                let (operand, ty) = self.lower(&s.operand, d)?;
                let field: Arc<str> = s.field.as_str().into();
                if s.test {
                    return match ty {
                        Ty::Map(..) | Ty::Dyn => Ok((
                            Node::Select {
                                operand: Box::new(operand),
                                field,
                                test: true,
                            },
                            Ty::Bool,
                        )),
                        other => self.fail(
                            e,
                            format!("has() needs a map field, found a value of type `{other}`"),
                        ),
                    };
                }
                let out = match ty {
                    Ty::Map(k, v) if matches!(*k, Ty::String | Ty::Dyn) => *v,
                    Ty::Dyn => Ty::Dyn,
                    other => {
                        return self.fail(
                            e,
                            format!("type `{other}` has no fields (selecting `{}`)", s.field),
                        )
                    }
                };
                Ok((
                    Node::Select {
                        operand: Box::new(operand),
                        field,
                        test: false,
                    },
                    out,
                ))
            }
            Expr::List(l) => {
                if !l.optional_indices.is_empty() {
                    return self.fail(e, "optional list elements are not supported");
                }
                let mut items = Vec::with_capacity(l.elements.len());
                let mut elem: Option<Ty> = None;
                for x in &l.elements {
                    let (n, t) = self.lower(x, d)?;
                    elem = Some(match elem {
                        None => t,
                        Some(p) => Ty::join(&p, &t),
                    });
                    items.push(n);
                }
                Ok((
                    Node::List(items),
                    Ty::List(Box::new(elem.unwrap_or(Ty::Dyn))),
                ))
            }
            Expr::Map(m) => {
                let mut entries = Vec::with_capacity(m.entries.len());
                let (mut kt, mut vt): (Option<Ty>, Option<Ty>) = (None, None);
                for entry in &m.entries {
                    let EntryExpr::MapEntry(me) = &entry.expr else {
                        return self.fail(e, "struct fields are not supported in a map literal");
                    };
                    if me.optional {
                        return self.fail(e, "optional map entries are not supported");
                    }
                    let (k, ktn) = self.lower(&me.key, d)?;
                    if !matches!(ktn, Ty::String | Ty::Int | Ty::Uint | Ty::Bool | Ty::Dyn) {
                        return self.fail(
                            &me.key,
                            format!("a map key must be a string, int, uint or bool, found `{ktn}`"),
                        );
                    }
                    let (v, vtn) = self.lower(&me.value, d)?;
                    kt = Some(kt.map_or(ktn.clone(), |p| Ty::join(&p, &ktn)));
                    vt = Some(vt.map_or(vtn.clone(), |p| Ty::join(&p, &vtn)));
                    entries.push((k, v));
                }
                Ok((
                    Node::Map(entries),
                    Ty::Map(
                        Box::new(kt.unwrap_or(Ty::Dyn)),
                        Box::new(vt.unwrap_or(Ty::Dyn)),
                    ),
                ))
            }
            Expr::Struct(s) => self.fail(
                e,
                format!(
                    "message construction (`{}{{...}}`) is not supported",
                    s.type_name
                ),
            ),
            Expr::Comprehension(c) => {
                if c.iter_var2.is_some() {
                    return self.fail(e, "two-variable comprehensions are not supported");
                }
                let (range, rt) = self.lower(&c.iter_range, d)?;
                let var_ty = match rt {
                    Ty::List(t) => *t,
                    Ty::Map(k, _) => *k,
                    Ty::Dyn => Ty::Dyn,
                    other => {
                        return self.fail(
                            &c.iter_range,
                            format!("a comprehension needs a list or a map, found `{other}`"),
                        )
                    }
                };
                let (init, accu_ty) = self.lower(&c.accu_init, d)?;
                let iter_var: Arc<str> = c.iter_var.as_str().into();
                let accu_var: Arc<str> = c.accu_var.as_str().into();
                self.locals.push((accu_var.clone(), accu_ty.clone()));
                self.locals.push((iter_var.clone(), var_ty));
                let cond = self.lower(&c.loop_cond, d);
                let step = self.lower(&c.loop_step, d);
                self.locals.pop();
                let (cond, _) = cond?;
                let (step, step_ty) = step?;
                // The accumulator's type is what the step makes of it (a list built by
                // `map`/`filter` starts as `[]`).
                let accu_ty = Ty::join(&accu_ty, &step_ty);
                self.locals.pop();
                self.locals.push((accu_var.clone(), accu_ty));
                let result = self.lower(&c.result, d);
                self.locals.pop();
                let (result, result_ty) = result?;
                Ok((
                    Node::Comprehension(Box::new(Comprehension {
                        range,
                        iter_var,
                        accu_var,
                        init,
                        cond,
                        step,
                        result,
                    })),
                    result_ty,
                ))
            }
            Expr::Call(call) => {
                let mut args = Vec::with_capacity(call.args.len() + 1);
                let mut tys = Vec::with_capacity(call.args.len() + 1);
                let member = call.target.is_some();
                if let Some(t) = &call.target {
                    let (n, ty) = self.lower(t, d)?;
                    args.push(n);
                    tys.push(ty);
                }
                for a in &call.args {
                    let (n, ty) = self.lower(a, d)?;
                    args.push(n);
                    tys.push(ty);
                }
                let (op, ty) = self.call(e, &call.func_name, member, &tys)?;
                Ok((Node::Call(op, args), ty))
            }
            Expr::Unspecified => self.fail(e, "empty expression"),
        }
    }

    fn ident(&self, e: &IdedExpr, name: &str) -> Result<(Node, Ty), Fail> {
        if let Some((n, t)) = self.locals.iter().rev().find(|(n, _)| &**n == name) {
            return Ok((Node::Local(n.clone()), t.clone()));
        }
        if let Some(i) = self.params.iter().position(|(p, _)| p == name) {
            return Ok((Node::Param(i), self.params[i].1.ty()));
        }
        let declared: Vec<&str> = self.params.iter().map(|(p, _)| p.as_str()).collect();
        self.fail(
            e,
            format!(
                "undeclared reference to `{name}` (the caveat's parameters are: {})",
                declared.join(", ")
            ),
        )
    }

    /// Resolves a call to one operation and its result type, or says which overload is
    /// missing.
    fn call(&self, e: &IdedExpr, name: &str, member: bool, t: &[Ty]) -> Result<(Op, Ty), Fail> {
        let no_overload = || {
            let shown: Vec<String> = t.iter().map(Ty::to_string).collect();
            let what = match name {
                ops::ADD => "`+`",
                ops::SUBSTRACT => "`-`",
                ops::MULTIPLY => "`*`",
                ops::DIVIDE => "`/`",
                ops::MODULO => "`%`",
                ops::EQUALS => "`==`",
                ops::NOT_EQUALS => "`!=`",
                ops::LESS => "`<`",
                ops::LESS_EQUALS => "`<=`",
                ops::GREATER => "`>`",
                ops::GREATER_EQUALS => "`>=`",
                ops::NEGATE => "unary `-`",
                ops::LOGICAL_NOT => "`!`",
                ops::LOGICAL_AND => "`&&`",
                ops::LOGICAL_OR => "`||`",
                ops::IN => "`in`",
                ops::INDEX => "`[]`",
                ops::CONDITIONAL => "`? :`",
                _ => "",
            };
            let what = if what.is_empty() {
                format!("`{name}`")
            } else {
                what.to_string()
            };
            (
                self.offset(e.id),
                format!("no matching overload for {what} on ({})", shown.join(", ")),
            )
        };
        let is = |i: usize, want: &Ty| t.get(i).is_some_and(|x| x == want || x.is_dyn());
        let boolish = |i: usize| is(i, &Ty::Bool);
        let n = t.len();
        let ok = |op: Op, ty: Ty| Ok((op, ty));
        match (name, member, n) {
            (ops::LOGICAL_AND, false, 2) if boolish(0) && boolish(1) => ok(Op::And, Ty::Bool),
            (ops::LOGICAL_OR, false, 2) if boolish(0) && boolish(1) => ok(Op::Or, Ty::Bool),
            (ops::LOGICAL_NOT, false, 1) if boolish(0) => ok(Op::Not, Ty::Bool),
            (ops::NOT_STRICTLY_FALSE, false, 1) => ok(Op::NotStrictlyFalse, Ty::Bool),
            (ops::CONDITIONAL, false, 3) if boolish(0) => ok(Op::Cond, Ty::join(&t[1], &t[2])),
            (ops::EQUALS | ops::NOT_EQUALS, false, 2) if Ty::comparable(&t[0], &t[1]) => {
                ok(if name == ops::EQUALS { Op::Eq } else { Op::Ne }, Ty::Bool)
            }
            (ops::LESS | ops::LESS_EQUALS | ops::GREATER | ops::GREATER_EQUALS, false, 2)
                if orderable(&t[0], &t[1]) =>
            {
                let op = match name {
                    ops::LESS => Op::Lt,
                    ops::LESS_EQUALS => Op::Le,
                    ops::GREATER => Op::Gt,
                    _ => Op::Ge,
                };
                ok(op, Ty::Bool)
            }
            (ops::ADD, false, 2) => match add_type(&t[0], &t[1]) {
                Some(ty) => ok(Op::Add, ty),
                None => Err(no_overload()),
            },
            (ops::SUBSTRACT, false, 2) => match sub_type(&t[0], &t[1]) {
                Some(ty) => ok(Op::Sub, ty),
                None => Err(no_overload()),
            },
            (ops::MULTIPLY | ops::DIVIDE | ops::MODULO, false, 2) => {
                let op = match name {
                    ops::MULTIPLY => Op::Mul,
                    ops::DIVIDE => Op::Div,
                    _ => Op::Mod,
                };
                match (&t[0], &t[1]) {
                    (Ty::Dyn, Ty::Dyn) => ok(op, Ty::Dyn),
                    (Ty::Dyn, x) | (x, Ty::Dyn) if x.is_numeric() => ok(op, x.clone()),
                    (Ty::Double, Ty::Double) if op == Op::Mod => Err(no_overload()),
                    (x, y) if x == y && x.is_numeric() => ok(op, x.clone()),
                    _ => Err(no_overload()),
                }
            }
            (ops::NEGATE, false, 1) => match &t[0] {
                Ty::Int | Ty::Double | Ty::Duration | Ty::Dyn => ok(Op::Neg, t[0].clone()),
                _ => Err(no_overload()),
            },
            (ops::INDEX, false, 2) => match (&t[0], &t[1]) {
                (Ty::List(x), Ty::Int | Ty::Uint | Ty::Dyn) => ok(Op::Index, (**x).clone()),
                (Ty::Map(k, v), key) if Ty::comparable(k, key) => ok(Op::Index, (**v).clone()),
                (Ty::Dyn, _) => ok(Op::Index, Ty::Dyn),
                _ => Err(no_overload()),
            },
            (ops::IN, false, 2) => match &t[1] {
                Ty::List(x) if Ty::comparable(x, &t[0]) => ok(Op::In, Ty::Bool),
                Ty::Map(k, _) if Ty::comparable(k, &t[0]) => ok(Op::In, Ty::Bool),
                Ty::Dyn => ok(Op::In, Ty::Bool),
                _ => Err(no_overload()),
            },
            ("size", _, 1) => match &t[0] {
                Ty::String | Ty::Bytes | Ty::List(_) | Ty::Map(..) | Ty::Dyn => {
                    ok(Op::Size, Ty::Int)
                }
                _ => Err(no_overload()),
            },
            ("contains" | "startsWith" | "endsWith", true, 2)
                if is(0, &Ty::String) && is(1, &Ty::String) =>
            {
                let op = match name {
                    "contains" => Op::Contains,
                    "startsWith" => Op::StartsWith,
                    _ => Op::EndsWith,
                };
                ok(op, Ty::Bool)
            }
            ("in_cidr", true, 2) if is(0, &Ty::Ip) && is(1, &Ty::String) => {
                ok(Op::InCidr, Ty::Bool)
            }
            ("int", false, 1) => match &t[0] {
                Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Timestamp | Ty::Dyn => {
                    ok(Op::ToInt, Ty::Int)
                }
                _ => Err(no_overload()),
            },
            ("uint", false, 1) => match &t[0] {
                Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Dyn => ok(Op::ToUint, Ty::Uint),
                _ => Err(no_overload()),
            },
            ("double", false, 1) => match &t[0] {
                Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Dyn => {
                    ok(Op::ToDouble, Ty::Double)
                }
                _ => Err(no_overload()),
            },
            ("string", false, 1) => ok(Op::ToString, Ty::String),
            ("duration", false, 1) if is(0, &Ty::String) || is(0, &Ty::Duration) => {
                ok(Op::ToDuration, Ty::Duration)
            }
            ("timestamp", false, 1) if is(0, &Ty::String) || is(0, &Ty::Timestamp) => {
                ok(Op::ToTimestamp, Ty::Timestamp)
            }
            ("dyn", false, 1) => ok(Op::Dyn, Ty::Dyn),
            (
                ops::LOGICAL_AND
                | ops::LOGICAL_OR
                | ops::LOGICAL_NOT
                | ops::CONDITIONAL
                | ops::EQUALS
                | ops::NOT_EQUALS
                | ops::LESS
                | ops::LESS_EQUALS
                | ops::GREATER
                | ops::GREATER_EQUALS
                | ops::IN
                | "contains"
                | "startsWith"
                | "endsWith"
                | "in_cidr"
                | "int"
                | "uint"
                | "double"
                | "duration"
                | "timestamp"
                | "size",
                _,
                _,
            ) => Err(no_overload()),
            _ => self.fail(
                e,
                format!(
                    "function `{name}` is not supported in caveats (see docs/caveats.md for the \
                     supported subset)"
                ),
            ),
        }
    }
}

fn orderable(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::Dyn, _) | (_, Ty::Dyn) => true,
        (x, y) if x.is_numeric() && y.is_numeric() => true,
        (x, y) => {
            x == y
                && matches!(
                    x,
                    Ty::String | Ty::Bytes | Ty::Bool | Ty::Timestamp | Ty::Duration
                )
        }
    }
}

fn add_type(a: &Ty, b: &Ty) -> Option<Ty> {
    Some(match (a, b) {
        (Ty::Dyn, Ty::Dyn) => Ty::Dyn,
        (Ty::Timestamp, Ty::Duration) | (Ty::Duration, Ty::Timestamp) => Ty::Timestamp,
        (Ty::Dyn, Ty::Duration) | (Ty::Duration, Ty::Dyn) => Ty::Dyn,
        (Ty::Dyn, Ty::Timestamp) | (Ty::Timestamp, Ty::Dyn) => Ty::Timestamp,
        (Ty::List(x), Ty::List(y)) => Ty::List(Box::new(Ty::join(x, y))),
        (Ty::Dyn, x) | (x, Ty::Dyn) => x.clone(),
        (x, y)
            if x == y
                && matches!(
                    x,
                    Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Bytes | Ty::Duration
                ) =>
        {
            x.clone()
        }
        _ => return None,
    })
}

fn sub_type(a: &Ty, b: &Ty) -> Option<Ty> {
    Some(match (a, b) {
        (Ty::Timestamp, Ty::Timestamp) => Ty::Duration,
        (Ty::Timestamp, Ty::Duration) => Ty::Timestamp,
        (Ty::Dyn, _) | (_, Ty::Dyn) => {
            if matches!(a, Ty::Dyn) && matches!(b, Ty::Dyn | Ty::Timestamp | Ty::Duration)
                || matches!(a, Ty::Timestamp)
            {
                Ty::Dyn
            } else {
                let x = if a.is_dyn() { b } else { a };
                if x.is_numeric() || matches!(x, Ty::Duration) {
                    x.clone()
                } else {
                    return None;
                }
            }
        }
        (x, y) if x == y && (x.is_numeric() || matches!(x, Ty::Duration)) => x.clone(),
        _ => return None,
    })
}

fn literal(l: &LiteralValue) -> (Node, Ty) {
    let (v, t) = match l {
        LiteralValue::Boolean(b) => (Value::Bool(*b.inner()), Ty::Bool),
        LiteralValue::Bytes(b) => (Value::Bytes(b.inner().into()), Ty::Bytes),
        LiteralValue::Double(d) => (Value::Double(*d.inner()), Ty::Double),
        LiteralValue::Int(i) => (Value::Int(*i.inner()), Ty::Int),
        LiteralValue::Null => (Value::Null, Ty::Null),
        LiteralValue::String(s) => (Value::String(s.inner().into()), Ty::String),
        LiteralValue::UInt(u) => (Value::Uint(*u.inner()), Ty::Uint),
    };
    (Node::Lit(v), t)
}

/// A compiled caveat: its name, typed parameters, source and lowered expression. Cheap to
/// clone. Two programs are equal when name, parameters and source are.
#[derive(Debug, Clone)]
pub struct Program {
    pub(crate) name: String,
    pub(crate) params: Arc<[(String, Type)]>,
    pub(crate) source: Arc<str>,
    pub(crate) root: Arc<Node>,
}

impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.params == other.params && self.source == other.source
    }
}

impl Eq for Program {}

impl Program {
    /// Compiles `source` as the body of caveat `name` with typed `params`: parses it, checks
    /// every name and operator against the parameters' types, and requires a boolean result.
    /// Errors carry the byte offset in `source`.
    pub fn compile(
        name: &str,
        params: &[(String, Type)],
        source: &str,
        limits: &Limits,
    ) -> Result<Program, CaveatError> {
        let compile_err = |offset: usize, message: String| CaveatError::Compile {
            caveat: name.to_string(),
            offset,
            message,
        };
        if source.len() > limits.max_expression_bytes {
            return Err(compile_err(
                limits.max_expression_bytes,
                format!(
                    "the expression of caveat `{name}` is {} bytes, more than the limit of {} bytes",
                    source.len(),
                    limits.max_expression_bytes
                ),
            ));
        }
        if let Some(offset) = too_deep(source) {
            return Err(compile_err(
                offset,
                format!("brackets nest too deeply (at most {MAX_BRACKETS} levels)"),
            ));
        }
        // The generated parser recurses a dozen frames per level of nesting, large ones in a
        // debug build: parse, lower and drop its tree on a stack segment of their own.
        stacker::maybe_grow(PARSE_RED_ZONE, PARSE_STACK, || {
            Self::parse_and_lower(name, params, source, limits)
        })
    }

    fn parse_and_lower(
        name: &str,
        params: &[(String, Type)],
        source: &str,
        limits: &Limits,
    ) -> Result<Program, CaveatError> {
        let compile_err = |offset: usize, message: String| CaveatError::Compile {
            caveat: name.to_string(),
            offset,
            message,
        };
        let parsed = std::panic::catch_unwind(|| {
            cel::parser::Parser::new()
                .max_recursion_depth(MAX_NESTING as u16)
                .parse_with_source_info(source)
        });
        let (expr, info) = match parsed {
            Ok(Ok(p)) => p,
            Ok(Err(errs)) => {
                let first = errs.errors.first();
                let (offset, msg) = match first {
                    Some(e) => (line_col_to_offset(source, e.pos), e.msg.clone()),
                    None => (0, "invalid CEL expression".to_string()),
                };
                return Err(compile_err(
                    offset,
                    format!("invalid CEL expression: {msg}"),
                ));
            }
            Err(_) => {
                return Err(compile_err(
                    0,
                    "the CEL parser failed on this expression".to_string(),
                ))
            }
        };
        let mut lowering = Lowering {
            params,
            info: &info,
            source,
            locals: Vec::new(),
            nodes: 0,
            max_nodes: limits.max_expression_nodes,
        };
        let (root, ty) = lowering
            .lower(&expr, 0)
            .map_err(|(offset, msg)| compile_err(offset, msg))?;
        if !matches!(ty, Ty::Bool | Ty::Dyn) {
            return Err(compile_err(
                0,
                format!("a caveat expression must be a boolean, found a value of type `{ty}`"),
            ));
        }
        Ok(Program {
            name: name.to_string(),
            params: params.to_vec().into(),
            source: source.into(),
            root: Arc::new(root),
        })
    }

    /// The caveat's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared parameters, in order.
    pub fn params(&self) -> &[(String, Type)] {
        &self.params
    }

    /// The expression text.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Levels of `(`, `[` and `{` an expression may nest (outside string literals).
const MAX_BRACKETS: usize = 32;
/// Stack kept free below the parser; with less left, it runs on a new segment.
const PARSE_RED_ZONE: usize = 32 * 1024 * 1024;
/// Size of that segment (pages are touched only as deep as the parser goes).
const PARSE_STACK: usize = 64 * 1024 * 1024;

/// The byte offset of the first bracket nested deeper than [`MAX_BRACKETS`], if any.
fn too_deep(source: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in source.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_BRACKETS {
                    return Some(i);
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The parser's (1-based line, column) to a byte offset in `source` (clamped).
fn line_col_to_offset(source: &str, (line, col): (isize, isize)) -> usize {
    if line < 1 {
        return 0;
    }
    let mut offset = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i as isize + 1 == line {
            let col = col.max(0) as usize;
            return offset + l.char_indices().nth(col).map(|(b, _)| b).unwrap_or(l.len());
        }
        offset += l.len();
    }
    source.len()
}

/// A map key from a value, if the value can be one.
pub(crate) fn key_of(v: &Value) -> Option<Key> {
    Some(match v {
        Value::Bool(b) => Key::Bool(*b),
        Value::Int(i) => Key::Int(*i),
        Value::Uint(u) => Key::Uint(*u),
        Value::String(s) => Key::String(s.clone()),
        _ => return None,
    })
}

/// The value of a map key.
pub(crate) fn key_value(k: &Key) -> Value {
    match k {
        Key::Bool(b) => Value::Bool(*b),
        Key::Int(i) => Value::Int(*i),
        Key::Uint(u) => Value::Uint(*u),
        Key::String(s) => Value::String(s.clone()),
    }
}
