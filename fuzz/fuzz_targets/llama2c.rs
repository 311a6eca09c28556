//! Fuzzes `itera_fuzz::llama2c` (see crates/itera-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| itera_fuzz::llama2c(data));
