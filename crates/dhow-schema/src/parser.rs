//! Parser for the schema language: tokens to the syntax tree of [`crate::ast`], whose every node
//! carries its byte span.
//!
//! Grammar (SpiceDB's, with its precedence: `+` binds tightest, then `&`, then `-`, each
//! left-associative; an arrow binds tighter than all three and its left side is a bare name):
//!
//! ```text
//! file       = { "use" NAME | definition | caveat | ";" | NEWLINE }
//! definition = "definition" path "{" { member (NEWLINE | ";" | before "}") } "}"
//! member     = "relation" NAME ":" allowed { "|" allowed }
//!            | "permission" NAME "=" exclusion
//! allowed    = path [ ":" "*" | "#" (NAME | "...") ] [ "with" with ]
//! with       = "expiration" | path [ "and" "expiration" ]
//! exclusion  = intersect { "-" intersect }
//! intersect  = union { "&" union }
//! union      = primary { "+" primary }
//! primary    = "nil" | "(" exclusion ")" | NAME [ "->" NAME | "." ("any"|"all") "(" NAME ")" ]
//! caveat     = "caveat" path "(" [ param { "," param } ] ")" "{" CEL-with-balanced-braces "}"
//! param      = NAME type ;  type = NAME [ "<" type { "," type } ">" ]
//! path       = NAME { "/" NAME }
//! ```
//!
//! The parser stops at the first syntax error. Nesting is bounded so that no input can exhaust
//! the stack.

use crate::ast::{
    AllowedDecl, AllowedDeclKind, CaveatDecl, DefinitionDecl, Expr, Ident, Item, MemberDecl,
    ParamDecl, PermissionDecl, RelationDecl, SchemaFile, TypeRef, UseDirective, RESERVED,
};
use crate::error::{ErrorKind, Pending, SchemaError};
use crate::lexer::{lex, Span, Token, TokenKind};
use crate::model::ArrowMode;

/// Bound on expression nesting (parentheses count 1, each `-` in a chain counts 1).
const MAX_EXPR_DEPTH: usize = 128;
/// Bound on caveat type nesting (`list<list<...>>`).
const MAX_TYPE_DEPTH: usize = 16;

/// Parses schema text into an AST; the error holds the first syntax error.
pub fn parse(src: &str) -> Result<SchemaFile, SchemaError> {
    let tokens = lex(src).map_err(|p| SchemaError::single(src, p))?;
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
    };
    parser.file().map_err(|p| SchemaError::single(src, p))
}

