//! The one home of Dhow's shared test support (a dev-dependency of the crates whose tests
//! need it): where the conformance scenarios live, relationships and tokens for tests,
//! `server` (the real API server in-process over a `MemNode`), `process` (the `dhow` binary
//! and a `dhow serve` process), `cluster` (clusters of real processes), `damage` (damaged data dirs), `proxy` (faults on
//! their peer links) and `history` (checking what the clients of a fault run saw).

pub mod cluster;
pub mod damage;
pub mod history;
pub mod process;
pub mod proxy;
pub mod server;

use dhow_proto::v1 as pb;

use std::path::PathBuf;

/// The folder of SpiceDB's public test scenarios: `../shared/conformance/spicedb` beside the
/// repository, or else `shared/conformance/spicedb` in the nearest folder above it that has
/// one (a worktree in a subfolder of the checkout's parent, as dhow-validate's own tests find
/// it).
pub fn conformance_dir() -> PathBuf {
    let root = repo_root();
    root.ancestors()
        .skip(1)
        .map(|a| a.join("shared/conformance/spicedb"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| root.join("../shared/conformance/spicedb"))
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

/// A relationship from its text form (`document:a#viewer@user:b[expiration:...]`).
pub fn rel(text: &str) -> pb::Relationship {
    let r = dhow_tuples::parse_relationship(text)
        .unwrap_or_else(|e| panic!("test relationship `{text}`: {e}"));
    dhow_wire::relationship_pb(&r)
}

/// The revision a token stands for (tests only: tokens are opaque to clients).
pub fn revision(t: &pb::ConsistencyToken) -> u64 {
    dhow_server::token::Token::decode(&t.token)
        .expect("a token from the server decodes")
        .revision
        .0
}

/// The repository's root (the folder of `Cargo.lock`), found upwards from the directory of
/// the package under test: cargo's value at run time (right even when a build from another
/// checkout shares the target dir), else the one compiled in.
pub fn repo_root() -> PathBuf {
    let start = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    );
    start
        .ancestors()
        .find(|d| d.join("Cargo.lock").exists())
        .unwrap_or(&start)
        .to_path_buf()
}
