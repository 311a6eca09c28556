//! Fuzzes `itera_fuzz::tokenizer_json` (see crates/itera-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| itera_fuzz::tokenizer_json(data));
