//! cargo-fuzz target: loading and running a validation file never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(file) = dhow_validate::load_str("fuzz.yaml", s, None) {
            let _ = dhow_validate::run(&file, &mut dhow_validate::InProcess::new());
        }
    }
});
