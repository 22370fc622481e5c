//! Shared helpers for Dhow's cross-crate tests: where the conformance scenarios live and how
//! to enumerate them; `cluster` runs clusters of real processes, `proxy` injects faults into
//! their peer links, `history` checks what the clients of a fault run saw.

pub mod cluster;
pub mod history;
pub mod proxy;

use std::path::PathBuf;

/// The folder of SpiceDB's public test scenarios (`../shared/conformance/spicedb` beside the
/// repository).
pub fn conformance_dir() -> PathBuf {
    PathBuf::from(manifest_dir()).join("../../shared/conformance/spicedb")
}

/// Every `.yaml` scenario, sorted by name. Panics with a clear message if the folder is missing.
pub fn conformance_files() -> Vec<PathBuf> {
    let dir = conformance_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (is ../shared beside the repo?)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The package's directory: cargo's value at run time (right even when a build from another
/// checkout shares the target dir), else the one compiled in.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
