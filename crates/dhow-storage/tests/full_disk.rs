//! A full disk is reported as `ErrorKind::NoSpace`, not as a generic IO error. Needs a small
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
