//! Deterministic synthetic data for Dhow's benchmarks: a schema of users, nested groups,
//! nested folders and documents, a relationship generator of any requested size (fixed seed,
//! no `rand` dependency), and the designated check requests the benchmarks measure.
//!
//! The shape of the generated graph:
//!
//! * `group` trees five levels deep: each top group has [`FANOUT`] child groups (as
//!   `group:child#member` subjects), down to leaf groups that hold [`USERS_PER_LEAF_GROUP`]
//!   users each;
//! * `folder` trees five levels deep (`folder#parent`); every folder has one user viewer, every
//!   root folder has a top group as viewer, and about one non-root folder in five has a random
//!   group (from any tree but the designated one) as viewer;
//! * documents filling the rest of the budget, each in a leaf folder, with an owner and, one in
//!   ten, a banned user.
//!
//! Designated objects (see [`Synthetic`]): `document:target` lies in the last leaf folder of
//! root folder 0, whose only group viewer is top group 0; `user:deep` is a member of nothing but
//! the last leaf group of that tree, so `document:target#view@user:deep` is allowed only through
//! four folder hops and five group levels, after every earlier branch has been tried and denied.

use std::cell::Cell;
use std::collections::HashSet;

use dhow_engine::CheckRequest;
use dhow_tuples::{
    Error, MemStore, ObjectRef, Relationship, RelationshipFilter, Revision, SnapshotReader,
    Subject, WriteOp,
};

/// Levels in each group tree and each folder tree.
pub const DEPTH: usize = 5;
/// Children per group and per folder.
pub const FANOUT: usize = 3;
/// Users in each leaf group.
pub const USERS_PER_LEAF_GROUP: usize = 5;
/// The smallest size [`synthetic`] accepts.
pub const MIN_RELATIONSHIPS: usize = 2_000;

/// The schema of the synthetic graph.
pub const SYNTHETIC_SCHEMA: &str = r#"definition user {}

definition group {
    relation member: user | group#member
}

definition folder {
    relation parent: folder
    relation viewer: user | group#member
    permission view = viewer + parent->view
}

definition document {
    relation folder: folder
    relation owner: user
    relation banned: user
    permission view = (owner + folder->view) - banned
    permission edit = owner & folder->view
}
"#;

/// A realistic schema of about forty lines, for schema-compilation benchmarks.
pub const REALISTIC_SCHEMA: &str = r#"/** A person or a service account. */
definition user {}

definition organization {
    relation admin: user
    relation member: user | team#member
    permission manage = admin
    permission read_all = admin + member
}

definition team {
    relation parent: organization
    relation maintainer: user
    relation member: user | team#member
    permission manage = maintainer + parent->manage
    permission view = member + maintainer + parent->read_all
}

definition folder {
    relation org: organization
    relation parent: folder
    relation owner: user | team#member
    relation editor: user | team#member
    relation viewer: user | user:* | team#member
    permission manage = owner + org->manage + parent->manage
    permission edit = manage + editor + parent->edit
    permission view = edit + viewer + parent->view
}

definition document {
    relation folder: folder
    relation owner: user
    relation editor: user | team#member
    relation viewer: user | user:* | team#member
    relation banned: user
    relation reviewer: user
    permission manage = owner + folder->manage
    permission edit = (manage + editor + folder->edit) - banned
    permission view = (edit + viewer + folder->view) - banned
    permission approve = reviewer & folder->edit
    permission comment = view & viewer
}
"#;

/// A fixed-seed xorshift64* generator: enough randomness for shaping data, no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The seed every generator in this crate starts from.
pub const SEED: u64 = 0x00d4_0a5e_ed00_2026;

/// A generated data set and the designated requests measured against it.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub schema: String,
    pub relationships: Vec<Relationship>,
    /// Regular users are `user:u000000` up to this count (exclusive).
    pub users: usize,
    /// Documents are `document:d000000` up to this count (exclusive), plus `document:target`.
    pub documents: usize,
    /// Top groups (one per group tree).
    pub group_trees: usize,
    /// Root folders (one per folder tree).
    pub folder_trees: usize,
}

/// The designated document.
pub fn target_document() -> ObjectRef {
    ObjectRef::new("document", "target")
}

/// The user reachable from `document:target` only through the deepest path.
pub fn deep_user() -> Subject {
    Subject::object("user", "deep")
}

/// A user with no relationship at all.
pub fn outsider() -> Subject {
    Subject::object("user", "nobody")
}

/// The owner of `document:target`: a direct hit.
pub fn target_owner() -> Subject {
    Subject::object("user", user_id(0))
}

/// `document:target#view@user:deep`: allowed, through the deepest path.
pub fn allowed_deep() -> CheckRequest {
    CheckRequest::new(target_document(), "view", deep_user())
}

/// `document:target#view@user:nobody`: denied after exploring every branch.
pub fn denied() -> CheckRequest {
    CheckRequest::new(target_document(), "view", outsider())
}

