//! Expand: the userset tree of `resource#relation`. Rewrites are expanded inline (computed
//! usersets and arrows); stored subject sets stay leaves, as in Zanzibar and SpiceDB, so a
//! caller expands them further if it wants to. A tree can be exponential in the schema's size
//! (`p0 = p1 + p1`, `p1 = p2 + p2`, ...): the request's budgets bound it.

use std::collections::HashSet;

use dhow_schema::{ArrowMode, Member, Rewrite};
use dhow_tuples::{CaveatRef, ObjectRef, SnapshotReader, Subject, Timestamp};

use crate::budget::{grow, Meter};
use crate::{Engine, Error, Options};

/// A node of an expansion: the userset `resource#relation` and how it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandNode {
    pub resource: ObjectRef,
    pub relation: String,
    pub tree: ExpandTree,
    /// Set on the child of an arrow reached through a caveated relationship: the node counts
    /// only as far as that caveat holds (Expand shows caveats; it does not evaluate them).
    pub caveat: Option<CaveatRef>,
}

/// A stored subject of a relation, with the caveat of its relationship: it is in the userset
/// only as far as that caveat holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeafSubject {
    pub subject: Subject,
    pub caveat: Option<CaveatRef>,
}

impl LeafSubject {
    /// A subject without caveat.
    pub fn plain(subject: Subject) -> Self {
        LeafSubject {
            subject,
            caveat: None,
        }
    }
}

/// `user:tom`, or `user:tom[caveat:{"k":1}]` as in the relationship text form.
impl std::fmt::Display for LeafSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.subject)?;
        match &self.caveat {
            Some(CaveatRef {
                name,
                context: Some(ctx),
            }) => write!(f, "[{name}:{ctx}]"),
            Some(CaveatRef {
                name,
                context: None,
            }) => write!(f, "[{name}]"),
            None => Ok(()),
        }
    }
}

/// How a userset is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandTree {
    /// The stored subjects of a relation: objects, wildcards and subject sets (not expanded),
    /// each with its relationship's caveat. A subject set equal to an ancestor node marks a
    /// cycle in the data.
    Leaf(Vec<LeafSubject>),
    /// Members of any child.
    Union(Vec<ExpandNode>),
    /// Members of every child; empty when there are no children.
    Intersection(Vec<ExpandNode>),
    /// Members of the first child that are not members of the second.
    Exclusion(Box<ExpandNode>, Box<ExpandNode>),
}

struct Expander<'a, R: SnapshotReader> {
    engine: &'a Engine,
    reader: &'a R,
    meter: &'a Meter,
    now: Timestamp,
    path: HashSet<(ObjectRef, String)>,
}

impl<R: SnapshotReader> Expander<'_, R> {
    fn member(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<ExpandNode, Error> {
        grow(|| self.member_inner(resource, relation, depth))
    }

    fn member_inner(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        depth: u32,
    ) -> Result<ExpandNode, Error> {
        let at = || format!("{resource}#{relation}");
        self.meter.depth(depth, at)?;
        let node = |tree| ExpandNode {
            resource: resource.clone(),
            relation: relation.to_string(),
            tree,
            caveat: None,
        };
        let key = (resource.clone(), relation.to_string());
        if self.path.contains(&key) {
            let me = Subject::set(
                resource.object_type.clone(),
                resource.object_id.clone(),
                relation,
            );
            return Ok(node(ExpandTree::Leaf(vec![LeafSubject::plain(me)])));
        }
        let engine = self.engine;
        let member = engine.member_of(resource, relation)?;
        self.meter.dispatch(at)?;
        self.path.insert(key.clone());
        let tree = match member {
            Member::Relation(_) => self.leaf(resource, relation),
            Member::Permission(p) => self.rewrite(resource, relation, &p.rewrite, depth + 1),
        };
        self.path.remove(&key);
        Ok(node(tree?))
    }

    fn leaf(&mut self, resource: &ObjectRef, relation: &str) -> Result<ExpandTree, Error> {
        let mut subjects = Vec::new();
        self.meter.dispatch(|| format!("{resource}#{relation}"))?;
        for r in Engine::visible(self.reader.by_resource(resource, relation)?, self.now) {
            subjects.push(LeafSubject {
                subject: r.subject,
                caveat: r.caveat,
            });
        }
        Ok(ExpandTree::Leaf(subjects))
    }

    /// Expands one node of a permission's expression; each level of nesting is one step of
    /// depth.
    fn rewrite(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        rw: &Rewrite,
        depth: u32,
    ) -> Result<ExpandTree, Error> {
        self.meter.depth(depth, || {
            format!("{resource}#{relation} (in its expression)")
        })?;
        grow(|| self.rewrite_inner(resource, relation, rw, depth))
    }

    fn rewrite_inner(
        &mut self,
        resource: &ObjectRef,
        relation: &str,
        rw: &Rewrite,
        depth: u32,
    ) -> Result<ExpandTree, Error> {
        let wrap = |tree| ExpandNode {
            resource: resource.clone(),
            relation: relation.to_string(),
            tree,
            caveat: None,
        };
        Ok(match rw {
            Rewrite::Nil => ExpandTree::Leaf(Vec::new()),
            Rewrite::Computed(name) => {
                ExpandTree::Union(vec![self.member(resource, name, depth + 1)?])
            }
            Rewrite::Union(items) => {
                let mut kids = Vec::new();
                for i in items {
                    kids.push(wrap(self.rewrite(resource, relation, i, depth + 1)?));
                }
                ExpandTree::Union(kids)
            }
            Rewrite::Intersection(items) => {
                let mut kids = Vec::new();
                for i in items {
                    kids.push(wrap(self.rewrite(resource, relation, i, depth + 1)?));
                }
                ExpandTree::Intersection(kids)
            }
            Rewrite::Exclusion(a, b) => {
                let a = wrap(self.rewrite(resource, relation, a, depth + 1)?);
                let b = wrap(self.rewrite(resource, relation, b, depth + 1)?);
                ExpandTree::Exclusion(Box::new(a), Box::new(b))
            }
            Rewrite::Arrow {
                tupleset,
                computed,
                mode,
            } => {
                let schema = self.engine.schema().clone();
                let mut kids = Vec::new();
                self.meter.dispatch(|| format!("{resource}#{tupleset}"))?;
                for r in Engine::visible(self.reader.by_resource(resource, tupleset)?, self.now) {
                    let t = &r.subject.object;
                    if t.is_wildcard() {
                        continue;
                    }
                    if schema.member(&t.object_type, computed).is_none() {
                        if *mode == ArrowMode::All {
                            return Ok(ExpandTree::Intersection(vec![wrap(ExpandTree::Leaf(
                                Vec::new(),
                            ))]));
                        }
                        continue;
                    }
                    let mut kid = self.member(t, computed, depth + 1)?;
                    kid.caveat = r.caveat.clone();
                    kids.push(kid);
                }
                match mode {
                    ArrowMode::Any => ExpandTree::Union(kids),
                    ArrowMode::All => ExpandTree::Intersection(kids),
                }
            }
        })
    }
}

impl Engine {
    /// The userset tree of `resource#relation` at the reader's revision.
    pub fn expand<R: SnapshotReader>(
        &self,
        reader: &R,
        resource: &ObjectRef,
        relation: &str,
        opts: Options,
    ) -> Result<ExpandNode, Error> {
        self.validate_ref(&resource.object_type, Some(relation))?;
        let meter = Meter::new(&opts);
        let mut e = Expander {
            engine: self,
            reader,
            meter: &meter,
            now: opts.now,
            path: HashSet::new(),
        };
        e.member(resource, relation, 0)
    }
}
