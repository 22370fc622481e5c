//! `dhow audit`: the decision audit logs of the cluster's nodes (each keeps its own),
//! queried with the same filters on each and merged by time.

use clap::Args;
use dhow_audit::{Outcome, Query, Record};
use dhow_client::{block_on, CliError, Conn, ConnArgs, Out};
use dhow_tuples::Timestamp;

#[derive(Args)]
#[command(
    after_help = "Prints one line per decision, oldest first: time, node, outcome, \
`resource#permission`, `actor for ... for principal`, the caller, the revision, and the link \
that denied; --json prints one JSON object per line instead. Needs the `audit` or `admin` role."
)]
pub struct AuditArgs {
    /// Only decisions for this principal, e.g. `user:alice`.
    #[arg(long)]
    pub principal: Option<String>,
    /// Only decisions whose chain has this actor, e.g. `agent:assistant`.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only decisions on this resource, e.g. `document:plan`.
    #[arg(long)]
    pub resource: Option<String>,
    /// Only `allowed`, `denied` or `conditional` decisions.
    #[arg(long, value_name = "OUTCOME")]
    pub outcome: Option<String>,
    /// From this time (RFC 3339, inclusive).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Until this time (RFC 3339, exclusive).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many records (the newest; 0 for all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// The nodes to ask (their public endpoints, comma-separated; default: --endpoint). Each
    /// node keeps the log of the decisions it made.
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    pub nodes: Vec<String>,
    /// Print the proofs recorded with the decisions.
    #[arg(long)]
    pub proofs: bool,
    /// One JSON object per record.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

fn time_arg(s: &Option<String>, flag: &str) -> Result<Option<i64>, CliError> {
    s.as_deref()
        .map(|t| {
            Timestamp::parse_rfc3339(t)
                .map(|t| t.0)
                .map_err(|e| CliError::Local(format!("--{flag}: {e}")))
        })
        .transpose()
}

/// The query of the arguments.
pub fn query(a: &AuditArgs) -> Result<Query, CliError> {
    let outcome = match a.outcome.as_deref() {
        None => None,
        Some("allowed") => Some(Outcome::Allowed),
        Some("denied") => Some(Outcome::Denied),
        Some("conditional") => Some(Outcome::Conditional),
        Some(o) => {
            return Err(CliError::Local(format!(
                "--outcome: `{o}` is not allowed, denied or conditional"
            )))
        }
    };
    Ok(Query {
        principal: a.principal.clone(),
        actor: a.actor.clone(),
        resource: a.resource.clone(),
        outcome,
        since_us: time_arg(&a.since, "since")?,
        until_us: time_arg(&a.until, "until")?,
        limit: a.limit,
    })
}

/// One record as a line.
pub fn line(r: &Record) -> String {
    let mut chain = String::new();
    for a in &r.actors {
        chain.push_str(a);
        chain.push_str(" for ");
    }
    chain.push_str(&r.principal);
    let mut s = format!(
        "{} node {} {} {}#{} {} caller {} revision {}",
        Timestamp(r.time_us).to_rfc3339(),
        r.node,
        r.outcome.name(),
        r.resource,
        r.permission,
        chain,
        r.caller,
        r.revision
    );
    if let Some(d) = &r.denied_at {
        s.push_str(&format!(" denied at {d}"));
    }
    s
}

pub fn run(a: AuditArgs) -> Result<(), CliError> {
    let q = query(&a)?;
    let nodes = if a.nodes.is_empty() {
        vec![a.conn.endpoint.clone()]
    } else {
        a.nodes.clone()
    };
    let req = dhow_wire::audit_query_pb(&q);
    block_on(async {
        let mut all: Vec<Record> = Vec::new();
        let mut dropped = 0;
        for ep in &nodes {
            let c = Conn::connect(&a.conn.with_endpoint(ep)).await?;
            let resp = c
                .audit()
                .query_decisions(req.clone())
                .await
                .map_err(|s| c.err(s))?
                .into_inner();
            dropped += resp.dropped;
            for (i, r) in resp.records.iter().enumerate() {
                all.push(
                    dhow_wire::audit_record(r, &format!("records[{i}]")).map_err(|e| {
                        CliError::Local(format!("{ep} sent an invalid record: {e}"))
                    })?,
                );
            }
        }
        // Merged by time (then node, for a stable order).
        all.sort_by_key(|r| (r.time_us, r.node));
        if q.limit > 0 && all.len() > q.limit {
            all.drain(..all.len() - q.limit);
        }
        let mut out = Out::new();
        for r in &all {
            if a.json {
                let mut v = serde_json::to_value(r)
                    .map_err(|e| CliError::Local(format!("encoding a record: {e}")))?;
                if !a.proofs {
                    v.as_object_mut().map(|o| o.remove("proof"));
                }
                out.line(v)?;
            } else {
                out.line(line(r))?;
                if let (true, Some(p)) = (a.proofs, &r.proof) {
                    for l in p.lines() {
                        out.line(format!("    {l}"))?;
                    }
                }
            }
        }
        out.flush()?;
        if dropped > 0 {
            eprintln!("note: the nodes dropped {dropped} records (their audit queues were full)");
        }
        Ok(())
    })?
}
