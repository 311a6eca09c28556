//! Fuzzes `itera_fuzz::safetensors` (see crates/itera-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| itera_fuzz::safetensors(data));
