//! Type checker: validates a parsed schema against SpiceDB's rules and compiles it into
//! [`model::Schema`](crate::model::Schema). Reports every error it finds, each at the offending
//! name.
//!
//! Rules (SpiceDB's, from its parser, compiler and type system, plus the permission-cycle rule):
//! names follow SpiceDB's patterns and are not keywords; `use expiration` is the only flag and
//! comes first; definitions and caveats share one namespace, relations and permissions another
//! per definition; allowed subject types name defined types and existing relations, once each,
//! with defined caveats and `with expiration` only under `use expiration`; a subject set must not
//! reach a wildcard; permission expressions name existing members; an arrow walks a relation (not
//! a permission) that reaches no wildcard, towards a name that exists on at least one of that
//! relation's subject types; no permission reaches itself through computed references alone;
//! caveats have at least one parameter, no duplicate parameters, known parameter types and use
//! every parameter.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ast::{
    AllowedDecl, AllowedDeclKind, CaveatDecl, DefinitionDecl, Expr, Ident, Item, MemberDecl,
    PermissionDecl, RelationDecl, SchemaFile, TypeRef, RESERVED,
};
use crate::error::{ErrorKind, LineIndex, Pending, SchemaError};
use crate::lexer::{lex, Span, TokenKind};
use crate::model::{
    AllowedKind, AllowedSubject, Caveat, Definition, Permission, Relation, Rewrite, Schema,
};

/// Caveat parameter types and how many type arguments each takes.
const CAVEAT_TYPES: [(&str, usize); 12] = [
    ("any", 0),
    ("bool", 0),
    ("bytes", 0),
    ("double", 0),
    ("duration", 0),
    ("int", 0),
    ("ipaddress", 0),
    ("list", 1),
    ("map", 1),
    ("string", 0),
    ("timestamp", 0),
    ("uint", 0),
];

/// Checks a parsed schema and compiles it. `src` is the text it was parsed from (for positions).
pub fn check(
    src: &str,
    file: &SchemaFile,
    caveat_limits: dhow_caveat::Limits,
) -> Result<Schema, SchemaError> {
    let mut checker = TypeChecker::new(src, file);
    checker.caveat_limits = caveat_limits;
    checker.run();
    if let Some(err) = SchemaError::from_pending(src, std::mem::take(&mut checker.errors)) {
        return Err(err);
    }
    Ok(checker.build())
}

/// A definition and its members by name (first declaration wins).
struct DefInfo<'a> {
    decl: &'a DefinitionDecl,
    members: HashMap<&'a str, &'a MemberDecl>,
}

/// Walks a parsed file once, collecting every error, then builds the compiled schema.
struct TypeChecker<'a> {
    file: &'a SchemaFile,
    lines: LineIndex,
    src: &'a str,
    errors: Vec<Pending>,
    uses_expiration: bool,
    defs: Vec<DefInfo<'a>>,
    /// Definition name to index in `defs` (first declaration).
    def_by_name: HashMap<&'a str, usize>,
    caveats: HashMap<&'a str, &'a CaveatDecl>,
    caveat_limits: dhow_caveat::Limits,
    /// Compiled caveat expressions by caveat name.
    programs: HashMap<String, dhow_caveat::Program>,
    /// Relations (`definition#relation`) from which no wildcard can be reached, found by
    /// earlier searches: each relation is searched through once, not once per subject set
    /// that leads to it (that made a chain of N definitions cost N² steps).
    no_wildcard: RefCell<HashSet<(String, String)>>,
}

