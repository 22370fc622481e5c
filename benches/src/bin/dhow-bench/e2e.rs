//! `dhow-bench load|check|write|health`: the end-to-end benchmark against a running server or
//! cluster. `load` writes the synthetic schema and imports the fixed-seed data set of
//! `dhow_benches` through the Import stream; `check`, `write` and `health` keep a fixed number
//! of requests in flight for a fixed time (closed loop, spread over several HTTP/2
//! connections) and print throughput and latency percentiles. `write --then-check` follows
//! every write with a check of what it wrote on another node: the cost of reading your own
//! write there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use dhow_benches::{Synthetic, XorShift};
use dhow_proto::v1 as pb;
use hdrhistogram::Histogram;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use dhow_client::{token_text, CliError, Conn, ConnArgs, Out};
use dhow_wire::{object_pb, relationship_pb, subject_pb};

/// The default size of the data set.
pub const DEFAULT_RELATIONSHIPS: usize = 1_000_000;
/// The largest data set `--relationships` accepts (the generator holds it all in memory).
pub const MAX_RELATIONSHIPS: usize = 50_000_000;
/// How many distinct check requests the mix cycles through.
const MIX_SIZE: usize = 10_000;
/// How long `load` retries the schema write while a freshly started node elects itself.
const ELECTION_WAIT: Duration = Duration::from_secs(10);

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Write the synthetic schema and import N synthetic relationships (fixed seed) through
    /// the Import stream; print the import time and rate.
    Load(LoadArgs),
    /// Send Check requests drawn from the data set `load` imported (the same N), with a fixed
    /// number in flight for a fixed time; print checks/s, latency percentiles and answers.
    Check(CheckBenchArgs),
    /// Acknowledged writes: each creates new relationships (`document:…#owner@user:bench`,
    /// needs the synthetic schema `load` writes); print writes/s and latency percentiles.
    Write(WriteBenchArgs),
    /// The same loop with the gRPC health Check (grpc.health.v1): the bare round trip.
    Health(LoopArgs),
    /// Print the Check requests `check` sends (the same N, the same order) as one JSON array
    /// of CheckRequest messages, for other load generators: ghz sends the elements of a `-d`
    /// array round robin.
    Mix(MixArgs),
    /// LookupResources for users with wide access: gives each of --users new users
    /// (`user:lookupI`) membership of the --groups top groups whose folder trees hold the most
    /// documents (written first, on the data set `load` imported), then looks up `document`
    /// `view` for each, one after the other, all results in one call; prints the results per
    /// user and the time of each call (mean, p50, max).
    Lookup(LookupBenchArgs),
}

