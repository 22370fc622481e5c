//! `dhow compact`: a full compaction of a stopped node's data dir, with the size of each
//! column family before and after (the number docs/benchmarks.md reports per relationship).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dhow_storage::{RocksStore, StorageStats, StoreOptions};

/// Compacts `<data_dir>/db` and prints its sizes; exit 0 on success, 1 with the reason
/// otherwise (no database there, or a node still running on it: RocksDB's lock).
pub fn run(data_dir: &Path) -> ExitCode {
    match compact(data_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn compact(data_dir: &Path) -> Result<(), String> {
    let db = data_dir.join("db");
    if !db.join("CURRENT").is_file() {
        return Err(format!("{} holds no Dhow database", db.display()));
    }
    let before = dir_bytes(&db)?;
    let store = RocksStore::open(
        &db,
        StoreOptions {
            create_if_missing: false,
            ..StoreOptions::default()
        },
    )
    .map_err(|e| format!("opening {} (is a node running on it?): {e}", db.display()))?;
    let stats_before = store.stats();
    store
        .compact()
        .map_err(|e| format!("compacting {}: {e}", db.display()))?;
    let stats = store.stats();
    drop(store);
    let after = dir_bytes(&db)?;
    println!("column family      SST bytes before   SST bytes after");
    for (name, bytes) in &stats.sst_bytes {
        println!(
            "{name:<16} {:>18} {:>17}",
            sst_of(&stats_before, name),
            bytes
        );
    }
    println!(
        "{}: {before} bytes before, {after} bytes after (every file, WAL and logs included)",
        db.display()
    );
    Ok(())
}

fn sst_of(stats: &StorageStats, name: &str) -> u64 {
    stats
        .sst_bytes
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, b)| *b)
}

/// The bytes of every file under `dir` (what `du -sb` counts, less the directories).
fn dir_bytes(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("listing {}: {e}", d.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("listing {}: {e}", d.display()))?;
            let meta = entry
                .metadata()
                .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}
