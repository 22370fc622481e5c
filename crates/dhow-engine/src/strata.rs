//! Which relations and permissions can meet themselves again through the data, and whether
//! such a cycle can pass through the excluded side of an `-`. Computed once per schema from
//! its dependency graph (strongly connected components, Tarjan's algorithm without
//! recursion); the evaluators' memo (`table.rs`) uses it to know which cycle cuts are
//! monotone, so that their results can be kept.

use std::collections::{HashMap, HashSet};

use dhow_schema::{AllowedKind, Rewrite, Schema};

/// The component of a schema node (`type#member`) in the dependency graph, and whether every
/// edge inside that component is positive (no cycle through an excluded operand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    /// The node itself (`u32::MAX` for names outside the schema).
    pub id: u32,
    pub scc: u32,
    pub clean: bool,
}

impl Class {
    /// For names outside the schema: a component of its own, treated conservatively.
    const UNKNOWN: Class = Class {
        id: u32::MAX,
        scc: u32::MAX,
        clean: false,
    };
}

/// The class of every relation and permission of a schema.
#[derive(Debug, Default)]
pub(crate) struct Strata {
    classes: HashMap<String, HashMap<String, Class>>,
    /// Every edge (from, to, under an excluded operand) the schema allows.
    edges: HashSet<(u32, u32, bool)>,
}

impl Strata {
    pub fn new(schema: &Schema) -> Strata {
        // Number the nodes.
        let mut ids: HashMap<(&str, &str), usize> = HashMap::new();
        let mut names: Vec<(&str, &str)> = Vec::new();
        for (t, def) in &schema.definitions {
            for m in def.relations.keys().chain(def.permissions.keys()) {
                ids.insert((t.as_str(), m.as_str()), names.len());
                names.push((t.as_str(), m.as_str()));
            }
        }
        // Edges, each marked negative when it sits under the excluded side of an `-`.
        let mut edges: Vec<Vec<(usize, bool)>> = vec![Vec::new(); names.len()];
        for (t, def) in &schema.definitions {
            for (name, rel) in &def.relations {
                let from = ids[&(t.as_str(), name.as_str())];
                for a in &rel.allowed {
                    if let AllowedKind::SubjectSet(r) = &a.kind {
                        if let Some(&to) = ids.get(&(a.type_name.as_str(), r.as_str())) {
                            edges[from].push((to, false));
                        }
                    }
                }
            }
            for (name, perm) in &def.permissions {
                let from = ids[&(t.as_str(), name.as_str())];
                let mut out = Vec::new();
                rewrite_edges(schema, t, &perm.rewrite, false, &ids, &mut out);
                edges[from].extend(out);
            }
        }
        let scc = tarjan(&edges);
        let mut clean = vec![true; names.len()];
        for (from, out) in edges.iter().enumerate() {
            for &(to, negative) in out {
                if negative && scc[from] == scc[to] {
                    clean[scc[from]] = false;
                }
            }
        }
        let id = |i: usize| u32::try_from(i).unwrap_or(u32::MAX - 1);
        let mut classes: HashMap<String, HashMap<String, Class>> = HashMap::new();
        for (i, (t, m)) in names.iter().enumerate() {
            classes.entry(t.to_string()).or_default().insert(
                m.to_string(),
                Class {
                    id: id(i),
                    scc: id(scc[i]),
                    clean: clean[scc[i]],
                },
            );
        }
        let edges = edges
            .iter()
            .enumerate()
            .flat_map(|(from, out)| out.iter().map(move |&(to, neg)| (id(from), id(to), neg)))
            .collect();
        Strata { classes, edges }
    }

    /// Does the schema allow the evaluation to go from `from` to `to` (under an excluded
    /// operand when `negative`)? Relationships the schema does not allow can make it go
    /// elsewhere; cycles through such a step are handled conservatively.
    pub fn allows(&self, from: Class, to: Class, negative: bool) -> bool {
        self.edges.contains(&(from.id, to.id, negative))
    }