#[derive(Args)]
pub struct LookupBenchArgs {
    /// The size of the data set `dhow bench load` imported.
    #[arg(long, short = 'n', default_value_t = DEFAULT_RELATIONSHIPS, value_parser = relationships_arg)]
    pub relationships: usize,
    /// How many users to give wide access and look up for.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub users: u32,
    /// How many top groups each of them joins.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub groups: u32,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args)]
pub struct MixArgs {
    /// The size of the data set `dhow bench load` imported: the requests are drawn from it.
    #[arg(long, short = 'n', default_value_t = DEFAULT_RELATIONSHIPS, value_parser = relationships_arg)]
    pub relationships: usize,
    /// How many requests (the first of `check`'s cycle).
    #[arg(long, default_value_t = MIX_SIZE as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
}

#[derive(Args)]
pub struct WriteBenchArgs {
    /// Relationships per Write.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub updates: u32,
    /// After each write, check one relationship it wrote on this endpoint (typically another
    /// node of the cluster) and report those checks too, with how many did not see the write.
    #[arg(long, value_name = "URL")]
    pub then_check: Option<String>,
    /// The consistency of the --then-check checks: at-least-as-fresh carries the write's
    /// token (the node waits until it has applied the write); minimize-latency does not.
    #[arg(long, value_enum, default_value_t = BenchConsistency::AtLeastAsFresh)]
    pub check_consistency: BenchConsistency,
    #[command(flatten)]
    pub run: LoopArgs,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Relationships to generate and import (at least 2000).
    #[arg(long, short = 'n', default_value_t = DEFAULT_RELATIONSHIPS, value_parser = relationships_arg)]
    pub relationships: usize,
    /// Relationships per Import message.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// The flags of a timed request loop.
#[derive(Args, Clone, Debug)]
pub struct LoopArgs {
    /// How long to measure: `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub duration: Duration,
    /// How long to run first without measuring (may be 0).
    #[arg(long, default_value = "1s", value_parser = warmup_arg)]
    pub warmup: Duration,
    /// Requests in flight at any moment (one task each, each sending its next request when
    /// the previous one is answered).
    #[arg(long, short = 'c', default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// HTTP/2 connections the tasks share, round robin (default: one per 4 tasks).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: Option<u32>,
    /// Threads of the client's async runtime.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub client_threads: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args)]
pub struct CheckBenchArgs {
    /// The size of the data set `dhow bench load` imported: the requests are drawn from it.
    #[arg(long, short = 'n', default_value_t = DEFAULT_RELATIONSHIPS, value_parser = relationships_arg)]
    pub relationships: usize,
    /// The consistency of every check.
    #[arg(long, value_enum, default_value_t = BenchConsistency::MinimizeLatency)]
    pub consistency: BenchConsistency,
    #[command(flatten)]
    pub run: LoopArgs,
}

/// The value of `dhow bench check --consistency`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchConsistency {
    /// The serving node's newest revision.
    MinimizeLatency,
    /// At least as fresh as the token of a write made just before the run (it touches
    /// `document:benchtoken#owner@user:benchtoken`).
    AtLeastAsFresh,
    /// A ReadIndex through the leader for every check.
    FullyConsistent,
}

impl BenchConsistency {
    fn name(self) -> &'static str {
        match self {
            BenchConsistency::MinimizeLatency => "minimize_latency",
            BenchConsistency::AtLeastAsFresh => "at_least_as_fresh",
            BenchConsistency::FullyConsistent => "fully_consistent",
        }
    }
}

fn relationships_arg(s: &str) -> Result<usize, String> {
    let n: usize = s
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a number of relationships"))?;
    let min = dhow_benches::MIN_RELATIONSHIPS;
    if !(min..=MAX_RELATIONSHIPS).contains(&n) {
        return Err(format!(
            "{n} relationships: the synthetic data set has between {min} and {MAX_RELATIONSHIPS}"
        ));
    }
    Ok(n)
}

/// Parses a duration as `dhow serve`'s settings do (`humantime`: `10s`, `500ms`, `1m`),
/// at most a day.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}; examples: 10s, 500ms, 1m)"))?;
    if d > Duration::from_secs(86_400) {
        return Err(format!("`{s}`: a duration of at most 24 hours is expected"));
    }
    Ok(d)
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}`: the measured duration must be more than 0"));
    }
    Ok(d)
}

fn warmup_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

pub fn run(cmd: BenchCommand) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Load(a) => load(a),
        BenchCommand::Check(a) => check(a),
        BenchCommand::Write(a) => write(a),
        BenchCommand::Health(a) => health(a),
        BenchCommand::Mix(a) => mix(a),
        BenchCommand::Lookup(a) => lookup(a),
    }
}

/// `dhow-bench lookup` (see [`BenchCommand::Lookup`]).
fn lookup(a: LookupBenchArgs) -> Result<(), CliError> {
    let data = dhow_benches::synthetic_graph(a.relationships);
    let ix = Index::new(&data);
    // Documents per top group: the group that views the root folder of each document's tree.
    let mut docs_of: HashMap<&str, usize> = HashMap::new();
    for doc in &ix.documents {
        let Some(mut folder) = ix.doc_folder.get(doc).copied() else {
            continue;
        };
        for _ in 0..64 {
            match ix.folder_parent.get(folder) {
                Some(&p) => folder = p,
                None => break,
            }
        }
        if let Some(g) = ix.folder_groups.get(folder).and_then(|g| g.first()) {
            *docs_of.entry(g).or_default() += 1;
        }
    }
    let mut groups: Vec<(&str, usize)> = docs_of.into_iter().collect();
    groups.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    groups.truncate(a.groups as usize);
    let groups: Vec<(String, usize)> = groups
        .into_iter()
        .map(|(g, n)| (g.to_string(), n))
        .collect();
    let reachable: usize = groups.iter().map(|g| g.1).sum();
    let updates: Vec<pb::RelationshipUpdate> = (0..a.users)
        .flat_map(|u| {
            groups.iter().map(move |(g, _)| {
                let r = dhow_tuples::Relationship::new(
                    dhow_tuples::ObjectRef::new("group", g.as_str()),
                    "member",
                    dhow_tuples::Subject::object("user", format!("lookup{u}")),
                );
                pb::RelationshipUpdate {
                    operation: pb::relationship_update::Operation::Touch as i32,
                    relationship: Some(relationship_pb(&r)),
                }
            })
        })
        .collect();
    drop(ix);
    drop(data);
    let rt = runtime(1)?;
    rt.block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let mut token = None;
        for chunk in updates.chunks(1000) {
            let r = c
                .relationships()
                .write(pb::WriteRequest {
                    updates: chunk.to_vec(),
                    optional_preconditions: Vec::new(),
                })
                .await
                .map_err(|s| c.err(s))?
                .into_inner();
            token = r.written_at;
        }
        let consistency = token.map(|t| pb::Consistency {
            requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(t)),
        });
        println!(
            "lookup: {} users, each in {} top groups (their trees hold {} documents)",
            a.users,
            groups.len(),
            reachable
        );
        let mut times = Vec::with_capacity(a.users as usize);
        let mut counts = Vec::with_capacity(a.users as usize);
        for u in 0..a.users {
            let started = Instant::now();
            let mut stream = c
                .permissions()
                .lookup_resources(pb::LookupResourcesRequest {
                    consistency: consistency.clone(),
                    resource_object_type: "document".into(),
                    permission: "view".into(),
                    subject: Some(subject_pb(&dhow_tuples::Subject::object(
                        "user",
                        format!("lookup{u}"),
                    ))),
                    ..Default::default()
                })
                .await
                .map_err(|s| c.err(s))?
                .into_inner();
            let mut n = 0usize;
            while stream.message().await.map_err(|s| c.err(s))?.is_some() {
                n += 1;
            }
            times.push(started.elapsed());
            counts.push(n);
        }
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let mut sorted = times.clone();
        sorted.sort();
        let p50 = sorted[(sorted.len() - 1) / 2];
        let max = sorted[sorted.len() - 1];
        let results = counts.iter().sum::<usize>() / counts.len();
        println!(
            "  results per user: min {}, mean {}, max {}",
            counts.iter().min().copied().unwrap_or(0),
            results,
            counts.iter().max().copied().unwrap_or(0)
        );
        println!(
            "  time per lookup: mean {:.1} ms, p50 {:.1} ms, max {:.1} ms",
            mean.as_secs_f64() * 1e3,
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        Ok(())
    })
}

/// `dhow-bench mix`: the check mix in the proto's JSON form (minimize_latency, as `check`
/// sends it by default).
fn mix(a: MixArgs) -> Result<(), CliError> {
    let data = dhow_benches::synthetic_graph(a.relationships);
    let requests = check_mix(&data, a.count as usize, None)?;
    let json = |o: &Option<pb::ObjectReference>| {
        let o = o.as_ref();
        serde_json::json!({
            "object_type": o.map_or("", |o| o.object_type.as_str()),
            "object_id": o.map_or("", |o| o.object_id.as_str()),
        })
    };
    let array: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            serde_json::json!({
                "consistency": { "minimize_latency": true },
                "resource": json(&r.resource),
                "permission": r.permission,
                "subject": { "object": json(&r.subject.as_ref().and_then(|s| s.object.clone())) },
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(array));
    Ok(())
}

/// A runtime for the client: single-threaded unless more threads were asked for.
fn runtime(threads: u32) -> Result<tokio::runtime::Runtime, CliError> {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads as usize);
        b
    };
    b.enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("cannot start the async runtime: {e}")))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// load

fn load(a: LoadArgs) -> Result<(), CliError> {
    let t0 = Instant::now();
    let data = dhow_benches::synthetic_graph(a.relationships);
    let total = data.relationships.len();
    let mut batches = Vec::with_capacity(total.div_ceil(a.batch_size as usize));
    for chunk in data.relationships.chunks(a.batch_size as usize) {
        let relationships = chunk.iter().map(relationship_pb).collect();
        batches.push(pb::ImportRequest { relationships });
    }
    let schema = data.schema.clone();
    drop(data);
    let generated = t0.elapsed();
    let n_batches = batches.len();

    runtime(1)?.block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let schema_token = write_schema(&c, schema).await?;
        let start = Instant::now();
        let resp = c
            .relationships()
            .import(tokio_stream::iter(batches))
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let took = start.elapsed();
        let rate = resp.loaded_count as f64 / secs(took).max(1e-9);
        let token = token_text(resp.written_at.as_ref());
        let mut out = Out::new();
        if a.json {
            out.line(serde_json::json!({
                "command": "load",
                "relationships": total,
                "imported": resp.loaded_count,
                "batch_size": a.batch_size,
                "batches": n_batches,
                "generate_seconds": secs(generated),
                "import_seconds": secs(took),
                "relationships_per_second": rate,
                "schema_token": schema_token,
                "token": token,
            }))?;
        } else {
            out.line(format_args!(
                "generated {total} relationships in {:.2} s",
                secs(generated)
            ))?;
            out.line(format_args!("schema written at {schema_token}"))?;
            out.line(format_args!(
                "imported {} relationships in {:.2} s: {:.0} relationships/s ({n_batches} batches of at most {})",
                resp.loaded_count,
                secs(took),
                rate,
                a.batch_size
            ))?;
            out.line(format_args!("token: {token}"))?;
        }
        out.flush()
    })
}

/// Writes the schema, retrying UNAVAILABLE while a freshly started node elects itself.
async fn write_schema(c: &Conn, schema: String) -> Result<String, CliError> {
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        match c
            .schema()
            .write_schema(pb::WriteSchemaRequest {
                schema: schema.clone(),
            })
            .await
        {
            Ok(r) => return Ok(token_text(r.into_inner().written_at.as_ref())),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => return Err(c.err(s)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the check mix

/// Which part of the mix a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `document:D#view@user:OWNER`: allowed by the direct `owner` relationship.
    Direct,
    /// `document:D#view@user:U` with U in a leaf group under the group that views D's root
    /// folder: allowed through four folder hops and five group levels.
    Deep,
    /// A random document and a random user: mostly denied, after exploring D's folder chain.
    Random,
    /// A random document and `user:nobody`: denied after exploring every branch.
    Outsider,
}