/// `document:target#view@user:u000000`: allowed by the direct `owner` relationship.
pub fn direct_hit() -> CheckRequest {
    CheckRequest::new(target_document(), "view", target_owner())
}

fn user_id(i: usize) -> String {
    format!("u{i:06}")
}

fn group_id(i: usize) -> String {
    format!("g{i:06}")
}

fn folder_id(i: usize) -> String {
    format!("f{i:06}")
}

fn document_id(i: usize) -> String {
    format!("d{i:06}")
}

/// Relationships per group tree: child edges plus leaf memberships.
fn group_tree_size() -> usize {
    let nodes: usize = (0..DEPTH).map(|l| FANOUT.pow(l as u32)).sum();
    let leaves = FANOUT.pow(DEPTH as u32 - 1);
    (nodes - 1) + leaves * USERS_PER_LEAF_GROUP
}

/// Approximate relationships per folder tree: parent edges, user viewers, group viewers.
fn folder_tree_size() -> usize {
    let nodes: usize = (0..DEPTH).map(|l| FANOUT.pow(l as u32)).sum();
    (nodes - 1) + nodes + 1 + (nodes - 1) / 5
}

/// A tree of ids built breadth first: `levels[l]` holds the ids at depth `l`, and the children
/// of `levels[l][i]` are `levels[l + 1][i * FANOUT .. (i + 1) * FANOUT]`.
struct Tree {
    levels: Vec<Vec<usize>>,
}

impl Tree {
    fn build(next_id: &mut usize) -> Tree {
        let mut levels = Vec::with_capacity(DEPTH);
        for l in 0..DEPTH {
            let count = FANOUT.pow(l as u32);
            levels.push((*next_id..*next_id + count).collect());
            *next_id += count;
        }
        Tree { levels }
    }

    fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (1..DEPTH).flat_map(move |l| {
            self.levels[l]
                .iter()
                .enumerate()
                .map(move |(i, &child)| (self.levels[l - 1][i / FANOUT], child))
        })
    }

    fn leaves(&self) -> &[usize] {
        &self.levels[DEPTH - 1]
    }

    /// The leaf reached by always taking the last child: the largest id, so explored last.
    fn last_leaf(&self) -> usize {
        *self.leaves().last().expect("trees are not empty")
    }

    fn all(&self) -> impl Iterator<Item = usize> + '_ {
        self.levels.iter().flatten().copied()
    }
}

struct Builder {
    out: Vec<Relationship>,
    seen: HashSet<Relationship>,
}

impl Builder {
    fn push(&mut self, resource: ObjectRef, relation: &str, subject: Subject) {
        let r = Relationship::new(resource, relation, subject);
        if self.seen.insert(r.clone()) {
            self.out.push(r);
        }
    }
}

/// A synthetic schema and exactly `n_relationships` relationships (at least
/// [`MIN_RELATIONSHIPS`]), always the same for the same size.
pub fn synthetic(n_relationships: usize) -> (String, Vec<Relationship>) {
    let s = synthetic_graph(n_relationships);
    (s.schema, s.relationships)
}

