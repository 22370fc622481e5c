//! Checks a relationship against the schema before it is stored: the resource type and
//! relation exist (a relation, not a permission), the subject is of an allowed type, and its
//! caveat and expiration are ones the relation admits, and its caveat context names only the
//! caveat's parameters, with values of their types, within the size limit.

use dhow_schema::{AllowedKind, Member};
use dhow_tuples::Relationship;

use crate::{Engine, Error};

impl Engine {
    /// Refuses a relationship the schema does not allow, saying why.
    pub fn validate_relationship(&self, r: &Relationship) -> Result<(), Error> {
        let schema = self.schema();
        let def = schema
            .definition(&r.resource.object_type)
            .ok_or_else(|| Error::UnknownType(r.resource.object_type.clone()))?;
        let relation = match def.member(&r.relation) {
            Some(Member::Relation(rel)) => rel,
            Some(Member::Permission(_)) => {
                return Err(Error::InvalidRelationship(format!(
                    "`{r}`: `{}` is a permission of `{}`; relationships can only be written to \
                     relations",
                    r.relation, r.resource.object_type
                )))
            }
            None => {
                return Err(Error::UnknownRelation {
                    type_name: r.resource.object_type.clone(),
                    relation: r.relation.clone(),
                })
            }
        };
        let subject_def = schema
            .definition(&r.subject.object.object_type)
            .ok_or_else(|| Error::UnknownType(r.subject.object.object_type.clone()))?;
        if let Some(sr) = &r.subject.relation {
            if subject_def.member(sr).is_none() {
                return Err(Error::UnknownRelation {
                    type_name: r.subject.object.object_type.clone(),
                    relation: sr.clone(),
                });
            }
        }
        let kind_ok = |k: &AllowedKind| match (k, &r.subject.relation) {
            (AllowedKind::Object, None) => !r.subject.is_wildcard(),
            (AllowedKind::Wildcard, None) => r.subject.is_wildcard(),
            (AllowedKind::SubjectSet(want), Some(got)) => want == got,
            _ => false,
        };
        let candidates: Vec<_> = relation
            .allowed
            .iter()
            .filter(|a| a.type_name == r.subject.object.object_type && kind_ok(&a.kind))
            .collect();
        if candidates.is_empty() {
            let allowed: Vec<String> = relation.allowed.iter().map(describe).collect();
            let shape = if r.subject.is_wildcard() {
                format!("{}:*", r.subject.object.object_type)
            } else {
                match &r.subject.relation {
                    Some(sr) => format!("{}#{}", r.subject.object.object_type, sr),
                    None => r.subject.object.object_type.clone(),
                }
            };
            return Err(Error::InvalidRelationship(format!(
                "`{r}`: subjects of type `{shape}` are not allowed on `{}#{}` (allowed: {})",
                r.resource.object_type,
                r.relation,
                allowed.join(" | ")
            )));
        }
        let caveat = r.caveat.as_ref().map(|c| c.name.as_str());
        let fits = candidates
            .iter()
            .any(|a| a.caveat.as_deref() == caveat && (r.expiration.is_none() || a.expiration));
        if !fits {
            let what = match (caveat, r.expiration.is_some()) {
                (Some(c), true) => format!("caveat `{c}` and an expiration"),
                (Some(c), false) => format!("caveat `{c}`"),
                (None, true) => "an expiration".to_string(),
                (None, false) => "no caveat".to_string(),
            };
            let allowed: Vec<String> = candidates.iter().map(|a| describe(a)).collect();
            return Err(Error::InvalidRelationship(format!(
                "`{r}`: `{}#{}` does not allow this subject with {what} (allowed: {})",
                r.resource.object_type,
                r.relation,
                allowed.join(" | ")
            )));
        }
        if let Some(c) = &r.caveat {
            self.validate_caveat_context(r, c)?;
        }
        Ok(())
    }

    fn validate_caveat_context(
        &self,
        r: &Relationship,
        c: &dhow_tuples::CaveatRef,
    ) -> Result<(), Error> {
        let Some(text) = &c.context else {
            return Ok(());
        };
        let program = schema_program(self, &c.name).ok_or_else(|| {
            Error::InvalidRelationship(format!(
                "`{r}`: caveat `{}` is not defined in the schema",
                c.name
            ))
        })?;
        let ctx = dhow_caveat::Context::from_json(text).map_err(|e| {
            Error::InvalidRelationship(format!("`{r}`: its caveat context is not valid: {e}"))
        })?;
        if ctx.len_bytes() > self.max_relationship_context_bytes {
            return Err(Error::InvalidRelationship(format!(
                "`{r}`: its caveat context is {} bytes, more than the limit of {} bytes",
                ctx.len_bytes(),
                self.max_relationship_context_bytes
            )));
        }
        program
            .check_context(&ctx)
            .map_err(|e| Error::InvalidRelationship(format!("`{r}`: {e}")))
    }
}

fn schema_program<'a>(engine: &'a Engine, name: &str) -> Option<&'a dhow_caveat::Program> {
    engine.schema().caveats.get(name)?.program.as_ref()
}

fn describe(a: &dhow_schema::AllowedSubject) -> String {
    let mut s = match &a.kind {
        AllowedKind::Object => a.type_name.clone(),
        AllowedKind::Wildcard => format!("{}:*", a.type_name),
        AllowedKind::SubjectSet(r) => format!("{}#{}", a.type_name, r),
    };
    match (&a.caveat, a.expiration) {
        (Some(c), true) => s.push_str(&format!(" with {c} and expiration")),
        (Some(c), false) => s.push_str(&format!(" with {c}")),
        (None, true) => s.push_str(" with expiration"),
        (None, false) => {}
    }
    s
}