const KINDS: [Kind; 4] = [Kind::Direct, Kind::Deep, Kind::Random, Kind::Outsider];

/// The relationships of the data set, indexed for building the mix.
struct Index<'a> {
    documents: Vec<&'a str>,
    doc_folder: HashMap<&'a str, &'a str>,
    doc_owner: HashMap<&'a str, &'a str>,
    folder_parent: HashMap<&'a str, &'a str>,
    folder_groups: HashMap<&'a str, Vec<&'a str>>,
    group_children: HashMap<&'a str, Vec<&'a str>>,
    group_users: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Index<'a> {
    fn new(s: &'a Synthetic) -> Index<'a> {
        let mut ix = Index {
            documents: Vec::new(),
            doc_folder: HashMap::new(),
            doc_owner: HashMap::new(),
            folder_parent: HashMap::new(),
            folder_groups: HashMap::new(),
            group_children: HashMap::new(),
            group_users: HashMap::new(),
        };
        for r in &s.relationships {
            let res = r.resource.object_id.as_str();
            let sub = r.subject.object.object_id.as_str();
            let sub_type = r.subject.object.object_type.as_str();
            match (r.resource.object_type.as_str(), r.relation.as_str()) {
                ("document", "folder") => {
                    ix.documents.push(res);
                    ix.doc_folder.insert(res, sub);
                }
                ("document", "owner") => {
                    ix.doc_owner.insert(res, sub);
                }
                ("folder", "parent") => {
                    ix.folder_parent.insert(res, sub);
                }
                ("folder", "viewer") if sub_type == "group" => {
                    ix.folder_groups.entry(res).or_default().push(sub);
                }
                ("group", "member") if sub_type == "group" => {
                    ix.group_children.entry(res).or_default().push(sub);
                }
                ("group", "member") if sub_type == "user" => {
                    ix.group_users.entry(res).or_default().push(sub);
                }
                _ => {}
            }
        }
        // Only documents with both a folder and an owner (the generator may stop mid-document).
        let owners = &ix.doc_owner;
        ix.documents.retain(|d| owners.contains_key(d));
        ix
    }

    /// A user allowed on `doc` only through its root folder's group tree, if there is one.
    fn deep_member(&self, doc: &str, rng: &mut XorShift) -> Option<&'a str> {
        let mut folder = *self.doc_folder.get(doc)?;
        for _ in 0..64 {
            match self.folder_parent.get(folder) {
                Some(&p) => folder = p,
                None => break,
            }
        }
        let mut group = *self.folder_groups.get(folder)?.first()?;
        for _ in 0..64 {
            match self.group_children.get(group) {
                Some(cs) if !cs.is_empty() => group = cs[rng.below(cs.len())],
                _ => break,
            }
        }
        let users = self.group_users.get(group)?;
        (!users.is_empty()).then(|| users[rng.below(users.len())])
    }
}

