//! Golden bytes of everything this crate writes to disk or sends to a peer: Raft entries
//! (writes of every kind, schemas), membership change contexts, the stored membership,
//! snapshot headers and chunks, staged snapshot files. Each sample is a domain value; its
//! bytes live in `tests/golden/<format>/<name>.hex` (an annotated hex dump), so that any
//! change to a format shows in review. `UPDATE_GOLDEN=1` rewrites the files of the current
//! format.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dhow_tuples::{
    parse_relationship, ObjectRef, Precondition, Relationship, RelationshipFilter, Subject,
    Timestamp, WriteOp, WriteRequest,
};
use raft::eraftpb::ConfState;

use crate::codec::{Body, Proposal};
use crate::log::Membership;
use crate::snapshot::StagedSnapshot;

/// One domain value of a kind that is encoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// The data of a normal Raft entry.
    Entry(Proposal),
    /// The context of a membership change entry: proposal id and peer address.
    ChangeContext(u64, String),
    /// The membership kept beside the log.
    Membership(Membership),
    /// The header of a raft-rs snapshot message: the peer addresses.
    SnapshotHeader(BTreeMap<u64, String>),
    /// The first chunk of a snapshot's data.
    SchemaChunk(Option<String>),
    /// A page of a snapshot's relationships.
    RelationshipsChunk(Vec<Relationship>),
    /// A staged snapshot file.
    Staged(StagedSnapshot),
}

fn rel(s: &str) -> Relationship {
    parse_relationship(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn write(preconditions: Vec<Precondition>, ops: Vec<WriteOp>) -> WriteRequest {
    WriteRequest { preconditions, ops }
}

fn writes(id: u64, w: Vec<WriteRequest>) -> Value {
    Value::Entry(Proposal {
        id,
        body: Body::Writes(w),
    })
}

/// A proposal id as node 1 makes them.
const ID: u64 = (1 << 40) | 0x00AB_CDEF;

const SCHEMA: &str = "/** café: a doc comment */\ndefinition user {}\ndefinition group {\n  relation member: user | group#member\n}\ndefinition document {\n  relation viewer: user | group#member | user:*\n  permission view = viewer\n}\n";

fn peers() -> BTreeMap<u64, String> {
    BTreeMap::from([
        (1, "10.0.0.1:7001".to_string()),
        (2, "node-2.dhow.svc:7001".to_string()),
        (3, "[::1]:7003".to_string()),
        (300, String::new()),
    ])
}

/// Every sample, by file name.
pub(crate) fn samples() -> Vec<(&'static str, Value)> {
    let mut negative = rel("document:readme#viewer@user:erin");
    negative.expiration = Some(Timestamp(-1_500_000));
    let full_filter = RelationshipFilter {
        resource_type: Some("document".into()),
        resource_id: Some("readme".into()),
        relation: Some("viewer".into()),
        subject_type: Some("group".into()),
        subject_id: Some("eng".into()),
        subject_relation: Some(Some("member".into())),
    };
    let plain_only = RelationshipFilter {
        resource_type: Some("document".into()),
        subject_relation: Some(None),
        ..RelationshipFilter::default()
    };
    vec![
        (
            "entry_writes_create",
            writes(
                ID,
                vec![write(
                    vec![],
                    vec![WriteOp::Create(rel("document:readme#viewer@user:alice"))],
                )],
            ),
        ),
        (
            "entry_writes_touch_with_expiration",
            writes(
                ID + 1,
                vec![write(
                    vec![],
                    vec![
                        WriteOp::Touch(rel(
                            "document:readme#viewer@user:bob[expiration:2026-12-31T00:00:00Z]",
                        )),
                        WriteOp::Touch(rel(
                            "document:readme#viewer@user:bob2[expiration:2300-01-02T03:04:05.678901Z]",
                        )),
                        WriteOp::Touch(negative),
                    ],
                )],
            ),
        ),
        (
            "entry_writes_delete",
            writes(
                ID + 2,
                vec![write(
                    vec![],
                    vec![WriteOp::Delete(rel("document:readme#viewer@user:alice"))],
                )],
            ),
        ),
        (
            "entry_writes_preconditions",
            writes(
                ID + 3,
                vec![write(
                    vec![
                        Precondition::MustMatch(full_filter),
                        Precondition::MustNotMatch(plain_only),
                        Precondition::MustMatch(RelationshipFilter::default()),
                    ],
                    vec![WriteOp::Create(rel("document:readme#viewer@user:alice"))],
                )],
            ),
        ),
        (
            "entry_writes_caveat",
            writes(
                ID + 4,
                vec![write(
                    vec![],
                    vec![
                        WriteOp::Touch(rel(
                            "document:readme#viewer@user:carol[on_weekdays:{\"tz\": \"UTC\", \"days\": [1, 2]}]",
                        )),
                        WriteOp::Create(rel(
                            "document:readme#viewer@user:dave[on_weekdays][expiration:2030-06-01T00:00:00Z]",
                        )),
                    ],
                )],
            ),
        ),
        (
            "entry_writes_subject_set_and_wildcard",
            writes(
                ID + 5,
                vec![write(
                    vec![],
                    vec![
                        WriteOp::Create(rel("document:readme#viewer@group:eng#member")),
                        WriteOp::Create(rel("document:readme#viewer@user:*")),
                        WriteOp::Create(Relationship::new(
                            ObjectRef::new("tenant/document", "a/b_c|d-e=f+g"),
                            "parent",
                            Subject::set("tenant/folder", "x", "viewer"),
                        )),
                    ],
                )],
            ),
        ),
        (
            "entry_writes_batch",
            writes(
                u64::MAX,
                vec![
                    write(
                        vec![],
                        vec![WriteOp::Create(rel("document:a#viewer@user:alice"))],
                    ),
                    write(
                        vec![],
                        vec![
                            WriteOp::Touch(rel("document:b#viewer@user:bob")),
                            WriteOp::Delete(rel("document:a#viewer@user:alice")),
                        ],
                    ),
                    write(vec![], vec![]),
                ],
            ),
        ),
        ("entry_writes_none", writes(0, vec![])),
        (
            "entry_schema",
            Value::Entry(Proposal {
                id: ID + 6,
                body: Body::Schema(SCHEMA.into()),
            }),
        ),
        (
            "entry_schema_empty",
            Value::Entry(Proposal {
                id: ID + 7,
                body: Body::Schema(String::new()),
            }),
        ),
        (
            "change_context",
            Value::ChangeContext(ID + 8, "10.0.0.4:7001".into()),
        ),
        (
            "change_context_remove",
            Value::ChangeContext(ID + 9, String::new()),
        ),
        (
            "membership",
            Value::Membership(Membership {
                conf: ConfState::from((vec![1, 2, 3], vec![300])),
                peers: peers(),
            }),
        ),
        (
            "membership_empty",
            Value::Membership(Membership::default()),
        ),
        ("snapshot_header", Value::SnapshotHeader(peers())),
        (
            "snapshot_chunk_schema",
            Value::SchemaChunk(Some(SCHEMA.into())),
        ),
        ("snapshot_chunk_no_schema", Value::SchemaChunk(None)),
        (
            "snapshot_chunk_relationships",
            Value::RelationshipsChunk(vec![
                rel("document:readme#viewer@group:eng#member"),
                rel("document:readme#viewer@user:*"),
                rel("document:readme#viewer@user:bob[expiration:2026-12-31T00:00:00Z]"),
                rel("document:readme#viewer@user:carol[on_weekdays:{\"tz\": \"UTC\"}]"),
            ]),
        ),
        (
            "staged_snapshot",
            Value::Staged(StagedSnapshot {
                schema: Some("definition user {}".into()),
                relationships: vec![
                    rel("document:readme#viewer@user:alice"),
                    rel("document:readme#viewer@user:*[expiration:2026-12-31T00:00:00Z]"),
                ],
            }),
        ),
        ("staged_snapshot_empty", Value::Staged(StagedSnapshot::default())),
    ]
}

/// `tests/golden/<format>`.
pub(crate) fn dir(format: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format)
}

/// An annotated hex dump: a comment naming the sample, then 16 bytes a line with their
/// offset and their printable characters.
pub(crate) fn dump(title: &str, bytes: &[u8]) -> String {
    let mut out = format!("# {title}\n# {} bytes\n", bytes.len());
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {:<47}  |{text}|\n",
            row * 16,
            hex.join(" ")
        ));
    }
    out
}

