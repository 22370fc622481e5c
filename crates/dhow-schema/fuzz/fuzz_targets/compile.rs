//! cargo-fuzz target: `dhow_schema::compile` must never panic, and whatever compiles must
//! round-trip through the canonical printer. Run with `cargo +nightly fuzz run compile`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(schema) = dhow_schema::compile(text) {
        let printed = schema.to_string();
        let again = dhow_schema::compile(&printed).expect("printed schema compiles");
        assert_eq!(
            again, schema,
            "printed schema compiles differently:\n{printed}"
        );
    }
});