    /// The class of `type_name#member`.
    pub fn class(&self, type_name: &str, member: &str) -> Class {
        self.classes
            .get(type_name)
            .and_then(|m| m.get(member))
            .copied()
            .unwrap_or(Class::UNKNOWN)
    }
}

/// The nodes a permission's expression on `type_name` depends on. Nesting is bounded by the
/// parser, so this recursion is shallow.
fn rewrite_edges(
    schema: &Schema,
    type_name: &str,
    rw: &Rewrite,
    negative: bool,
    ids: &HashMap<(&str, &str), usize>,
    out: &mut Vec<(usize, bool)>,
) {
    match rw {
        Rewrite::Nil => {}
        Rewrite::Computed(name) => {
            if let Some(&to) = ids.get(&(type_name, name.as_str())) {
                out.push((to, negative));
            }
        }
        Rewrite::Arrow {
            tupleset, computed, ..
        } => {
            let Some(rel) = schema
                .definition(type_name)
                .and_then(|d| d.relations.get(tupleset))
            else {
                return;
            };
            for a in &rel.allowed {
                if a.kind == AllowedKind::Wildcard {
                    continue;
                }
                if let Some(&to) = ids.get(&(a.type_name.as_str(), computed.as_str())) {
                    out.push((to, negative));
                }
            }
        }
        Rewrite::Union(items) | Rewrite::Intersection(items) => {
            for i in items {
                rewrite_edges(schema, type_name, i, negative, ids, out);
            }
        }
        Rewrite::Exclusion(base, excluded) => {
            rewrite_edges(schema, type_name, base, negative, ids, out);
            rewrite_edges(schema, type_name, excluded, true, ids, out);
        }
    }
}

/// The strongly connected component of each node (Tarjan's algorithm with an explicit stack,
/// so a schema of any size cannot exhaust the thread's stack).
fn tarjan(edges: &[Vec<(usize, bool)>]) -> Vec<usize> {
    const NONE: usize = usize::MAX;
    let n = edges.len();
    let mut index = vec![NONE; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![NONE; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut comps = 0;
    // (node, next edge to look at)
    let mut calls: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if index[root] != NONE {
            continue;
        }
        calls.push((root, 0));
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(top) = calls.last_mut() {
            let (v, e) = *top;
            if let Some(&(w, _)) = edges[v].get(e) {
                top.1 += 1;
                if index[w] == NONE {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = comps;
                    if w == v {
                        break;
                    }
                }
                comps += 1;
            }
        }
    }
    comp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_negative_cycles() {
        let schema = dhow_schema::compile(
            "definition user {}\n\
             definition group { relation member: user | group#member }\n\
             definition folder {\n\
               relation parent: folder\n\
               relation viewer: user | group#member\n\
               relation banned: user\n\
               permission view = viewer + parent->view - banned\n\
               permission odd = viewer - parent->odd\n\
             }",
        )
        .unwrap();
        let s = Strata::new(&schema);
        let member = s.class("group", "member");
        assert!(member.clean);
        let view = s.class("folder", "view");
        assert!(view.clean, "banned is excluded but not on the cycle");
        assert_ne!(view.scc, member.scc);
        assert_ne!(s.class("folder", "viewer").scc, view.scc);
        assert!(
            !s.class("folder", "odd").clean,
            "odd excludes itself through parent"
        );
        assert!(!s.class("nope", "x").clean);
    }

    #[test]
    fn tarjan_finds_components_of_a_long_chain_without_recursion() {
        // 0 -> 1 -> ... -> n-1 -> 0: one component; then a tail n -> n+1.
        let n = 200_000;
        let mut edges: Vec<Vec<(usize, bool)>> =
            (0..n).map(|i| vec![((i + 1) % n, false)]).collect();
        edges.push(vec![(n + 1, false)]);
        edges.push(vec![]);
        let comp = tarjan(&edges);
        assert!(comp[..n].iter().all(|&c| c == comp[0]));
        assert_ne!(comp[n], comp[0]);
        assert_ne!(comp[n], comp[n + 1]);
    }
}
