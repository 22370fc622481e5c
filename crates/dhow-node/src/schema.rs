//! The schema in force at a revision, compiled once: `store.schema_at(rev)` names the schema
//! and the revision that wrote it, and the compiled schema plus its `Engine` are cached by
//! that revision. One cache per node is shared by the state machine (`SchemaGuard`, on the
//! apply path) and the read path (the services), so a schema is compiled once per revision,
//! not once per path. A few recent schemas are kept, so that reads at an older snapshot do
//! not evict the current one.

use std::sync::{Arc, Mutex};

use dhow_engine::Engine;
use dhow_tuples::{Revision, TupleStore};

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

/// Why the schema in force could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaCacheError {
    /// The store could not say which schema is in force (e.g. a revision past the GC window).
    #[error(transparent)]
    Store(#[from] dhow_tuples::Error),
    /// A stored schema was validated before it was written; failing now means the compiler
    /// changed incompatibly.
    #[error("the stored schema of revision {revision} no longer compiles: {message}")]
    NoLongerCompiles { revision: Revision, message: String },
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

    /// The schema in force at `rev`, or `None` if none was written by then. Reads the store
    /// and may compile: call from a blocking context.
    pub fn get(
        &self,
        store: &dyn TupleStore,
        rev: Revision,
    ) -> Result<Option<Arc<CompiledSchema>>, SchemaCacheError> {
        let Some((srev, text)) = store.schema_at(rev)? else {
            return Ok(None);
        };
        if let Some(hit) = self.lock().iter().find(|c| c.revision == srev) {
            return Ok(Some(hit.clone()));
        }
        let schema =
            dhow_schema::compile(&text).map_err(|e| SchemaCacheError::NoLongerCompiles {
                revision: srev,
                message: e.to_string(),
            })?;
        let compiled = Arc::new(CompiledSchema {
            revision: srev,
            text,
            engine: Engine::new(Arc::new(schema)),
        });
        let mut entries = self.lock();
        if !entries.iter().any(|c| c.revision == srev) {
            entries.push(compiled.clone());
            entries.sort_by_key(|c| std::cmp::Reverse(c.revision));
            entries.truncate(KEEP);
        }
        Ok(Some(compiled))
    }

    /// The entries; a panic while holding the lock cannot leave them inconsistent (each
    /// change is one push, sort and truncate), so a poisoned lock is taken over.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<CompiledSchema>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
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
        let a = cache.get(&store, Revision(1)).unwrap().unwrap();
        let b = cache.get(&store, Revision(2)).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.revision, Revision(1));
    }

    #[test]
    fn a_stored_schema_that_no_longer_compiles_is_an_error() {
        let store = SharedMemStore::new();
        store
            .apply(
                Revision(1),
                &Batch {
                    writes: vec![],
                    schema: Some("definition {".into()),
                },
            )
            .unwrap();
        let e = SchemaCache::new().get(&store, Revision(1)).unwrap_err();
        assert!(
            matches!(e, SchemaCacheError::NoLongerCompiles { revision, .. } if revision == Revision(1)),
            "{e:?}"
        );
    }
}
