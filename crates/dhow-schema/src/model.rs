//! The compiled schema: what the type checker hands to the engine. Every name in it has been
//! resolved, so the engine can look things up without further checks failing.

use std::collections::BTreeMap;

/// A compiled, type-checked schema.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    /// Object definitions by type name (`user`, `org/docs/document`).
    pub definitions: BTreeMap<String, Definition>,
    /// Caveat definitions by name, each with its compiled expression.
    pub caveats: BTreeMap<String, Caveat>,
    /// True when the schema says `use expiration`.
    pub uses_expiration: bool,
}

/// `definition name { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    /// Doc comment (`/** ... */` or `///`) directly above the definition, if any.
    pub doc: Option<String>,
    pub relations: BTreeMap<String, Relation>,
    pub permissions: BTreeMap<String, Permission>,
}

/// `relation name: user | group#member | user:* with expiration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub doc: Option<String>,
    /// The allowed subject types, in the order written.
    pub allowed: Vec<AllowedSubject>,
}

/// One allowed subject type of a relation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowedSubject {
    /// The subject's object type.
    pub type_name: String,
    pub kind: AllowedKind,
    /// `with some_caveat`: relationships of this kind must carry that caveat.
    pub caveat: Option<String>,
    /// `with expiration`: relationships of this kind may carry an expiration.
    pub expiration: bool,
}

/// What kind of subject an allowed type admits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AllowedKind {
    /// `user`: a plain object.
    Object,
    /// `user:*`: the wildcard of the type.
    Wildcard,
    /// `group#member`: a subject set with that relation or permission.
    SubjectSet(String),
}

/// `permission name = expression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub name: String,
    pub doc: Option<String>,
    pub rewrite: Rewrite,
}

/// A permission expression: Zanzibar's userset rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rewrite {
    /// `nil`: the empty set.
    Nil,
    /// A relation or permission of the same object (computed userset).
    Computed(String),
    /// `tupleset->computed` (tuple to userset), with `.any()` (the default) or `.all()`.
    Arrow {
        tupleset: String,
        computed: String,
        mode: ArrowMode,
    },
    /// `a + b + ...`
    Union(Vec<Rewrite>),
    /// `a & b & ...`
    Intersection(Vec<Rewrite>),
    /// `a - b`
    Exclusion(Box<Rewrite>, Box<Rewrite>),
}

/// How an arrow combines the objects its tupleset relation points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrowMode {
    /// `->` or `.any()`: the subject has the permission on at least one of them.
    Any,
    /// `.all()`: the subject has the permission on every one of them (and there is at least one).
    All,
}

/// `caveat name(param type, ...) { expression }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caveat {
    pub name: String,
    /// Parameters and their type text (`int`, `list<string>`, `map<any>`), in order.
    pub parameters: Vec<(String, String)>,
    /// The CEL expression text, trimmed.
    pub expression: String,
    /// The expression compiled against the parameters (always set by the compiler; `None`
    /// only in a `Caveat` built by hand, which the engine refuses to evaluate).
    pub program: Option<dhow_caveat::Program>,
}

/// A name on a definition: either a relation or a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member<'a> {
    Relation(&'a Relation),
    Permission(&'a Permission),
}

impl Schema {
    /// The definition of `type_name`.
    pub fn definition(&self, type_name: &str) -> Option<&Definition> {
        self.definitions.get(type_name)
    }

    /// The relation or permission `name` on `type_name`.
    pub fn member(&self, type_name: &str, name: &str) -> Option<Member<'_>> {
        self.definitions.get(type_name)?.member(name)
    }
}

impl Definition {
    /// The relation or permission `name`.
    pub fn member(&self, name: &str) -> Option<Member<'_>> {
        if let Some(r) = self.relations.get(name) {
            return Some(Member::Relation(r));
        }
        self.permissions.get(name).map(Member::Permission)
    }
}
