//! The schema's syntax tree, as the parser builds it and the type checker reads it: every
//! node carries its byte span. Shared by `parser` and `typecheck`, which do not import each
//! other.

use crate::lexer::Span;
use crate::model::ArrowMode;

/// Words that cannot be used as names (SpiceDB's keywords).
pub const RESERVED: [&str; 6] = [
    "definition",
    "caveat",
    "relation",
    "permission",
    "nil",
    "with",
];

/// A name with its span. For type paths (`org/doc`) the name is the whole path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A parsed schema file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaFile {
    pub items: Vec<Item>,
}

/// A top-level item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Use(UseDirective),
    Definition(DefinitionDecl),
    Caveat(CaveatDecl),
}

/// `use flag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseDirective {
    pub flag: Ident,
    pub span: Span,
}

/// `definition name { members }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionDecl {
    pub name: Ident,
    pub doc: Option<String>,
    pub members: Vec<MemberDecl>,
    pub span: Span,
}

/// A relation or a permission inside a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberDecl {
    Relation(RelationDecl),
    Permission(PermissionDecl),
}

impl MemberDecl {
    pub fn name(&self) -> &Ident {
        match self {
            MemberDecl::Relation(r) => &r.name,
            MemberDecl::Permission(p) => &p.name,
        }
    }
}

/// `relation name: a | b#c | d:* with cav and expiration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationDecl {
    pub name: Ident,
    pub doc: Option<String>,
    pub allowed: Vec<AllowedDecl>,
    pub span: Span,
}

/// One allowed subject type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedDecl {
    pub type_name: Ident,
    pub kind: AllowedDeclKind,
    /// `with caveat_name`.
    pub caveat: Option<Ident>,
    /// Span of `expiration` in `with expiration` / `with c and expiration`.
    pub expiration: Option<Span>,
    pub span: Span,
}

/// The part after the type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedDeclKind {
    /// `user`
    Object,
    /// `user#...`: the same as `user`.
    Ellipsis(Span),
    /// `user:*`
    Wildcard(Span),
    /// `group#member`
    SubjectSet(Ident),
}

/// `permission name = expression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDecl {
    pub name: Ident,
    pub doc: Option<String>,
    pub expr: Expr,
    pub span: Span,
}

/// A permission expression as written (not yet flattened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Nil(Span),
    /// A relation or permission of the same definition.
    Ref(Ident),
    /// `tupleset->computed`, `tupleset.any(computed)`, `tupleset.all(computed)`.
    Arrow {
        tupleset: Ident,
        computed: Ident,
        mode: ArrowMode,
        span: Span,
    },
    Union(Vec<Expr>, Span),
    Intersection(Vec<Expr>, Span),
    Exclusion(Box<Expr>, Box<Expr>, Span),
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Nil(s) => *s,
            Expr::Ref(i) => i.span,
            Expr::Arrow { span, .. }
            | Expr::Union(_, span)
            | Expr::Intersection(_, span)
            | Expr::Exclusion(_, _, span) => *span,
        }
    }
}

/// `caveat name(params) { expression }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaveatDecl {
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    /// The CEL text between the braces, trimmed.
    pub expression: String,
    /// Span of the text between the braces.
    pub expression_span: Span,
    pub span: Span,
}

/// `name type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDecl {
    pub name: Ident,
    pub ty: TypeRef,
}

/// A caveat parameter type: `int`, `list<string>`, `map<any>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRef {
    pub name: Ident,
    pub args: Vec<TypeRef>,
    pub span: Span,
}

impl TypeRef {
    /// Canonical text: `list<map<int>>`.
    pub fn text(&self) -> String {
        if self.args.is_empty() {
            self.name.name.clone()
        } else {
            let args: Vec<String> = self.args.iter().map(TypeRef::text).collect();
            format!("{}<{}>", self.name.name, args.join(", "))
        }
    }
}
