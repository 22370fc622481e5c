//! `dhow check`, `dhow expand`, `dhow lookup-resources` and `dhow lookup-subjects`.

use clap::Args;
use dhow_proto::v1 as pb;

use dhow_client::{
    block_on, print_read_token, token_text, CliError, Conn, ConnArgs, ConsistencyArgs, Out,
};
use dhow_wire::{object_pb, subject_pb};

use super::args::{
    check_args, object_arg, relation_arg, resource_permission_args, subject_arg, type_arg,
};
use super::format;

#[derive(Args)]
#[command(
    after_help = "Prints `true` or `false` on stdout and the token on stderr; the exit \
code is 0 either way (non-zero only on errors)."
)]
pub struct CheckArgs {
    /// `resource#permission@subject`, e.g. `document:1#view@user:alice`, or the three parts
    /// as separate arguments: `document:1 view user:alice`.
    #[arg(required = true, num_args = 1..=3, value_name = "CHECK")]
    pub check: Vec<String>,
    /// Also print the proof of the answer, one node per line (✓ granted, ✗ not).
    #[arg(long)]
    pub explain: bool,
    /// Print a JSON object {"allowed", "token", "proof"?} instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub consistency: ConsistencyArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args)]
pub struct ExpandArgs {
    /// `resource#permission`, e.g. `document:1#view`, or `document:1 view`.
    #[arg(required = true, num_args = 1..=2, value_name = "RESOURCE#PERMISSION")]
    pub target: Vec<String>,
    #[command(flatten)]
    pub consistency: ConsistencyArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args)]
pub struct LookupResourcesArgs {
    /// The type of the resources, e.g. `document`.
    pub resource_type: String,
    /// The permission or relation, e.g. `view`.
    pub permission: String,
    /// The subject, e.g. `user:alice` or `group:eng#member`.
    pub subject: String,
    /// At most this many results (0 for all).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    #[command(flatten)]
    pub consistency: ConsistencyArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args)]
pub struct LookupSubjectsArgs {
    /// The resource, e.g. `document:1`.
    pub resource: String,
    /// The permission or relation, e.g. `view`.
    pub permission: String,
    /// The type of the subjects, e.g. `user`.
    pub subject_type: String,
    /// Look up subject sets `type:id#RELATION` instead of objects.
    #[arg(long, value_name = "RELATION")]
    pub subject_relation: Option<String>,
    #[command(flatten)]
    pub consistency: ConsistencyArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// The check request for parsed arguments.
pub fn check_request(a: &CheckArgs) -> Result<pb::CheckRequest, CliError> {
    let (resource, permission, subject) = check_args(&a.check)?;
    Ok(pb::CheckRequest {
        consistency: a.consistency.to_proto(),
        resource: Some(object_pb(&resource)),
        permission,
        subject: Some(subject_pb(&subject)),
        explain: a.explain,
        actors: Vec::new(),
        context: None,
    })
}

pub fn check(a: CheckArgs) -> Result<(), CliError> {
    let req = check_request(&a)?;
    block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let resp = c
            .permissions()
            .check(req)
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let allowed = match pb::Permissionship::try_from(resp.permissionship) {
            Ok(pb::Permissionship::HasPermission) => true,
            Ok(pb::Permissionship::NoPermission) => false,
            _ => {
                return Err(CliError::Local(format!(
                    "the server answered with an unknown permissionship ({})",
                    resp.permissionship
                )))
            }
        };
        let token = token_text(resp.checked_at.as_ref());
        let mut out = Out::new();
        if a.json {
            let proof = if a.explain { resp.proof.as_ref() } else { None };
            out.line(format::check_json(allowed, &token, proof))?;
            return out.flush();
        }
        out.line(allowed)?;
        if a.explain {
            match &resp.proof {
                Some(p) => out.text(&format::proof(p))?,
                None => out.line("(the server sent no proof)")?,
            }
        }
        out.flush()?;
        print_read_token(resp.checked_at.as_ref());
        Ok(())
    })?
}

pub fn expand(a: ExpandArgs) -> Result<(), CliError> {
    let (resource, permission) = resource_permission_args(&a.target)?;
    block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let resp = c
            .permissions()
            .expand(pb::ExpandRequest {
                consistency: a.consistency.to_proto(),
                resource: Some(object_pb(&resource)),
                permission,
            })
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let mut out = Out::new();
        match &resp.tree {
            Some(t) => out.text(&format::expand(t))?,
            None => out.line("(empty tree)")?,
        }
        out.flush()?;
        print_read_token(resp.expanded_at.as_ref());
        Ok(())
    })?
}

pub fn lookup_resources(a: LookupResourcesArgs) -> Result<(), CliError> {
    let req = pb::LookupResourcesRequest {
        consistency: a.consistency.to_proto(),
        resource_object_type: type_arg(&a.resource_type)?,
        permission: relation_arg(&a.permission)?,
        subject: Some(subject_pb(&subject_arg(&a.subject)?)),
        optional_limit: a.limit,
        optional_cursor: None,
        context: None,
    };
    block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let mut stream = c
            .permissions()
            .lookup_resources(req)
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let mut out = Out::new();
        let mut token = None;
        while let Some(resp) = stream.message().await.map_err(|s| c.err(s))? {
            if token.is_none() {
                token = resp.looked_up_at;
            }
            out.line(&resp.resource_object_id)?;
        }
        out.flush()?;
        if token.is_some() {
            print_read_token(token.as_ref());
        }
        Ok(())
    })?
}

pub fn lookup_subjects(a: LookupSubjectsArgs) -> Result<(), CliError> {
    let req = pb::LookupSubjectsRequest {
        consistency: a.consistency.to_proto(),
        resource: Some(object_pb(&object_arg(&a.resource)?)),
        permission: relation_arg(&a.permission)?,
        subject_object_type: type_arg(&a.subject_type)?,
        optional_subject_relation: a
            .subject_relation
            .as_deref()
            .map(relation_arg)
            .transpose()?
            .unwrap_or_default(),
        context: None,
    };
    block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let mut stream = c
            .permissions()
            .lookup_subjects(req)
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let mut out = Out::new();
        let mut token = None;
        while let Some(resp) = stream.message().await.map_err(|s| c.err(s))? {
            if token.is_none() {
                token = resp.looked_up_at;
            }
            let mut found =
                dhow_wire::found_subject(resp.subject.as_ref(), &resp.excluded_subjects, "")
                    .map_err(|e| {
                        CliError::Local(format!("the server sent an invalid subject: {e}"))
                    })?;
            found.excluded.sort();
            out.line(format::found_subject(&found.subject, &found.excluded))?;
        }
        out.flush()?;
        if token.is_some() {
            print_read_token(token.as_ref());
        }
        Ok(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_request_from_args() {
        let a = CheckArgs {
            check: vec!["document:1#view@group:eng#member".into()],
            explain: true,
            json: false,
            consistency: ConsistencyArgs::default(),
            conn: ConnArgs {
                endpoint: "x".into(),
                ..Default::default()
            },
        };
        let r = check_request(&a).unwrap();
        assert_eq!(r.permission, "view");
        assert!(r.explain);
        assert_eq!(r.resource.unwrap().object_id, "1");
        assert_eq!(r.subject.unwrap().optional_relation, "member");
        assert!(r.consistency.is_none());
    }
}
