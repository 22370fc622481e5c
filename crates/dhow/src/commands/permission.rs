//! `dhow check`, `dhow expand`, `dhow lookup-resources` and `dhow lookup-subjects`.

use clap::Args;
use dhow_proto::v1 as pb;

use dhow_client::{
    block_on, print_read_token, token_text, CliError, Conn, ConnArgs, ConsistencyArgs, Out,
};
use dhow_engine::{
    ChainProof, CheckRequest as EngineCheck, DelegatedCheck, DelegatedResult, Permissionship,
};
use dhow_wire::{object_pb, subject_pb};

use super::args::{
    check_args, object_arg, relation_arg, resource_permission_args, subject_arg, type_arg,
};
use super::format;

#[derive(Args)]
#[command(
    after_help = "Prints `true`, `false`, or `conditional (missing P1, P2)` (the subject has \
the permission only if caveats hold that need the context parameters P1, P2, which neither \
--context nor the relationships supplied) on stdout, and the token on stderr; the exit code \
is 0 in every case (non-zero only on errors)."
)]
pub struct CheckArgs {
    /// `resource#permission@subject`, e.g. `document:1#view@user:alice`, or the three parts
    /// as separate arguments: `document:1 view user:alice`.
    #[arg(required = true, num_args = 1..=3, value_name = "CHECK")]
    pub check: Vec<String>,
    /// Also print the proof of the answer, one node per line (✓ granted, ✗ not, ? conditional);
    /// with --actor, the chain as a tree: the principal's proof, then each hop's.
    #[arg(long)]
    pub explain: bool,
    /// A delegated check (docs/agents.md): an actor acting for the subject, e.g.
    /// `--actor agent:summariser`. Repeat it for a chain, outermost first: the actor that
    /// makes the request, then the one it acts for, ..., the last acting for the subject.
    #[arg(long = "actor", value_name = "TYPE:ID")]
    pub actors: Vec<String>,
    /// Print a JSON object {"permissionship", "allowed", "missing"?, "token", "proof"?}
    /// instead (`permissionship` is `allowed`, `denied` or `conditional`).
    #[arg(long)]
    pub json: bool,
    /// Values of caveat parameters, a JSON object, e.g. `{"user_ip": "10.1.2.3"}`.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
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
    /// Only the resources these actors, acting for the subject, may reach (a delegation chain,
    /// outermost first, as `dhow check --actor`).
    #[arg(long = "actor", value_name = "TYPE:ID")]
    pub actors: Vec<String>,
    /// Values of caveat parameters, a JSON object, e.g. `{"user_ip": "10.1.2.3"}`.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
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
    /// Values of caveat parameters, a JSON object, e.g. `{"user_ip": "10.1.2.3"}`.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
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
        actors: actors_arg(&a.actors)?,
        context: context_arg(a.context.as_deref())?,
    })
}

