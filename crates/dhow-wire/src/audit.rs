//! Audit records and queries (`dhow-audit`) to and from `dhow.v1` AuditService messages.

use dhow_audit::{Outcome, Query, Record};
use dhow_proto::v1 as pb;
use dhow_tuples::Timestamp;

use crate::decode::timestamp;
use crate::encode::timestamp_pb;
use crate::{WireError, WireResult};

fn outcome_pb(o: Outcome) -> pb::DecisionOutcome {
    match o {
        Outcome::Allowed => pb::DecisionOutcome::Allowed,
        Outcome::Denied => pb::DecisionOutcome::Denied,
        Outcome::Conditional => pb::DecisionOutcome::Conditional,
    }
}

/// An outcome; `None` for UNSPECIFIED (any, in a query).
fn outcome(v: i32, field: &str) -> WireResult<Option<Outcome>> {
    match pb::DecisionOutcome::try_from(v) {
        Ok(pb::DecisionOutcome::Unspecified) => Ok(None),
        Ok(pb::DecisionOutcome::Allowed) => Ok(Some(Outcome::Allowed)),
        Ok(pb::DecisionOutcome::Denied) => Ok(Some(Outcome::Denied)),
        Ok(pb::DecisionOutcome::Conditional) => Ok(Some(Outcome::Conditional)),
        Err(_) => Err(WireError::invalid(field, format!("unknown outcome {v}"))),
    }
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

pub fn audit_record_pb(r: &Record) -> pb::DecisionRecord {
    pb::DecisionRecord {
        time: Some(timestamp_pb(Timestamp(r.time_us))),
        node_id: r.node,
        caller: r.caller.clone(),
        principal: r.principal.clone(),
        actors: r.actors.clone(),
        resource: r.resource.clone(),
        permission: r.permission.clone(),
        outcome: outcome_pb(r.outcome) as i32,
        revision: r.revision,
        denied_at: r.denied_at.clone().unwrap_or_default(),
        proof: r.proof.clone().unwrap_or_default(),
    }
}

pub fn audit_record(r: &pb::DecisionRecord, field: &str) -> WireResult<Record> {
    let time = r
        .time
        .as_ref()
        .ok_or_else(|| WireError::missing(format!("{field}.time")))?;
    Ok(Record {
        time_us: timestamp(time, &format!("{field}.time"))?.0,
        node: r.node_id,
        caller: r.caller.clone(),
        principal: r.principal.clone(),
        actors: r.actors.clone(),
        resource: r.resource.clone(),
        permission: r.permission.clone(),
        outcome: outcome(r.outcome, &format!("{field}.outcome"))?
            .ok_or_else(|| WireError::missing(format!("{field}.outcome")))?,
        revision: r.revision,
        denied_at: text(&r.denied_at),
        proof: text(&r.proof),
    })
}

pub fn audit_query_pb(q: &Query) -> pb::QueryDecisionsRequest {
    pb::QueryDecisionsRequest {
        principal: q.principal.clone().unwrap_or_default(),
        actor: q.actor.clone().unwrap_or_default(),
        resource: q.resource.clone().unwrap_or_default(),
        outcome: q.outcome.map(|o| outcome_pb(o) as i32).unwrap_or(0),
        since: q.since_us.map(|t| timestamp_pb(Timestamp(t))),
        until: q.until_us.map(|t| timestamp_pb(Timestamp(t))),
        limit: q.limit.min(u32::MAX as usize) as u32,
    }
}

pub fn audit_query(q: &pb::QueryDecisionsRequest) -> WireResult<Query> {
    Ok(Query {
        principal: text(&q.principal),
        actor: text(&q.actor),
        resource: text(&q.resource),
        outcome: outcome(q.outcome, "outcome")?,
        since_us: q
            .since
            .as_ref()
            .map(|t| timestamp(t, "since"))
            .transpose()?
            .map(|t| t.0),
        until_us: q
            .until
            .as_ref()
            .map(|t| timestamp(t, "until"))
            .transpose()?
            .map(|t| t.0),
        limit: q.limit as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_queries_round_trip() {
        let r = Record {
            time_us: 1_764_000_000_123_456,
            node: 2,
            caller: "jwt:https://idp#alice".into(),
            principal: "user:alice".into(),
            actors: vec!["agent:a".into(), "agent:b".into()],
            resource: "document:1".into(),
            permission: "view".into(),
            outcome: Outcome::Denied,
            revision: 7,
            denied_at: Some("actors[1]".into()),
            proof: Some("✗ ...".into()),
        };
        assert_eq!(audit_record(&audit_record_pb(&r), "r").unwrap(), r);
        let q = Query {
            principal: Some("user:alice".into()),
            actor: None,
            resource: Some("document:1".into()),
            outcome: Some(Outcome::Allowed),
            since_us: Some(5),
            until_us: None,
            limit: 3,
        };
        assert_eq!(audit_query(&audit_query_pb(&q)).unwrap(), q);
        let bad = pb::QueryDecisionsRequest {
            outcome: 99,
            ..Default::default()
        };
        assert!(audit_query(&bad).is_err());
    }
}
