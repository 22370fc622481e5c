//! The check cache: answers of sub-problems (`resource#relation` for one subject at one
//! revision) shared by every request of this node, through the engine's `SharedResults`
//! boundary. The engine decides what may be shared (final answers only, never with a proof, a
//! caveat context or a clock); this module only keeps them, in a `quick_cache` bounded in
//! bytes (`check_cache_bytes`), and counts hits and misses for the metrics.
//!
//! Keyed by revision, an entry never goes stale: a revision's data never changes, and a
//! revocation is a new revision that no entry is keyed by. Reads at the newest revision
//! (`minimize_latency`) therefore share answers only between two writes; entries of older
//! revisions age out by the cache's eviction.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use dhow_engine::{SharedKey, SharedKeyRef, SharedResults, SharedValue};
use quick_cache::{sync::Cache, Equivalent, Weighter};

/// Entries weigh what they hold, roughly.
#[derive(Clone)]
struct Bytes;

impl Weighter<SharedKey, SharedValue> for Bytes {
    fn weight(&self, key: &SharedKey, value: &SharedValue) -> u64 {
        (key.weight() + value.weight()) as u64
    }
}

/// A borrowed key, looked up without allocating; hashes as the owned key does.
struct Probe<'a>(&'a SharedKeyRef<'a>);

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl Equivalent<SharedKey> for Probe<'_> {
    fn equivalent(&self, key: &SharedKey) -> bool {
        self.0.is(key)
    }
}

/// The node's check cache.
pub struct CheckCache {
    cache: Cache<SharedKey, SharedValue, Bytes>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// An answer weighs about 150 bytes with its key: the estimate the cache sizes its table by.
const TYPICAL_ENTRY_BYTES: u64 = 150;

impl CheckCache {
    /// A cache of at most `bytes` (roughly: keys and values as they are held).
    pub fn new(bytes: usize) -> CheckCache {
        let bytes = bytes as u64;
        let items = (bytes / TYPICAL_ENTRY_BYTES).max(16) as usize;
        CheckCache {
            cache: Cache::with_weighter(items, bytes, Bytes),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that found nothing so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// The weight held now, in bytes (roughly).
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }
}

impl SharedResults for CheckCache {
    fn get(&self, key: &SharedKeyRef<'_>) -> Option<SharedValue> {
        let found = self.cache.get(&Probe(key));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn put(&self, key: SharedKey, value: SharedValue) {
        self.cache.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_tuples::{ObjectRef, Revision, Subject};

    fn key(rev: u64, id: &str) -> SharedKey {
        SharedKey {
            revision: Revision(rev),
            resource: ObjectRef::new("document", id),
            relation: "view".to_string(),
            subject: Subject::set("group", "eng", "member"),
        }
    }

    fn probe(k: &SharedKey) -> SharedKeyRef<'_> {
        SharedKeyRef {
            revision: k.revision,
            resource: &k.resource,
            relation: &k.relation,
            subject: &k.subject,
        }
    }

    #[test]
    fn a_borrowed_key_finds_what_the_owned_key_stored() {
        let cache = CheckCache::new(1 << 20);
        let (a, b) = (key(1, "a"), key(2, "a"));
        assert!(cache.get(&probe(&a)).is_none());
        cache.put(a.clone(), shared_true());
        assert_eq!(cache.get(&probe(&a)), Some(shared_true()));
        assert!(
            cache.get(&probe(&b)).is_none(),
            "another revision is another key"
        );
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
        assert!(cache.bytes() > 0);
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let cache = CheckCache::new(64 * 1024);
        for i in 0..10_000 {
            cache.put(key(i, &format!("doc-{i}")), shared_true());
        }
        assert!(cache.bytes() <= 64 * 1024, "{} bytes", cache.bytes());
    }

    /// An allowed answer, taken from a real shared evaluation.
    fn shared_true() -> SharedValue {
        use std::sync::{Arc, Mutex};
        #[derive(Default)]
        struct Grab(Mutex<Option<SharedValue>>);
        impl SharedResults for Grab {
            fn get(&self, _: &SharedKeyRef<'_>) -> Option<SharedValue> {
                None
            }
            fn put(&self, _: SharedKey, v: SharedValue) {
                *self.0.lock().unwrap() = Some(v);
            }
        }
        let schema =
            dhow_schema::compile("definition user {}\ndefinition doc { relation viewer: user }")
                .unwrap();
        let engine = dhow_engine::Engine::new(Arc::new(schema));
        let mut store = dhow_tuples::MemStore::new();
        store
            .write(&[dhow_tuples::WriteOp::Create(
                dhow_tuples::parse_relationship("doc:d#viewer@user:u").unwrap(),
            )])
            .unwrap();
        let grab = Arc::new(Grab::default());
        let opts = dhow_engine::Options {
            shared: Some(dhow_engine::Shared(grab.clone())),
            ..dhow_engine::Options::now()
        };
        let req = dhow_engine::CheckRequest::new(
            ObjectRef::new("doc", "d"),
            "viewer",
            Subject::object("user", "u"),
        );
        assert!(engine.check(&store.latest(), &req, opts).unwrap().allowed);
        let v = grab.0.lock().unwrap().take();
        v.expect("the engine offered its answer")
    }
}