/// `--actor` values: objects, outermost first.
fn actors_arg(actors: &[String]) -> Result<Vec<pb::SubjectReference>, CliError> {
    let objects = actors
        .iter()
        .map(|a| object_arg(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(dhow_wire::actors_pb(&objects))
}

/// A delegated check's answer as a tree (the principal's proof, then each hop's), from the
/// request that was sent and the response.
fn chain_tree(req: &pb::CheckRequest, resp: &pb::CheckResponse, answer: &Permissionship) -> String {
    let decoded = (|| {
        let resource = dhow_wire::object(req.resource.as_ref(), "resource", false)?;
        let subject = dhow_wire::subject(req.subject.as_ref(), "subject", false)?;
        let actors = dhow_wire::actors(&req.actors, "actors")?;
        let proof = resp
            .proof
            .as_ref()
            .map(|p| dhow_wire::proof(p, "proof"))
            .transpose()?;
        let actor_proofs = resp
            .actor_proofs
            .iter()
            .map(|p| dhow_wire::proof(p, "actor_proofs"))
            .collect::<Result<Vec<_>, _>>()?;
        let denied_at = resp
            .denied_at
            .as_ref()
            .map(|l| dhow_wire::chain_link(l, "denied_at"))
            .transpose()?;
        Ok::<_, dhow_wire::WireError>((resource, subject, actors, proof, actor_proofs, denied_at))
    })();
    let (resource, subject, actors, proof, actor_proofs, denied_at) = match decoded {
        Ok(d) => d,
        Err(e) => return format!("(the server sent an invalid chain: {e})\n"),
    };
    let revision = resp
        .checked_at
        .as_ref()
        .and_then(|t| dhow_server::token::Token::decode(&t.token).ok())
        .map(|t| t.revision)
        .unwrap_or(dhow_tuples::Revision(0));
    let request = DelegatedCheck::new(
        EngineCheck::new(resource, req.permission.clone(), subject),
        actors,
    );
    let result = DelegatedResult {
        permissionship: answer.clone(),
        allowed: answer.is_allowed(),
        revision,
        proof,
        actor_proofs,
        denied_at,
    };
    ChainProof {
        request: &request,
        result: &result,
    }
    .to_string()
}

pub fn check(a: CheckArgs) -> Result<(), CliError> {
    let req = check_request(&a)?;
    block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let resp = c
            .permissions()
            .check(req.clone())
            .await
            .map_err(|s| c.err(s))?
            .into_inner();
        let answer = dhow_wire::permissionship(
            resp.permissionship,
            resp.partial_caveat_info.as_ref(),
            "permissionship",
        )
        .map_err(|e| CliError::Local(format!("the server sent an invalid answer: {e}")))?;
        let token = token_text(resp.checked_at.as_ref());
        let mut out = Out::new();
        if a.json {
            let proof = if a.explain { resp.proof.as_ref() } else { None };
            out.line(format::check_json(&answer, &token, proof))?;
            return out.flush();
        }
        out.line(format::permissionship(&answer))?;
        if a.explain && !req.actors.is_empty() {
            out.text(&chain_tree(&req, &resp, &answer))?;
        } else if a.explain {
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
        context: context_arg(a.context.as_deref())?,
        actors: actors_arg(&a.actors)?,
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
                token = resp.looked_up_at.clone();
            }
            let found = dhow_wire::found_resource(&resp, "").map_err(|e| {
                CliError::Local(format!("the server sent an invalid resource: {e}"))
            })?;
            out.line(format::found(&found.id, &found.permissionship))?;
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
        context: context_arg(a.context.as_deref())?,
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
                token = resp.looked_up_at.clone();
            }
            let mut found = dhow_wire::found_subject(&resp, "")
                .map_err(|e| CliError::Local(format!("the server sent an invalid subject: {e}")))?;
            found.excluded.sort();
            out.line(format::found(
                &format::found_subject(&found.subject, &found.excluded),
                &found.permissionship(),
            ))?;
        }
        out.flush()?;
        if token.is_some() {
            print_read_token(token.as_ref());
        }
        Ok(())
    })?
}

/// A `--context` argument: a JSON object, as a `google.protobuf.Struct`.
fn context_arg(text: Option<&str>) -> Result<Option<dhow_wire::Struct>, CliError> {
    text.map(|t| {
        dhow_wire::json_text_to_struct(t).map_err(|e| CliError::Local(format!("--context: {e}")))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(check: &str, context: Option<&str>) -> CheckArgs {
        CheckArgs {
            check: vec![check.into()],
            explain: true,
            json: false,
            actors: vec![],
            context: context.map(str::to_string),
            consistency: ConsistencyArgs::default(),
            conn: ConnArgs {
                endpoint: "x".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn check_request_from_args() {
        let r = check_request(&args("document:1#view@group:eng#member", None)).unwrap();
        assert_eq!(r.permission, "view");
        assert!(r.explain);
        assert_eq!(r.resource.unwrap().object_id, "1");
        assert_eq!(r.subject.unwrap().optional_relation, "member");
        assert!(r.consistency.is_none());
        assert!(r.context.is_none());
    }

    #[test]
    fn the_context_reaches_the_request() {
        let r = check_request(&args(
            "document:1#view@user:a",
            Some(r#"{"k": 1, "ip": "10.0.0.1"}"#),
        ))
        .unwrap();
        let c = r.context.unwrap();
        assert_eq!(
            dhow_wire::struct_to_json_text(&c),
            r#"{"ip":"10.0.0.1","k":1}"#
        );
        for bad in ["[1]", "{", "1"] {
            let e = check_request(&args("document:1#view@user:a", Some(bad))).unwrap_err();
            assert!(e.message().starts_with("--context: "), "{}", e.message());
        }
    }
}
