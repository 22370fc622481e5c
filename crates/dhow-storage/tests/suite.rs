//! Runs the shared `TupleStore` suite of `dhow-tuples` against `RocksStore`, each check on a
//! fresh database.

use std::cell::Cell;

use dhow_storage::{RocksStore, StoreOptions};

#[test]
fn rocks_store_passes_the_store_suite() {
    let root = tempfile::tempdir().expect("temp dir");
    let n = Cell::new(0u32);
    dhow_tuples::testsuite::run_all(|| {
        n.set(n.get() + 1);
        let path = root.path().join(format!("db{}", n.get()));
        RocksStore::open(&path, StoreOptions::default()).expect("open a fresh store")
    });
}
