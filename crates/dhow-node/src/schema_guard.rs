//! The state machine's schema check: a `TupleStore` wrapper that refuses, when an entry is
//! applied, every CREATE or TOUCH that does not fit the schema in force at that revision. The
//! serving node validates a write before proposing it, but against the schema it knows then;
//! a schema change committed between that check and the write's entry (written through
//! another node) would otherwise let a relationship of a removed relation or type in. Every
//! replica applies the same entries through the same check, so they agree on what was refused.
//! Deletes are never refused: removing a relationship cannot break the schema.

use std::sync::Arc;

use dhow_tuples::{
    Batch, BoxedReader, Change, Error, Relationship, Revision, TupleStore, WriteOp, WriteRequest,
};

use crate::schema::SchemaCache;

/// A store whose `apply` refuses writes the schema in force does not allow.
pub struct SchemaGuard {
    inner: Arc<dyn TupleStore>,
    schemas: Arc<SchemaCache>,
}

impl SchemaGuard {
    /// Guards `inner`, compiling schemas through `schemas` (the node's one cache, shared with
    /// the read path).
    pub fn new(inner: Arc<dyn TupleStore>, schemas: Arc<SchemaCache>) -> SchemaGuard {
        SchemaGuard { inner, schemas }
    }

    /// Why each write of `batch` cannot be applied after `head` (`None`: it can).
    fn refusals(&self, batch: &Batch) -> Result<Vec<Option<Error>>, Error> {
        let head = self.inner.head();
        let schema = self.schemas.get(&*self.inner, head).map_err(|e| match e {
            crate::schema::SchemaCacheError::Store(e) => e,
            other => Error::Storage(format!("the schema in force at {}: {other}", head.0)),
        })?;
        Ok(batch
            .writes
            .iter()
            .map(|w| {
                let Some(schema) = &schema else {
                    return Some(Error::Invalid(
                        "no schema has been written: write a schema first".into(),
                    ));
                };
                w.ops.iter().find_map(|op| match op {
                    WriteOp::Create(r) | WriteOp::Touch(r) => schema
                        .engine
                        .validate_relationship(r)
                        .err()
                        .map(|e| unfit(r, schema.revision, &e.to_string())),
                    WriteOp::Delete(_) => None,
                })
            })
            .collect())
    }
}

fn unfit(r: &Relationship, schema_rev: Revision, why: &str) -> Error {
    Error::Invalid(format!(
        "relationship `{r}` does not fit the schema in force (written at revision {}), which \
         changed after the write was checked: {why}",
        schema_rev.0
    ))
}

impl TupleStore for SchemaGuard {
    fn head(&self) -> Revision {
        self.inner.head()
    }

    fn oldest(&self) -> Revision {
        self.inner.oldest()
    }

    fn apply(&self, rev: Revision, batch: &Batch) -> Result<Vec<Result<(), Error>>, Error> {
        if batch.writes.is_empty() || batch.schema.is_some() {
            return self.inner.apply(rev, batch);
        }
        let refusals = self.refusals(batch)?;
        if refusals.iter().all(Option::is_none) {
            return self.inner.apply(rev, batch);
        }
        // Apply the others; a refused write becomes an empty one so the outcomes line up.
        let kept = Batch {
            writes: batch
                .writes
                .iter()
                .zip(&refusals)
                .map(|(w, no)| match no {
                    None => w.clone(),
                    Some(_) => WriteRequest::default(),
                })
                .collect(),
            schema: None,
        };
        let outcomes = self.inner.apply(rev, &kept)?;
        Ok(outcomes
            .into_iter()
            .zip(refusals)
            .map(|(outcome, no)| match no {
                None => outcome,
                Some(e) => Err(e),
            })
            .collect())
    }

    fn reader(&self, rev: Revision) -> Result<BoxedReader<'_>, Error> {
        self.inner.reader(rev)
    }

    fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>, Error> {
        self.inner.changes(after, limit)
    }

    fn schema_at(&self, rev: Revision) -> Result<Option<(Revision, String)>, Error> {
        self.inner.schema_at(rev)
    }

    fn gc(&self, before: Revision) -> Result<(), Error> {
        self.inner.gc(before)
    }

    fn restore(
        &self,
        rev: Revision,
        schema: Option<&str>,
        relationships: &mut dyn Iterator<Item = Relationship>,
    ) -> Result<(), Error> {
        self.inner.restore(rev, schema, relationships)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{parse_relationship, SharedMemStore};

    fn touch(text: &str) -> WriteRequest {
        WriteRequest {
            preconditions: vec![],
            ops: vec![WriteOp::Touch(parse_relationship(text).unwrap())],
        }
    }

    fn schema(text: &str) -> Batch {
        Batch {
            writes: vec![],
            schema: Some(text.into()),
        }
    }

    fn writes(w: Vec<WriteRequest>) -> Batch {
        Batch {
            writes: w,
            schema: None,
        }
    }

    #[test]
    fn a_write_checked_against_an_older_schema_is_refused_when_applied() {
        let guard = SchemaGuard::new(Arc::new(SharedMemStore::new()), Default::default());
        // No schema yet: nothing can be written.
        let out = guard
            .apply(
                Revision(1),
                &writes(vec![touch("document:a#viewer@user:x")]),
            )
            .unwrap();
        assert!(
            matches!(&out[0], Err(Error::Invalid(m)) if m.contains("no schema")),
            "{out:?}"
        );
        guard
            .apply(
                Revision(2),
                &schema("definition user {}\ndefinition document {\n relation viewer: user\n relation editor: user\n}"),
            )
            .unwrap();
        let out = guard
            .apply(
                Revision(3),
                &writes(vec![touch("document:a#viewer@user:x")]),
            )
            .unwrap();
        assert_eq!(out, vec![Ok(())]);
        // Another node removes `editor`; a write checked before that arrives after it.
        guard
            .apply(
                Revision(4),
                &schema("definition user {}\ndefinition document {\n relation viewer: user\n}"),
            )
            .unwrap();
        let out = guard
            .apply(
                Revision(5),
                &writes(vec![
                    touch("document:b#editor@user:x"),
                    touch("document:b#viewer@user:y"),
                    WriteRequest {
                        preconditions: vec![],
                        ops: vec![WriteOp::Delete(
                            parse_relationship("document:a#editor@user:x").unwrap(),
                        )],
                    },
                ]),
            )
            .unwrap();
        assert!(
            matches!(&out[0], Err(Error::Invalid(m)) if m.contains("document:b#editor@user:x") && m.contains("revision 4")),
            "{out:?}"
        );
        assert_eq!(out[1], Ok(()), "the other writes of the entry still apply");
        assert_eq!(out[2], Ok(()), "deletes are never refused");
        assert_eq!(guard.head(), Revision(5));
        let reader = guard.reader(Revision(5)).unwrap();
        let all = reader
            .read(&Default::default(), None, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>();
        assert_eq!(
            all,
            vec![
                "document:a#viewer@user:x".to_string(),
                "document:b#viewer@user:y".to_string()
            ]
        );
    }
}
