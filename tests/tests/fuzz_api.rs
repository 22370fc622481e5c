//! A structured fuzzer of the public API (issue 11): random schemas, relationships and
//! requests against one real `dhow serve`, each answer compared with the in-memory engine
//! (`dhow_engine::Engine` over a `MemStore` holding the same relationships), every error
//! checked to be well-formed (a code other than UNKNOWN/INTERNAL, an `ErrorInfo` reason of
//! domain `dhow.dev`, a bounded message) and equal to the engine's (code and reason), every
//! call bounded by a deadline (past it: a hang), and the process checked to be alive after
//! every case.
//!
//! CI runs it for `DHOW_FUZZ_API_SECS` (30 by default) from a fixed seed; `just fuzz-api`
//! runs it longer from a random one. A failure names the seed and the case, the schema and the
//! relationships: `DHOW_FUZZ_API_SEED=S DHOW_FUZZ_API_CASE=N` replays that case alone (a case
//! depends only on its seed; `N-M` runs a few in a row), and `DHOW_FUZZ_API_VERBOSE=1` says
//! what it writes.
//!
//! One case: wipe what the previous case stored (Delete by filter in chunks, then an empty
//! Export), write a random schema (now and then a broken one: the server must refuse exactly
//! what `dhow_schema::compile` refuses), then rounds of
//! - random Writes (valid and invalid updates, duplicates, preconditions, creates of what
//!   exists, more updates than allowed), Deletes by filter (limits, partial deletes) and
//!   Imports (chunked, duplicates merged, a refused chunk leaving the earlier ones written),
//!   each expected outcome computed from the model in the server's order of checks;
//! - an Export of the newest revision, equal to the model;
//! - sometimes a new schema over the stored data (refused exactly when a relationship of a
//!   relation it removes or changes would not fit it);
//! - random Check (with and without proofs, with caveat contexts, some delegated to a chain of
//!   actors), CheckBulk, LookupResources (paged by cursor, some delegated), LookupSubjects,
//!   Expand, Read (paged) and Export, at the newest revision (as fresh as its token, exactly
//!   it, `minimize_latency`, `fully_consistent`) or exactly at an earlier one of the case;
//!   answers, proofs, trees and pages equal to the engine's; LookupResources also equal to
//!   Check on every candidate, LookupSubjects' membership to Check on every candidate subject;
//! - a few malformed requests (missing and empty fields, huge and bad ids, bad and foreign
//!   tokens, future revisions, bad cursors and a cursor of another request, huge limits, too
//!   many items, bad operations, caveats and timestamps, oversized and nested contexts, bad
//!   actor chains).
//!
//! Two findings are kept as ignored tests at the end (see their comments): contexts nested
//! past the protobuf decoder's limit are kept out of the random inputs for now, and the field
//! an Import error names is not among what the fuzzer compares (code and reason).
//!
//! Not covered yet: Watch, authentication and roles, AuditService, ClusterService, several
//! nodes, expiration racing the clock (expirations are far in the past or future), and
//! requests large enough to meet the engine's budgets.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhow_engine::{CheckRequest as ECheck, DelegatedCheck, Engine, Options, Permissionship};
use dhow_proto::v1 as pb;
use dhow_proto::v1::permission_service_client::PermissionServiceClient;
use dhow_proto::v1::relationship_service_client::RelationshipServiceClient;
use dhow_proto::v1::schema_service_client::SchemaServiceClient;
use dhow_schema::{AllowedKind, Member, Schema};
use dhow_server::ApiError;
use dhow_tests::process::Server;
use dhow_tuples::{
    CaveatRef, MemStore, ObjectRef, Precondition, Relationship, RelationshipFilter, Revision,
    SnapshotReader, Subject, Timestamp, WriteOp,
};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Every call must answer within this; one that does not is a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's `max_updates_per_write` in this test (small, so writes and deletes hit it).
const MAX_UPDATES: usize = 25;
/// Object ids of the data: few, so that the random relationships connect and form cycles.
const IDS: [&str; 3] = ["a", "b", "c"];
/// An id no relationship uses.
const STRANGER: &str = "zz";
/// Far from now, so that the server's clock and the model's never disagree about them.
const PAST: Timestamp = Timestamp(978_307_200_000_000); // 2001-01-01
const FUTURE: Timestamp = Timestamp(4_102_444_800_000_000); // 2100-01-01

/// A tiny deterministic PRNG (xorshift64*), so one seed drives a whole case.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)).max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

// ---------------------------------------------------------------------------------------
// Schemas

/// The caveats a generated schema may declare (the contexts below know their parameters).
const CAVEATS: [(&str, &str); 2] = [
    (
        "c_level",
        "caveat c_level(level int, need int) {\n    level >= need\n}\n",
    ),
    ("c_flag", "caveat c_flag(flag bool) {\n    flag\n}\n"),
];

const TYPE_NAMES: [&str; 4] = ["group", "folder", "doc", "team"];
/// Relations that never admit a wildcard, so that arrows may walk them and subject sets may
/// name them.
const REL_NAMES: [&str; 4] = ["member", "owner", "parent", "editor"];
/// Relations that may admit wildcards (never walked by an arrow, never in a subject set).
const PUB_NAMES: [&str; 2] = ["viewer", "banned"];
const PERM_NAMES: [&str; 4] = ["view", "edit", "admin", "access"];

struct GenDef {
    name: String,
    /// Relations without wildcards: name, and the definitions each allowed type names.
    rels: Vec<(String, Vec<usize>)>,
    pubs: Vec<String>,
    perms: Vec<String>,
}

impl GenDef {
    fn names(&self) -> Vec<String> {
        self.rels
            .iter()
            .map(|(n, _)| n.clone())
            .chain(self.pubs.iter().cloned())
            .chain(self.perms.iter().cloned())
            .collect()
    }
}

/// A random schema: `user` and one to three other definitions with relations (objects,
/// wildcards, subject sets, caveats, expiration) and permissions over `+ & -`, arrows
/// (`->`, `.any`, `.all`), `nil` and other permissions, often recursive through arrows and
/// subject sets of the same type (cycles in the data). Built to compile, except in "chaos"
/// schemas (any name anywhere: arrows over wildcards, subject sets reaching wildcards, a
/// later permission, i.e. a cycle of computed references) and broken ones; whether a schema
/// compiles is `dhow_schema::compile`'s word, and the server's must be the same.
fn gen_schema(rng: &mut Rng) -> String {
    let chaos = rng.chance(5);
    let mut out = String::new();
    let expiration = rng.chance(30);
    if expiration {
        out.push_str("use expiration\n\n");
    }
    let caveats: Vec<&str> = CAVEATS
        .iter()
        .filter(|_| rng.chance(40))
        .map(|c| {
            out.push_str(c.1);
            out.push('\n');
            c.0
        })
        .collect();
    let mut names: Vec<&str> = TYPE_NAMES.to_vec();
    let mut defs = vec![GenDef {
        name: "user".into(),
        rels: if rng.chance(15) {
            vec![("manager".into(), Vec::new())]
        } else {
            Vec::new()
        },
        pubs: Vec::new(),
        perms: Vec::new(),
    }];
    for _ in 0..1 + rng.below(3) {
        let name = names.remove(rng.below(names.len()));
        let mut rels: Vec<(String, Vec<usize>)> = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let r = rng.pick(&REL_NAMES).to_string();
            if !rels.iter().any(|(n, _)| *n == r) {
                rels.push((r, Vec::new()));
            }
        }
        let pubs: Vec<String> = PUB_NAMES
            .iter()
            .filter(|_| rng.chance(45))
            .map(|s| s.to_string())
            .collect();
        let perms: Vec<String> = PERM_NAMES[..rng.below(4)]
            .iter()
            .map(|s| s.to_string())
            .collect();
        defs.push(GenDef {
            name: name.into(),
            rels,
            pubs,
            perms,
        });
    }
    let suffix = |rng: &mut Rng| -> String {
        let cav = (!caveats.is_empty() && rng.chance(40)).then(|| rng.pick(&caveats));
        let exp = expiration && rng.chance(30);
        match (cav, exp) {
            (Some(c), true) => format!(" with {c} and expiration"),
            (Some(c), false) => format!(" with {c}"),
            (None, true) => " with expiration".into(),
            (None, false) => String::new(),
        }
    };
    // Allowed subject types: objects, wildcards (public relations only), subject sets of
    // relations without wildcards.
    let mut texts: Vec<Vec<String>> = Vec::new();
    for d in 0..defs.len() {
        let mut lines = Vec::new();
        let members: Vec<(String, bool)> = defs[d]
            .rels
            .iter()
            .map(|(n, _)| (n.clone(), false))
            .chain(defs[d].pubs.iter().map(|n| (n.clone(), true)))
            .collect();
        for (i, (r, public)) in members.into_iter().enumerate() {
            let mut allowed: Vec<String> = Vec::new();
            let mut targets = Vec::new();
            for _ in 0..1 + rng.below(3) {
                // Users most often, so that checks of users find something.
                let t = if rng.chance(40) {
                    0
                } else {
                    rng.below(defs.len())
                };
                let k = rng.below(100);
                let sets: Vec<String> = if chaos {
                    defs[t].names()
                } else {
                    defs[t].rels.iter().map(|(n, _)| n.clone()).collect()
                };
                let mut text = if (public || chaos) && k < 30 {
                    format!("{}:*", defs[t].name)
                } else if k >= 65 && !sets.is_empty() {
                    format!("{}#{}", defs[t].name, rng.pick(&sets))
                } else {
                    defs[t].name.clone()
                };
                text.push_str(&suffix(rng));
                if !allowed.contains(&text) {
                    allowed.push(text);
                    targets.push(t);
                }
            }
            if !public {
                defs[d].rels[i].1 = targets;
            }
            lines.push(format!("    relation {r}: {}", allowed.join(" | ")));
        }
        texts.push(lines);
    }
    for (d, mut lines) in texts.into_iter().enumerate() {
        for (k, p) in defs[d].perms.iter().enumerate() {
            let expr = gen_expr(rng, &defs, d, k, 2, chaos);
            lines.push(format!("    permission {p} = {expr}"));
        }
        out.push_str(&format!(
            "definition {} {{\n{}\n}}\n\n",
            defs[d].name,
            lines.join("\n")
        ));
    }
    if rng.chance(6) {
        out = break_schema(rng, out);
    }
    out
}

fn gen_expr(
    rng: &mut Rng,
    defs: &[GenDef],
    d: usize,
    k: usize,
    depth: usize,
    chaos: bool,
) -> String {
    if depth == 0 || rng.chance(45) {
        return gen_leaf(rng, defs, d, k, chaos);
    }
    let op = rng.pick(&[" + ", " + ", " & ", " - "]);
    let parts: Vec<String> = (0..2 + rng.below(2))
        .map(|_| gen_expr(rng, defs, d, k, depth - 1, chaos))
        .collect();
    format!("({})", parts.join(op))
}