impl<'a> TypeChecker<'a> {
    fn new(src: &'a str, file: &'a SchemaFile) -> TypeChecker<'a> {
        TypeChecker {
            file,
            lines: LineIndex::new(src),
            src,
            errors: Vec::new(),
            uses_expiration: false,
            defs: Vec::new(),
            def_by_name: HashMap::new(),
            caveats: HashMap::new(),
            caveat_limits: dhow_caveat::Limits::default(),
            programs: HashMap::new(),
            no_wildcard: RefCell::new(HashSet::new()),
        }
    }

    fn error(&mut self, span: Span, kind: ErrorKind, message: String) {
        self.errors.push(Pending::new(span.start, kind, message));
    }

    fn line(&self, span: Span) -> usize {
        self.lines.line_column(self.src, span.start).0
    }

    fn run(&mut self) {
        self.collect();
        for i in 0..self.defs.len() {
            self.check_definition(i);
        }
        let caveats: Vec<&CaveatDecl> = self
            .file
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Caveat(c) => Some(c),
                _ => None,
            })
            .collect();
        for caveat in caveats {
            self.check_caveat(caveat);
        }
    }

    /// Use flags, top-level names, member names.
    fn collect(&mut self) {
        let mut seen_definition = false;
        // Name to (span, is_caveat) of its first declaration.
        let mut top: HashMap<&'a str, (Span, bool)> = HashMap::new();
        let file = self.file;
        for item in &file.items {
            match item {
                Item::Use(u) => {
                    if u.flag.name != "expiration" {
                        self.error(
                            u.flag.span,
                            ErrorKind::UnsupportedUseFlag,
                            format!(
                                "expected `expiration` after `use`, found `{}`: Dhow supports only `use expiration`",
                                u.flag.name
                            ),
                        );
                        continue;
                    }
                    if seen_definition {
                        self.error(
                            u.span,
                            ErrorKind::UseAfterDefinition,
                            "`use expiration` must come before any definition or caveat"
                                .to_string(),
                        );
                    }
                    self.uses_expiration = true;
                }
                Item::Caveat(c) => {
                    seen_definition = true;
                    self.check_caveat_name(&c.name);
                    if let Some(&(first, was_caveat)) = top.get(c.name.name.as_str()) {
                        let line = self.line(first);
                        let what = if was_caveat { "caveat" } else { "definition" };
                        self.error(
                            c.name.span,
                            ErrorKind::DuplicateDefinition,
                            format!(
                                "duplicate name `{}`: already used by the {what} on line {line} (definitions and caveats share one namespace)",
                                c.name.name
                            ),
                        );
                    } else {
                        top.insert(&c.name.name, (c.name.span, true));
                        self.caveats.insert(&c.name.name, c);
                    }
                }
                Item::Definition(d) => {
                    seen_definition = true;
                    self.check_type_name(&d.name);
                    let index = self.defs.len();
                    if let Some(&(first, was_caveat)) = top.get(d.name.name.as_str()) {
                        let line = self.line(first);
                        let what = if was_caveat { "caveat" } else { "definition" };
                        self.error(
                            d.name.span,
                            ErrorKind::DuplicateDefinition,
                            format!(
                                "duplicate name `{}`: already used by the {what} on line {line} (definitions and caveats share one namespace)",
                                d.name.name
                            ),
                        );
                    } else {
                        top.insert(&d.name.name, (d.name.span, false));
                        self.def_by_name.insert(&d.name.name, index);
                    }
                    let mut members: HashMap<&'a str, &'a MemberDecl> = HashMap::new();
                    for m in &d.members {
                        let name = m.name();
                        self.check_member_name(name, m);
                        if let Some(first) = members.get(name.name.as_str()) {
                            let line = self.line(first.name().span);
                            let what = member_word(first);
                            self.error(
                                name.span,
                                ErrorKind::DuplicateMember,
                                format!(
                                    "duplicate name `{}` in definition `{}`: already used by the {what} on line {line} (relations and permissions share one namespace)",
                                    name.name, d.name.name
                                ),
                            );
                        } else {
                            members.insert(&name.name, m);
                        }
                    }
                    self.defs.push(DefInfo { decl: d, members });
                }
            }
        }
    }

    fn check_type_name(&mut self, name: &Ident) {
        if let Some(word) = name.name.split('/').find(|s| RESERVED.contains(s)) {
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!("invalid type name `{}`: `{word}` is a keyword", name.name),
            );
        } else if name.name.len() > 128 {
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!("invalid type name `{}`: longer than 128 bytes", name.name),
            );
        } else if let Some(seg) = name.name.split('/').find(|s| !valid_name(s)) {
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!(
                    "invalid type name `{}`: `{seg}` must be 3 to 64 characters of lowercase letters, digits and `_`, starting with a letter and not ending with `_`",
                    name.name
                ),
            );
        }
    }

    fn check_member_name(&mut self, name: &Ident, member: &MemberDecl) {
        let what = member_word(member);
        if RESERVED.contains(&name.name.as_str()) {
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!("invalid {what} name `{}`: it is a keyword", name.name),
            );
        } else if !valid_name(&name.name) {
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!(
                    "invalid {what} name `{}`: names must be 3 to 64 characters of lowercase letters, digits and `_`, starting with a letter and not ending with `_`",
                    name.name
                ),
            );
        }
    }

    fn check_caveat_name(&mut self, name: &Ident) {
        let reserved = name
            .name
            .split('/')
            .find(|s| RESERVED.contains(s))
            .map(str::to_string);
        if let Some(word) = reserved {
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!("invalid caveat name `{}`: `{word}` is a keyword", name.name),
            );
        } else if self.uses_expiration && (name.name == "expiration" || name.name == "and") {
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!(
                    "invalid caveat name `{}`: it is a keyword under `use expiration`",
                    name.name
                ),
            );
        } else if name.name.len() > 128 {
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!("invalid caveat name `{}`: longer than 128 bytes", name.name),
            );
        } else if let Some(seg) = name.name.split('/').find(|s| !valid_name(s)) {
            // The rule of relationships' caveat names (and SpiceDB's): a caveat the schema
            // accepted must be nameable by a relationship.
            self.error(
                name.span,
                ErrorKind::InvalidName,
                format!(
                    "invalid caveat name `{}`: `{seg}` must be 3 to 64 characters of lowercase letters, digits and `_`, starting with a letter and not ending with `_`",
                    name.name
                ),
            );
        }
    }

    fn check_definition(&mut self, index: usize) {
        let Some(info) = self.defs.get(index) else {
            return;
        };
        let decl = info.decl;
        for member in &decl.members {
            match member {
                MemberDecl::Relation(r) => self.check_relation(decl, r),
                MemberDecl::Permission(p) => self.check_permission(index, p),
            }
        }
        self.check_cycles(index);
    }

    fn check_relation(&mut self, def: &DefinitionDecl, rel: &RelationDecl) {
        let mut seen: HashSet<String> = HashSet::new();
        for allowed in &rel.allowed {
            let source = allowed_source(allowed);
            if !seen.insert(source.clone()) {
                self.error(
                    allowed.span,
                    ErrorKind::DuplicateAllowedType,
                    format!(
                        "duplicate allowed subject type `{source}` in relation `{}#{}`",
                        def.name.name, rel.name.name
                    ),
                );
            }
            let type_name = allowed.type_name.name.as_str();
            match self.def_by_name.get(type_name).copied() {
                None => {
                    let shown = match &allowed.kind {
                        AllowedDeclKind::Wildcard(_) => format!("{type_name}:*"),
                        AllowedDeclKind::SubjectSet(r) => format!("{type_name}#{}", r.name),
                        _ => type_name.to_string(),
                    };
                    self.error(
                        allowed.type_name.span,
                        ErrorKind::UnknownType,
                        format!(
                            "unknown type `{type_name}` in allowed subject type `{shown}` of relation `{}#{}`: expected the name of a definition",
                            def.name.name, rel.name.name
                        ),
                    );
                }
                Some(target) => {
                    if let AllowedDeclKind::SubjectSet(sub) = &allowed.kind {
                        self.check_subject_set(def, rel, target, sub);
                    }
                }
            }
            self.check_with(def, rel, allowed);
        }
    }

    fn check_subject_set(
        &mut self,
        def: &DefinitionDecl,
        rel: &RelationDecl,
        target: usize,
        sub: &Ident,
    ) {
        let Some(info) = self.defs.get(target) else {
            return;
        };
        let target_name = info.decl.name.name.clone();
        match info.members.get(sub.name.as_str()).copied() {
            None => self.error(
                sub.span,
                ErrorKind::UnknownSubjectRelation,
                format!(
                    "relation or permission `{}` not found on definition `{target_name}` (in subject type `{target_name}#{}` of relation `{}#{}`)",
                    sub.name, sub.name, def.name.name, rel.name.name
                ),
            ),
            // Like SpiceDB, only subject sets on other types are checked for wildcards.
            Some(MemberDecl::Relation(_)) if target_name == def.name.name => {}
            Some(MemberDecl::Relation(sub_rel)) => {
                if let Some((wildcard, via)) = self.wildcard_via(&target_name, sub_rel) {
                    self.error(
                        sub.span,
                        ErrorKind::TransitiveWildcard,
                        format!(
                            "relation `{}#{}` allows `{target_name}#{}`, which includes wildcard `{wildcard}:*` via relation `{via}`: wildcards cannot be included through subject sets",
                            def.name.name, rel.name.name, sub.name
                        ),
                    );
                }
            }
            Some(MemberDecl::Permission(_)) => {}
        }
    }

    fn check_with(&mut self, def: &DefinitionDecl, rel: &RelationDecl, allowed: &AllowedDecl) {
        if let Some(caveat) = &allowed.caveat {
            if !self.caveats.contains_key(caveat.name.as_str()) {
                self.error(
                    caveat.span,
                    ErrorKind::UnknownCaveat,
                    format!(
                        "unknown caveat `{}` in relation `{}#{}`: expected the name of a caveat defined with `caveat {}(...) {{ ... }}`",
                        caveat.name, def.name.name, rel.name.name, caveat.name
                    ),
                );
            }
        }
        if let Some(span) = allowed.expiration {
            if !self.uses_expiration && !self.expiration_is_caveat(allowed) {
                self.error(
                    span,
                    ErrorKind::ExpirationNotEnabled,
                    format!(
                        "`with expiration` in relation `{}#{}` requires `use expiration` at the top of the schema",
                        def.name.name, rel.name.name
                    ),
                );
            }
        }
    }

    /// Without `use expiration`, `expiration` is an ordinary name: `with expiration` names a
    /// caveat called `expiration` when there is one (SpiceDB does the same).
    fn expiration_is_caveat(&self, allowed: &AllowedDecl) -> bool {
        !self.uses_expiration && allowed.caveat.is_none() && self.caveats.contains_key("expiration")
    }

    /// Whether relation `rel` of definition `def_name` admits a wildcard, directly or through the
    /// relations its subject sets name. Returns the wildcard's type and the relation allowing it.
    fn wildcard_via(&self, def_name: &str, rel: &RelationDecl) -> Option<(String, String)> {
        let mut visited: HashSet<(String, String)> = HashSet::new();
        let mut stack: Vec<(String, &RelationDecl)> = vec![(def_name.to_string(), rel)];
        let mut no_wildcard = self.no_wildcard.borrow_mut();
        while let Some((def, rel)) = stack.pop() {
            let key = (def.clone(), rel.name.name.clone());
            // Skipping a relation known to reach no wildcard changes nothing found.
            if no_wildcard.contains(&key) || !visited.insert(key) {
                continue;
            }
            for allowed in &rel.allowed {
                match &allowed.kind {
                    AllowedDeclKind::Wildcard(_) => {
                        return Some((
                            allowed.type_name.name.clone(),
                            format!("{def}#{}", rel.name.name),
                        ));
                    }
                    AllowedDeclKind::SubjectSet(sub) => {
                        let target = self
                            .def_by_name
                            .get(allowed.type_name.name.as_str())
                            .and_then(|&i| self.defs.get(i));
                        if let Some(info) = target {
                            if let Some(MemberDecl::Relation(r)) =
                                info.members.get(sub.name.as_str()).copied()
                            {
                                stack.push((info.decl.name.name.clone(), r));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // The search went through everything reachable: none of it reaches a wildcard.
        no_wildcard.extend(visited);
        None
    }

    fn check_permission(&mut self, def_index: usize, perm: &PermissionDecl) {
        self.check_expr(def_index, perm, &perm.expr);
    }

    fn check_expr(&mut self, def_index: usize, perm: &PermissionDecl, expr: &Expr) {
        let Some(info) = self.defs.get(def_index) else {
            return;
        };
        let def_name = info.decl.name.name.clone();
        match expr {
            Expr::Nil(_) => {}
            Expr::Ref(name) => {
                if !info.members.contains_key(name.name.as_str()) {
                    self.error(
                        name.span,
                        ErrorKind::UnknownMember,
                        format!(
                            "relation or permission `{}` not found on definition `{def_name}` (referenced by permission `{}`)",
                            name.name, perm.name.name
                        ),
                    );
                }
            }
            Expr::Arrow {
                tupleset,
                computed,
                mode,
                ..
            } => {
                let arrow = match mode {
                    crate::model::ArrowMode::Any => format!("{}->{}", tupleset.name, computed.name),
                    crate::model::ArrowMode::All => {
                        format!("{}.all({})", tupleset.name, computed.name)
                    }
                };
                match info.members.get(tupleset.name.as_str()).copied() {
                    None => self.error(
                        tupleset.span,
                        ErrorKind::UnknownMember,
                        format!(
                            "relation `{}` not found on definition `{def_name}` (left side of arrow `{arrow}` in permission `{}`)",
                            tupleset.name, perm.name.name
                        ),
                    ),
                    Some(MemberDecl::Permission(_)) => self.error(
                        tupleset.span,
                        ErrorKind::ArrowOverPermission,
                        format!(
                            "arrow `{arrow}` in permission `{}` walks permission `{}`: expected a relation on the left side of an arrow, found a permission",
                            perm.name.name, tupleset.name
                        ),
                    ),
                    Some(MemberDecl::Relation(rel)) => {
                        if let Some((wildcard, via)) = self.wildcard_via(&def_name, rel) {
                            self.error(
                                tupleset.span,
                                ErrorKind::ArrowOverWildcard,
                                format!(
                                    "arrow `{arrow}` in permission `{}` walks relation `{def_name}#{}`, which includes wildcard `{wildcard}:*` via relation `{via}`: wildcard relations cannot be used on the left side of arrows",
                                    perm.name.name, tupleset.name
                                ),
                            );
                        } else {
                            self.check_arrow_target(&arrow, &def_name, perm, rel, computed);
                        }
                    }
                }
            }
            Expr::Union(items, _) | Expr::Intersection(items, _) => {
                for item in items {
                    self.check_expr(def_index, perm, item);
                }
            }
            Expr::Exclusion(a, b, _) => {
                self.check_expr(def_index, perm, a);
                self.check_expr(def_index, perm, b);
            }
        }
    }

    /// The right side of an arrow must exist on at least one subject type of the relation.
    fn check_arrow_target(
        &mut self,
        arrow: &str,
        def_name: &str,
        perm: &PermissionDecl,
        rel: &RelationDecl,
        computed: &Ident,
    ) {
        let mut types: Vec<&str> = Vec::new();
        for allowed in &rel.allowed {
            let name = allowed.type_name.name.as_str();
            let Some(info) = self.def_by_name.get(name).and_then(|&i| self.defs.get(i)) else {
                // Unknown type: reported on the relation; do not guess.
                return;
            };
            if info.members.contains_key(computed.name.as_str()) {
                return;
            }
            if !types.contains(&name) {
                types.push(name);
            }
        }
        let listed: Vec<String> = types.iter().map(|t| format!("`{t}`")).collect();
        self.error(
            computed.span,
            ErrorKind::ArrowTargetMissing,
            format!(
                "arrow `{arrow}` in permission `{}`: relation or permission `{}` not found on any subject type of relation `{def_name}#{}` (expected it on one of {})",
                perm.name.name,
                computed.name,
                rel.name.name,
                listed.join(", ")
            ),
        );
    }

    /// Permissions that reach themselves through computed references (not arrows) alone.
    fn check_cycles(&mut self, def_index: usize) {
        let Some(info) = self.defs.get(def_index) else {
            return;
        };
        let def_name = info.decl.name.name.clone();
        // Graph over permissions: edges to the permissions an expression names directly.
        let mut order: Vec<&str> = Vec::new();
        let mut edges: HashMap<&str, Vec<(&str, Span)>> = HashMap::new();
        for member in &info.decl.members {
            let MemberDecl::Permission(p) = member else {
                continue;
            };
            if edges.contains_key(p.name.name.as_str()) {
                continue;
            }
            let mut refs = Vec::new();
            collect_refs(&p.expr, &mut refs);
            let targets: Vec<(&str, Span)> = refs
                .into_iter()
                .filter(|(name, _)| {
                    matches!(
                        info.members.get(name).copied(),
                        Some(MemberDecl::Permission(_))
                    )
                })
                .collect();
            order.push(&p.name.name);
            edges.insert(&p.name.name, targets);
        }

        let mut found: Vec<(Span, String)> = Vec::new();
        // 0 = unvisited, 1 = on the DFS stack, 2 = done.
        let mut state: HashMap<&str, u8> = HashMap::new();
        for &start in &order {
            if state.get(start).copied().unwrap_or(0) != 0 {
                continue;
            }
            state.insert(start, 1);
            let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
            while let Some(top) = stack.last_mut() {
                let node = top.0;
                let next = edges.get(node).and_then(|e| e.get(top.1)).copied();
                top.1 += 1;
                match next {
                    None => {
                        state.insert(node, 2);
                        stack.pop();
                    }
                    Some((target, span)) => match state.get(target).copied().unwrap_or(0) {
                        0 => {
                            state.insert(target, 1);
                            stack.push((target, 0));
                        }
                        1 => {
                            let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                            let mut path: Vec<&str> = stack
                                .get(from..)
                                .unwrap_or(&[])
                                .iter()
                                .map(|(n, _)| *n)
                                .collect();
                            path.push(target);
                            found.push((span, path.join(" -> ")));
                        }
                        _ => {}
                    },
                }
            }
        }
        for (span, path) in found {
            self.error(
                span,
                ErrorKind::PermissionCycle,
                format!(
                    "permission cycle in definition `{def_name}`: {path}; a permission cannot reach itself through computed references alone (only through arrows)"
                ),
            );
        }
    }

    fn check_caveat(&mut self, caveat: &CaveatDecl) {
        let errors_before = self.errors.len();
        if caveat.params.is_empty() {
            self.error(
                caveat.name.span,
                ErrorKind::InvalidCaveatParameters,
                format!(
                    "caveat `{}` must have at least one parameter, found none",
                    caveat.name.name
                ),
            );
        }
        let used = cel_identifiers(&caveat.expression);
        let mut seen: HashSet<&str> = HashSet::new();
        for param in &caveat.params {
            let name = &param.name;
            if !valid_param_name(&name.name) {
                self.error(
                    name.span,
                    ErrorKind::InvalidName,
                    format!(
                        "invalid parameter name `{}` in caveat `{}`: expected an ASCII letter or `_` followed by letters, digits or `_`, and not a keyword",
                        name.name, caveat.name.name
                    ),
                );
            }
            if !seen.insert(&name.name) {
                self.error(
                    name.span,
                    ErrorKind::InvalidCaveatParameters,
                    format!(
                        "duplicate parameter `{}` in caveat `{}`",
                        name.name, caveat.name.name
                    ),
                );
            } else if let Some(used) = &used {
                if !used.contains(name.name.as_str()) {
                    self.error(
                        name.span,
                        ErrorKind::InvalidCaveatParameters,
                        format!(
                            "parameter `{}` of caveat `{}` is not used in its expression",
                            name.name, caveat.name.name
                        ),
                    );
                }
            }
            self.check_caveat_type(&param.ty);
        }
        if self.errors.len() == errors_before {
            self.compile_caveat(caveat);
        }
    }

    /// Type-checks a caveat's expression against its (valid) parameters and keeps the
    /// compiled program; an error points into the expression.
    fn compile_caveat(&mut self, caveat: &CaveatDecl) {
        let mut params = Vec::with_capacity(caveat.params.len());
        for p in &caveat.params {
            match dhow_caveat::Type::parse(&p.ty.text()) {
                Ok(t) => params.push((p.name.name.clone(), t)),
                Err(e) => {
                    self.error(p.ty.span, ErrorKind::InvalidCaveatType, e);
                    return;
                }
            }
        }
        let raw = self
            .src
            .get(caveat.expression_span.start..caveat.expression_span.end)
            .unwrap_or("");
        let start = caveat.expression_span.start + (raw.len() - raw.trim_start().len());
        match dhow_caveat::Program::compile(
            &caveat.name.name,
            &params,
            &caveat.expression,
            &self.caveat_limits,
        ) {
            Ok(program) => {
                self.programs.insert(caveat.name.name.clone(), program);
            }
            Err(e) => {
                let (offset, message, kind) = match e {
                    dhow_caveat::CaveatError::Compile {
                        offset, message, ..
                    } if message.contains("limit of") => (offset, message, ErrorKind::TooLarge),
                    dhow_caveat::CaveatError::Compile {
                        offset, message, ..
                    } => (offset, message, ErrorKind::InvalidCaveatExpression),
                    other => (0, other.to_string(), ErrorKind::InvalidCaveatExpression),
                };
                let at = (start + offset).min(caveat.expression_span.end);
                self.errors.push(Pending::new(
                    at,
                    kind,
                    format!("in caveat `{}`: {message}", caveat.name.name),
                ));
            }
        }
    }

    fn check_caveat_type(&mut self, ty: &TypeRef) {
        match CAVEAT_TYPES.iter().find(|(name, _)| *name == ty.name.name) {
            None => {
                let known: Vec<String> = CAVEAT_TYPES
                    .iter()
                    .map(|(n, a)| {
                        if *a == 1 {
                            format!("{n}<T>")
                        } else {
                            n.to_string()
                        }
                    })
                    .collect();
                self.error(
                    ty.name.span,
                    ErrorKind::InvalidCaveatType,
                    format!(
                        "unknown caveat parameter type `{}`: expected one of {}",
                        ty.name.name,
                        known.join(", ")
                    ),
                );
            }
            Some((name, arity)) => {
                if ty.args.len() != *arity {
                    let expected = match arity {
                        0 => "no type arguments".to_string(),
                        _ => "exactly 1 type argument".to_string(),
                    };
                    self.error(
                        ty.name.span,
                        ErrorKind::InvalidCaveatType,
                        format!(
                            "caveat parameter type `{name}` takes {expected}, found {} in `{}`",
                            ty.args.len(),
                            ty.text()
                        ),
                    );
                }
            }
        }
        for arg in &ty.args {
            self.check_caveat_type(arg);
        }
    }

    /// Builds the compiled schema; only called when checking found no error.
    fn build(&self) -> Schema {
        let mut schema = Schema {
            uses_expiration: self.uses_expiration,
            ..Schema::default()
        };
        for item in &self.file.items {
            match item {
                Item::Use(_) => {}
                Item::Caveat(c) => {
                    schema.caveats.insert(
                        c.name.name.clone(),
                        Caveat {
                            name: c.name.name.clone(),
                            parameters: c
                                .params
                                .iter()
                                .map(|p| (p.name.name.clone(), p.ty.text()))
                                .collect(),
                            expression: c.expression.clone(),
                            program: self.programs.get(&c.name.name).cloned(),
                        },
                    );
                }
                Item::Definition(d) => {
                    let mut relations = BTreeMap::new();
                    let mut permissions = BTreeMap::new();
                    for member in &d.members {
                        match member {
                            MemberDecl::Relation(r) => {
                                relations.insert(
                                    r.name.name.clone(),
                                    Relation {
                                        name: r.name.name.clone(),
                                        doc: r.doc.clone(),
                                        allowed: r
                                            .allowed
                                            .iter()
                                            .map(|a| self.build_allowed(a))
                                            .collect(),
                                    },
                                );
                            }
                            MemberDecl::Permission(p) => {
                                permissions.insert(
                                    p.name.name.clone(),
                                    Permission {
                                        name: p.name.name.clone(),
                                        doc: p.doc.clone(),
                                        rewrite: to_rewrite(&p.expr),
                                    },
                                );
                            }
                        }
                    }
                    schema.definitions.insert(
                        d.name.name.clone(),
                        Definition {
                            name: d.name.name.clone(),
                            doc: d.doc.clone(),
                            relations,
                            permissions,
                        },
                    );
                }
            }
        }
        schema
    }

    fn build_allowed(&self, a: &AllowedDecl) -> AllowedSubject {
        let kind = match &a.kind {
            AllowedDeclKind::Object | AllowedDeclKind::Ellipsis(_) => AllowedKind::Object,
            AllowedDeclKind::Wildcard(_) => AllowedKind::Wildcard,
            AllowedDeclKind::SubjectSet(r) => AllowedKind::SubjectSet(r.name.clone()),
        };
        let (caveat, expiration) = if a.expiration.is_some() && self.expiration_is_caveat(a) {
            (Some("expiration".to_string()), false)
        } else {
            (
                a.caveat.as_ref().map(|c| c.name.clone()),
                a.expiration.is_some(),
            )
        };
        AllowedSubject {
            type_name: a.type_name.name.clone(),
            kind,
            caveat,
            expiration,
        }
    }
}

fn member_word(member: &MemberDecl) -> &'static str {
    match member {
        MemberDecl::Relation(_) => "relation",
        MemberDecl::Permission(_) => "permission",
    }
}

/// SpiceDB's pattern for relation names and type-path segments: `[a-z][a-z0-9_]{1,62}[a-z0-9]`.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 3 || b.len() > 64 {
        return false;
    }
    let first = b[0];
    let last = b[b.len() - 1];
    first.is_ascii_lowercase()
        && (last.is_ascii_lowercase() || last.is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn valid_param_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !RESERVED.contains(&s)
}

/// How SpiceDB names an allowed subject type when looking for duplicates.
fn allowed_source(a: &AllowedDecl) -> String {
    let mut s = a.type_name.name.clone();
    match &a.kind {
        AllowedDeclKind::Object | AllowedDeclKind::Ellipsis(_) => {}
        AllowedDeclKind::Wildcard(_) => s.push_str(":*"),
        AllowedDeclKind::SubjectSet(r) => {
            s.push('#');
            s.push_str(&r.name);
        }
    }
    match (&a.caveat, a.expiration.is_some()) {
        (Some(c), true) => s.push_str(&format!(" with {} and expiration", c.name)),
        (Some(c), false) => s.push_str(&format!(" with {}", c.name)),
        (None, true) => s.push_str(" with expiration"),
        (None, false) => {}
    }
    s
}

/// Names referenced directly (not through arrows) by an expression, in order.
fn collect_refs<'e>(expr: &'e Expr, out: &mut Vec<(&'e str, Span)>) {
    match expr {
        Expr::Ref(i) => out.push((&i.name, i.span)),
        Expr::Nil(_) | Expr::Arrow { .. } => {}
        Expr::Union(items, _) | Expr::Intersection(items, _) => {
            for item in items {
                collect_refs(item, out);
            }
        }
        Expr::Exclusion(a, b, _) => {
            collect_refs(a, out);
            collect_refs(b, out);
        }
    }
}

/// Identifiers a CEL expression uses as variables (not after `.`, not inside strings). `None`
/// when the text cannot be lexed (then nothing is checked).
fn cel_identifiers(expression: &str) -> Option<HashSet<&str>> {
    let tokens = lex(expression).ok()?;
    let mut names = HashSet::new();
    let mut previous = None;
    for tok in &tokens {
        if tok.kind == TokenKind::Ident && previous != Some(TokenKind::Period) {
            names.insert(tok.text(expression));
        }
        if tok.kind != TokenKind::Newline {
            previous = Some(tok.kind);
        }
    }
    Some(names)
}

/// Converts an expression to a rewrite, flattening nested unions and intersections (also
/// through parentheses, as SpiceDB does).
pub(crate) fn to_rewrite(expr: &Expr) -> Rewrite {
    match expr {
        Expr::Nil(_) => Rewrite::Nil,
        Expr::Ref(i) => Rewrite::Computed(i.name.clone()),
        Expr::Arrow {
            tupleset,
            computed,
            mode,
            ..
        } => Rewrite::Arrow {
            tupleset: tupleset.name.clone(),
            computed: computed.name.clone(),
            mode: *mode,
        },
        Expr::Union(items, _) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match to_rewrite(item) {
                    Rewrite::Union(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            Rewrite::Union(out)
        }
        Expr::Intersection(items, _) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match to_rewrite(item) {
                    Rewrite::Intersection(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            Rewrite::Intersection(out)
        }
        Expr::Exclusion(a, b, _) => {
            Rewrite::Exclusion(Box::new(to_rewrite(a)), Box::new(to_rewrite(b)))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{compile, ErrorKind};

    /// (kind, line, column) of every diagnostic.
    fn errs(src: &str) -> Vec<(ErrorKind, usize, usize)> {
        compile(src)
            .unwrap_err()
            .diagnostics()
            .iter()
            .map(|d| (d.kind, d.line, d.column))
            .collect()
    }

    #[test]
    fn unknown_type_position() {
        let src = "definition user {}\ndefinition doc {\n    relation viewer: user | usr\n}";
        assert_eq!(errs(src), vec![(ErrorKind::UnknownType, 3, 29)]);
    }

    #[test]
    fn unknown_wildcard_type() {
        let src = "definition doc {\n    relation viewer: user:*\n}";
        assert_eq!(errs(src), vec![(ErrorKind::UnknownType, 2, 22)]);
    }

    #[test]
    fn unknown_subject_relation() {
        let src = "definition group {}\ndefinition doc {\n    relation viewer: group#member\n}";
        assert_eq!(errs(src), vec![(ErrorKind::UnknownSubjectRelation, 3, 28)]);
    }

    #[test]
    fn unknown_member_in_permission() {
        let src = "definition user {}\ndefinition doc {\n    relation viewer: user\n    permission view = viewer + editor\n}";
        assert_eq!(errs(src), vec![(ErrorKind::UnknownMember, 4, 32)]);
    }

    #[test]
    fn arrow_rules() {
        let src = "definition user {\n  relation self_ref: user\n}\n\
                   definition doc {\n  relation parent: user\n  relation pub: user:*\n  permission ppp = parent\n  \
                   permission aaa = ppp->view\n  permission bbb = pub->self_ref\n  permission ccc = parent->nope\n  permission ddd = missing->view\n}";
        assert_eq!(
            errs(src),
            vec![
                (ErrorKind::ArrowOverPermission, 8, 20),
                (ErrorKind::ArrowOverWildcard, 9, 20),
                (ErrorKind::ArrowTargetMissing, 10, 28),
                (ErrorKind::UnknownMember, 11, 20),
            ]
        );
    }

    #[test]
    fn arrow_target_on_one_type_is_enough() {
        let src = "definition user {}\ndefinition folder {\n  relation viewer: user\n  permission view = viewer\n}\n\
                   definition doc {\n  relation parent: folder | user\n  permission view = parent->view\n}";
        assert!(compile(src).is_ok());
    }

    #[test]
    fn arrow_over_subject_set_relation_is_allowed() {
        // SpiceDB only warns (the subject relation is ignored by the arrow).
        let src = "definition user {}\ndefinition group {\n  relation member: user\n}\n\
                   definition doc {\n  relation parent: group#member\n  permission view = parent->member\n}";
        assert!(compile(src).is_ok());
    }

    #[test]
    fn duplicates() {
        let src = "definition user {}\ndefinition user {}\ncaveat user(a int) { a > 1 }\n\
                   definition doc {\n  relation viewer: user | user\n  permission viewer = viewer\n}";
        assert_eq!(
            errs(src),
            vec![
                (ErrorKind::DuplicateDefinition, 2, 12),
                (ErrorKind::DuplicateDefinition, 3, 8),
                (ErrorKind::DuplicateAllowedType, 5, 27),
                (ErrorKind::DuplicateMember, 6, 14),
            ]
        );
    }

    #[test]
    fn expiration_and_caveats() {
        let src = "definition user {}\ndefinition doc {\n  relation aaa: user with expiration\n  relation bbb: user with nope\n}";
        assert_eq!(
            errs(src),
            vec![
                (ErrorKind::ExpirationNotEnabled, 3, 27),
                (ErrorKind::UnknownCaveat, 4, 27)
            ]
        );
        let ok = "use expiration\ncaveat cav(x int) { x > 1 }\ndefinition user {}\ndefinition doc {\n  relation aaa: user with cav and expiration\n}";
        let schema = compile(ok).unwrap();
        let a = &schema.definitions["doc"].relations["aaa"].allowed[0];
        assert_eq!(a.caveat.as_deref(), Some("cav"));
        assert!(a.expiration);
    }

    #[test]
    fn caveat_named_expiration_without_flag() {
        let src = "caveat expiration(x int) { x > 1 }\ndefinition user {}\ndefinition doc {\n  relation aaa: user with expiration\n}";
        let schema = compile(src).unwrap();
        let a = &schema.definitions["doc"].relations["aaa"].allowed[0];
        assert_eq!(a.caveat.as_deref(), Some("expiration"));
        assert!(!a.expiration);
    }

    #[test]
    fn cycles() {
        let src = "definition doc {\n  permission aaa = bbb\n  permission bbb = aaa\n  permission view = view + aaa\n}";
        let err = compile(src).unwrap_err();
        let cycles: Vec<_> = err
            .diagnostics()
            .iter()
            .map(|d| (d.line, d.column))
            .collect();
        assert_eq!(cycles, vec![(3, 20), (4, 21)]);
        assert!(err.diagnostics()[0].message.contains("aaa -> bbb -> aaa"));
        assert!(err.diagnostics()[1].message.contains("view -> view"));
    }

    #[test]
    fn arrow_recursion_is_not_a_cycle() {
        let src = "definition user {}\ndefinition folder {\n  relation parent: folder\n  relation viewer: user\n  permission view = viewer + parent->view\n}";
        assert!(compile(src).is_ok());
    }

    #[test]
    fn transitive_wildcard() {
        let src =
            "definition user {}\ndefinition group {\n  relation member: user:* | group#member\n}\n\
                   definition doc {\n  relation viewer: group#member\n}";
        assert_eq!(errs(src), vec![(ErrorKind::TransitiveWildcard, 6, 26)]);
    }

    #[test]
    fn names() {
        let src = "definition User {}\ndefinition doc {\n  relation ab: doc\n  relation nil: doc\n  permission bad_ = nil\n}";
        assert_eq!(
            errs(src),
            vec![
                (ErrorKind::InvalidName, 1, 12),
                (ErrorKind::InvalidName, 3, 12),
                (ErrorKind::InvalidName, 4, 12),
                (ErrorKind::InvalidName, 5, 14),
            ]
        );
    }

    #[test]
    fn caveat_checks() {
        let src = "caveat none() { true }\ncaveat dup(a int, a int) { a }\ncaveat tyy(a strin, b list, c int<int>) { a + b + c }\ncaveat unused(a int, b int) { a > 1 }";
        assert_eq!(
            errs(src),
            vec![
                (ErrorKind::InvalidCaveatParameters, 1, 8),
                (ErrorKind::InvalidCaveatParameters, 2, 19),
                (ErrorKind::InvalidCaveatType, 3, 14),
                (ErrorKind::InvalidCaveatType, 3, 23),
                (ErrorKind::InvalidCaveatType, 3, 31),
                (ErrorKind::InvalidCaveatParameters, 4, 22),
            ]
        );
    }

    #[test]
    fn use_flags() {
        assert_eq!(
            errs("definition user {}\nuse expiration"),
            vec![(ErrorKind::UseAfterDefinition, 2, 1)]
        );
        assert_eq!(
            errs("use typechecking"),
            vec![(ErrorKind::UnsupportedUseFlag, 1, 5)]
        );
    }

    #[test]
    fn flattening() {
        use crate::Rewrite::*;
        let src = "definition doc {\n  relation aaa: doc\n  relation bbb: doc\n  relation ccc: doc\n  \
                   permission ppp = (aaa + bbb) + (ccc + aaa)\n  permission qqq = aaa & (bbb & ccc)\n  permission rrr = aaa - bbb - ccc\n}";
        let s = compile(src).unwrap();
        let perms = &s.definitions["doc"].permissions;
        let c = |n: &str| Computed(n.to_string());
        assert_eq!(
            perms["ppp"].rewrite,
            Union(vec![c("aaa"), c("bbb"), c("ccc"), c("aaa")])
        );
        assert_eq!(
            perms["qqq"].rewrite,
            Intersection(vec![c("aaa"), c("bbb"), c("ccc")])
        );
        assert_eq!(
            perms["rrr"].rewrite,
            Exclusion(
                Box::new(Exclusion(Box::new(c("aaa")), Box::new(c("bbb")))),
                Box::new(c("ccc"))
            )
        );
    }
}
