//! Property tests of the formats: every value survives encode→decode; decoding random,
//! truncated or mutated bytes (either format) never panics, and never allocates more than the
//! input could justify (a counting allocator records the largest allocation while decoding).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use dhow_tuples::{
    CaveatRef, ObjectRef, Precondition, Relationship, RelationshipFilter, Subject, Timestamp,
    WriteOp, WriteRequest,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use raft::eraftpb::ConfState;

use super::*;

// ---------------------------------------------------------------------------------------------
// The largest allocation made on this thread while `measure` runs.

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let on = MEASURING.try_with(|m| m.get()).unwrap_or(false);
    if on {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns the largest single allocation it made.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    LARGEST.with(|l| l.get())
}

/// Every decoder of the crate on `bytes`, errors ignored. Returns the largest allocation.
fn decode_everything(bytes: &[u8]) -> usize {
    largest_allocation(|| {
        let _ = decode(bytes);
        let _ = decode_change_context(&[], bytes);
        let _ = decode_change_context(&change_entry_context(), bytes);
        let _ = decode_membership(bytes);
        let _ = decode_snapshot_header(bytes);
        let _ = decode_chunk(bytes);
        let _ = decode_staged(bytes);
    })
}

/// Format 2 allocates at most this much for an input of `len` bytes: every count is checked
/// against the input at the fewest bytes an item takes, and no item is 32 times larger in
/// memory than its smallest encoding.
fn bound_v2(len: usize) -> usize {
    32 * len + 1024
}

/// Format 1 goes through serde, which reserves at most 1 MiB for a sequence before reading
/// it (bincode refuses any string or byte length past the input); a bare conf state goes
/// through protobuf only once its lengths were checked against the input.
const BOUND_V1: usize = (1 << 20) + 4096;

// ---------------------------------------------------------------------------------------------
// Strategies

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,8}",
        "\\PC{0,12}",
        Just(String::new()),
        Just("*".to_string()),
    ]
}

fn relationship() -> impl Strategy<Value = Relationship> {
    (
        (text(), text(), text()),
        (text(), text(), proptest::option::of(text())),
        proptest::option::of((text(), proptest::option::of(text()))),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|((rt, ri, rel), (st, si, sr), caveat, exp)| Relationship {
            resource: ObjectRef::new(rt, ri),
            relation: rel,
            subject: Subject {
                object: ObjectRef::new(st, si),
                relation: sr,
            },
            caveat: caveat.map(|(name, context)| CaveatRef { name, context }),
            expiration: exp.map(Timestamp),
        })
}

fn filter() -> impl Strategy<Value = RelationshipFilter> {
    (
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(proptest::option::of(text())),
    )
        .prop_map(|(a, b, c, d, e, f)| RelationshipFilter {
            resource_type: a,
            resource_id: b,
            relation: c,
            subject_type: d,
            subject_id: e,
            subject_relation: f,
        })
}

fn write_request() -> impl Strategy<Value = WriteRequest> {
    (
        vec(
            prop_oneof![
                filter().prop_map(Precondition::MustMatch),
                filter().prop_map(Precondition::MustNotMatch),
            ],
            0..3,
        ),
        vec(
            prop_oneof![
                relationship().prop_map(WriteOp::Create),
                relationship().prop_map(WriteOp::Touch),
                relationship().prop_map(WriteOp::Delete),
            ],
            0..4,
        ),
    )
        .prop_map(|(preconditions, ops)| WriteRequest { preconditions, ops })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (
        any::<u64>(),
        prop_oneof![
            vec(write_request(), 0..4).prop_map(Body::Writes),
            "\\PC{0,64}".prop_map(Body::Schema),
        ],
    )
        .prop_map(|(id, body)| Proposal { id, body })
}

fn peers() -> impl Strategy<Value = BTreeMap<u64, String>> {
    btree_map(any::<u64>(), text(), 0..5)
}

fn membership() -> impl Strategy<Value = Membership> {
    (
        vec(any::<u64>(), 0..5),
        vec(any::<u64>(), 0..3),
        vec(any::<u64>(), 0..3),
        vec(any::<u64>(), 0..3),
        any::<bool>(),
        peers(),
    )
        .prop_map(|(v, l, vo, ln, auto_leave, peers)| Membership {
            conf: ConfState {
                voters: v,
                learners: l,
                voters_outgoing: vo,
                learners_next: ln,
                auto_leave,
                ..Default::default()
            },
            peers,
        })
}