fn gen_leaf(rng: &mut Rng, defs: &[GenDef], d: usize, k: usize, chaos: bool) -> String {
    let def = &defs[d];
    let c = rng.below(100);
    if c < 35 && !def.rels.is_empty() {
        // An arrow over a relation without wildcards, towards a member of one of its types.
        let (rel, targets) = &def.rels[rng.below(def.rels.len())];
        let t = if chaos || targets.is_empty() {
            rng.below(defs.len())
        } else {
            rng.pick(targets)
        };
        let names = defs[t].names();
        if !names.is_empty() {
            let name = rng.pick(&names);
            return match rng.below(4) {
                0 => format!("{rel}.any({name})"),
                1 => format!("{rel}.all({name})"),
                _ => format!("{rel}->{name}"),
            };
        }
    }
    if c < 38 {
        return "nil".into();
    }
    let mut names: Vec<String> = def.rels.iter().map(|(n, _)| n.clone()).collect();
    names.extend(def.pubs.iter().cloned());
    // Earlier permissions (in chaos, any: a cycle of computed references is refused).
    let upto = if chaos { def.perms.len() } else { k };
    names.extend(def.perms.iter().take(upto).cloned());
    if names.is_empty() {
        return "nil".into();
    }
    rng.pick(&names)
}

/// The text broken in one random way (it may still compile: the compiler decides).
fn break_schema(rng: &mut Rng, mut s: String) -> String {
    let at = |rng: &mut Rng, s: &str| {
        let mut i = rng.below(s.len() + 1);
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    match rng.below(6) {
        0 => {
            let i = at(rng, &s);
            s.truncate(i);
        }
        1 => {
            let i = at(rng, &s);
            s.insert_str(
                i,
                rng.pick(&["{", "}", "#", "->", " | ", ":*", "\"", "é", "\0"]),
            );
        }
        2 => s = s.replacen("permission", "permission ghost = nosuch\n    permission", 1),
        3 => s = s.replacen("relation", "relation x: ghost\n    relation", 1),
        4 => s.push_str("definition user {}\n"),
        _ => s = s.replacen("user", "User", 1),
    }
    s
}

// ---------------------------------------------------------------------------------------
// Outcomes

/// A refusal, as the client sees it: the code and the `ErrorInfo` reason.
type Refusal = (Code, String);

fn api(e: impl Into<ApiError>) -> Refusal {
    let a: ApiError = e.into();
    (a.code, a.reason.to_string())
}

fn consistency(
    r: impl FnOnce(pb::ConsistencyToken) -> pb::consistency::Requirement,
    t: &pb::ConsistencyToken,
) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(r(t.clone())),
    })
}

/// The normal form the server stores a relationship in (its caveat context through a
/// protobuf `Struct`).
fn norm(r: &Relationship) -> Relationship {
    dhow_wire::relationship(Some(&dhow_wire::relationship_pb(r)), "relationship")
        .expect("a generated relationship encodes and decodes")
}

fn context_struct(json: &str) -> dhow_wire::Struct {
    dhow_wire::json_text_to_struct(json).expect("a generated context is a JSON object")
}

/// A revision of the case the queries may be asked at: its token, the model's revision and
/// the engine of the schema in force there.
#[derive(Clone)]
struct At {
    token: pb::ConsistencyToken,
    rev: Revision,
    engine: Arc<Engine>,
    /// Asked `at_exact_snapshot` (else `at_least_as_fresh`, which may answer later).
    exact: bool,
}

/// One check of a Check or CheckBulk request.
#[derive(Clone)]
struct Item {
    check: ECheck,
    /// The context as sent (JSON text); `check.context` is what the server decodes of it.
    ctx: Option<String>,
    actors: Vec<ObjectRef>,
    explain: bool,
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.check;
        write!(f, "{}#{}@{}", c.resource, c.permission, c.subject)?;
        for a in &self.actors {
            write!(f, " by {a}")?;
        }
        write!(f, " (context {:?}, explain {})", self.ctx, self.explain)
    }
}

/// An answer to one check, its proofs in wire form.
#[derive(Clone, Debug)]
struct Answer {
    permissionship: Permissionship,
    proof: Option<pb::Proof>,
    actor_proofs: Vec<pb::Proof>,
    denied_at: Option<pb::ChainLink>,
}

type Want = Result<Answer, Refusal>;

/// A permissionship from the wire.
fn permissionship(p: i32, info: &Option<pb::PartialCaveatInfo>) -> Permissionship {
    dhow_wire::permissionship(p, info.as_ref(), "permissionship")
        .unwrap_or_else(|e| panic!("the server sent permissionship {p} {info:?}: {e}"))
}

impl At {
    fn describe(&self) -> String {
        format!(
            "at revision {} ({}, the model's {})",
            dhow_tests::revision(&self.token),
            if self.exact { "exactly" } else { "or later" },
            self.rev.0
        )
    }
}

#[derive(Default, Debug)]
struct Stats {
    cases: u64,
    schemas_refused: u64,
    schema_changes: u64,
    schema_changes_refused: u64,
    writes: u64,
    writes_refused: u64,
    deletes: u64,
    checks: u64,
    bulk_items: u64,
    lookups_resources: u64,
    lookups_subjects: u64,
    expands: u64,
    reads: u64,
    errors_compared: u64,
    conditional: u64,
    allowed: u64,
    malformed: u64,
    calls: u64,
    /// How often each refusal was compared (and agreed), by reason.
    refusals: std::collections::BTreeMap<String, u64>,
    /// The slowest calls.
    slowest: Vec<(Duration, String)>,
}

struct Fuzz {
    channel: Channel,
    seed: u64,
    case: u64,
    rng: Rng,
    schema_text: String,
    /// The schema in force on the server (and the types to wipe), if any.
    schema: Option<Arc<Schema>>,
    engine: Option<Arc<Engine>>,
    store: MemStore,
    ats: Vec<At>,
    stats: Stats,
    /// `DHOW_FUZZ_API_VERBOSE`: say what each case did.
    verbose: bool,
    server_pid: u32,
}

/// Fails the case (see [`Fuzz::fail`]) unless the condition holds.
macro_rules! ensure {
    ($fz:expr, $cond:expr, $($arg:tt)*) => {
        $fz.ensure_that($cond, || format!($($arg)*))
    };
}

impl Fuzz {
    fn fail(&self, msg: String) -> ! {
        let stored: Vec<String> = self.stored().iter().map(ToString::to_string).collect();
        panic!(
            "fuzz-api: {msg}\n-- case {} of seed {} (replay it alone: DHOW_FUZZ_API_SEED={} \
             DHOW_FUZZ_API_CASE={}); schema of the case:\n{}\n-- relationships stored \
             (newest revision of the model):\n{}",
            self.case,
            self.seed,
            self.seed,
            self.case,
            self.schema_text,
            stored.join("\n")
        )
    }

    fn ensure_that(&self, holds: bool, msg: impl FnOnce() -> String) {
        if !holds {
            self.fail(msg());
        }
    }

    fn perm(&self) -> PermissionServiceClient<Channel> {
        PermissionServiceClient::new(self.channel.clone())
    }
    fn rel(&self) -> RelationshipServiceClient<Channel> {
        RelationshipServiceClient::new(self.channel.clone())
    }
    fn schema_client(&self) -> SchemaServiceClient<Channel> {
        SchemaServiceClient::new(self.channel.clone())
    }

