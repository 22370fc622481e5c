//! cargo-fuzz target: the relationship, subject and object parsers never panic, and whatever
//! parses prints back to text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = dhow_tuples::parse_relationship(s) {
            let again = dhow_tuples::parse_relationship(&r.to_string()).expect("printed form parses");
            assert_eq!(again, r);
        }
        let _ = dhow_tuples::parse_subject(s);
        let _ = dhow_tuples::parse_object(s);
    }
});