fn check_request(doc: &str, user: &str, consistency: Option<pb::Consistency>) -> pb::CheckRequest {
    pb::CheckRequest {
        consistency,
        resource: Some(object_pb(&dhow_tuples::ObjectRef::new("document", doc))),
        permission: "view".into(),
        subject: Some(subject_pb(&dhow_tuples::Subject::object("user", user))),
        explain: false,
        actors: Vec::new(),
        context: None,
    }
}

/// `count` check requests in a fixed order, cycling through the four kinds of [`KINDS`].
fn check_mix(
    s: &Synthetic,
    count: usize,
    consistency: Option<pb::Consistency>,
) -> Result<Vec<pb::CheckRequest>, CliError> {
    let ix = Index::new(s);
    if ix.documents.is_empty() {
        return Err(CliError::Local(
            "the synthetic data set has no documents to check".into(),
        ));
    }
    let mut rng = XorShift::new(dhow_benches::SEED ^ 0xe2e);
    let mut out = Vec::with_capacity(count);
    let mut i = 0usize;
    // Kinds that find no user for a document are skipped; the bound only guards the loop.
    while out.len() < count && i < count.saturating_mul(8) {
        let kind = KINDS[i % KINDS.len()];
        i += 1;
        let doc = ix.documents[rng.below(ix.documents.len())];
        let user = match kind {
            Kind::Direct => ix.doc_owner.get(doc).map(|u| u.to_string()),
            Kind::Deep => ix.deep_member(doc, &mut rng).map(str::to_string),
            Kind::Random => Some(format!("u{:06}", rng.below(s.users))),
            Kind::Outsider => Some("nobody".to_string()),
        };
        if let Some(u) = user {
            out.push(check_request(doc, &u, consistency.clone()));
        }
    }
    if out.len() < count {
        return Err(CliError::Local(
            "cannot build the check requests from the synthetic data set".into(),
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// the timed loop

#[derive(Clone)]
enum Work {
    Check(Arc<Vec<pb::CheckRequest>>),
    Write(Arc<WritePlan>),
    Health,
}

/// What `bench write` sends.
struct WritePlan {
    /// Distinguishes this run's relationships from earlier runs'.
    run: String,
    updates: u32,
    /// Where and how to check each write afterwards (one connection per task, round robin).
    then_check: Option<(Vec<Conn>, BenchConsistency)>,
}

/// Latencies in nanoseconds, in an HDR histogram (3 significant figures, from 1 µs up to an
/// hour): constant memory per task and no sort, whatever the number of calls.
struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(
            Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3)
                .expect("valid histogram bounds"),
        )
    }
}

impl Latencies {
    fn record(&mut self, d: Duration) {
        // Past the highest trackable value is saturated to it (an hour).
        self.0
            .saturating_record(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    fn add(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("histograms of the same bounds");
    }

    fn len(&self) -> u64 {
        self.0.len()
    }

    /// The percentile `q` (0 < q <= 1), in milliseconds; 0 when nothing was recorded.
    fn percentile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let ns = if q >= 1.0 {
            self.0.max()
        } else {
            self.0.value_at_quantile(q)
        };
        ns as f64 / 1e6
    }
}

#[derive(Default)]
struct TaskOut {
    latencies_ns: Latencies,
    allowed: u64,
    denied: u64,
    last_done: Option<Instant>,
    /// `write --then-check`: the checks' latencies.
    check_latencies_ns: Latencies,
}

/// The measured outcome of a loop.
struct Summary {
    requests: u64,
    window: Duration,
    allowed: u64,
    denied: u64,
    latencies_ns: Latencies,
    /// `write --then-check`.
    check_latencies_ns: Latencies,
}

impl Summary {
    fn per_second(&self) -> f64 {
        self.requests as f64 / secs(self.window).max(1e-9)
    }

    /// The percentile `q` (0 < q <= 1), in milliseconds.
    fn percentile_ms(&self, q: f64) -> f64 {
        self.latencies_ns.percentile_ms(q)
    }
}

fn permissionship(resp: &pb::CheckResponse) -> Result<bool, CliError> {
    match pb::Permissionship::try_from(resp.permissionship) {
        Ok(pb::Permissionship::HasPermission) => Ok(true),
        Ok(pb::Permissionship::NoPermission) => Ok(false),
        _ => Err(CliError::Local(format!(
            "the server answered with an unknown permissionship ({})",
            resp.permissionship
        ))),
    }
}

async fn task(
    conn: Conn,
    work: Work,
    index: usize,
    tasks: usize,
    measure_from: Instant,
    end: Instant,
) -> Result<TaskOut, CliError> {
    let mut out = TaskOut::default();
    match work {
        Work::Check(reqs) => {
            let mut client = conn.permissions();
            // Each task starts at its own place in the mix.
            let mut i = index * reqs.len() / tasks;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let resp = client
                    .check(reqs[i % reqs.len()].clone())
                    .await
                    .map_err(|s| conn.err(s))?
                    .into_inner();
                let done = Instant::now();
                let allowed = permissionship(&resp)?;
                if sent >= measure_from {
                    out.latencies_ns.record(done - sent);
                    if allowed {
                        out.allowed += 1;
                    } else {
                        out.denied += 1;
                    }
                    out.last_done = Some(done);
                }
                i += 1;
            }
        }
        Work::Write(plan) => {
            let mut client = conn.relationships();
            let mut checker = plan
                .then_check
                .as_ref()
                .map(|(conns, mode)| (conns[index % conns.len()].permissions(), *mode));
            let mut n = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let mut updates = Vec::with_capacity(plan.updates as usize);
                for u in 0..plan.updates {
                    let r = dhow_tuples::Relationship::new(
                        dhow_tuples::ObjectRef::new(
                            "document",
                            format!("bw{}_{index}_{n}_{u}", plan.run),
                        ),
                        "owner",
                        dhow_tuples::Subject::object("user", "bench"),
                    );
                    updates.push(pb::RelationshipUpdate {
                        operation: pb::relationship_update::Operation::Touch as i32,
                        relationship: Some(relationship_pb(&r)),
                    });
                }
                let resp = client
                    .write(pb::WriteRequest {
                        updates,
                        optional_preconditions: Vec::new(),
                    })
                    .await
                    .map_err(|s| conn.err(s))?
                    .into_inner();
                let done = Instant::now();
                if sent >= measure_from {
                    out.latencies_ns.record(done - sent);
                    out.last_done = Some(done);
                }
                if let Some((check, mode)) = checker.as_mut() {
                    let consistency = match mode {
                        BenchConsistency::AtLeastAsFresh => {
                            pb::consistency::Requirement::AtLeastAsFresh(
                                resp.written_at.clone().ok_or_else(|| {
                                    CliError::Local("a write answer without a token".into())
                                })?,
                            )
                        }
                        BenchConsistency::MinimizeLatency => {
                            pb::consistency::Requirement::MinimizeLatency(true)
                        }
                        BenchConsistency::FullyConsistent => {
                            pb::consistency::Requirement::FullyConsistent(true)
                        }
                    };
                    let req = check_request(
                        &format!("bw{}_{index}_{n}_0", plan.run),
                        "bench",
                        Some(pb::Consistency {
                            requirement: Some(consistency),
                        }),
                    );
                    let asked = Instant::now();
                    let resp = check
                        .check(req)
                        .await
                        .map_err(|s| CliError::Local(format!("the check after a write: {s}")))?
                        .into_inner();
                    let answered = Instant::now();
                    if sent >= measure_from {
                        out.check_latencies_ns.record(answered - asked);
                        if permissionship(&resp)? {
                            out.allowed += 1;
                        } else {
                            out.denied += 1;
                        }
                        out.last_done = Some(answered);
                    }
                }
                n += 1;
            }
        }
        Work::Health => {
            let mut client = HealthClient::new(conn.channel.clone());
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let resp = client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map_err(|s| conn.err(s))?
                    .into_inner();
                let done = Instant::now();
                if resp.status != ServingStatus::Serving as i32 {
                    return Err(CliError::Local(format!(
                        "the server's health is {} (expected SERVING)",
                        ServingStatus::try_from(resp.status)
                            .map(|s| s.as_str_name().to_string())
                            .unwrap_or_else(|_| resp.status.to_string())
                    )));
                }
                if sent >= measure_from {
                    out.latencies_ns.record(done - sent);
                    out.last_done = Some(done);
                }
            }
        }
    }
    Ok(out)
}

