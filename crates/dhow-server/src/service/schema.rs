//! `SchemaService`: WriteSchema (compile, refuse a schema that would orphan stored
//! relationships, replicate) and ReadSchema.

use std::collections::BTreeMap;
use std::sync::Arc;

use dhow_engine::Engine;
use dhow_proto::v1 as pb;
use dhow_proto::v1::schema_service_server::SchemaService;
use dhow_schema::{Member, Schema};
use dhow_tuples::{Relationship, RelationshipFilter, Revision, TupleStore};
use tonic::{Code, Request, Response, Status};

use super::{blocking, status, State};
use crate::consistency;
use crate::error::{reason, ApiError, ApiResult};
use dhow_node::Node;

/// Relationships read per page during the orphan check.
const PAGE: usize = 1000;
/// Offending relations listed in the error message at most.
const MAX_LISTED: usize = 20;

/// The schema service over a node.
pub struct SchemaSvc<N: Node> {
    st: Arc<State<N>>,
}

impl<N: Node> SchemaSvc<N> {
    pub fn new(st: Arc<State<N>>) -> Self {
        SchemaSvc { st }
    }
}

/// The `(type, relation)` pairs whose stored relationships the new schema may not admit:
/// every relation of the old schema that is gone or whose allowed subjects changed. `None`
/// means "check everything" (no old schema).
fn changed_relations(old: Option<&Schema>, new: &Schema) -> Option<Vec<(String, String)>> {
    let old = old?;
    let mut out = Vec::new();
    for (tname, def) in &old.definitions {
        for (rname, rel) in &def.relations {
            let same = matches!(
                new.member(tname, rname),
                Some(Member::Relation(n)) if n.allowed == rel.allowed
            );
            if !same {
                out.push((tname.clone(), rname.clone()));
            }
        }
    }
    Some(out)
}

/// Stored relationships at `rev` that `engine` would refuse, by `type#relation`: how many and
/// the first one with the reason.
fn orphans(
    store: &dyn TupleStore,
    rev: Revision,
    old: Option<&Schema>,
    engine: &Engine,
) -> ApiResult<BTreeMap<String, (u64, String)>> {
    let filters: Vec<RelationshipFilter> = match changed_relations(old, engine.schema()) {
        None => vec![RelationshipFilter::default()],
        Some(pairs) => pairs
            .into_iter()
            .map(|(t, r)| RelationshipFilter {
                resource_type: Some(t),
                relation: Some(r),
                ..Default::default()
            })
            .collect(),
    };
    let reader = store.reader(rev)?;
    let mut out: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for f in filters {
        let mut after: Option<Relationship> = None;
        loop {
            let page = reader.read(&f, after.as_ref(), PAGE)?;
            for r in &page {
                if let Err(e) = engine.validate_relationship(r) {
                    let e = out
                        .entry(format!("{}#{}", r.resource.object_type, r.relation))
                        .or_insert_with(|| (0, e.to_string()));
                    e.0 += 1;
                }
            }
            if page.len() < PAGE {
                break;
            }
            after = page.last().cloned();
        }
    }
    Ok(out)
}

impl<N: Node> SchemaSvc<N> {
    async fn do_write_schema(
        &self,
        req: pb::WriteSchemaRequest,
    ) -> ApiResult<pb::WriteSchemaResponse> {
        let schema = dhow_schema::compile(&req.schema).map_err(|e| ApiError::schema(&e))?;
        let engine = Engine::new(Arc::new(schema));
        let _gate = self.st.write_gate.write().await;
        let rev = self.st.node.applied();
        let st = self.st.clone();
        let found = blocking(move || {
            let store = st.node.store();
            let old = st.schema_at(rev)?;
            orphans(
                &*store,
                rev,
                old.as_ref().map(|o| &**o.engine.schema()),
                &engine,
            )
        })
        .await?;
        if !found.is_empty() {
            let listed: Vec<String> = found
                .iter()
                .take(MAX_LISTED)
                .map(|(rel, (n, why))| format!("{rel} ({n} relationships; e.g. {why})"))
                .collect();
            let more = found.len().saturating_sub(MAX_LISTED);
            return Err(ApiError::new(
                Code::FailedPrecondition,
                reason::SCHEMA_ORPHANS_RELATIONSHIPS,
                format!(
                    "the new schema would orphan stored relationships of: {}{}; delete them first",
                    listed.join("; "),
                    if more > 0 {
                        format!(" and {more} more relations")
                    } else {
                        String::new()
                    }
                ),
            )
            .with(
                "relations",
                found.keys().cloned().collect::<Vec<_>>().join(","),
            ));
        }
        let rev = self.st.node.write_schema(req.schema).await?;
        // Keep writes out until this node applies the schema they must be validated against.
        if let Err(e) =
            consistency::wait_for(&*self.st.node, rev, self.st.limits.consistency_timeout).await
        {
            tracing::warn!(error = %e, "schema committed but not yet applied on this node");
        }
        Ok(pb::WriteSchemaResponse {
            written_at: Some(self.st.token(rev)),
        })
    }

    async fn do_read_schema(
        &self,
        req: pb::ReadSchemaRequest,
    ) -> ApiResult<pb::ReadSchemaResponse> {
        let rev = self.st.resolve(req.consistency.as_ref()).await?;
        let st = self.st.clone();
        let text = blocking(move || {
            let store = st.node.store();
            Ok(store.schema_at(rev)?.map(|(_, t)| t))
        })
        .await?
        .ok_or_else(ApiError::no_schema)?;
        Ok(pb::ReadSchemaResponse {
            schema_text: text,
            read_at: Some(self.st.token(rev)),
        })
    }
}

#[tonic::async_trait]
impl<N: Node> SchemaService for SchemaSvc<N> {
    async fn write_schema(
        &self,
        request: Request<pb::WriteSchemaRequest>,
    ) -> Result<Response<pb::WriteSchemaResponse>, Status> {
        self.do_write_schema(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn read_schema(
        &self,
        request: Request<pb::ReadSchemaRequest>,
    ) -> Result<Response<pb::ReadSchemaResponse>, Status> {
        self.do_read_schema(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_relations_lists_removed_and_narrowed() {
        let old = dhow_schema::compile(
            "definition user {}\ndefinition team {}\ndefinition doc {\nrelation aaa: user\nrelation bbb: user | team\nrelation ccc: user\n}",
        )
        .unwrap();
        let new = dhow_schema::compile(
            "definition user {}\ndefinition team {}\ndefinition doc {\nrelation aaa: user\nrelation bbb: user\npermission ccc = aaa\n}",
        )
        .unwrap();
        let got = changed_relations(Some(&old), &new).unwrap();
        assert_eq!(
            got,
            vec![
                ("doc".to_string(), "bbb".to_string()),
                ("doc".to_string(), "ccc".to_string())
            ]
        );
        assert!(changed_relations(None, &new).is_none());
    }
}