/// [`synthetic`] with the sizes of its parts.
pub fn synthetic_graph(n_relationships: usize) -> Synthetic {
    let n = n_relationships;
    assert!(
        n >= MIN_RELATIONSHIPS,
        "synthetic graphs need at least {MIN_RELATIONSHIPS} relationships"
    );
    let mut rng = XorShift::new(SEED);
    let users = (n / 20).max(50);
    let group_trees = (n / 4 / group_tree_size()).max(2);
    let folder_trees = (n * 15 / 100 / folder_tree_size()).max(1);
    let mut b = Builder {
        out: Vec::with_capacity(n),
        seen: HashSet::with_capacity(n),
    };
    let group = |i: usize| ObjectRef::new("group", group_id(i));
    let folder = |i: usize| ObjectRef::new("folder", folder_id(i));
    let member_of = |i: usize| Subject::set("group", group_id(i), "member");
    let user = |i: usize| Subject::object("user", user_id(i));

    // Groups: trees of subject sets, users in the leaves only.
    let mut next = 0;
    let gtrees: Vec<Tree> = (0..group_trees).map(|_| Tree::build(&mut next)).collect();
    for t in &gtrees {
        for (parent, child) in t.edges() {
            b.push(group(parent), "member", member_of(child));
        }
        for &leaf in t.leaves() {
            for _ in 0..USERS_PER_LEAF_GROUP {
                b.push(group(leaf), "member", user(rng.below(users)));
            }
        }
    }
    b.push(group(gtrees[0].last_leaf()), "member", deep_user());
    // Groups outside tree 0, for random folder viewers: they never lead to `user:deep`.
    let other_groups: Vec<usize> = gtrees[1..].iter().flat_map(Tree::all).collect();

    // Folders: trees of parents, one user viewer each, a top group on every root.
    let mut next = 0;
    let ftrees: Vec<Tree> = (0..folder_trees).map(|_| Tree::build(&mut next)).collect();
    for (r, t) in ftrees.iter().enumerate() {
        for (parent, child) in t.edges() {
            b.push(
                folder(child),
                "parent",
                Subject::object("folder", folder_id(parent)),
            );
        }
        let root = t.levels[0][0];
        b.push(
            folder(root),
            "viewer",
            member_of(gtrees[r % group_trees].levels[0][0]),
        );
        for f in t.all() {
            b.push(folder(f), "viewer", user(rng.below(users)));
            if f != root && rng.below(5) == 0 {
                b.push(
                    folder(f),
                    "viewer",
                    member_of(other_groups[rng.below(other_groups.len())]),
                );
            }
        }
    }
    let leaf_folders: Vec<usize> = ftrees
        .iter()
        .flat_map(|t| t.leaves().iter().copied())
        .collect();

    // The designated document, then documents until the budget is spent.
    let target = target_document();
    b.push(
        target.clone(),
        "folder",
        Subject::object("folder", folder_id(ftrees[0].last_leaf())),
    );
    b.push(target, "owner", target_owner());
    assert!(
        b.out.len() < n,
        "structure ({}) exceeds the requested size {n}",
        b.out.len()
    );
    let mut documents = 0;
    'docs: loop {
        let doc = ObjectRef::new("document", document_id(documents));
        documents += 1;
        let f = leaf_folders[rng.below(leaf_folders.len())];
        let owner = rng.below(users);
        let banned = (rng.below(10) == 0).then(|| rng.below(users));
        let rels = [
            Some(("folder", Subject::object("folder", folder_id(f)))),
            Some(("owner", user(owner))),
            banned.map(|u| ("banned", user(u))),
        ];
        for (relation, subject) in rels.into_iter().flatten() {
            if b.out.len() == n {
                break 'docs;
            }
            b.push(doc.clone(), relation, subject);
        }
        if b.out.len() == n {
            break;
        }
    }
    Synthetic {
        schema: SYNTHETIC_SCHEMA.to_string(),
        relationships: b.out,
        users,
        documents,
        group_trees,
        folder_trees,
    }
}

impl Synthetic {
    /// A store holding every relationship, written in one revision.
    pub fn store(&self) -> MemStore {
        let mut store = MemStore::new();
        let ops: Vec<WriteOp> = self
            .relationships
            .iter()
            .cloned()
            .map(WriteOp::Touch)
            .collect();
        store
            .write(&ops)
            .expect("generated relationships are unique");
        store
    }

    /// `count` `view` checks of random documents for random users (fixed seed): mostly denied,
    /// each a full exploration of its document's folder chain.
    pub fn bulk_requests(&self, count: usize) -> Vec<CheckRequest> {
        let mut rng = XorShift::new(SEED ^ 0xb01c);
        (0..count)
            .map(|_| {
                CheckRequest::new(
                    ObjectRef::new("document", document_id(rng.below(self.documents))),
                    "view",
                    Subject::object("user", user_id(rng.below(self.users))),
                )
            })
            .collect()
    }
}

/// A reader that counts the calls made through it and the relationships it returned, to say
/// how much work an engine call did (the benchmarks print these counts once, outside timing).
#[derive(Debug)]
pub struct CountingReader<R> {
    inner: R,
    /// Calls to `find`.
    pub finds: Cell<u64>,
    /// Calls to `by_resource`, `by_subject_object` and `read`.
    pub scans: Cell<u64>,
    /// Relationships returned by scans.
    pub returned: Cell<u64>,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> Self {
        CountingReader {
            inner,
            finds: Cell::new(0),
            scans: Cell::new(0),
            returned: Cell::new(0),
        }
    }

    fn scanned(&self, rels: Result<Vec<Relationship>, Error>) -> Result<Vec<Relationship>, Error> {
        self.scans.set(self.scans.get() + 1);
        if let Ok(rels) = &rels {
            self.returned.set(self.returned.get() + rels.len() as u64);
        }
        rels
    }
}

impl<R: SnapshotReader> SnapshotReader for CountingReader<R> {
    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    fn by_resource(
        &self,
        resource: &ObjectRef,
        relation: &str,
    ) -> Result<Vec<Relationship>, Error> {
        self.scanned(self.inner.by_resource(resource, relation))
    }

    fn by_resource_of_type(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, Error> {
        self.scanned(
            self.inner
                .by_resource_of_type(resource, relation, subject_type),
        )
    }

    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, Error> {
        self.finds.set(self.finds.get() + 1);
        self.inner.find(resource, relation, subject)
    }

    fn by_subject_object(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error> {
        self.scanned(self.inner.by_subject_object(subject))
    }

    fn by_subject_keys(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error> {
        self.scanned(self.inner.by_subject_keys(subject))
    }

    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, Error> {
        self.scanned(self.inner.read(filter, after, limit))
    }
}