/// The connections a loop uses: `--connections`, or one per 4 tasks; never more than tasks.
fn connection_count(a: &LoopArgs) -> usize {
    let tasks = a.concurrency as usize;
    let n = a
        .connections
        .map(|c| c as usize)
        .unwrap_or(tasks.div_ceil(4));
    n.clamp(1, tasks)
}

async fn connect_all(a: &LoopArgs) -> Result<Vec<Conn>, CliError> {
    let mut conns = Vec::new();
    for _ in 0..connection_count(a) {
        // Each `connect` opens its own HTTP/2 connection.
        conns.push(Conn::connect(&a.conn).await?);
    }
    Ok(conns)
}

async fn run_loop(conns: &[Conn], work: Work, a: &LoopArgs) -> Result<Summary, CliError> {
    let tasks = a.concurrency as usize;
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let conn = conns[t % conns.len()].clone();
            tokio::spawn(task(conn, work.clone(), t, tasks, measure_from, end))
        })
        .collect();
    let mut s = Summary {
        requests: 0,
        window: a.duration,
        allowed: 0,
        denied: 0,
        latencies_ns: Latencies::default(),
        check_latencies_ns: Latencies::default(),
    };
    let mut last: Option<Instant> = None;
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(o)) => {
                s.allowed += o.allowed;
                s.denied += o.denied;
                s.latencies_ns.add(&o.latencies_ns);
                s.check_latencies_ns.add(&o.check_latencies_ns);
                last = last.max(o.last_done);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(CliError::Local(format!("a benchmark task failed: {e}")));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    s.requests = s.latencies_ns.len();
    if let Some(l) = last {
        // From the start of measurement to the last answer counted.
        s.window = l.saturating_duration_since(measure_from).max(a.duration);
    }
    Ok(s)
}

