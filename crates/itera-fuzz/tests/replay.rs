//! Every fuzz target on stable: its seeds and every input that ever crashed it (kept in
//! `crashes/<target>/`, one file each, named by what it found) run through the same entry the
//! fuzzer calls. An input that panics fails this test.

use std::path::Path;

#[test]
fn seeds_and_every_past_crash_are_handled() {
    let crashes = Path::new(env!("CARGO_MANIFEST_DIR")).join("crashes");
    for &(name, entry) in itera_fuzz::TARGETS {
        let seeds = itera_fuzz::seeds(name);
        let mut past = Vec::new();
        if let Ok(dir) = std::fs::read_dir(crashes.join(name)) {
            for file in dir.flatten() {
                past.push((file.path(), std::fs::read(file.path()).unwrap()));
            }
        }
        assert!(!seeds.is_empty(), "{name} has no seeds");
        for seed in &seeds {
            entry(seed);
        }
        for (path, input) in &past {
            eprintln!("replaying {}", path.display());
            entry(input);
        }
        println!("{name}: {} seeds and {} past crashes handled", seeds.len(), past.len());
    }
}

/// The seeds are inputs that load: fuzzing starts from the accepted shapes, not from noise.
#[test]
fn the_seeds_are_valid_inputs() {
    for seed in itera_fuzz::seeds("safetensors") {
        itera_core::format::load(&seed).unwrap();
    }
    for seed in itera_fuzz::seeds("llama2c") {
        let n = u32::from_le_bytes(seed[..4].try_into().unwrap()) as usize;
        let model = itera_core::llama2c::Llama2::from_bytes(&seed[4..4 + n]).unwrap();
        itera_core::llama2c::Llama2Tokenizer::from_bytes(&seed[4 + n..], model.config.vocab_size).unwrap();
    }
    for seed in itera_fuzz::seeds("tokenizer_json") {
        itera_core::tokenizer::Tokenizer::from_json(&seed).unwrap();
    }
}
