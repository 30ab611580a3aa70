//! Hostile scenario files: any text must load or be refused with a typed
//! error naming a line and column, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = conformance::Scenario::parse(text, std::path::Path::new("fuzz.toml")) {
        let _ = e.to_string();
    }
});