fn report(
    what: &str,
    unit: &str,
    a: &LoopArgs,
    connections: usize,
    consistency: Option<&str>,
    s: &Summary,
    with_answers: bool,
) -> Result<(), CliError> {
    let mut out = Out::new();
    let (p50, p95, p99, max) = (
        s.percentile_ms(0.50),
        s.percentile_ms(0.95),
        s.percentile_ms(0.99),
        s.percentile_ms(1.0),
    );
    if a.json {
        let mut v = serde_json::json!({
            "command": what,
            "concurrency": a.concurrency,
            "connections": connections,
            "client_threads": a.client_threads,
            "warmup_seconds": secs(a.warmup),
            "seconds": secs(s.window),
            "requests": s.requests,
            "per_second": s.per_second(),
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "max": max},
        });
        if let Some(c) = consistency {
            v["consistency"] = c.into();
        }
        if with_answers {
            v["allowed"] = s.allowed.into();
            v["denied"] = s.denied.into();
        }
        out.line(v)?;
    } else {
        let mut head = format!(
            "{what}: {} in flight on {connections} connection(s), {} client thread(s)",
            a.concurrency, a.client_threads
        );
        if let Some(c) = consistency {
            head.push_str(&format!(", consistency {c}"));
        }
        out.line(head)?;
        out.line(format_args!(
            "  {} {unit} in {:.2} s (after {:.2} s warm-up): {:.1} {unit}/s",
            s.requests,
            secs(s.window),
            secs(a.warmup),
            s.per_second()
        ))?;
        if with_answers {
            out.line(format_args!(
                "  answers: {} allowed, {} denied",
                s.allowed, s.denied
            ))?;
        }
        out.line(format_args!(
            "  latency: p50 {p50:.3} ms, p95 {p95:.3} ms, p99 {p99:.3} ms, max {max:.3} ms"
        ))?;
    }
    out.flush()
}

