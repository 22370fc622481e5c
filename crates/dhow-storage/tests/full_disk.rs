//! A full disk is reported as `ErrorKind::NoSpace`, not as a generic IO error, and the free-space
//! reserve is reported before a write fails. Needs a small
//! file system to fill, so it runs only when `DHOW_FULL_DISK_DIR` names one (e.g. as root:
//! `mount -t tmpfs -o size=3m tmpfs /tmp/dhow-full`, then
//! `DHOW_FULL_DISK_DIR=/tmp/dhow-full cargo test -p dhow-storage --test full_disk`).

use dhow_storage::{ErrorKind, RocksStore, StoreOptions};

#[test]
fn filling_the_disk_says_no_space() {
    let Ok(dir) = std::env::var("DHOW_FULL_DISK_DIR") else {
        eprintln!("DHOW_FULL_DISK_DIR is not set: nothing to fill, test skipped");
        return;
    };
    let dir = tempfile::tempdir_in(dir).unwrap();
    let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    let log = store.raft_log();
    let payload = vec![0xA5u8; 256 * 1024];
    let mut index = 1;
    let err = loop {
        match log.append(&[(index, 1, payload.clone())]) {
            Ok(()) => index += 1,
            Err(e) => break e,
        }
        assert!(index < 100_000, "the disk never filled");
    };
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    eprintln!("after {} entries: {err}", index - 1);
}

/// RocksDB does not recover from a failed WAL write without a reopen (measured: appends still
/// failed 30 s after the space was freed), so the store says when the disk is below its
/// reserve before anything fails: `check_space` is NoSpace on a full disk, and once space is
/// freed it is fine again and writes work, without reopening.
#[test]
fn the_reserve_is_reported_before_a_write_fails_and_writes_work_after() {
    let Ok(dir) = std::env::var("DHOW_FULL_DISK_DIR") else {
        eprintln!("DHOW_FULL_DISK_DIR is not set: nothing to fill, test skipped");
        return;
    };
    let dir = tempfile::tempdir_in(dir).unwrap();
    let store = RocksStore::open(
        &dir.path().join("db"),
        StoreOptions {
            min_free_bytes: 1024 * 1024,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let log = store.raft_log();
    let payload = vec![0xA5u8; 4 * 1024];
    log.append(&[(1, 1, payload.clone())]).unwrap();
    log.check_space().unwrap();
    let filler = dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let e = log.check_space().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert!(e.to_string().contains("below the reserve"), "{e}");
    std::fs::remove_file(&filler).unwrap();
    log.check_space().unwrap();
    log.append(&[(2, 1, payload)]).unwrap();
    assert_eq!(log.last_index(), 2);
}