    /// A unary call, bounded by `CALL_TIMEOUT`.
    async fn unary<T>(
        &mut self,
        what: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        self.stats.calls += 1;
        let t = Instant::now();
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(r) => {
                self.timed(what, t.elapsed());
                r.map(tonic::Response::into_inner)
            }
            Err(_) => self.hang(what).await,
        }
    }

    /// A server-streaming call, read to its end, bounded by `CALL_TIMEOUT`.
    async fn stream<T>(
        &mut self,
        what: &str,
        fut: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, Status>>,
    ) -> Result<Vec<T>, Status> {
        self.stats.calls += 1;
        let all = async {
            let mut s = fut.await?.into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.message().await? {
                out.push(m);
            }
            Ok(out)
        };
        let t = Instant::now();
        match tokio::time::timeout(CALL_TIMEOUT, all).await {
            Ok(r) => {
                self.timed(what, t.elapsed());
                r
            }
            Err(_) => self.hang(what).await,
        }
    }

    /// Keeps the slowest calls (case, call, time) for the summary.
    fn timed(&mut self, what: &str, took: Duration) {
        let slow = &mut self.stats.slowest;
        if slow.len() < 5 || took > slow[slow.len() - 1].0 {
            slow.push((took, format!("case {}: {what}", self.case)));
            slow.sort_by_key(|s| std::cmp::Reverse(s.0));
            slow.truncate(5);
        }
    }

    /// Fails the case for a call past its deadline, saying whether the server still answers a
    /// read and a write, and how much CPU it used meanwhile (a stall, or a busy loop?).
    async fn hang(&self, what: &str) -> ! {
        let cpu = || {
            std::fs::read_to_string(format!("/proc/{}/stat", self.server_pid))
                .ok()
                .and_then(|s| {
                    let rest = s[s.rfind(')')? + 2..].to_string();
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
                })
        };
        let before = cpu();
        let t = Instant::now();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            self.schema_client()
                .read_schema(pb::ReadSchemaRequest { consistency: None }),
        )
        .await;
        let read = format!("{:?} after {:?}", read.map(|r| r.map(drop)), t.elapsed());
        let t = Instant::now();
        let write = tokio::time::timeout(
            Duration::from_secs(5),
            self.rel().write(pb::WriteRequest::default()),
        )
        .await;
        let write = format!("{:?} after {:?}", write.map(|r| r.map(drop)), t.elapsed());
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        self.fail(format!(
            "{what}: no answer within {CALL_TIMEOUT:?} (a hang). Then a ReadSchema: {read}; an \
             empty Write: {write}; the server's CPU ticks over those: {before:?} -> {:?}; load \
             average {}",
            cpu(),
            load.trim()
        ))
    }

    /// A server error must be well-formed: a code a client can act on, never UNKNOWN or
    /// INTERNAL, with an `ErrorInfo` of domain `dhow.dev` and a reason.
    fn refusal(&self, what: &str, s: &Status) -> Refusal {
        ensure!(
            self,
            !matches!(
                s.code(),
                Code::Unknown | Code::Internal | Code::Unimplemented | Code::Ok
            ),
            "{what}: the server answered {:?}: {}",
            s.code(),
            s.message()
        );
        let Some(info) = s.get_details_error_info() else {
            self.fail(format!(
                "{what}: {:?} without an ErrorInfo reason: {}",
                s.code(),
                s.message()
            ))
        };
        ensure!(
            self,
            !info.reason.is_empty() && info.domain == dhow_server::DOMAIN,
            "{what}: ErrorInfo without a reason or of another domain: {info:?}"
        );
        ensure!(
            self,
            s.message().len() <= 4096,
            "{what}: an error message of {} bytes",
            s.message().len()
        );
        (s.code(), info.reason)
    }

    /// Compares an expected refusal or success with the server's answer; returns the
    /// server's success when both succeeded.
    fn agree<T, E>(
        &mut self,
        what: &str,
        want: &Result<E, Refusal>,
        got: Result<T, Status>,
    ) -> Option<(E, T)>
    where
        E: Clone + std::fmt::Debug,
        T: std::fmt::Debug,
    {
        match (want, got) {
            (Ok(e), Ok(t)) => Some((e.clone(), t)),
            (Err(w), Err(s)) => {
                let r = self.refusal(what, &s);
                ensure!(
                    self,
                    *w == r,
                    "{what}: the engine refuses with {w:?}, the server with {r:?}: {}",
                    s.message()
                );
                self.stats.errors_compared += 1;
                *self.stats.refusals.entry(r.1).or_default() += 1;
                None
            }
            (Ok(e), Err(s)) => {
                let r = self.refusal(what, &s);
                self.fail(format!(
                    "{what}: the engine answers {e:?}, the server refuses with {r:?}: {}",
                    s.message()
                ))
            }
            (Err(w), Ok(t)) => self.fail(format!(
                "{what}: the engine refuses with {w:?}, the server answers {t:?}"
            )),
        }
    }

    fn schema(&self) -> &Arc<Schema> {
        self.schema.as_ref().expect("a schema in force")
    }

    fn engine(&self) -> Arc<Engine> {
        self.engine.clone().expect("a schema in force")
    }

    // -----------------------------------------------------------------------------------
    // Random names, objects and subjects

    fn types(&self) -> Vec<String> {
        self.schema().definitions.keys().cloned().collect()
    }

    fn members(&self, t: &str) -> Vec<String> {
        self.schema()
            .definition(t)
            .map(|d| {
                d.relations
                    .keys()
                    .chain(d.permissions.keys())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A type of the schema, now and then one it lacks.
    fn any_type(&mut self) -> String {
        if self.rng.chance(4) {
            return self.rng.pick(&["ghost", "user_x"]).to_string();
        }
        let types = self.types();
        self.rng.pick(&types)
    }

    /// A member of `t`, now and then one it lacks.
    fn any_member(&mut self, t: &str) -> String {
        let members = self.members(t);
        if members.is_empty() || self.rng.chance(4) {
            return self.rng.pick(&["nosuch", "member", "view"]).to_string();
        }
        self.rng.pick(&members)
    }

    fn any_id(&mut self) -> String {
        if self.rng.chance(15) {
            STRANGER.to_string()
        } else {
            self.rng.pick(&IDS).to_string()
        }
    }

    /// A subject of a request: an object, or a subject set of some member.
    fn any_subject(&mut self) -> Subject {
        if self.rng.chance(55) {
            let stored = self.stored();
            if !stored.is_empty() {
                let mut s = self.rng.pick(&stored).subject;
                if s.is_wildcard() {
                    s.object.object_id = self.any_id();
                }
                return s;
            }
        }
        let t = self.any_type();
        let id = self.any_id();
        if self.rng.chance(30) && !self.members(&t).is_empty() {
            let m = self.any_member(&t);
            Subject::set(t, id, m)
        } else {
            Subject::object(t, id)
        }
    }

    /// A resource of a request: mostly one that relationships are about.
    fn any_resource(&mut self) -> ObjectRef {
        if self.rng.chance(65) {
            let stored = self.stored();
            if !stored.is_empty() {
                return self.rng.pick(&stored).resource;
            }
        }
        // A type with members, mostly.
        let mut t = self.any_type();
        for _ in 0..3 {
            if !self.members(&t).is_empty() {
                break;
            }
            t = self.any_type();
        }
        ObjectRef::new(t, self.any_id())
    }

    /// The relationships stored now, in the model.
    fn stored(&self) -> Vec<Relationship> {
        self.store
            .latest()
            .read(&RelationshipFilter::default(), None, usize::MAX)
            .expect("model read")
    }

    /// A request context: values for some caveat parameters, now and then of the wrong type.
    fn any_context(&mut self) -> Option<String> {
        if self.schema().caveats.is_empty() || !self.rng.chance(50) {
            return None;
        }
        let mut fields = Vec::new();
        if self.rng.chance(50) {
            fields.push(format!("\"level\": {}", self.rng.below(7)));
        }
        if self.rng.chance(50) {
            fields.push(format!("\"flag\": {}", self.rng.chance(50)));
        }
        if self.rng.chance(5) {
            fields.push(
                self.rng
                    .pick(&["\"level\": \"high\"", "\"flag\": 3", "\"need\": 1.5"])
                    .into(),
            );
        }
        if self.rng.chance(10) {
            fields.push("\"other\": [1, \"x\", {\"y\": null}]".into());
        }
        Some(format!("{{{}}}", fields.join(", ")))
    }

    /// A relationship's caveat context for `caveat`.
    fn rel_context(&mut self, caveat: &str) -> Option<String> {
        let c = match caveat {
            "c_level" => self.rng.pick(&[
                None,
                Some("{}"),
                Some("{\"need\": 2}"),
                Some("{\"need\": 5}"),
                Some("{\"level\": 3, \"need\": 1}"),
            ]),
            _ => self
                .rng
                .pick(&[None, Some("{\"flag\": true}"), Some("{\"flag\": false}")]),
        };
        c.map(str::to_string)
    }

    /// A relationship the schema allows (when it can find one), built from a random allowed
    /// subject type of a random relation.
    fn valid_rel(&mut self) -> Option<Relationship> {
        let schema = self.schema().clone();
        let rels: Vec<(String, String)> = schema
            .definitions
            .values()
            .flat_map(|d| d.relations.keys().map(|r| (d.name.clone(), r.clone())))
            .collect();
        if rels.is_empty() {
            return None;
        }
        let (t, r) = self.rng.pick(&rels);
        let Some(Member::Relation(rel)) = schema.member(&t, &r) else {
            return None;
        };
        let a = self.rng.pick(&rel.allowed);
        let id = self.rng.pick(&IDS);
        let subject = match &a.kind {
            AllowedKind::Object => Subject::object(&a.type_name, self.rng.pick(&IDS)),
            AllowedKind::Wildcard => Subject::object(&a.type_name, "*"),
            AllowedKind::SubjectSet(s) => Subject::set(&a.type_name, self.rng.pick(&IDS), s),
        };
        let mut out = Relationship::new(ObjectRef::new(t, id), r, subject);
        if let Some(c) = &a.caveat {
            out.caveat = Some(CaveatRef {
                name: c.clone(),
                context: self.rel_context(c),
            });
        }
        if a.expiration && self.rng.chance(40) {
            out.expiration = Some(if self.rng.chance(40) { PAST } else { FUTURE });
        }
        Some(out)
    }

    /// A relationship broken in one random way (the engine's validation decides whether it
    /// still fits).
    fn invalid_rel(&mut self) -> Option<Relationship> {
        let mut r = self.valid_rel()?;
        match self.rng.below(8) {
            0 => r.relation = self.any_member(&r.resource.object_type.clone()),
            1 => r.subject.object.object_type = self.any_type(),
            2 => {
                let t = r.subject.object.object_type.clone();
                r.subject.relation = Some(self.any_member(&t));
            }
            3 => r.subject.relation = None,
            4 => {
                r.caveat = match r.caveat {
                    Some(_) => None,
                    None => Some(CaveatRef {
                        name: self.rng.pick(&["c_level", "c_flag", "ghost"]).into(),
                        context: None,
                    }),
                }
            }
            5 => r.expiration = Some(FUTURE),
            6 => {
                if let Some(c) = r.caveat.as_mut() {
                    c.context = Some(
                        self.rng
                            .pick(&["{\"bogus\": 1}", "{\"need\": \"x\"}", "{\"flag\": 2}"])
                            .into(),
                    );
                } else {
                    r.resource.object_type = self.any_type();
                }
            }
            _ => r.subject.object.object_id = "*".into(),
        }
        if r.subject.is_wildcard() && r.subject.relation.is_some() {
            r.subject.relation = None;
        }
        Some(r)
    }

    /// A filter: a type (required), and now and then an id, a relation, a subject filter.
    fn any_filter(&mut self) -> RelationshipFilter {
        let t = self.any_type();
        let mut f = RelationshipFilter {
            resource_type: Some(t.clone()),
            ..Default::default()
        };
        if self.rng.chance(30) {
            f.resource_id = Some(self.any_id());
        }
        if self.rng.chance(40) {
            f.relation = Some(self.any_member(&t));
        }
        if self.rng.chance(30) {
            let st = self.any_type();
            f.subject_type = Some(st.clone());
            if self.rng.chance(30) {
                f.subject_id = Some(if self.rng.chance(20) {
                    "*".into()
                } else {
                    self.any_id()
                });
            }
            f.subject_relation = match self.rng.below(3) {
                0 => None,
                1 => Some(None),
                _ => Some(Some(self.any_member(&st))),
            };
        }
        f
    }

    /// The server's schema checks of a filter (`checks::check_filter`).
    fn check_filter(engine: &Engine, f: &RelationshipFilter) -> Result<(), Refusal> {
        if let Some(t) = &f.resource_type {
            engine.validate_ref(t, f.relation.as_deref()).map_err(api)?;
        }
        if let Some(t) = &f.subject_type {
            engine
                .validate_ref(t, f.subject_relation.as_ref().and_then(|r| r.as_deref()))
                .map_err(api)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Cases

    async fn run_case(&mut self) {
        self.wipe().await;
        self.ats.clear();
        // A schema: the server refuses exactly what the compiler refuses.
        let text = gen_schema(&mut self.rng);
        self.schema_text = text.clone();
        let compiled = dhow_schema::compile(&text);
        let want = compiled
            .as_ref()
            .map(|_| ())
            .map_err(|e| api(ApiError::schema(e)));
        let mut sc = self.schema_client();
        let got = self
            .unary(
                "WriteSchema",
                sc.write_schema(pb::WriteSchemaRequest { schema: text }),
            )
            .await;
        let Some((_, resp)) = self.agree("WriteSchema", &want, got) else {
            self.stats.schemas_refused += 1;
            if self.verbose {
                if let Err(e) = &compiled {
                    println!(
                        "case {}: schema refused: {e}\n{}",
                        self.case, self.schema_text
                    );
                }
            }
            return;
        };
        let schema = Arc::new(compiled.expect("compiled"));
        let engine = Arc::new(Engine::new(schema.clone()));
        self.schema = Some(schema);
        self.engine = Some(engine.clone());
        self.store = MemStore::new();
        self.ats.push(At {
            token: resp.written_at.expect("written_at"),
            rev: self.store.head(),
            engine,
            exact: false,
        });

        let rounds = 1 + self.rng.below(4);
        for round in 0..rounds {
            for _ in 0..1 + self.rng.below(3) {
                match self.rng.below(10) {
                    0 | 1 => self.delete_round().await,
                    2 => self.import_round().await,
                    _ => self.write_round().await,
                }
            }
            // The server holds what the model holds (a divergence shows here first).
            self.export(true).await;
            if round > 0 && self.rng.chance(15) {
                self.schema_change().await;
            }
            self.queries().await;
            if self.rng.chance(35) {
                self.malformed().await;
            }
        }
    }

    /// Deletes everything the schema in force holds, in chunks; then nothing is left.
    async fn wipe(&mut self) {
        let Some(schema) = self.schema.clone() else {
            return;
        };
        let mut last = None;
        for t in schema.definitions.keys() {
            for _ in 0..1000 {
                let mut rc = self.rel();
                let what = format!("Delete of the previous case's {t} relationships (wipe)");
                let got = self
                    .unary(
                        &what,
                        rc.delete(pb::DeleteRequest {
                            filter: Some(pb::RelationshipFilter {
                                resource_type: t.clone(),
                                ..Default::default()
                            }),
                            optional_preconditions: vec![],
                            optional_limit: 0,
                            optional_allow_partial_deletions: true,
                        }),
                    )
                    .await;
                let resp = match got {
                    Ok(r) => r,
                    Err(s) => self.fail(format!("{what}: {s:?}")),
                };
                last = resp.deleted_at.clone();
                if !resp.partial {
                    break;
                }
            }
        }
        let Some(token) = last else { return };
        let mut rc = self.rel();
        let got = self
            .stream(
                "Export (after the wipe)",
                rc.export(pb::ExportRequest {
                    consistency: consistency(pb::consistency::Requirement::AtLeastAsFresh, &token),
                    optional_cursor: None,
                }),
            )
            .await;
        match got {
            Ok(batches) => {
                let left: usize = batches.iter().map(|b| b.relationships.len()).sum();
                ensure!(self, left == 0, "{left} relationships left after the wipe");
            }
            Err(s) => self.fail(format!("Export: {s:?}")),
        }
    }

    /// What the server must answer to a write, from the model (the order of its checks:
    /// size, duplicates, each update against the schema, the preconditions' names, the
    /// preconditions, then creates of what exists).
    fn expect_write(&self, ops: &[WriteOp], pre: &[Precondition]) -> Result<(), Refusal> {
        let engine = self.engine();
        if ops.len() > MAX_UPDATES {
            return Err((Code::InvalidArgument, "TOO_MANY_UPDATES".into()));
        }
        let mut seen = BTreeSet::new();
        for op in ops {
            let (WriteOp::Create(r) | WriteOp::Touch(r) | WriteOp::Delete(r)) = op;
            let k = (r.resource.clone(), r.relation.clone(), r.subject.clone());
            if !seen.insert(k) {
                return Err((Code::InvalidArgument, "DUPLICATE_RELATIONSHIP".into()));
            }
        }
        for op in ops {
            match op {
                WriteOp::Create(r) | WriteOp::Touch(r) => {
                    engine.validate_relationship(r).map_err(api)?
                }
                WriteOp::Delete(r) => {
                    engine
                        .validate_ref(&r.resource.object_type, Some(&r.relation))
                        .map_err(api)?;
                    engine
                        .validate_ref(&r.subject.object.object_type, r.subject.relation.as_deref())
                        .map_err(api)?;
                }
            }
        }
        for p in pre {
            let (Precondition::MustMatch(f) | Precondition::MustNotMatch(f)) = p;
            Self::check_filter(&engine, f)?;
        }
        let reader = self.store.latest();
        dhow_tuples::check_preconditions(&reader, pre).map_err(api)?;
        for op in ops {
            if let WriteOp::Create(r) = op {
                if reader
                    .find(&r.resource, &r.relation, &r.subject)
                    .expect("model read")
                    .is_some()
                {
                    return Err((Code::AlreadyExists, "ALREADY_EXISTS".into()));
                }
            }
        }
        Ok(())
    }

    async fn write_round(&mut self) {
        let n = if self.rng.chance(4) {
            MAX_UPDATES + 1 + self.rng.below(5)
        } else {
            1 + self.rng.below(10)
        };
        let mut ops: Vec<WriteOp> = Vec::new();
        for _ in 0..n {
            let r = if self.rng.chance(3) {
                self.invalid_rel()
            } else if self.rng.chance(20) && self.store.head() > Revision(0) {
                // Something stored (to delete it, touch it again, or create it again).
                let all = self
                    .store
                    .latest()
                    .read(&RelationshipFilter::default(), None, usize::MAX)
                    .expect("model read");
                (!all.is_empty()).then(|| self.rng.pick(&all))
            } else {
                self.valid_rel()
            };
            let Some(r) = r else { continue };
            let r = norm(&r);
            // Mostly one update per relationship (a duplicate is refused as a whole).
            let dup = ops.iter().any(|o| {
                let (WriteOp::Create(x) | WriteOp::Touch(x) | WriteOp::Delete(x)) = o;
                x.key() == r.key()
            });
            if dup && !self.rng.chance(10) {
                continue;
            }
            ops.push(match self.rng.below(10) {
                0..=5 => WriteOp::Touch(r),
                6 | 7 => WriteOp::Create(r),
                _ => WriteOp::Delete(r),
            });
        }
        if ops.is_empty() {
            return;
        }
        let mut pre = Vec::new();
        if self.rng.chance(15) {
            for _ in 0..1 + self.rng.below(2) {
                let f = self.any_filter();
                pre.push(if self.rng.chance(50) {
                    Precondition::MustMatch(f)
                } else {
                    Precondition::MustNotMatch(f)
                });
            }
        }
        let want = self.expect_write(&ops, &pre);
        let req = pb::WriteRequest {
            updates: ops
                .iter()
                .map(|op| {
                    use pb::relationship_update::Operation as O;
                    let (o, r) = match op {
                        WriteOp::Create(r) => (O::Create, r),
                        WriteOp::Touch(r) => (O::Touch, r),
                        WriteOp::Delete(r) => (O::Delete, r),
                    };
                    pb::RelationshipUpdate {
                        operation: o as i32,
                        relationship: Some(dhow_wire::relationship_pb(r)),
                    }
                })
                .collect(),
            optional_preconditions: pre
                .iter()
                .map(|p| {
                    use pb::precondition::Operation as O;
                    let (o, f) = match p {
                        Precondition::MustMatch(f) => (O::MustMatch, f),
                        Precondition::MustNotMatch(f) => (O::MustNotMatch, f),
                    };
                    pb::Precondition {
                        operation: o as i32,
                        filter: Some(dhow_wire::filter_pb(f)),
                    }
                })
                .collect(),
        };
        let mut rc = self.rel();
        let got = self.unary("Write", rc.write(req)).await;
        let what = format!("Write of {ops:?} with preconditions {pre:?}");
        if self.verbose {
            println!("case {}: {what}: expecting {want:?}", self.case);
        }
        self.stats.writes += 1;
        match self.agree(&what, &want, got) {
            Some((_, resp)) => {
                let rev = self
                    .store
                    .write(&ops)
                    .unwrap_or_else(|e| self.fail(format!("{what}: the model refuses: {e}")));
                let engine = self.engine();
                self.ats.push(At {
                    token: resp.written_at.expect("written_at"),
                    rev,
                    engine,
                    exact: false,
                });
            }
            None => self.stats.writes_refused += 1,
        }
    }

    /// Import of one batch (more relationships than one write takes, so it is chunked; a
    /// later copy of a relationship wins): each chunk is validated and written in order, so a
    /// refused chunk leaves the ones before it written.
    async fn import_round(&mut self) {
        let n = 1 + self.rng.below(2 * MAX_UPDATES + 10);
        let mut rels = Vec::new();
        for _ in 0..n {
            let r = if self.rng.chance(2) {
                self.invalid_rel()
            } else {
                self.valid_rel()
            };
            if let Some(r) = r {
                rels.push(norm(&r));
            }
        }
        if rels.is_empty() {
            return;
        }
        let engine = self.engine();
        let mut want: Result<u64, Refusal> = Ok(0);
        let mut loaded = 0u64;
        for chunk in rels.chunks(MAX_UPDATES) {
            // The server validates a chunk after a later copy replaced an earlier one.
            let mut out: Vec<Relationship> = Vec::new();
            for r in chunk {
                match out.iter().position(|x| x.key() == r.key()) {
                    Some(j) => out[j] = r.clone(),
                    None => out.push(r.clone()),
                }
            }
            if let Some(e) = out
                .iter()
                .find_map(|r| engine.validate_relationship(r).err())
            {
                want = Err(api(e));
                break;
            }
            let ops: Vec<WriteOp> = out.into_iter().map(WriteOp::Touch).collect();
            self.store.write(&ops).expect("model import");
            loaded += chunk.len() as u64;
        }
        if let Ok(k) = want.as_mut() {
            *k = loaded;
        }
        let batch = pb::ImportRequest {
            relationships: rels.iter().map(dhow_wire::relationship_pb).collect(),
        };
        let mut rc = self.rel();
        let got = self
            .unary(
                "Import",
                rc.import(tonic::codegen::tokio_stream::iter(vec![batch])),
            )
            .await;
        self.stats.writes += 1;
        let what = format!("Import of {} relationships", rels.len());
        if let Err(s) = &got {
            // How many were written before the refusal (the chunks before the refused one).
            let said = s
                .get_details_error_info()
                .and_then(|i| i.metadata.get("loaded").cloned());
            ensure!(
                self,
                said.as_deref() == Some(loaded.to_string().as_str()),
                "{what}: refused having loaded {said:?}, the model loaded {loaded}: {}",
                s.message()
            );
        }
        match self.agree(&what, &want, got) {
            Some((count, resp)) => {
                ensure!(
                    self,
                    resp.loaded_count == count,
                    "{what}: the server loaded {}, the model {count}",
                    resp.loaded_count
                );
                let engine = self.engine();
                self.ats.push(At {
                    token: resp.written_at.expect("written_at"),
                    rev: self.store.head(),
                    engine,
                    exact: false,
                });
            }
            None => {
                self.stats.writes_refused += 1;
                // The chunks before the refused one were written: the newest revision is
                // the server's, found by a fully consistent read.
                if self.store.head() > self.ats.last().expect("a revision").rev {
                    let mut sc = self.schema_client();
                    let got = self
                        .unary(
                            "ReadSchema",
                            sc.read_schema(pb::ReadSchemaRequest {
                                consistency: Some(pb::Consistency {
                                    requirement: Some(
                                        pb::consistency::Requirement::FullyConsistent(true),
                                    ),
                                }),
                            }),
                        )
                        .await;
                    let token = match got {
                        Ok(r) => r.read_at.expect("read_at"),
                        Err(s) => self.fail(format!("ReadSchema: {s:?}")),
                    };
                    let engine = self.engine();
                    self.ats.push(At {
                        token,
                        rev: self.store.head(),
                        engine,
                        exact: false,
                    });
                }
            }
        }
    }

    /// Export at a revision: every relationship not expired, in key order, across batches.
    async fn export(&mut self, newest: bool) {
        let (mut at, mut c) = self.pick_at();
        if newest {
            at = self.ats.last().expect("a revision").clone();
            at.exact = true;
            c = consistency(pb::consistency::Requirement::AtExactSnapshot, &at.token);
        }
        let now = Timestamp::now();
        let want: Result<Vec<Relationship>, Refusal> = Ok(self
            .store
            .snapshot(at.rev)
            .expect("model snapshot")
            .read(&RelationshipFilter::default(), None, usize::MAX)
            .expect("model read")
            .into_iter()
            .filter(|r| !r.is_expired_at(now))
            .collect());
        let mut rc = self.rel();
        let got = self
            .stream(
                "Export",
                rc.export(pb::ExportRequest {
                    consistency: c,
                    optional_cursor: None,
                }),
            )
            .await;
        let what = "Export";
        let Some((want, batches)) = self.agree(what, &want, got) else {
            return;
        };
        let mut rels = Vec::new();
        for b in &batches {
            self.check_token(what, &at, b.exported_at.as_ref());
            for r in &b.relationships {
                match dhow_wire::relationship(Some(r), "relationship") {
                    Ok(x) => rels.push(x),
                    Err(e) => self.fail(format!("{what}: the server sent {r:?}: {e}")),
                }
            }
        }
        ensure!(
            self,
            rels == want,
            "{what}: the model holds {:?}, the server exported {:?}",
            want.iter().map(ToString::to_string).collect::<Vec<_>>(),
            rels.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }

    async fn delete_round(&mut self) {
        let filter = self.any_filter();
        let asked = self.rng.pick(&[0u32, 0, 1, 2, 5, 100]);
        let partial_ok = self.rng.chance(50);
        let engine = self.engine();
        let reader = self.store.latest();
        let mut want: Result<(u64, bool, Vec<Relationship>), Refusal> =
            Self::check_filter(&engine, &filter).map(|_| (0, false, Vec::new()));
        if want.is_ok() {
            let matches = reader.read(&filter, None, usize::MAX).expect("model read");
            let asked = asked as usize;
            let limit = if asked == 0 {
                MAX_UPDATES
            } else {
                asked.min(MAX_UPDATES)
            };
            want = if matches.len() > limit && !partial_ok {
                Err((Code::FailedPrecondition, "DELETE_LIMIT_EXCEEDED".into()))
            } else {
                let partial = matches.len() > limit;
                let gone: Vec<Relationship> = matches.into_iter().take(limit).collect();
                Ok((gone.len() as u64, partial, gone))
            };
        }
        let mut rc = self.rel();
        let got = self
            .unary(
                "Delete",
                rc.delete(pb::DeleteRequest {
                    filter: Some(dhow_wire::filter_pb(&filter)),
                    optional_preconditions: vec![],
                    optional_limit: asked,
                    optional_allow_partial_deletions: partial_ok,
                }),
            )
            .await;
        self.stats.deletes += 1;
        let what = format!("Delete of {filter:?} (limit {asked}, partial {partial_ok})");
        if self.verbose {
            println!("case {}: {what}: expecting {want:?}", self.case);
        }
        if let Some(((count, partial, gone), resp)) = self.agree(&what, &want, got) {
            ensure!(
                self,
                (resp.deleted_count, resp.partial) == (count, partial),
                "{what}: the server deleted {} (partial {}), the model {count} (partial {partial})",
                resp.deleted_count,
                resp.partial
            );
            let ops: Vec<WriteOp> = gone.into_iter().map(WriteOp::Delete).collect();
            let rev = self.store.write(&ops).expect("model delete");
            let engine = self.engine();
            self.ats.push(At {
                token: resp.deleted_at.expect("deleted_at"),
                rev,
                engine,
                exact: false,
            });
        }
    }

    /// The schema in force with one relation removed, or with an allowed type added or
    /// removed, or a new random schema.
    fn changed_schema(&mut self) -> String {
        let current = self
            .schema_text
            .rsplit("\n-- then --\n")
            .next()
            .unwrap_or("");
        let mut lines: Vec<String> = current.lines().map(str::to_string).collect();
        let rels: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].trim_start().starts_with("relation "))
            .collect();
        if rels.is_empty() || self.rng.chance(30) {
            return gen_schema(&mut self.rng);
        }
        let i = self.rng.pick(&rels);
        match self.rng.below(3) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let extra = self
                    .rng
                    .pick(&[" | user", " | user:*", " | user with c_flag"]);
                lines[i].push_str(extra);
            }
            _ => {
                if let Some(cut) = lines[i].rfind(" | ") {
                    lines[i].truncate(cut);
                }
            }
        }
        lines.join("\n")
    }

    /// A new random schema over the stored data: refused (FAILED_PRECONDITION) exactly when
    /// a relationship of a relation it removes or changes would not fit it.
    async fn schema_change(&mut self) {
        let text = self.changed_schema();
        let Ok(new) = dhow_schema::compile(&text) else {
            return; // refusals of broken schemas are covered at the start of each case
        };
        let new_engine = Engine::new(Arc::new(new.clone()));
        let old = self.schema().clone();
        let reader = self.store.latest();
        let mut orphan = false;
        for (t, def) in &old.definitions {
            for (r, rel) in &def.relations {
                let same = matches!(new.member(t, r), Some(Member::Relation(n)) if n.allowed == rel.allowed);
                if same {
                    continue;
                }
                let f = RelationshipFilter {
                    resource_type: Some(t.clone()),
                    relation: Some(r.clone()),
                    ..Default::default()
                };
                for x in reader.read(&f, None, usize::MAX).expect("model read") {
                    orphan |= new_engine.validate_relationship(&x).is_err();
                }
            }
        }
        let want: Result<(), Refusal> = if orphan {
            Err((
                Code::FailedPrecondition,
                "SCHEMA_ORPHANS_RELATIONSHIPS".into(),
            ))
        } else {
            Ok(())
        };
        let mut sc = self.schema_client();
        let got = self
            .unary(
                "WriteSchema (over data)",
                sc.write_schema(pb::WriteSchemaRequest {
                    schema: text.clone(),
                }),
            )
            .await;
        self.stats.schema_changes += 1;
        let what = format!("WriteSchema over the stored data of the new schema\n{text}");
        if let Some((_, resp)) = self.agree(&what, &want, got) {
            self.schema_text = format!("{}\n-- then --\n{text}", self.schema_text);
            let schema = Arc::new(new);
            let engine = Arc::new(Engine::new(schema.clone()));
            self.schema = Some(schema);
            self.engine = Some(engine.clone());
            self.ats.push(At {
                token: resp.written_at.expect("written_at"),
                rev: self.store.head(),
                engine,
                exact: false,
            });
        } else {
            self.stats.schema_changes_refused += 1;
        }
    }

    /// Where the next query is asked: the newest revision (as fresh as its token, or exactly
    /// it) or, now and then, an earlier revision of the case exactly.
    fn pick_at(&mut self) -> (At, Option<pb::Consistency>) {
        let newest = self.ats.len() - 1;
        let i = if self.rng.chance(20) {
            self.rng.below(self.ats.len())
        } else {
            newest
        };
        let mut at = self.ats[i].clone();
        at.exact = i != newest || self.rng.chance(50);
        // The newest revision is also what a node that applied every acknowledged write reads
        // with `minimize_latency` (or no consistency) and `fully_consistent`: this test is
        // the only writer.
        use pb::consistency::Requirement as R;
        let c = if at.exact {
            consistency(R::AtExactSnapshot, &at.token)
        } else {
            match self.rng.below(6) {
                0 => None,
                1 => Some(pb::Consistency {
                    requirement: Some(R::MinimizeLatency(true)),
                }),
                2 => Some(pb::Consistency {
                    requirement: Some(R::FullyConsistent(true)),
                }),
                _ => consistency(R::AtLeastAsFresh, &at.token),
            }
        };
        (at, c)
    }

    /// The token of an answer must stand for the revision asked.
    fn check_token(&self, what: &str, at: &At, t: Option<&pb::ConsistencyToken>) {
        let Some(t) = t else {
            self.fail(format!("{what}: no token in the answer"))
        };
        let (want, got) = (dhow_tests::revision(&at.token), dhow_tests::revision(t));
        ensure!(
            self,
            want == got || (!at.exact && got > want),
            "{what}: answered at revision {got}, asked at {want} (exactly: {})",
            at.exact
        );
    }

    async fn queries(&mut self) {
        // The schema may have just been refused for this case.
        if self.ats.is_empty() {
            return;
        }
        for _ in 0..2 + self.rng.below(6) {
            match self.rng.below(13) {
                0..=3 => self.check().await,
                4 | 5 => self.check_bulk().await,
                6 | 7 => self.lookup_resources().await,
                8 | 9 => self.lookup_subjects().await,
                10 => self.expand().await,
                11 => self.read().await,
                _ => self.export(false).await,
            }
        }
    }

    /// A random check, its context (JSON text) and, now and then, a delegation chain of one
    /// or two actors (users, or objects the data is about).
    fn any_check(&mut self) -> Item {
        let resource = self.any_resource();
        let perm = self.any_member(&resource.object_type);
        let mut check = ECheck::new(resource, perm, self.any_subject());
        let ctx = self.any_context();
        check.context = Self::decoded_context(&ctx);
        let mut actors: Vec<ObjectRef> = Vec::new();
        if self.rng.chance(20) {
            for _ in 0..1 + self.rng.below(2) {
                let a = if self.rng.chance(50) {
                    ObjectRef::new("user", self.rng.pick(&IDS))
                } else {
                    self.any_resource()
                };
                // Mostly a valid chain: no actor twice, the principal not an actor.
                let bad = actors.contains(&a)
                    || (check.subject.relation.is_none() && check.subject.object == a);
                if !bad || self.rng.chance(10) {
                    actors.push(a);
                }
            }
        }
        Item {
            check,
            ctx,
            actors,
            explain: self.rng.chance(30),
        }
    }

    /// The engine's answers to checks as the server evaluates them: each item's names checked
    /// first, then the items in four bulk calls (plain and delegated, without and with
    /// proofs), in that order, as the server makes them.
    fn expect_checks(engine: &Engine, reader: &impl SnapshotReader, items: &[Item]) -> Vec<Want> {
        let mut want: Vec<Option<Want>> = vec![None; items.len()];
        for (explain, delegated) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut idx = Vec::new();
            for (i, it) in items.iter().enumerate() {
                if it.explain != explain || it.actors.is_empty() == delegated {
                    continue;
                }
                let c = &it.check;
                let names = engine
                    .validate_ref(&c.resource.object_type, Some(&c.permission))
                    .and_then(|_| {
                        engine.validate_ref(
                            &c.subject.object.object_type,
                            c.subject.relation.as_deref(),
                        )
                    });
                match names {
                    Err(e) => want[i] = Some(Err(api(e))),
                    Ok(()) => idx.push(i),
                }
            }
            let mut o = Options::now();
            o.explain = explain;
            let results: Vec<Result<Answer, dhow_engine::Error>> = if delegated {
                let reqs: Vec<DelegatedCheck> = idx
                    .iter()
                    .map(|&i| DelegatedCheck::new(items[i].check.clone(), items[i].actors.clone()))
                    .collect();
                engine
                    .check_bulk_delegated(reader, &reqs, o)
                    .into_iter()
                    .map(|r| {
                        r.map(|r| Answer {
                            permissionship: r.permissionship,
                            proof: r.proof.as_ref().map(dhow_wire::proof_pb),
                            actor_proofs: r.actor_proofs.iter().map(dhow_wire::proof_pb).collect(),
                            denied_at: r.denied_at.map(dhow_wire::chain_link_pb),
                        })
                    })
                    .collect()
            } else {
                let reqs: Vec<ECheck> = idx.iter().map(|&i| items[i].check.clone()).collect();
                engine
                    .check_bulk(reader, &reqs, o)
                    .into_iter()
                    .map(|r| {
                        r.map(|r| Answer {
                            permissionship: r.permissionship,
                            proof: r.proof.as_ref().map(dhow_wire::proof_pb),
                            actor_proofs: Vec::new(),
                            denied_at: None,
                        })
                    })
                    .collect()
            };
            for (i, r) in idx.into_iter().zip(results) {
                want[i] = Some(r.map_err(api));
            }
        }
        want.into_iter()
            .map(|w| w.expect("every item expected"))
            .collect()
    }

    fn count(&mut self, p: &Permissionship) {
        match p {
            Permissionship::Allowed => self.stats.allowed += 1,
            Permissionship::Conditional { .. } => self.stats.conditional += 1,
            Permissionship::Denied => {}
        }
    }

    /// A check's context as the server decodes it (`None` for an empty one).
    fn decoded_context(ctx: &Option<String>) -> Option<dhow_engine::CaveatContext> {
        ctx.as_ref().and_then(|c| {
            dhow_wire::context(Some(&context_struct(c)), "context").expect("generated context")
        })
    }

    /// The server's answer to a check against the engine's.
    fn compare_answer(&mut self, what: &str, want: &Answer, got: Answer) {
        self.count(&want.permissionship);
        let (p, info) = dhow_wire::permissionship_pb(&want.permissionship);
        let (gp, ginfo) = dhow_wire::permissionship_pb(&got.permissionship);
        ensure!(
            self,
            (p, &info) == (gp, &ginfo),
            "{what}: the engine says {:?}, the server {:?}",
            want.permissionship,
            got.permissionship
        );
        let text = |p: &Option<pb::Proof>| {
            p.as_ref()
                .and_then(|p| dhow_wire::proof(p, "proof").ok())
                .map(|p| p.to_string())
        };
        ensure!(
            self,
            want.proof == got.proof,
            "{what}: the proofs differ:\nengine: {:?}\nserver: {:?}",
            text(&want.proof),
            text(&got.proof)
        );
        ensure!(
            self,
            want.actor_proofs == got.actor_proofs,
            "{what}: the actors' proofs differ:\nengine: {:?}\nserver: {:?}",
            want.actor_proofs,
            got.actor_proofs
        );
        ensure!(
            self,
            want.denied_at == got.denied_at,
            "{what}: the engine denies at {:?}, the server at {:?}",
            want.denied_at,
            got.denied_at
        );
    }

    async fn check(&mut self) {
        let (at, c) = self.pick_at();
        let item = self.any_check();
        let want = {
            let reader = self.store.snapshot(at.rev).expect("model snapshot");
            Self::expect_checks(&at.engine, &reader, std::slice::from_ref(&item)).remove(0)
        };
        let msg = pb::CheckRequest {
            consistency: c,
            resource: Some(dhow_wire::object_pb(&item.check.resource)),
            permission: item.check.permission.clone(),
            subject: Some(dhow_wire::subject_pb(&item.check.subject)),
            explain: item.explain,
            actors: dhow_wire::actors_pb(&item.actors),
            context: item.ctx.as_deref().map(context_struct),
        };
        let mut pc = self.perm();
        let got = self.unary("Check", pc.check(msg)).await;
        self.stats.checks += 1;
        let what = format!("Check {item} {}", at.describe());
        if let Some((want, resp)) = self.agree(&what, &want, got) {
            self.check_token(&what, &at, resp.checked_at.as_ref());
            let got = Answer {
                permissionship: permissionship(resp.permissionship, &resp.partial_caveat_info),
                proof: resp.proof,
                actor_proofs: resp.actor_proofs,
                denied_at: resp.denied_at,
            };
            self.compare_answer(&what, &want, got);
        }
    }

    async fn check_bulk(&mut self) {
        let (at, c) = self.pick_at();
        let n = 1 + self.rng.below(6);
        let items: Vec<Item> = (0..n).map(|_| self.any_check()).collect();
        let want = {
            let reader = self.store.snapshot(at.rev).expect("model snapshot");
            Self::expect_checks(&at.engine, &reader, &items)
        };
        let msg = pb::CheckBulkRequest {
            consistency: c,
            items: items
                .iter()
                .map(|it| pb::CheckBulkRequestItem {
                    resource: Some(dhow_wire::object_pb(&it.check.resource)),
                    permission: it.check.permission.clone(),
                    subject: Some(dhow_wire::subject_pb(&it.check.subject)),
                    explain: it.explain,
                    actors: dhow_wire::actors_pb(&it.actors),
                    context: it.ctx.as_deref().map(context_struct),
                })
                .collect(),
        };
        let sent = msg.items.clone();
        let mut pc = self.perm();
        let got = self.unary("CheckBulk", pc.check_bulk(msg)).await;
        self.stats.bulk_items += n as u64;
        let resp = match got {
            Ok(r) => r,
            Err(s) => {
                let r = self.refusal("CheckBulk", &s);
                self.fail(format!(
                    "CheckBulk refused as a whole: {r:?}: {}",
                    s.message()
                ))
            }
        };
        self.check_token("CheckBulk", &at, resp.checked_at.as_ref());
        ensure!(
            self,
            resp.items.len() == n,
            "CheckBulk: {} answers to {n} items",
            resp.items.len()
        );
        for (i, (w, item)) in want.into_iter().zip(resp.items).enumerate() {
            let what = format!("CheckBulk item {i}: {} {}", items[i], at.describe());
            ensure!(
                self,
                item.request.as_ref() == Some(&sent[i]),
                "{what}: the answer echoes another request: {:?}",
                item.request
            );
            use pb::check_bulk_response_item::Response as R;
            match (w, item.response) {
                (Ok(w), Some(R::Result(r))) => {
                    let got = Answer {
                        permissionship: permissionship(r.permissionship, &r.partial_caveat_info),
                        proof: r.proof,
                        actor_proofs: r.actor_proofs,
                        denied_at: r.denied_at,
                    };
                    self.compare_answer(&what, &w, got);
                }
                (Err(w), Some(R::Error(e))) => {
                    ensure!(
                        self,
                        (w.0 as i32, w.1.as_str()) == (e.code, e.reason.as_str()),
                        "{what}: the engine refuses with {w:?}, the server with {e:?}"
                    );
                    ensure!(
                        self,
                        e.code != Code::Internal as i32 && e.code != Code::Unknown as i32,
                        "{what}: {e:?}"
                    );
                    self.stats.errors_compared += 1;
                    *self.stats.refusals.entry(e.reason).or_default() += 1;
                }
                (w, r) => self.fail(format!("{what}: the engine: {w:?}, the server: {r:?}")),
            }
        }
    }

    async fn lookup_resources(&mut self) {
        let (at, c) = self.pick_at();
        let t = self.any_resource().object_type;
        let perm = self.any_member(&t);
        let subject = self.any_subject();
        let ctx = self.any_context();
        let limit = if self.rng.chance(60) {
            0
        } else {
            1 + self.rng.below(3) as u32
        };
        let actors: Vec<ObjectRef> = if self.rng.chance(15) {
            vec![ObjectRef::new("user", self.rng.pick(&IDS))]
        } else {
            Vec::new()
        };
        let what = format!(
            "LookupResources {t}#{perm}@{subject} by {actors:?} (context {ctx:?}, limit {limit})"
        );
        let decoded = Self::decoded_context(&ctx);
        let want: Result<Vec<pb::LookupResourcesResponse>, Refusal> = {
            let reader = self.store.snapshot(at.rev).expect("model snapshot");
            let e = &at.engine;
            let mut o = Options::now();
            o.context = decoded.clone();
            e.validate_ref(&t, Some(&perm))
                .and_then(|_| {
                    e.validate_ref(&subject.object.object_type, subject.relation.as_deref())
                })
                .and_then(|_| {
                    if actors.is_empty() {
                        e.lookup_found_resources(&reader, &t, &perm, &subject, o)
                    } else {
                        e.lookup_resources_delegated(&reader, &t, &perm, &subject, &actors, o)
                    }
                })
                .map(|mut v| {
                    v.sort_by(|a, b| a.id.cmp(&b.id));
                    v.iter().map(dhow_wire::found_resource_pb).collect()
                })
                .map_err(api)
        };
        // Page by page (a cursor, at the first page's revision) until a short page.
        let mut all: Vec<pb::LookupResourcesResponse> = Vec::new();
        let mut cursor = None;
        let mut cons = c;
        let got = loop {
            let msg = pb::LookupResourcesRequest {
                consistency: cons.clone(),
                resource_object_type: t.clone(),
                permission: perm.clone(),
                subject: Some(dhow_wire::subject_pb(&subject)),
                optional_limit: limit,
                optional_cursor: cursor.clone(),
                context: ctx.as_deref().map(context_struct),
                actors: dhow_wire::actors_pb(&actors),
            };
            let mut pc = self.perm();
            match self
                .stream("LookupResources", pc.lookup_resources(msg))
                .await
            {
                Err(s) => break Err(s),
                Ok(page) => {
                    let short = limit == 0 || page.len() < limit as usize;
                    if let Some(last) = page.last() {
                        cursor = last.after_result_cursor.clone();
                        if let Some(tk) = &last.looked_up_at {
                            cons = consistency(pb::consistency::Requirement::AtExactSnapshot, tk);
                        }
                    }
                    all.extend(page);
                    if short || all.len() > 1000 {
                        break Ok(all);
                    }
                }
            }
        };
        self.stats.lookups_resources += 1;
        let Some((want, got)) = self.agree(&what, &want, got) else {
            return;
        };
        for r in &got {
            self.check_token(&what, &at, r.looked_up_at.as_ref());
        }
        let got: Vec<pb::LookupResourcesResponse> = got
            .into_iter()
            .map(|r| pb::LookupResourcesResponse {
                looked_up_at: None,
                after_result_cursor: None,
                ..r
            })
            .collect();
        ensure!(
            self,
            got == want,
            "{what}: the engine finds {:?}, the server {:?}",
            want.iter()
                .map(|r| (&r.resource_object_id, r.permissionship))
                .collect::<Vec<_>>(),
            got.iter()
                .map(|r| (&r.resource_object_id, r.permissionship))
                .collect::<Vec<_>>()
        );
        // And exactly the candidates a check allows (or allows conditionally), with the same
        // answer.
        let reader = self.store.snapshot(at.rev).expect("model snapshot");
        for id in
            IDS.iter().chain([&STRANGER]).copied().chain(
                (subject.object.object_type == t).then_some(subject.object.object_id.as_str()),
            )
        {
            let mut req = ECheck::new(ObjectRef::new(&t, id), &perm, subject.clone());
            req.context = decoded.clone();
            let check = match at.engine.check_delegated(
                &reader,
                &DelegatedCheck::new(req, actors.clone()),
                Options::now(),
            ) {
                Ok(r) => r.permissionship,
                // A caveat evaluated with a context value of the wrong type fails; the lookup
                // may never have evaluated it (it did not reach this candidate that way).
                Err(
                    dhow_engine::Error::InvalidContext { .. }
                    | dhow_engine::Error::CaveatEvaluation { .. },
                ) => continue,
                Err(e) => self.fail(format!("{what}: check of {id}: {e}")),
            };
            let found = got
                .iter()
                .find(|r| r.resource_object_id == id)
                .map(|r| (r.permissionship, r.partial_caveat_info.clone()));
            let want =
                (check != Permissionship::Denied).then(|| dhow_wire::permissionship_pb(&check));
            ensure!(
                self,
                found == want,
                "{what}: Check of {t}:{id} says {check:?}, LookupResources {found:?}"
            );
        }
    }

    async fn lookup_subjects(&mut self) {
        let (at, c) = self.pick_at();
        let resource = self.any_resource();
        let t = resource.object_type.clone();
        let perm = self.any_member(&t);
        let (st, srel) = if self.rng.chance(50) {
            let s = self.any_subject();
            (s.object.object_type, s.relation)
        } else {
            let st = self.any_type();
            let srel = self.rng.chance(25).then(|| self.any_member(&st));
            (st, srel)
        };
        let ctx = self.any_context();
        let decoded = Self::decoded_context(&ctx);
        let what = format!(
            "LookupSubjects {resource}#{perm} of {st}{} (context {ctx:?})",
            srel.as_ref().map(|r| format!("#{r}")).unwrap_or_default()
        );
        let set = {
            let reader = self.store.snapshot(at.rev).expect("model snapshot");
            let e = &at.engine;
            let mut o = Options::now();
            o.context = decoded.clone();
            e.validate_ref(&t, Some(&perm))
                .and_then(|_| e.validate_ref(&st, srel.as_deref()))
                .and_then(|_| {
                    Ok((
                        e.lookup_subjects(
                            &reader,
                            &resource,
                            &perm,
                            &st,
                            srel.as_deref(),
                            o.clone(),
                        )?,
                        e.lookup_subject_set(&reader, &resource, &perm, &st, srel.as_deref(), o)?,
                    ))
                })
                .map_err(api)
        };
        let want = set
            .as_ref()
            .map(|(v, _)| {
                v.iter()
                    .map(dhow_wire::found_subject_pb)
                    .collect::<Vec<_>>()
            })
            .map_err(Clone::clone);
        let msg = pb::LookupSubjectsRequest {
            consistency: c,
            resource: Some(dhow_wire::object_pb(&resource)),
            permission: perm.clone(),
            subject_object_type: st.clone(),
            optional_subject_relation: srel.clone().unwrap_or_default(),
            context: ctx.as_deref().map(context_struct),
        };
        let mut pc = self.perm();
        let got = self.stream("LookupSubjects", pc.lookup_subjects(msg)).await;
        self.stats.lookups_subjects += 1;
        let Some((want, got)) = self.agree(&what, &want, got) else {
            return;
        };
        for r in &got {
            self.check_token(&what, &at, r.looked_up_at.as_ref());
        }
        let got: Vec<pb::LookupSubjectsResponse> = got
            .into_iter()
            .map(|r| pb::LookupSubjectsResponse {
                looked_up_at: None,
                ..r
            })
            .collect();
        ensure!(
            self,
            got == want,
            "{what}: the engine finds {want:?}, the server {got:?}"
        );
        // Each candidate subject's membership agrees with a check.
        let Ok((_, set)) = set else { return };
        let reader = self.store.snapshot(at.rev).expect("model snapshot");
        for sid in IDS.iter().chain([&STRANGER]) {
            let subject = Subject {
                object: ObjectRef::new(&st, *sid),
                relation: srel.clone(),
            };
            let mut req = ECheck::new(resource.clone(), &perm, subject.clone());
            req.context = decoded.clone();
            let check = match at.engine.check(&reader, &req, Options::now()) {
                Ok(r) => r.permissionship,
                // A caveat evaluated with a context value of the wrong type fails; the lookup
                // may never have evaluated it (it did not reach this candidate that way).
                Err(
                    dhow_engine::Error::InvalidContext { .. }
                    | dhow_engine::Error::CaveatEvaluation { .. },
                ) => continue,
                Err(e) => self.fail(format!("{what}: check of {subject}: {e}")),
            };
            let member = set.membership(&subject);
            ensure!(
                self,
                check == member,
                "{what}: Check of {subject} says {check:?}, LookupSubjects {member:?}"
            );
        }
    }

    async fn expand(&mut self) {
        let (at, c) = self.pick_at();
        let resource = self.any_resource();
        let perm = self.any_member(&resource.object_type);
        let want = {
            let reader = self.store.snapshot(at.rev).expect("model snapshot");
            at.engine
                .expand(&reader, &resource, &perm, Options::now())
                .map(|t| dhow_wire::expand_pb(&t))
                .map_err(api)
        };
        let mut pc = self.perm();
        let got = self
            .unary(
                "Expand",
                pc.expand(pb::ExpandRequest {
                    consistency: c,
                    resource: Some(dhow_wire::object_pb(&resource)),
                    permission: perm.clone(),
                }),
            )
            .await;
        self.stats.expands += 1;
        let what = format!("Expand {resource}#{perm}");
        if let Some((want, resp)) = self.agree(&what, &want, got) {
            self.check_token(&what, &at, resp.expanded_at.as_ref());
            ensure!(
                self,
                resp.tree.as_ref() == Some(&want),
                "{what}: the trees differ:\nengine: {want:?}\nserver: {:?}",
                resp.tree
            );
        }
    }

    async fn read(&mut self) {
        let (at, c) = self.pick_at();
        let filter = self.any_filter();
        let limit = if self.rng.chance(50) {
            0
        } else {
            1 + self.rng.below(4) as u32
        };
        let what = format!("Read {filter:?} (limit {limit})");
        let now = Timestamp::now();
        let want: Result<Vec<Relationship>, Refusal> =
            Self::check_filter(&at.engine, &filter).map(|_| {
                let reader = self.store.snapshot(at.rev).expect("model snapshot");
                reader
                    .read(&filter, None, usize::MAX)
                    .expect("model read")
                    .into_iter()
                    .filter(|r| !r.is_expired_at(now))
                    .collect()
            });
        let mut all = Vec::new();
        let mut cursor = None;
        let mut cons = c;
        let got = loop {
            let mut rc = self.rel();
            let msg = pb::ReadRequest {
                consistency: cons.clone(),
                filter: Some(dhow_wire::filter_pb(&filter)),
                optional_limit: limit,
                optional_cursor: cursor.clone(),
            };
            match self.stream("Read", rc.read(msg)).await {
                Err(s) => break Err(s),
                Ok(page) => {
                    let short = limit == 0 || page.len() < limit as usize;
                    if let Some(last) = page.last() {
                        cursor = last.after_result_cursor.clone();
                        if let Some(tk) = &last.read_at {
                            cons = consistency(pb::consistency::Requirement::AtExactSnapshot, tk);
                        }
                    }
                    all.extend(page);
                    if short || all.len() > 10_000 {
                        break Ok(all);
                    }
                }
            }
        };
        self.stats.reads += 1;
        let Some((want, got)) = self.agree(&what, &want, got) else {
            return;
        };
        let mut rels = Vec::new();
        for r in &got {
            self.check_token(&what, &at, r.read_at.as_ref());
            match dhow_wire::relationship(r.relationship.as_ref(), "relationship") {
                Ok(x) => rels.push(x),
                Err(e) => self.fail(format!("{what}: the server sent {r:?}: {e}")),
            }
        }
        ensure!(
            self,
            rels == want,
            "{what}: the model holds {:?}, the server read {:?}",
            want.iter().map(ToString::to_string).collect::<Vec<_>>(),
            rels.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }

    // -----------------------------------------------------------------------------------
    // Malformed requests

    /// A few requests that are wrong in one way each: every one must be refused with a
    /// well-formed error (or, for the few marked so, may succeed), and never kill the server.
    async fn malformed(&mut self) {
        let (at, _) = self.pick_at();
        let token = at.token.clone();
        let decoded = dhow_server::token::Token::decode(&token.token).expect("a server token");
        let forged = |cluster_id: u64, rev: u64| pb::ConsistencyToken {
            token: dhow_server::token::Token {
                cluster_id,
                revision: Revision(rev),
            }
            .encode(),
        };
        let long = "x".repeat(1025 + self.rng.below(5000));
        let t = self.any_type();
        let perm = self.any_member(&t);
        let obj = |t: &str, id: &str| {
            Some(pb::ObjectReference {
                object_type: t.into(),
                object_id: id.into(),
            })
        };
        let subj = |t: &str, id: &str, rel: &str| {
            Some(pb::SubjectReference {
                object: obj(t, id),
                optional_relation: rel.into(),
            })
        };
        let good_check = pb::CheckRequest {
            consistency: consistency(pb::consistency::Requirement::AtLeastAsFresh, &token),
            resource: obj(&t, "a"),
            permission: perm.clone(),
            subject: subj("user", "a", ""),
            ..Default::default()
        };
        for _ in 0..1 + self.rng.below(4) {
            let mut k = self.rng.below(25);
            if k == 6 && self.rng.chance(75) {
                k = 0; // a request at a future revision waits the consistency timeout
            }
            // (what, may it succeed)
            let mut pc = self.perm();
            let mut rc = self.rel();
            let (what, ok_allowed, got): (String, bool, Result<(), Status>) = match k {
                0 => ("Check without a resource".into(), false, {
                    let m = pb::CheckRequest {
                        resource: None,
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                1 => ("Check with an empty permission".into(), false, {
                    let m = pb::CheckRequest {
                        permission: String::new(),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                2 => ("Check with a huge resource id".into(), false, {
                    let m = pb::CheckRequest {
                        resource: obj(&t, &long),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                3 => ("Check with a bad id".into(), false, {
                    let id = self.rng.pick(&["a b", "é", "a\0b", "", "a#b", "*"]);
                    let m = pb::CheckRequest {
                        resource: obj(&t, id),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                4 => ("Check of a wildcard subject".into(), false, {
                    let m = pb::CheckRequest {
                        subject: subj("user", "*", ""),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                5 => ("Check with a garbage token".into(), false, {
                    let bad = pb::ConsistencyToken {
                        token: self.rng.pick(&["", "garbage", "AAAA", "%%%", "AQ"]).into(),
                    };
                    let m = pb::CheckRequest {
                        consistency: consistency(
                            pb::consistency::Requirement::AtLeastAsFresh,
                            &bad,
                        ),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                6 => ("Check at a revision far in the future".into(), false, {
                    let tk = forged(
                        decoded.cluster_id,
                        decoded.revision.0 + 1_000_000 + self.rng.below(1 << 20) as u64,
                    );
                    let req = if self.rng.chance(50) {
                        pb::consistency::Requirement::AtLeastAsFresh
                    } else {
                        pb::consistency::Requirement::AtExactSnapshot
                    };
                    let m = pb::CheckRequest {
                        consistency: consistency(req, &tk),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                7 => ("Check with another cluster's token".into(), false, {
                    let tk = forged(decoded.cluster_id ^ 0x5555, decoded.revision.0);
                    let m = pb::CheckRequest {
                        consistency: consistency(
                            pb::consistency::Requirement::AtExactSnapshot,
                            &tk,
                        ),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                8 => ("Check with minimize_latency false".into(), false, {
                    let m = pb::CheckRequest {
                        consistency: Some(pb::Consistency {
                            requirement: Some(pb::consistency::Requirement::MinimizeLatency(false)),
                        }),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                9 => ("LookupResources with a huge limit".into(), true, {
                    let m = pb::LookupResourcesRequest {
                        resource_object_type: t.clone(),
                        permission: perm.clone(),
                        subject: subj("user", "a", ""),
                        optional_limit: u32::MAX,
                        ..Default::default()
                    };
                    self.stream("LookupResources", pc.lookup_resources(m))
                        .await
                        .map(drop)
                }),
                10 => ("LookupResources with a garbage cursor".into(), false, {
                    let m = pb::LookupResourcesRequest {
                        resource_object_type: t.clone(),
                        permission: perm.clone(),
                        subject: subj("user", "a", ""),
                        optional_cursor: Some(pb::Cursor {
                            token: self.rng.pick(&["", "x", "AAAAAAAAAAAAAAAA", "////"]).into(),
                        }),
                        ..Default::default()
                    };
                    self.stream("LookupResources", pc.lookup_resources(m))
                        .await
                        .map(drop)
                }),
                11 => ("LookupResources with a Read's cursor".into(), true, {
                    let f = pb::RelationshipFilter {
                        resource_type: t.clone(),
                        ..Default::default()
                    };
                    let page = self
                        .stream(
                            "Read",
                            rc.read(pb::ReadRequest {
                                filter: Some(f),
                                optional_limit: 1,
                                ..Default::default()
                            }),
                        )
                        .await;
                    match page
                        .ok()
                        .and_then(|p| p.into_iter().next())
                        .and_then(|r| r.after_result_cursor)
                    {
                        None => Ok(()),
                        Some(cur) => {
                            let m = pb::LookupResourcesRequest {
                                resource_object_type: t.clone(),
                                permission: perm.clone(),
                                subject: subj("user", "a", ""),
                                optional_cursor: Some(cur),
                                ..Default::default()
                            };
                            let mut pc = self.perm();
                            match self.stream("LookupResources", pc.lookup_resources(m)).await {
                                Ok(_) => {
                                    self.fail("a Read's cursor resumed a LookupResources".into())
                                }
                                Err(s) => Err(s),
                            }
                        }
                    }
                }),
                12 => ("Read without a filter".into(), false, {
                    let m = pb::ReadRequest {
                        filter: None,
                        ..Default::default()
                    };
                    self.stream("Read", rc.read(m)).await.map(drop)
                }),
                13 => ("Read with an empty resource type".into(), false, {
                    let m = pb::ReadRequest {
                        filter: Some(pb::RelationshipFilter::default()),
                        ..Default::default()
                    };
                    self.stream("Read", rc.read(m)).await.map(drop)
                }),
                14 => ("Read with a garbage cursor".into(), false, {
                    let m = pb::ReadRequest {
                        filter: Some(pb::RelationshipFilter {
                            resource_type: t.clone(),
                            ..Default::default()
                        }),
                        optional_cursor: Some(pb::Cursor {
                            token: "bm90IGEgY3Vyc29y".into(),
                        }),
                        ..Default::default()
                    };
                    self.stream("Read", rc.read(m)).await.map(drop)
                }),
                15 => ("CheckBulk of too many items".into(), false, {
                    let item = pb::CheckBulkRequestItem {
                        resource: obj(&t, "a"),
                        permission: perm.clone(),
                        subject: subj("user", "a", ""),
                        ..Default::default()
                    };
                    let m = pb::CheckBulkRequest {
                        consistency: None,
                        items: vec![item; 1001],
                    };
                    self.unary("CheckBulk", pc.check_bulk(m)).await.map(drop)
                }),
                16 => ("Write of an update without a relationship".into(), false, {
                    let m = pb::WriteRequest {
                        updates: vec![pb::RelationshipUpdate {
                            operation: 2,
                            relationship: None,
                        }],
                        optional_preconditions: vec![],
                    };
                    self.unary("Write", rc.write(m)).await.map(drop)
                }),
                17 => ("Write with an unknown operation".into(), false, {
                    let Some(r) = self.valid_rel() else { continue };
                    let m = pb::WriteRequest {
                        updates: vec![pb::RelationshipUpdate {
                            operation: self.rng.pick(&[0, 4, 99, -1]),
                            relationship: Some(dhow_wire::relationship_pb(&r)),
                        }],
                        optional_preconditions: vec![],
                    };
                    self.unary("Write", rc.write(m)).await.map(drop)
                }),
                18 => (
                    "Write of a relationship with a bad caveat or expiration".into(),
                    false,
                    {
                        let Some(r) = self.valid_rel() else { continue };
                        let mut p = dhow_wire::relationship_pb(&r);
                        match self.rng.below(3) {
                            0 => {
                                p.optional_caveat = Some(pb::ContextualizedCaveat {
                                    caveat_name: String::new(),
                                    context: None,
                                })
                            }
                            1 => {
                                p.optional_expires_at = Some(dhow_wire::timestamp_pb(FUTURE));
                                if let Some(e) = p.optional_expires_at.as_mut() {
                                    e.nanos = -1;
                                }
                            }
                            _ => {
                                p.optional_expires_at = Some(dhow_wire::timestamp_pb(FUTURE));
                                if let Some(e) = p.optional_expires_at.as_mut() {
                                    e.seconds = i64::MAX;
                                }
                            }
                        }
                        let m = pb::WriteRequest {
                            updates: vec![pb::RelationshipUpdate {
                                operation: 2,
                                relationship: Some(p),
                            }],
                            optional_preconditions: vec![],
                        };
                        self.unary("Write", rc.write(m)).await.map(drop)
                    },
                ),
                19 => ("Delete without a filter".into(), false, {
                    let m = pb::DeleteRequest {
                        filter: None,
                        ..Default::default()
                    };
                    self.unary("Delete", rc.delete(m)).await.map(drop)
                }),
                20 => ("LookupSubjects with an empty subject type".into(), false, {
                    let m = pb::LookupSubjectsRequest {
                        resource: obj(&t, "a"),
                        permission: perm.clone(),
                        subject_object_type: String::new(),
                        ..Default::default()
                    };
                    self.stream("LookupSubjects", pc.lookup_subjects(m))
                        .await
                        .map(drop)
                }),
                21 => ("Expand of a malformed permission name".into(), false, {
                    let m = pb::ExpandRequest {
                        consistency: None,
                        resource: obj(&t, "a"),
                        permission: self
                            .rng
                            .pick(&["Bad-Name", "a", "x".repeat(70).as_str(), "é"])
                            .to_string(),
                    };
                    self.unary("Expand", pc.expand(m)).await.map(drop)
                }),
                22 => ("Check with a context over 64 KiB".into(), false, {
                    let big = format!("{{\"blob\": \"{}\"}}", "y".repeat(70 * 1024));
                    let m = pb::CheckRequest {
                        context: Some(context_struct(&big)),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                23 => ("Check with a deeply nested context".into(), true, {
                    // Below and past prost's recursion limit (100 nested messages, each
                    // list level two): past it the request does not decode, and gets
                    // INVALID_ARGUMENT MALFORMED_REQUEST like any other refusal.
                    let depth = self.rng.pick(&[10usize, 30, 40, 60, 120]);
                    let nested =
                        format!("{{\"deep\": {}1{}}}", "[".repeat(depth), "]".repeat(depth));
                    let m = pb::CheckRequest {
                        context: Some(context_struct(&nested)),
                        ..good_check.clone()
                    };
                    self.unary("Check", pc.check(m)).await.map(drop)
                }),
                _ => (
                    "Check with a wildcard or repeated actor chain".into(),
                    false,
                    {
                        let actors = if self.rng.chance(50) {
                            vec![subj("user", "*", "").unwrap()]
                        } else {
                            vec![
                                subj("user", "b", "").unwrap(),
                                subj("user", "b", "").unwrap(),
                            ]
                        };
                        let m = pb::CheckRequest {
                            actors,
                            ..good_check.clone()
                        };
                        self.unary("Check", pc.check(m)).await.map(drop)
                    },
                ),
            };
            self.stats.malformed += 1;
            match got {
                Ok(()) => ensure!(self, ok_allowed, "{what}: accepted"),
                Err(s) => {
                    let (_, reason) = self.refusal(&what, &s);
                    *self
                        .stats
                        .refusals
                        .entry(format!("malformed: {reason}"))
                        .or_default() += 1;
                }
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schemas_relationships_and_requests_agree_with_the_engine() {
    let secs = env_u64("DHOW_FUZZ_API_SECS").unwrap_or(30);
    let seed = env_u64("DHOW_FUZZ_API_SEED").unwrap_or(0x00D0_F022);
    // `N`, or `N-M` (a case and the ones before it that left it its state).
    let only: Option<(u64, u64)> = std::env::var("DHOW_FUZZ_API_CASE").ok().map(|v| {
        let n = |t: &str| {
            t.trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("DHOW_FUZZ_API_CASE={v}: {e}"))
        };
        match v.split_once('-') {
            Some((a, b)) => (n(a), n(b)),
            None => (n(&v), n(&v)),
        }
    });
    println!(
        "fuzz-api: seed {seed}, {secs} s{}",
        only.map(|(a, b)| format!(", cases {a} to {b} only"))
            .unwrap_or_default()
    );

    let dir = tempfile::tempdir().unwrap();
    let max = MAX_UPDATES.to_string();
    let mut server = Server::start_with(
        &dir.path().join("data"),
        0,
        &[],
        &[
            ("DHOW_MAX_UPDATES_PER_WRITE", max.as_str()),
            ("DHOW_CONSISTENCY_TIMEOUT", "100ms"),
        ],
    );
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to dhow serve");
    let mut fz = Fuzz {
        channel,
        seed,
        case: 0,
        rng: Rng::new(seed),
        schema_text: String::new(),
        schema: None,
        engine: None,
        store: MemStore::new(),
        ats: Vec::new(),
        stats: Stats::default(),
        verbose: std::env::var_os("DHOW_FUZZ_API_VERBOSE").is_some(),
        server_pid: server.child.id(),
    };
    let started = Instant::now();
    let budget = Duration::from_secs(secs);
    let cases: Box<dyn Iterator<Item = u64>> = match only {
        Some((a, b)) => Box::new(a..=b),
        None => Box::new(0..),
    };
    for case in cases {
        if only.is_none() && started.elapsed() >= budget {
            break;
        }
        fz.case = case;
        fz.rng = Rng::new(seed ^ case.wrapping_mul(0xA24B_AED4_963E_E407));
        let t0 = Instant::now();
        fz.run_case().await;
        fz.stats.cases += 1;
        if let Ok(Some(status)) = server.child.try_wait() {
            fz.fail(format!("dhow serve exited ({status}) during the case"));
        }
        if t0.elapsed() > Duration::from_secs(20) {
            println!("fuzz-api: case {case} took {:?}", t0.elapsed());
        }
    }
    println!(
        "fuzz-api: seed {seed}: {:?} in {:?}",
        fz.stats,
        started.elapsed()
    );
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "dhow serve is not running at the end"
    );
    if only.is_none() {
        assert!(fz.stats.cases >= 5, "only {} cases ran", fz.stats.cases);
        assert!(fz.stats.checks > 0 && fz.stats.lookups_resources > 0);
    }
}

/// Found by the fuzzer: a request whose protobuf nests deeper than the decoder's recursion
/// limit (prost's 100 nested messages; here a caveat context of 60 nested lists, two messages
/// each) cannot be decoded, and tonic answers INTERNAL "failed to decode Protobuf message:
/// ListValue.values: Value.kind: ... recursion limit reached", without an `ErrorInfo`. A
/// request the server cannot decode is the client's fault: now INVALID_ARGUMENT
/// `MALFORMED_REQUEST` (crates/dhow-server/src/malformed.rs). Regression test: it failed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_nested_past_the_decoder_limit_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 0);
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    SchemaServiceClient::new(channel.clone())
        .write_schema(pb::WriteSchemaRequest {
            schema: "definition user {}\ndefinition doc {\n    relation viewer: user\n}".into(),
        })
        .await
        .expect("schema");
    let depth = 60;
    let nested = format!("{{\"deep\": {}1{}}}", "[".repeat(depth), "]".repeat(depth));
    let req = pb::CheckRequest {
        resource: Some(pb::ObjectReference {
            object_type: "doc".into(),
            object_id: "a".into(),
        }),
        permission: "viewer".into(),
        subject: Some(pb::SubjectReference {
            object: Some(pb::ObjectReference {
                object_type: "user".into(),
                object_id: "a".into(),
            }),
            optional_relation: String::new(),
        }),
        context: Some(context_struct(&nested)),
        ..Default::default()
    };
    let s = PermissionServiceClient::new(channel)
        .check(req)
        .await
        .expect_err("a context nested 60 lists deep is refused");
    let reason = s.get_details_error_info().map(|i| i.reason);
    assert_eq!(
        (s.code(), reason.is_some()),
        (Code::InvalidArgument, true),
        "{s:?}"
    );
}

/// Regression, found with the fuzzer's model of Import: Import named the relationship at fault
/// by its index in the chunk after duplicates were merged (a later copy of a relationship
/// replaces an earlier one), not by its index in the request: with one duplicate before it,
/// the third relationship of the batch was reported as `relationships[1]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_names_the_refused_relationship_by_its_index_in_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 0);
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    SchemaServiceClient::new(channel.clone())
        .write_schema(pb::WriteSchemaRequest {
            schema: "definition user {}\ndefinition doc {\n    relation viewer: user\n}".into(),
        })
        .await
        .expect("schema");
    let batch = pb::ImportRequest {
        relationships: vec![
            dhow_tests::rel("doc:a#viewer@user:a"),
            dhow_tests::rel("doc:a#viewer@user:a"),
            dhow_tests::rel("doc:a#viewer@doc:b"),
        ],
    };
    let s = RelationshipServiceClient::new(channel)
        .import(tonic::codegen::tokio_stream::iter(vec![batch]))
        .await
        .expect_err("a subject type the relation does not allow");
    let field = s
        .get_details_error_info()
        .and_then(|i| i.metadata.get("field").cloned())
        .unwrap_or_default();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        field.starts_with("relationships[2]"),
        "the third relationship is at fault, the server names `{field}`: {}",
        s.message()
    );
}