/// The bytes of a dump written by [`dump`].
pub(crate) fn undump(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let hex = line
            .get(10..57)
            .unwrap_or_else(|| panic!("bad dump line {line:?}"));
        for h in hex.split_whitespace() {
            out.push(u8::from_str_radix(h, 16).unwrap_or_else(|e| panic!("{h}: {e}")));
        }
    }
    out
}

/// Compares (or, with `UPDATE_GOLDEN=1`, rewrites) the files of `format` against `encode`
/// of every sample.
pub(crate) fn check_files(format: &str, encode: impl Fn(&Value) -> Vec<u8>) {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let dir = dir(format);
    std::fs::create_dir_all(&dir).unwrap();
    let mut mismatches = Vec::new();
    for (name, value) in samples() {
        let bytes = encode(&value);
        let path = dir.join(format!("{name}.hex"));
        let actual = dump(&format!("{name}: {value:?}"), &bytes);
        if update {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if undump(&expected) != bytes {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} golden file(s) of format {format} differ (UPDATE_GOLDEN=1 rewrites them):\n\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn dumps_read_back() {
    let bytes: Vec<u8> = (0..=255u8).chain(0..7).collect();
    assert_eq!(undump(&dump("all bytes", &bytes)), bytes);
    assert_eq!(undump(&dump("nothing", &[])), Vec::<u8>::new());
}

/// Format 1, captured from the encoders as they were before format 2 (bincode over serde
/// derives of the dhow-tuples types). Once format 2 exists these files are frozen: they are
/// what old data dirs and old peers hold.
#[test]
fn format_1_bytes() {
    use protobuf::Message as _;
    check_files("v1", |v| match v {
        Value::Entry(p) => crate::codec::encode(p).unwrap(),
        Value::ChangeContext(id, addr) => {
            crate::membership::encode_change_context(*id, addr).unwrap()
        }
        Value::Membership(m) => m.encode().unwrap(),
        Value::SnapshotHeader(p) => crate::snapshot::encode_header(p).unwrap(),
        Value::SchemaChunk(s) => {
            crate::snapshot::encode_part(&crate::snapshot::Part::Schema(s.clone())).unwrap()
        }
        Value::RelationshipsChunk(r) => {
            crate::snapshot::encode_part(&crate::snapshot::Part::Relationships(r.clone())).unwrap()
        }
        Value::Staged(s) => bincode::serialize(s).unwrap(),
    });
    // The membership written before peer addresses were kept: a bare conf state.
    let bare = ConfState::from((vec![1, 2, 3], vec![4]))
        .write_to_bytes()
        .unwrap();
    let path = dir("v1").join("membership_bare_conf_state.hex");
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(
            &path,
            dump(
                "membership_bare_conf_state: voters [1, 2, 3], learners [4]",
                &bare,
            ),
        )
        .unwrap();
    }
    assert_eq!(undump(&std::fs::read_to_string(path).unwrap()), bare);
}