/// The encodings of random values of every kind.
fn encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proposal().prop_map(|p| encode(&p)),
        (any::<u64>(), text()).prop_map(|(id, a)| encode_change_context(id, &a)),
        membership().prop_map(|m| encode_membership(&m)),
        peers().prop_map(|p| encode_snapshot_header(&p)),
        proptest::option::of(text()).prop_map(|s| encode_chunk(&Chunk::Schema(s))),
        vec(relationship(), 0..4).prop_map(|r| encode_chunk(&Chunk::Relationships(r))),
        (proptest::option::of(text()), vec(relationship(), 0..4)).prop_map(|(schema, r)| {
            encode_staged(&StagedSnapshot {
                schema,
                relationships: r,
            })
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn proposals_round_trip(p in proposal()) {
        prop_assert_eq!(decode(&encode(&p)).unwrap(), p);
    }

    #[test]
    fn everything_else_round_trips(
        m in membership(),
        h in peers(),
        id in any::<u64>(),
        addr in text(),
        schema in proptest::option::of(text()),
        rs in vec(relationship(), 0..6),
    ) {
        prop_assert_eq!(decode_membership(&encode_membership(&m)).unwrap(), m);
        prop_assert_eq!(decode_snapshot_header(&encode_snapshot_header(&h)).unwrap(), h);
        prop_assert_eq!(
            decode_change_context(&change_entry_context(), &encode_change_context(id, &addr)).unwrap(),
            (id, addr)
        );
        let c = Chunk::Schema(schema.clone());
        prop_assert_eq!(decode_chunk(&encode_chunk(&c)).unwrap(), c);
        let c = Chunk::Relationships(rs.clone());
        prop_assert_eq!(decode_chunk(&encode_chunk(&c)).unwrap(), c);
        let s = StagedSnapshot { schema, relationships: rs };
        prop_assert_eq!(decode_staged(&encode_staged(&s)).unwrap(), s);
    }

    #[test]
    fn random_bytes_never_panic_nor_allocate_past_their_size(
        first in prop_oneof![Just(1u8), Just(2u8), Just(0xD1u8), Just(0xD2u8), any::<u8>()],
        rest in vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![first];
        bytes.extend(rest);
        let largest = decode_everything(&bytes);
        let bound = if first == 2 || first == 0xD2 { bound_v2(bytes.len()) } else { BOUND_V1 };
        prop_assert!(largest <= bound, "{largest} bytes allocated for {} bytes of input", bytes.len());
    }

    #[test]
    fn every_truncation_and_mutation_is_an_error_or_a_value(
        bytes in encoding(),
        at in any::<proptest::sample::Index>(),
        flip in any::<u8>(),
    ) {
        for end in 0..bytes.len() {
            let largest = decode_everything(&bytes[..end]);
            prop_assert!(largest <= BOUND_V1);
        }
        let mut mutated = bytes.clone();
        if !mutated.is_empty() {
            let i = at.index(mutated.len());
            mutated[i] ^= flip;
        }
        let largest = decode_everything(&mutated);
        prop_assert!(largest <= BOUND_V1);
    }
}

/// Huge counts and lengths in format 2, at every place one can stand, are refused without
/// reserving room for them.
#[test]
fn huge_lengths_are_refused_cheaply() {
    let huge = {
        let mut w = wire::Writer::default();
        w.varint(u64::MAX / 2);
        w.finish()
    };
    let cases: Vec<Vec<u8>> = vec![
        // writes count
        [&[2u8, 1, 1][..], &huge].concat(),
        // schema length
        [&[2u8, 1, 2][..], &huge].concat(),
        // preconditions count of the first write
        [&[2u8, 1, 1, 1][..], &huge].concat(),
        // relationships of a chunk
        [&[2u8, 2][..], &huge].concat(),
        // peers of a header
        [&[2u8][..], &huge].concat(),
        // voters of a membership
        [&[0xD2u8][..], &huge].concat(),
        // relationships of a staged snapshot
        [&[2u8, 0][..], &huge].concat(),
    ];
    for bytes in cases {
        let largest = decode_everything(&bytes);
        assert!(largest <= bound_v2(bytes.len()), "{largest} for {bytes:?}");
    }
    // A bare conf state with an unknown field claiming 2 MiB (protobuf would reserve them).
    let bare = [0xAAu8, 0x01, 0x80, 0x80, 0x80, 0x01];
    let largest = decode_everything(&bare);
    assert!(largest <= bound_v2(bare.len()), "{largest}");
    assert!(decode_membership(&bare).is_err());
    // A format 1 entry claiming 2^62 writes.
    let mut v1 = vec![1u8];
    v1.extend(7u64.to_le_bytes());
    v1.extend(0u32.to_le_bytes());
    v1.extend((1u64 << 62).to_le_bytes());
    let largest = decode_everything(&v1);
    assert!(largest <= BOUND_V1, "{largest}");
    assert!(decode(&v1).is_err());
}
