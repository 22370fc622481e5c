//! Plain data types of the tuple model: object references, subjects, relationships,
//! timestamps and revisions, with their canonical text form.

use std::fmt;

/// The subject relation written `...` in text: "the object itself", not a subject set.
pub const ELLIPSIS: &str = "...";
/// The object id that stands for every object of a type (`user:*`).
pub const WILDCARD: &str = "*";

/// A revision of the store. In a cluster it is the Raft log index of the last applied entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A point in time, in microseconds since the Unix epoch (UTC). Covers years far past 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Timestamp(chrono::Utc::now().timestamp_micros())
    }

    /// Parses an RFC 3339 timestamp such as `2026-12-31T00:00:00Z`.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let dt = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("invalid RFC 3339 timestamp `{s}`: {e}"))?;
        Ok(Timestamp(dt.timestamp_micros()))
    }

    /// Formats as RFC 3339 in UTC, seconds precision unless sub-second digits are present.
    pub fn to_rfc3339(&self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000) as u32;
        match chrono::DateTime::from_timestamp(secs, micros * 1000) {
            Some(dt) if micros == 0 => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            None => format!("@{}us", self.0),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// An object: `type:id`, e.g. `document:readme`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ObjectRef {
    pub object_type: String,
    pub object_id: String,
}

impl ObjectRef {
    pub fn new(object_type: impl Into<String>, object_id: impl Into<String>) -> Self {
        ObjectRef {
            object_type: object_type.into(),
            object_id: object_id.into(),
        }
    }

    /// True for `type:*`.
    pub fn is_wildcard(&self) -> bool {
        self.object_id == WILDCARD
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.object_type, self.object_id)
    }
}

/// The relation part of a subject: `None` is the object itself (`...`), `Some(r)` a subject set.
pub type SubjectRelation = Option<String>;

/// A subject: an object (`user:alice`), a subject set (`group:eng#member`) or a wildcard
/// (`user:*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Subject {
    pub object: ObjectRef,
    /// `None` for a plain object (written without `#` or with `#...`).
    pub relation: SubjectRelation,
}

impl Subject {
    /// A plain object subject, `type:id`.
    pub fn object(object_type: impl Into<String>, object_id: impl Into<String>) -> Self {
        Subject {
            object: ObjectRef::new(object_type, object_id),
            relation: None,
        }
    }

    /// A subject set, `type:id#relation`.
    pub fn set(
        object_type: impl Into<String>,
        object_id: impl Into<String>,
        relation: impl Into<String>,
    ) -> Self {
        Subject {
            object: ObjectRef::new(object_type, object_id),
            relation: Some(relation.into()),
        }
    }

    /// True for `type:*`.
    pub fn is_wildcard(&self) -> bool {
        self.object.is_wildcard()
    }

    /// The relation as written in text: `...` for a plain object.
    pub fn relation_str(&self) -> &str {
        self.relation.as_deref().unwrap_or(ELLIPSIS)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.relation {
            Some(r) => write!(f, "{}#{}", self.object, r),
            None => write!(f, "{}", self.object),
        }
    }
}

/// A caveat attached to a relationship: its name and optional JSON context, kept as written.
/// The engine evaluates it (with the request's context) wherever the relationship is used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CaveatRef {
    pub name: String,
    /// The JSON object text, if any, exactly as written.
    pub context: Option<String>,
}

/// A relationship (tuple) `resource#relation@subject`, with optional caveat and expiration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Relationship {
    pub resource: ObjectRef,
    pub relation: String,
    pub subject: Subject,
    pub caveat: Option<CaveatRef>,
    pub expiration: Option<Timestamp>,
}

impl Relationship {
    /// A relationship without caveat or expiration.
    pub fn new(resource: ObjectRef, relation: impl Into<String>, subject: Subject) -> Self {
        Relationship {
            resource,
            relation: relation.into(),
            subject,
            caveat: None,
            expiration: None,
        }
    }

    /// True when the relationship has an expiration at or before `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        matches!(self.expiration, Some(e) if e <= now)
    }

    /// The identity of the relationship: everything but caveat and expiration.
    pub fn key(&self) -> RelationshipKey<'_> {
        (
            &self.resource.object_type,
            &self.resource.object_id,
            &self.relation,
            &self.subject.object.object_type,
            &self.subject.object.object_id,
            self.subject.relation.as_deref(),
        )
    }
}

/// Borrowed identity of a relationship (resource type, id, relation, subject type, id, relation).
pub type RelationshipKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, Option<&'a str>);

impl fmt::Display for Relationship {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.resource, self.relation, self.subject)?;
        if let Some(c) = &self.caveat {
            match &c.context {
                Some(ctx) => write!(f, "[{}:{}]", c.name, ctx)?,
                None => write!(f, "[{}]", c.name)?,
            }
        }
        if let Some(e) = &self.expiration {
            write!(f, "[expiration:{}]", e)?;
        }
        Ok(())
    }
}