type PResult<T> = Result<T, Pending>;

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // The lexer always ends with Eof, and `bump` never moves past it.
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.pos.min(last)]
    }

    fn peek_kind(&self) -> TokenKind {
        self.peek().kind
    }

    fn bump(&mut self) -> Token {
        let tok = self.peek().clone();
        if tok.kind != TokenKind::Eof {
            self.pos += 1;
        }
        tok
    }

    fn is_word(&self, word: &str) -> bool {
        let t = self.peek();
        t.kind == TokenKind::Ident && t.text(self.src) == word
    }

    /// Whether the current token is one of SpiceDB's keywords (never a name).
    fn at_keyword(&self) -> bool {
        let t = self.peek();
        t.kind == TokenKind::Ident && RESERVED.contains(&t.text(self.src))
    }

    fn skip_newlines(&mut self) {
        while matches!(self.peek_kind(), TokenKind::Newline) {
            self.bump();
        }
    }

    fn error_here(&self, expected: &str) -> Pending {
        let tok = self.peek();
        Pending::new(
            tok.span.start,
            ErrorKind::Syntax,
            format!("expected {expected}, found {}", tok.describe(self.src)),
        )
    }

    fn expect(&mut self, kind: TokenKind, expected: &str) -> PResult<Token> {
        if self.peek_kind() == kind {
            Ok(self.bump())
        } else {
            Err(self.error_here(expected))
        }
    }

    fn ident(&mut self, expected: &str) -> PResult<Ident> {
        let tok = self.expect(TokenKind::Ident, expected)?;
        Ok(Ident {
            name: tok.text(self.src).to_string(),
            span: tok.span,
        })
    }

    /// `NAME { "/" NAME }`
    fn path(&mut self, expected: &str) -> PResult<Ident> {
        let first = self.ident(expected)?;
        let mut name = first.name;
        let mut span = first.span;
        while self.peek_kind() == TokenKind::Slash {
            self.bump();
            let seg = self.ident("a name after `/` in a type name")?;
            name.push('/');
            name.push_str(&seg.name);
            span = span.to(seg.span);
        }
        Ok(Ident { name, span })
    }

    fn file(&mut self) -> PResult<SchemaFile> {
        let mut items = Vec::new();
        loop {
            match self.peek_kind() {
                TokenKind::Eof => break,
                TokenKind::Newline | TokenKind::Semicolon => {
                    self.bump();
                }
                TokenKind::Ident if self.is_word("definition") => {
                    items.push(Item::Definition(self.definition()?));
                }
                TokenKind::Ident if self.is_word("caveat") => {
                    items.push(Item::Caveat(self.caveat()?));
                }
                TokenKind::Ident if self.is_word("use") => {
                    let kw = self.bump();
                    let flag = self.ident("a feature name after `use`")?;
                    let span = kw.span.to(flag.span);
                    items.push(Item::Use(UseDirective { flag, span }));
                }
                _ => {
                    return Err(self.error_here("`definition`, `caveat` or `use` at the top level"))
                }
            }
        }
        Ok(SchemaFile { items })
    }

    fn definition(&mut self) -> PResult<DefinitionDecl> {
        let kw = self.bump();
        let name = self.path("a type name after `definition`")?;
        self.expect(TokenKind::LBrace, "`{` after the definition name")?;
        let mut members = Vec::new();
        let close = loop {
            match self.peek_kind() {
                TokenKind::Newline | TokenKind::Semicolon => {
                    self.bump();
                    continue;
                }
                TokenKind::RBrace => break self.bump(),
                TokenKind::Ident if self.is_word("relation") => {
                    members.push(MemberDecl::Relation(self.relation()?));
                }
                TokenKind::Ident if self.is_word("permission") => {
                    members.push(MemberDecl::Permission(self.permission()?));
                }
                TokenKind::Eof => {
                    return Err(self.error_here(&format!(
                        "`relation`, `permission` or `}}` to close definition `{}`",
                        name.name
                    )))
                }
                TokenKind::Plus
                | TokenKind::Minus
                | TokenKind::Amp
                | TokenKind::Pipe
                | TokenKind::Arrow => {
                    let mut err =
                        self.error_here("`relation`, `permission` or `}` in a definition");
                    err.message.push_str(
                        " (a statement cannot continue on the next line: put the operator at the \
                         end of the previous line)",
                    );
                    return Err(err);
                }
                _ => return Err(self.error_here("`relation`, `permission` or `}` in a definition")),
            }
            // A member ends at a newline, a `;` or the closing brace.
            match self.peek_kind() {
                TokenKind::Newline | TokenKind::Semicolon | TokenKind::RBrace => {}
                _ => return Err(self.error_here("end of line or `;` after the statement")),
            }
        };
        Ok(DefinitionDecl {
            name,
            doc: kw.doc,
            members,
            span: kw.span.to(close.span),
        })
    }

    fn relation(&mut self) -> PResult<RelationDecl> {
        let kw = self.bump();
        let name = self.ident("a relation name after `relation`")?;
        self.expect(TokenKind::Colon, "`:` after relation name")?;
        if self.peek_kind() != TokenKind::Ident || self.at_keyword() {
            let mut err = self.error_here(&format!(
                "at least one allowed subject type for relation `{}`",
                name.name
            ));
            err.kind = ErrorKind::RelationWithoutTypes;
            return Err(err);
        }
        let mut allowed = vec![self.allowed()?];
        while self.peek_kind() == TokenKind::Pipe {
            self.bump();
            allowed.push(self.allowed()?);
        }
        let end = allowed.last().map_or(name.span, |a| a.span);
        Ok(RelationDecl {
            name,
            doc: kw.doc,
            allowed,
            span: kw.span.to(end),
        })
    }

    fn allowed(&mut self) -> PResult<AllowedDecl> {
        if self.at_keyword() {
            return Err(self.error_here("a subject type name"));
        }
        let type_name = self.path("a subject type name")?;
        let mut span = type_name.span;
        let kind = match self.peek_kind() {
            TokenKind::Colon => {
                self.bump();
                let star =
                    self.expect(TokenKind::Star, "`*` after `:` in a wildcard subject type")?;
                span = span.to(star.span);
                AllowedDeclKind::Wildcard(star.span)
            }
            TokenKind::Hash => {
                self.bump();
                if self.peek_kind() == TokenKind::Ellipsis {
                    let tok = self.bump();
                    span = span.to(tok.span);
                    AllowedDeclKind::Ellipsis(tok.span)
                } else {
                    let rel = self.ident("a relation name or `...` after `#`")?;
                    span = span.to(rel.span);
                    AllowedDeclKind::SubjectSet(rel)
                }
            }
            _ => AllowedDeclKind::Object,
        };
        let mut caveat = None;
        let mut expiration = None;
        if self.is_word("with") {
            self.bump();
            if self.is_word("expiration") {
                let tok = self.bump();
                span = span.to(tok.span);
                expiration = Some(tok.span);
                if self.is_word("and") {
                    return Err(Pending::new(
                        self.peek().span.start,
                        ErrorKind::Syntax,
                        "expected end of the subject type after `with expiration`, found `and`: \
                         the caveat must come first, as in `with somecaveat and expiration`",
                    ));
                }
            } else {
                if self.at_keyword() {
                    return Err(self.error_here("a caveat name or `expiration` after `with`"));
                }
                let name = self.path("a caveat name or `expiration` after `with`")?;
                span = span.to(name.span);
                caveat = Some(name);
                if self.is_word("and") {
                    self.bump();
                    if !self.is_word("expiration") {
                        return Err(self.error_here("`expiration` after `and`"));
                    }
                    let tok = self.bump();
                    span = span.to(tok.span);
                    expiration = Some(tok.span);
                }
            }
        }
        Ok(AllowedDecl {
            type_name,
            kind,
            caveat,
            expiration,
            span,
        })
    }

    fn permission(&mut self) -> PResult<PermissionDecl> {
        let kw = self.bump();
        let name = self.ident("a permission name after `permission`")?;
        self.expect(TokenKind::Equals, "`=` after permission name")?;
        let expr = self.exclusion()?;
        let span = kw.span.to(expr.span());
        Ok(PermissionDecl {
            name,
            doc: kw.doc,
            expr,
            span,
        })
    }

    fn exclusion(&mut self) -> PResult<Expr> {
        let mut lhs = self.intersection()?;
        let saved = self.depth;
        while self.peek_kind() == TokenKind::Minus {
            let op = self.bump();
            self.depth += 1;
            if self.depth > MAX_EXPR_DEPTH {
                self.depth = saved;
                return Err(Pending::new(
                    op.span.start,
                    ErrorKind::Syntax,
                    format!("expression nested too deeply: at most {MAX_EXPR_DEPTH} levels of parentheses and `-` are supported"),
                ));
            }
            let rhs = match self.intersection() {
                Ok(rhs) => rhs,
                Err(e) => {
                    self.depth = saved;
                    return Err(e);
                }
            };
            let span = lhs.span().to(rhs.span());
            lhs = Expr::Exclusion(Box::new(lhs), Box::new(rhs), span);
        }
        self.depth = saved;
        Ok(lhs)
    }

    fn intersection(&mut self) -> PResult<Expr> {
        let first = self.union()?;
        if self.peek_kind() != TokenKind::Amp {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.peek_kind() == TokenKind::Amp {
            self.bump();
            operands.push(self.union()?);
        }
        let span = span_of(&operands);
        Ok(Expr::Intersection(operands, span))
    }

    fn union(&mut self) -> PResult<Expr> {
        let first = self.primary()?;
        if self.peek_kind() != TokenKind::Plus {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.peek_kind() == TokenKind::Plus {
            self.bump();
            operands.push(self.primary()?);
        }
        let span = span_of(&operands);
        Ok(Expr::Union(operands, span))
    }

    fn primary(&mut self) -> PResult<Expr> {
        match self.peek_kind() {
            TokenKind::LParen => {
                let open = self.bump();
                if self.depth >= MAX_EXPR_DEPTH {
                    return Err(Pending::new(
                        open.span.start,
                        ErrorKind::Syntax,
                        format!("expression nested too deeply: at most {MAX_EXPR_DEPTH} levels of parentheses and `-` are supported"),
                    ));
                }
                self.depth += 1;
                let inner = self.exclusion();
                self.depth -= 1;
                let inner = inner?;
                self.expect(TokenKind::RParen, "`)` or an operator (`+`, `&`, `-`)")?;
                Ok(inner)
            }
            TokenKind::Ident if self.is_word("nil") => {
                let tok = self.bump();
                if matches!(self.peek_kind(), TokenKind::Arrow | TokenKind::Period) {
                    return Err(self.error_here("an operator or the end of the expression after `nil` (`nil` cannot be the left side of an arrow)"));
                }
                Ok(Expr::Nil(tok.span))
            }
            TokenKind::Ident if self.at_keyword() => {
                Err(self.error_here("a relation or permission name, `nil` or `(`"))
            }
            TokenKind::Ident => {
                let name = self.ident("a name")?;
                let expr = match self.peek_kind() {
                    TokenKind::Arrow => {
                        self.bump();
                        let computed = self.ident("a relation or permission name after `->`")?;
                        let span = name.span.to(computed.span);
                        Expr::Arrow {
                            tupleset: name,
                            computed,
                            mode: ArrowMode::Any,
                            span,
                        }
                    }
                    TokenKind::Period => {
                        self.bump();
                        let func = self.ident("`any` or `all` after `.`")?;
                        let mode = match func.name.as_str() {
                            "any" => ArrowMode::Any,
                            "all" => ArrowMode::All,
                            other => {
                                return Err(Pending::new(
                                    func.span.start,
                                    ErrorKind::Syntax,
                                    format!("expected arrow function `any` or `all` after `.`, found `{other}`"),
                                ))
                            }
                        };
                        self.expect(TokenKind::LParen, &format!("`(` after `.{}`", func.name))?;
                        let computed = self.ident(&format!(
                            "a relation or permission name inside `.{}(...)`",
                            func.name
                        ))?;
                        let close = self.expect(
                            TokenKind::RParen,
                            &format!("`)` to close `.{}(`", func.name),
                        )?;
                        let span = name.span.to(close.span);
                        Expr::Arrow {
                            tupleset: name,
                            computed,
                            mode,
                            span,
                        }
                    }
                    _ => return Ok(Expr::Ref(name)),
                };
                if matches!(self.peek_kind(), TokenKind::Arrow | TokenKind::Period) {
                    return Err(Pending::new(
                        self.peek().span.start,
                        ErrorKind::Syntax,
                        format!(
                            "expected an operator or the end of the expression, found {}: nested arrows \
                             (`a->b->c`) are not supported; point the arrow at a permission that \
                             contains the next arrow instead",
                            self.peek().describe(self.src)
                        ),
                    ));
                }
                Ok(expr)
            }
            _ => Err(self.error_here("a relation or permission name, `nil` or `(`")),
        }
    }

    fn caveat(&mut self) -> PResult<CaveatDecl> {
        let kw = self.bump();
        let name = self.path("a caveat name after `caveat`")?;
        self.skip_newlines();
        self.expect(TokenKind::LParen, "`(` after the caveat name")?;
        let mut params = Vec::new();
        self.skip_newlines();
        if self.peek_kind() == TokenKind::RParen {
            self.bump();
        } else {
            loop {
                self.skip_newlines();
                let pname = self.ident("a parameter name")?;
                let ty = self.type_ref(0)?;
                params.push(ParamDecl { name: pname, ty });
                self.skip_newlines();
                match self.peek_kind() {
                    TokenKind::Comma => {
                        self.bump();
                        self.skip_newlines();
                        if self.peek_kind() == TokenKind::RParen {
                            self.bump();
                            break;
                        }
                    }
                    TokenKind::RParen => {
                        self.bump();
                        break;
                    }
                    _ => return Err(self.error_here("`,` or `)` after a caveat parameter")),
                }
            }
        }
        self.skip_newlines();
        let open = self.expect(TokenKind::LBrace, "`{` to start the caveat expression")?;
        let mut depth = 1usize;
        let close = loop {
            match self.peek_kind() {
                TokenKind::LBrace => depth += 1,
                TokenKind::RBrace => {
                    depth -= 1;
                    if depth == 0 {
                        break self.bump();
                    }
                }
                TokenKind::Eof => {
                    return Err(self.error_here(&format!(
                        "`}}` to close the expression of caveat `{}`",
                        name.name
                    )))
                }
                _ => {}
            }
            self.bump();
        };
        let expression_span = Span::new(open.span.end, close.span.start);
        let expression = self
            .src
            .get(expression_span.start..expression_span.end)
            .unwrap_or("")
            .trim()
            .to_string();
        if expression.is_empty() {
            return Err(Pending::new(
                close.span.start,
                ErrorKind::Syntax,
                format!(
                    "expected a CEL expression in caveat `{}`, found `}}`",
                    name.name
                ),
            ));
        }
        Ok(CaveatDecl {
            name,
            params,
            expression,
            expression_span,
            span: kw.span.to(close.span),
        })
    }

    fn type_ref(&mut self, depth: usize) -> PResult<TypeRef> {
        if depth > MAX_TYPE_DEPTH {
            return Err(Pending::new(
                self.peek().span.start,
                ErrorKind::Syntax,
                format!(
                    "caveat parameter type nested too deeply (at most {MAX_TYPE_DEPTH} levels)"
                ),
            ));
        }
        let name = self.ident("a parameter type such as `int` or `list<string>`")?;
        let mut span = name.span;
        let mut args = Vec::new();
        if self.peek_kind() == TokenKind::Lt {
            self.bump();
            loop {
                args.push(self.type_ref(depth + 1)?);
                match self.peek_kind() {
                    TokenKind::Comma => {
                        self.bump();
                    }
                    TokenKind::Gt => {
                        span = span.to(self.bump().span);
                        break;
                    }
                    _ => return Err(self.error_here("`,` or `>` in type arguments")),
                }
            }
        }
        Ok(TypeRef { name, args, span })
    }
}

fn span_of(exprs: &[Expr]) -> Span {
    match (exprs.first(), exprs.last()) {
        (Some(a), Some(b)) => a.span().to(b.span()),
        _ => Span::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm_expr(body: &str) -> Expr {
        let src = format!("definition doc {{\n    permission p = {body}\n}}");
        let file = parse(&src).unwrap();
        let Item::Definition(def) = &file.items[0] else {
            panic!()
        };
        let MemberDecl::Permission(p) = &def.members[0] else {
            panic!()
        };
        p.expr.clone()
    }

    /// Compact rendering: (a+b), (a&b), (a-b).
    fn show(e: &Expr) -> String {
        match e {
            Expr::Nil(_) => "nil".into(),
            Expr::Ref(i) => i.name.clone(),
            Expr::Arrow {
                tupleset,
                computed,
                mode,
                ..
            } => match mode {
                ArrowMode::Any => format!("{}->{}", tupleset.name, computed.name),
                ArrowMode::All => format!("{}.all({})", tupleset.name, computed.name),
            },
            Expr::Union(v, _) => format!("({})", v.iter().map(show).collect::<Vec<_>>().join("+")),
            Expr::Intersection(v, _) => {
                format!("({})", v.iter().map(show).collect::<Vec<_>>().join("&"))
            }
            Expr::Exclusion(a, b, _) => format!("({}-{})", show(a), show(b)),
        }
    }

    fn err(src: &str) -> SchemaError {
        parse(src).unwrap_err()
    }

    #[test]
    fn precedence_matches_spicedb() {
        assert_eq!(show(&perm_expr("a + b - c")), "((a+b)-c)");
        assert_eq!(show(&perm_expr("a - b + c")), "(a-(b+c))");
        assert_eq!(show(&perm_expr("a - b - c")), "((a-b)-c)");
        assert_eq!(show(&perm_expr("a + b & c")), "((a+b)&c)");
        assert_eq!(show(&perm_expr("a & b + c")), "(a&(b+c))");
        assert_eq!(show(&perm_expr("a & b - c & d")), "((a&b)-(c&d))");
        assert_eq!(show(&perm_expr("a->b + c.all(d)")), "(a->b+c.all(d))");
        assert_eq!(show(&perm_expr("(a - b) + c")), "((a-b)+c)");
        assert_eq!(show(&perm_expr("a.any(b)")), "a->b");
        assert_eq!(show(&perm_expr("nil + any - all")), "((nil+any)-all)");
    }

    #[test]
    fn spans_point_at_names() {
        let src = "definition doc {\n    relation viewer: user | group#member\n}";
        let file = parse(src).unwrap();
        let Item::Definition(def) = &file.items[0] else {
            panic!()
        };
        let MemberDecl::Relation(r) = &def.members[0] else {
            panic!()
        };
        let AllowedDeclKind::SubjectSet(rel) = &r.allowed[1].kind else {
            panic!()
        };
        assert_eq!(&src[rel.span.start..rel.span.end], "member");
        assert_eq!(
            &src[r.allowed[1].type_name.span.start..r.allowed[1].type_name.span.end],
            "group"
        );
    }

    #[test]
    fn relation_colon_error_position() {
        let e = err("definition doc {\n    relation viewer = user\n}");
        assert_eq!((e.line(), e.column()), (2, 21));
        assert_eq!(e.message(), "expected `:` after relation name, found `=`");
    }

    #[test]
    fn relation_without_types() {
        let e = err("definition doc {\n    relation viewer:\n}");
        assert_eq!(e.kind(), ErrorKind::RelationWithoutTypes);
        assert_eq!((e.line(), e.column()), (3, 1));
    }

    #[test]
    fn newline_ends_expression() {
        let e = err("definition doc {\n    permission p = a\n        + b\n}");
        assert_eq!((e.line(), e.column()), (3, 9));
        assert!(e.message().contains("found `+`"), "{}", e.message());
        // An operator at the end of the line continues the expression.
        assert!(parse("definition doc {\n    permission p = a +\n        b\n}").is_ok());
    }

    #[test]
    fn nested_arrow_is_refused() {
        let e = err("definition doc {\n  permission p = a->b->c\n}");
        assert_eq!((e.line(), e.column()), (2, 22));
        assert!(e.message().contains("nested arrows"));
    }

    #[test]
    fn bad_arrow_function() {
        let e = err("definition doc {\n  permission p = a.first(b)\n}");
        assert_eq!((e.line(), e.column()), (2, 20));
        assert_eq!(
            e.message(),
            "expected arrow function `any` or `all` after `.`, found `first`"
        );
    }

    #[test]
    fn unknown_top_level() {
        let e = err("\n\n  relation x: y");
        assert_eq!((e.line(), e.column()), (3, 3));
        assert_eq!(
            e.message(),
            "expected `definition`, `caveat` or `use` at the top level, found `relation`"
        );
    }

    #[test]
    fn missing_closing_brace() {
        let e = err("definition doc {\n  relation x: user\n");
        assert_eq!((e.line(), e.column()), (3, 1));
        assert!(e.message().contains("found end of input"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "definition d {{ permission p = {}a{} }}",
            "(".repeat(5000),
            ")".repeat(5000)
        );
        assert!(err(&deep).message().contains("nested too deeply"));
        let long = format!("definition d {{ permission p = a{} }}", " - a".repeat(5000));
        assert!(err(&long).message().contains("nested too deeply"));
        let wide = format!(
            "definition d {{ permission p = a{} }}",
            " + a".repeat(50000)
        );
        assert!(parse(&wide).is_ok());
        let types = format!(
            "caveat c(p {}int{}) {{ p }}",
            "list<".repeat(100),
            ">".repeat(100)
        );
        assert!(err(&types).message().contains("nested too deeply"));
    }

    #[test]
    fn caveat_body_is_kept_verbatim() {
        let src = "caveat c(a map<any>, b list<string>) {\n  a[\"}\"] == {'k': [1, 2]} && b.exists(x, x == '{')\n}";
        let file = parse(src).unwrap();
        let Item::Caveat(c) = &file.items[0] else {
            panic!()
        };
        assert_eq!(
            c.expression,
            "a[\"}\"] == {'k': [1, 2]} && b.exists(x, x == '{')"
        );
        assert_eq!(c.params[0].ty.text(), "map<any>");
        assert_eq!(c.params[1].ty.text(), "list<string>");
    }

    #[test]
    fn with_clauses() {
        let src = "definition d {\n relation r: user with cav and expiration | user:* with expiration | group#member with org/cav\n}";
        let file = parse(src).unwrap();
        let Item::Definition(def) = &file.items[0] else {
            panic!()
        };
        let MemberDecl::Relation(r) = &def.members[0] else {
            panic!()
        };
        assert_eq!(r.allowed[0].caveat.as_ref().unwrap().name, "cav");
        assert!(r.allowed[0].expiration.is_some());
        assert!(matches!(r.allowed[1].kind, AllowedDeclKind::Wildcard(_)));
        assert!(r.allowed[1].expiration.is_some() && r.allowed[1].caveat.is_none());
        assert_eq!(r.allowed[2].caveat.as_ref().unwrap().name, "org/cav");
        let e = err("definition d {\n relation r: user with expiration and cav\n}");
        assert_eq!((e.line(), e.column()), (2, 35));
    }
}
