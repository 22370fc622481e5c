//! The gRPC [`Backend`] of `dhow validate --endpoint`: runs validation files against a live
//! server through the public API. Loading a file replaces the server's schema and deletes
//! every relationship it holds, so point it at a scratch server.

use dhow_engine::{CaveatContext, Permissionship};
use dhow_proto::v1 as pb;
use dhow_tuples::{ObjectRef, Relationship, Subject};
use dhow_validate::{Backend, FoundSubject};
use tokio::runtime::Runtime;

use dhow_client::{status_message, CliError, Conn};
use dhow_wire::{object_pb, subject_pb};

use super::args::relationship_pb;

/// Relationships per Import batch.
const BATCH: usize = 1000;

/// A connection to a server and the runtime that drives it (the runner is synchronous).
pub struct Remote {
    rt: Runtime,
    conn: Conn,
    types: Vec<String>,
    /// The token of the last write of `load`; reads are at least as fresh as it.
    token: Option<pb::ConsistencyToken>,
}

impl Remote {
    /// Connects to `endpoint`.
    pub fn connect(endpoint: &str) -> Result<Remote, CliError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Local(format!("cannot start the async runtime: {e}")))?;
        let conn = rt.block_on(Conn::connect(&dhow_client::ConnArgs::from_env(endpoint)))?;
        Ok(Remote {
            rt,
            conn,
            types: Vec::new(),
            token: None,
        })
    }

    fn consistency(&self) -> Option<pb::Consistency> {
        use pb::consistency::Requirement;
        Some(pb::Consistency {
            requirement: Some(match &self.token {
                Some(t) if !t.token.is_empty() => Requirement::AtLeastAsFresh(t.clone()),
                _ => Requirement::FullyConsistent(true),
            }),
        })
    }
}

fn fail(conn: &Conn, what: &str, s: tonic::Status) -> String {
    format!("{what}: {}", status_message(&conn.endpoint, &s))
}

/// Deletes every relationship of every type of the server's current schema.
async fn clear(conn: &Conn) -> Result<(), String> {
    let current = conn
        .schema()
        .read_schema(pb::ReadSchemaRequest {
            consistency: Some(pb::Consistency {
                requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
            }),
        })
        .await;
    let text = match current {
        Ok(r) => r.into_inner().schema_text,
        // No schema yet: nothing stored.
        Err(s)
            if s.code() == tonic::Code::NotFound
                || (s.code() == tonic::Code::FailedPrecondition
                    && s.message().contains("no schema")) =>
        {
            return Ok(())
        }
        Err(s) => return Err(fail(conn, "reading the current schema", s)),
    };
    if text.trim().is_empty() {
        return Ok(());
    }
    let schema = dhow_schema::compile(&text)
        .map_err(|e| format!("the server's current schema does not compile here: {e}"))?;
    let mut client = conn.relationships();
    for t in schema.definitions.keys() {
        // In chunks of the server's max_updates_per_write, until none are left.
        loop {
            let r = client
                .delete(pb::DeleteRequest {
                    filter: Some(pb::RelationshipFilter {
                        resource_type: t.clone(),
                        ..Default::default()
                    }),
                    optional_preconditions: Vec::new(),
                    optional_limit: 0,
                    optional_allow_partial_deletions: true,
                })
                .await
                .map_err(|s| fail(conn, &format!("deleting the relationships of `{t}`"), s))?
                .into_inner();
            if !r.partial {
                break;
            }
        }
    }
    Ok(())
}

/// Clears the server, writes the schema and imports the relationships; returns the token of
/// the last write.
async fn load(
    conn: &Conn,
    schema: &str,
    relationships: &[Relationship],
) -> Result<Option<pb::ConsistencyToken>, String> {
    let rels = relationships
        .iter()
        .map(relationship_pb)
        .collect::<Result<Vec<_>, _>>()?;
    clear(conn).await?;
    let written = conn
        .schema()
        .write_schema(pb::WriteSchemaRequest {
            schema: schema.to_string(),
        })
        .await
        .map_err(|s| fail(conn, "schema", s))?
        .into_inner();
    let mut token = written.written_at;
    if !rels.is_empty() {
        let batches: Vec<pb::ImportRequest> = rels
            .chunks(BATCH)
            .map(|c| pb::ImportRequest {
                relationships: c.to_vec(),
            })
            .collect();
        let resp = conn
            .relationships()
            .import(tokio_stream::iter(batches))
            .await
            .map_err(|s| fail(conn, "relationships", s))?
            .into_inner();
        if resp.written_at.is_some() {
            token = resp.written_at;
        }
    }
    Ok(token)
}

impl Backend for Remote {
    fn load(&mut self, schema: &str, relationships: &[Relationship]) -> Result<(), String> {
        self.types.clear();
        self.token = None;
        let compiled = dhow_schema::compile(schema).map_err(|e| format!("schema: {e}"))?;
        self.token = self.rt.block_on(load(&self.conn, schema, relationships))?;
        self.types = compiled.definitions.keys().cloned().collect();
        Ok(())
    }

    fn types(&self) -> Vec<String> {
        self.types.clone()
    }

    fn check(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject: &Subject,
    ) -> Result<bool, String> {
        self.check_with_context(resource, permission, subject, None)
            .map(|p| p.is_allowed())
    }

    fn check_with_context(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject: &Subject,
        context: Option<&CaveatContext>,
    ) -> Result<Permissionship, String> {
        let req = pb::CheckRequest {
            consistency: self.consistency(),
            resource: Some(object_pb(resource)),
            permission: permission.to_string(),
            subject: Some(subject_pb(subject)),
            context: context.map(dhow_wire::context_pb),
            ..Default::default()
        };
        let mut client = self.conn.permissions();
        let resp = self
            .rt
            .block_on(client.check(req))
            .map_err(|s| status_message(&self.conn.endpoint, &s))?
            .into_inner();
        dhow_wire::permissionship(
            resp.permissionship,
            resp.partial_caveat_info.as_ref(),
            "permissionship",
        )
        .map_err(|e| format!("the server sent an invalid answer: {e}"))
    }

    fn lookup_subjects(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject_type: &str,
        subject_relation: Option<&str>,
    ) -> Result<Vec<FoundSubject>, String> {
        let req = pb::LookupSubjectsRequest {
            consistency: self.consistency(),
            resource: Some(object_pb(resource)),
            permission: permission.to_string(),
            subject_object_type: subject_type.to_string(),
            optional_subject_relation: subject_relation.unwrap_or_default().to_string(),
            context: None,
        };
        let mut client = self.conn.permissions();
        let endpoint = self.conn.endpoint.clone();
        self.rt.block_on(async move {
            let mut stream = client
                .lookup_subjects(req)
                .await
                .map_err(|s| status_message(&endpoint, &s))?
                .into_inner();
            let mut found = Vec::new();
            while let Some(r) = stream
                .message()
                .await
                .map_err(|s| status_message(&endpoint, &s))?
            {
                let mut f = dhow_wire::found_subject(&r, "")
                    .map_err(|e| format!("the server sent an invalid subject: {e}"))?;
                f.excluded.sort();
                found.push(f);
            }
            Ok(found)
        })
    }
}
