//! Fuzzes `itera_fuzz::generation_settings` (see crates/itera-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| itera_fuzz::generation_settings(data));
