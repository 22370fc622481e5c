//! The snapshot-reader trait: the only way the engine reads relationships. Every
//! implementation answers at one fixed revision.

use crate::error::Error;
use crate::model::{ObjectRef, Relationship, Revision, Subject};

/// Reads relationships as they were at one revision. Implementations return expired
/// relationships too (the engine filters them with its evaluation time), in key order:
/// resource type, resource id, relation, subject type, subject id, subject relation.
pub trait SnapshotReader {
    /// The revision this reader answers at.
    fn revision(&self) -> Revision;

    /// All relationships `resource#relation@*`.
    fn by_resource(&self, resource: &ObjectRef, relation: &str)
        -> Result<Vec<Relationship>, Error>;

    /// The relationship `resource#relation@subject`, if alive at this revision.
    fn find(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject: &Subject,
    ) -> Result<Option<Relationship>, Error>;

    /// The relationships `resource#relation@subject_type:...` (any subject id and subject
    /// relation): the subject sets of one type to follow, without reading the plain subjects
    /// of other types beside them. Stores with an ordered index override this with a scan of
    /// that type's range; the default filters [`SnapshotReader::by_resource`].
    fn by_resource_of_type(
        &self,
        resource: &ObjectRef,
        relation: &str,
        subject_type: &str,
    ) -> Result<Vec<Relationship>, Error> {
        let mut rels = self.by_resource(resource, relation)?;
        rels.retain(|r| r.subject.object.object_type == subject_type);
        Ok(rels)
    }

    /// All relationships whose subject object is `subject` (any subject relation), through the
    /// reverse index. For `type:*` it returns the wildcard relationships of that type.
    fn by_subject_object(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error>;

    /// The keys of the relationships whose subject object is `subject` that may be alive at
    /// this revision, as bare relationships (no caveat, no expiration): every key
    /// [`SnapshotReader::by_subject_object`] returns, and perhaps keys of relationships not
    /// alive at this revision. A store whose subject index must confirm each entry with a
    /// second read answers this from the index alone. For walks that only over-approximate
    /// (a lookup's candidates are each checked) and for proving a key absent: a key not in
    /// this list is not alive. The default is [`SnapshotReader::by_subject_object`].
    fn by_subject_keys(&self, subject: &ObjectRef) -> Result<Vec<Relationship>, Error> {
        self.by_subject_object(subject)
    }

    /// All relationships matching `filter`, in key order, starting strictly after `after` if
    /// given, at most `limit` of them.
    fn read(
        &self,
        filter: &RelationshipFilter,
        after: Option<&Relationship>,
        limit: usize,
    ) -> Result<Vec<Relationship>, Error>;
}

/// A filter over relationships: every `Some` field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RelationshipFilter {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub relation: Option<String>,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    /// `Some(None)` matches plain subjects only, `Some(Some(r))` subject sets with relation r.
    pub subject_relation: Option<Option<String>>,
}

impl RelationshipFilter {
    /// True when `r` passes the filter.
    pub fn matches(&self, r: &Relationship) -> bool {
        fn m(f: &Option<String>, v: &str) -> bool {
            f.as_deref().is_none_or(|f| f == v)
        }
        m(&self.resource_type, &r.resource.object_type)
            && m(&self.resource_id, &r.resource.object_id)
            && m(&self.relation, &r.relation)
            && m(&self.subject_type, &r.subject.object.object_type)
            && m(&self.subject_id, &r.subject.object.object_id)
            && self
                .subject_relation
                .as_ref()
                .is_none_or(|sr| *sr == r.subject.relation)
    }
}