// ---------------------------------------------------------------------------------------------
// check and health

fn check(a: CheckBenchArgs) -> Result<(), CliError> {
    let data = dhow_benches::synthetic_graph(a.relationships);
    let rt = runtime(a.run.client_threads)?;
    rt.block_on(async {
        let conns = connect_all(&a.run).await?;
        let consistency = match a.consistency {
            BenchConsistency::MinimizeLatency => {
                pb::consistency::Requirement::MinimizeLatency(true)
            }
            BenchConsistency::FullyConsistent => {
                pb::consistency::Requirement::FullyConsistent(true)
            }
            BenchConsistency::AtLeastAsFresh => {
                pb::consistency::Requirement::AtLeastAsFresh(token_write(&conns[0]).await?)
            }
        };
        let consistency = Some(pb::Consistency {
            requirement: Some(consistency),
        });
        let mix = check_mix(&data, MIX_SIZE, consistency)?;
        drop(data);
        let s = run_loop(&conns, Work::Check(Arc::new(mix)), &a.run).await?;
        report(
            "check",
            "checks",
            &a.run,
            conns.len(),
            Some(a.consistency.name()),
            &s,
            true,
        )
    })
}

/// The write whose token `--consistency at-least-as-fresh` uses.
async fn token_write(c: &Conn) -> Result<pb::ConsistencyToken, CliError> {
    let r = dhow_tuples::Relationship::new(
        dhow_tuples::ObjectRef::new("document", "benchtoken"),
        "owner",
        dhow_tuples::Subject::object("user", "benchtoken"),
    );
    let resp = c
        .relationships()
        .write(pb::WriteRequest {
            updates: vec![pb::RelationshipUpdate {
                operation: pb::relationship_update::Operation::Touch as i32,
                relationship: Some(relationship_pb(&r)),
            }],
            optional_preconditions: Vec::new(),
        })
        .await
        .map_err(|s| c.err(s))?
        .into_inner();
    resp.written_at
        .ok_or_else(|| CliError::Local("the server's write answer carries no token".into()))
}

fn write(a: WriteBenchArgs) -> Result<(), CliError> {
    let rt = runtime(a.run.client_threads)?;
    rt.block_on(async {
        let conns = connect_all(&a.run).await?;
        let then_check = match &a.then_check {
            Some(ep) => {
                let mut v = Vec::with_capacity(conns.len());
                for _ in 0..conns.len() {
                    v.push(Conn::connect(&a.run.conn.with_endpoint(ep)).await?);
                }
                Some((v, a.check_consistency))
            }
            None => None,
        };
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let plan = WritePlan {
            run: format!("{run:x}"),
            updates: a.updates,
            then_check,
        };
        let s = run_loop(&conns, Work::Write(Arc::new(plan)), &a.run).await?;
        report("write", "writes", &a.run, conns.len(), None, &s, false)?;
        match &a.then_check {
            Some(ep) => report_then_check(&a, ep, &s),
            None => Ok(()),
        }
    })
}

