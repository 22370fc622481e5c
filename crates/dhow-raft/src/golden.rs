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

use crate::codec::{self, Body, Chunk, Proposal};
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

/// Decodes `bytes` as a value of the same kind as `like`, with this build's readers.
fn decode_like(like: &Value, bytes: &[u8], version: u8) -> Result<Value, codec::DecodeError> {
    Ok(match like {
        Value::Entry(_) => Value::Entry(codec::decode(bytes)?),
        Value::ChangeContext(..) => {
            // Format 1 marked nothing in the entry's context; format 2 names itself there.
            let entry_context = if version == 1 { vec![] } else { vec![version] };
            let (id, addr) = codec::decode_change_context(&entry_context, bytes)?;
            Value::ChangeContext(id, addr)
        }
        Value::Membership(_) => Value::Membership(codec::decode_membership(bytes)?),
        Value::SnapshotHeader(_) => Value::SnapshotHeader(codec::decode_snapshot_header(bytes)?),
        Value::SchemaChunk(_) | Value::RelationshipsChunk(_) => match codec::decode_chunk(bytes)? {
            Chunk::Schema(s) => Value::SchemaChunk(s),
            Chunk::Relationships(r) => Value::RelationshipsChunk(r),
        },
        Value::Staged(_) => Value::Staged(codec::decode_staged(bytes)?),
    })
}

/// Format 2, the one written now. `UPDATE_GOLDEN=1` rewrites these files after a deliberate
/// change of the format (which then needs a new version, or old data stops decoding).
#[test]
fn format_2_bytes() {
    check_files("v2", |v| match v {
        Value::Entry(p) => codec::encode(p),
        Value::ChangeContext(id, addr) => codec::encode_change_context(*id, addr),
        Value::Membership(m) => codec::encode_membership(m),
        Value::SnapshotHeader(p) => codec::encode_snapshot_header(p),
        Value::SchemaChunk(s) => codec::encode_chunk(&Chunk::Schema(s.clone())),
        Value::RelationshipsChunk(r) => codec::encode_chunk(&Chunk::Relationships(r.clone())),
        Value::Staged(s) => codec::encode_staged(s),
    });
    for (name, value) in samples() {
        let bytes =
            undump(&std::fs::read_to_string(dir("v2").join(format!("{name}.hex"))).unwrap());
        let back = decode_like(&value, &bytes, 2).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, value, "{name}");
    }
}

/// Format 1, captured from the encoders as they were before format 2 (bincode over serde
/// derives of the dhow-tuples types, commit "capture the bytes of format 1"). Frozen: these
/// are what old data dirs and old peers hold, and this build must read every one of them back
/// to the same domain value. `UPDATE_GOLDEN` never rewrites them.
#[test]
fn format_1_files_decode_to_the_same_values() {
    for (name, value) in samples() {
        let path = dir("v1").join(format!("{name}.hex"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let back = decode_like(&value, &undump(&text), 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, value, "{name}");
    }
    // The membership written before peer addresses were kept: a bare conf state.
    let bare =
        undump(&std::fs::read_to_string(dir("v1").join("membership_bare_conf_state.hex")).unwrap());
    assert_eq!(
        codec::decode_membership(&bare).unwrap(),
        Membership {
            conf: ConfState::from((vec![1, 2, 3], vec![4])),
            peers: BTreeMap::new(),
        }
    );
}

/// A file stage written by format 1 (a node that crashed while restoring, then was upgraded)
/// is read back.
#[test]
fn a_staged_file_of_format_1_is_loaded() {
    use crate::snapshot::{FileStage, SnapshotStage};
    let dir_ = tempfile::tempdir().unwrap();
    let stage = FileStage::new(dir_.path()).unwrap();
    let v1 = undump(&std::fs::read_to_string(dir("v1").join("staged_snapshot.hex")).unwrap());
    std::fs::write(dir_.path().join(format!("snapshot-{:020}.bin", 12)), v1).unwrap();
    let Some(Value::Staged(expected)) = samples()
        .into_iter()
        .find(|(n, _)| *n == "staged_snapshot")
        .map(|(_, v)| v)
    else {
        panic!("no staged sample")
    };
    assert_eq!(stage.load(12).unwrap(), Some(expected));
}
