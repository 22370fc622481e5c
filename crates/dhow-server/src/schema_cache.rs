//! The schema in force at a revision, compiled once: `store.schema_at(rev)` names the schema
//! and the revision that wrote it, and the compiled schema plus its `Engine` are cached by
//! that revision, so checks never recompile. A few recent schemas are kept, so that reads
//! at an older snapshot do not evict the current one.

use std::sync::{Arc, Mutex};

use dhow_engine::Engine;
use dhow_tuples::{Revision, TupleStore};

use crate::error::{ApiError, ApiResult};

/// How many compiled schemas are kept.
const KEEP: usize = 4;

/// A schema as stored, compiled, with its engine.
#[derive(Debug)]
pub struct CompiledSchema {
    /// The revision that wrote the schema.
    pub revision: Revision,
    /// The text as written.
    pub text: String,
    /// The engine over the compiled schema.
    pub engine: Engine,
}

/// Compiled schemas by the revision that wrote them.
#[derive(Debug, Default)]
pub struct SchemaCache {
    entries: Mutex<Vec<Arc<CompiledSchema>>>,
}

impl SchemaCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The schema in force at `rev`, or `None` if none was written by then. Reads the store:
    /// call from a blocking context.
    pub fn get(
        &self,
        store: &dyn TupleStore,
        rev: Revision,
    ) -> ApiResult<Option<Arc<CompiledSchema>>> {
        let Some((srev, text)) = store.schema_at(rev)? else {
            return Ok(None);
        };
        if let Some(hit) = self
            .entries
            .lock()
            .map_err(|_| ApiError::internal("schema cache lock poisoned"))?
            .iter()
            .find(|c| c.revision == srev)
        {
            return Ok(Some(hit.clone()));
        }
        // A stored schema was validated before it was written; failing here means the
        // compiler changed incompatibly.
        let schema = dhow_schema::compile(&text).map_err(|e| {
            ApiError::internal(format!(
                "the stored schema of revision {srev} no longer compiles: {e}"
            ))
        })?;
        let compiled = Arc::new(CompiledSchema {
            revision: srev,
            text,
            engine: Engine::new(Arc::new(schema)),
        });
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| ApiError::internal("schema cache lock poisoned"))?;
        if !entries.iter().any(|c| c.revision == srev) {
            entries.push(compiled.clone());
            entries.sort_by_key(|c| std::cmp::Reverse(c.revision));
            entries.truncate(KEEP);
        }
        Ok(Some(compiled))
    }

    /// The schema in force at `rev`; FAILED_PRECONDITION `NO_SCHEMA` if there is none.
    pub fn require(&self, store: &dyn TupleStore, rev: Revision) -> ApiResult<Arc<CompiledSchema>> {
        self.get(store, rev)?.ok_or_else(ApiError::no_schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{Batch, SharedMemStore};

    #[test]
    fn caches_by_schema_revision() {
        let store = SharedMemStore::new();
        let cache = SchemaCache::new();
        assert!(cache.get(&store, Revision(0)).unwrap().is_none());
        assert_eq!(
            cache.require(&store, Revision(0)).unwrap_err().reason,
            "NO_SCHEMA"
        );
        store
            .apply(
                Revision(1),
                &Batch {
                    writes: vec![],
                    schema: Some("definition user {}".into()),
                },
            )
            .unwrap();
        store.apply(Revision(2), &Batch::default()).unwrap();
        let a = cache.require(&store, Revision(1)).unwrap();
        let b = cache.require(&store, Revision(2)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.revision, Revision(1));
    }
}
