//! Fuzzes `itera_fuzz::server_path` (see crates/itera-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| itera_fuzz::server_path(data));
