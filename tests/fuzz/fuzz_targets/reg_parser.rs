//! Arbitrary `.reg` bytes (UTF-8 or UTF-16 with a BOM): parsed or refused
//! with a line number, never a panic; what parses can be queried.
#![no_main]

use connector::host::reg::RegFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match RegFile::parse_bytes(data) {
        Ok(file) => {
            let _ = file.dword(r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\.NETFramework\v4.0.30319", "SchUseStrongCrypto");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
