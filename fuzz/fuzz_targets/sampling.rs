//! Fuzzes `itera_fuzz::sampling` (see crates/itera-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| itera_fuzz::sampling(data));