/// The `--then-check` part of `bench write`.
fn report_then_check(a: &WriteBenchArgs, endpoint: &str, s: &Summary) -> Result<(), CliError> {
    let l = &s.check_latencies_ns;
    let (p50, p95, p99, max) = (
        l.percentile_ms(0.50),
        l.percentile_ms(0.95),
        l.percentile_ms(0.99),
        l.percentile_ms(1.0),
    );
    let mut out = Out::new();
    if a.run.json {
        out.line(serde_json::json!({
            "command": "write.then_check",
            "endpoint": endpoint,
            "consistency": a.check_consistency.name(),
            "checks": l.len(),
            "saw_the_write": s.allowed,
            "missed_the_write": s.denied,
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "max": max},
        }))?;
    } else {
        out.line(format_args!(
            "then check on {endpoint}, consistency {}: {} checks; {} saw the write, {} did not \
             (yet)",
            a.check_consistency.name(),
            l.len(),
            s.allowed,
            s.denied
        ))?;
        out.line(format_args!(
            "  latency: p50 {p50:.3} ms, p95 {p95:.3} ms, p99 {p99:.3} ms, max {max:.3} ms"
        ))?;
    }
    out.flush()
}

fn health(a: LoopArgs) -> Result<(), CliError> {
    let rt = runtime(a.client_threads)?;
    rt.block_on(async {
        let conns = connect_all(&a).await?;
        let s = run_loop(&conns, Work::Health, &a).await?;
        report("health", "calls", &a, conns.len(), None, &s, false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("1s 500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("2d").is_err());
        assert!(duration_arg("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("ten")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("1e10").is_err());
    }

    #[test]
    fn relationship_counts() {
        assert_eq!(relationships_arg("1_000_000").unwrap(), 1_000_000);
        assert!(relationships_arg("10")
            .unwrap_err()
            .contains("between 2000"));
        assert!(relationships_arg("lots").is_err());
    }

    #[test]
    fn percentiles_come_from_the_histogram_within_its_precision() {
        let mut l = Latencies::default();
        for i in 1..=100u64 {
            l.record(Duration::from_millis(i));
        }
        let mut other = Latencies::default();
        other.record(Duration::from_millis(1));
        l.add(&other);
        assert_eq!(l.len(), 101);
        let s = Summary {
            requests: l.len(),
            window: Duration::from_secs(1),
            allowed: 0,
            denied: 0,
            latencies_ns: l,
            check_latencies_ns: Latencies::default(),
        };
        // Three significant figures: within 0.1% of the exact nearest-rank values.
        for (q, want) in [(0.50, 50.0), (0.99, 99.0), (1.0, 100.0)] {
            let got = s.percentile_ms(q);
            assert!(
                (got - want).abs() <= want * 0.001,
                "p{q}: {got} ms, want {want}"
            );
        }
        assert_eq!(Latencies::default().percentile_ms(0.5), 0.0);
        assert_eq!(s.per_second(), 101.0);
    }

    #[test]
    fn connections_default_to_one_per_four_tasks() {
        let mut a = LoopArgs {
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            concurrency: 64,
            connections: None,
            client_threads: 1,
            json: false,
            conn: ConnArgs {
                endpoint: String::new(),
                ..Default::default()
            },
        };
        assert_eq!(connection_count(&a), 16);
        a.concurrency = 1;
        assert_eq!(connection_count(&a), 1);
        a.connections = Some(8);
        assert_eq!(connection_count(&a), 1, "never more connections than tasks");
    }

    #[test]
    fn the_mix_is_deterministic_and_has_every_kind() {
        let s = dhow_benches::synthetic_graph(2_000);
        let a = check_mix(&s, 400, None).unwrap();
        let b = check_mix(&s, 400, None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 400);
        let user = |r: &pb::CheckRequest| {
            r.subject
                .as_ref()
                .and_then(|s| s.object.as_ref())
                .map(|o| o.object_id.clone())
                .unwrap()
        };
        assert!(a.iter().any(|r| user(r) == "nobody"));
        // Direct: the owner of the document.
        let ix = Index::new(&s);
        let first_doc = a[0].resource.as_ref().unwrap().object_id.clone();
        assert_eq!(
            ix.doc_owner.get(first_doc.as_str()).copied(),
            Some(user(&a[0]).as_str())
        );
    }
}
