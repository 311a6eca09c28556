//! One entry per untrusted input, each taking raw bytes and returning nothing: an input may be
//! refused (that is what a malformed one should get) but must never panic, abort or allocate
//! without bound. `fuzz/` (cargo-fuzz, nightly) drives these; `tests/replay.rs` replays the
//! seeds and every input that ever crashed (`crashes/<target>/`) on stable with `cargo test`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use itera_core::generate::{GenerateOptions, Generation};
use itera_core::llama2c::{Llama2, Llama2Tokenizer};
use itera_core::sampling::SamplingSettings;
use itera_core::tokenizer::Tokenizer;
use itera_core::Weights;

#[path = "../../../xtask/src/mounts.rs"]
#[allow(dead_code)] // the server's file also holds what only the server uses
mod mounts;

/// A fuzz target's entry: any bytes in, refused or handled, never a panic.
pub type Entry = fn(&[u8]);

/// The fuzz targets by name (`cargo xtask fuzz --target NAME`), with their entries.
pub const TARGETS: &[(&str, Entry)] = &[
    ("safetensors", safetensors),
    ("llama2c", llama2c),
    ("tokenizer_json", tokenizer_json),
    ("generation_settings", generation_settings),
    ("sampling", sampling),
    ("server_path", server_path),
];

/// The repository's root (the shipped models and the served folders are read from it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An itera weight file: parsed, and when it loads, one decode step run on it.
pub fn safetensors(data: &[u8]) {
    if let Ok(w) = itera_core::format::load(data) {
        let mut st = itera_core::State::new(&w);
        let _ = itera_core::model::decode_step(&w, &mut st, 0);
    }
}

/// A llama2.c checkpoint and tokenizer.bin: the first four bytes give the checkpoint's length
/// (little-endian), the rest is the tokenizer. When both load, a prompt is encoded and one
/// token generated.
pub fn llama2c(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let split = (u32::from_le_bytes(*head) as usize).min(rest.len());
    let (checkpoint, tokenizer) = rest.split_at(split);
    let Ok(model) = Llama2::from_bytes(checkpoint) else {
        return;
    };
    let Ok(tok) = Llama2Tokenizer::from_bytes(tokenizer, model.config.vocab_size) else {
        return;
    };
    let _ = tok.encode("Once upon a time 🦀", true);
    if let Ok(mut g) = itera_core::generate::Generation::start(&model.weights, &tok, "Once", options(2, 0.0)) {
        let _ = g.next(&model.weights, &tok);
    }
}

/// A tokenizer.json: parsed, and when it loads, a text encoded and decoded.
pub fn tokenizer_json(data: &[u8]) {
    if let Ok(tok) = Tokenizer::from_json(data) {
        if let Ok(ids) = tok.encode("Once upon a time, a fox 🦀 said \"hi\".\n") {
            let _ = tok.decode(&ids);
        }
    }
}

/// Sampling settings from 20 raw bytes (any bit pattern: NaN, infinities, zero, huge):
/// temperature, top-p, top-k, then the seed's high and low words.
fn sampling_settings(head: &[u8; 20]) -> SamplingSettings {
    let f32_at = |i: usize| f32::from_le_bytes(head[i..i + 4].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap());
    SamplingSettings {
        temperature: f32_at(0),
        top_p: f32_at(4),
        top_k: u32_at(8) as usize,
        seed: u64::from(u32_at(12)) << 32 | u64::from(u32_at(16)),
    }
}

/// Generation settings as the page and the CLI pass them, from raw bytes: the sampling
/// settings from the first 20 (`sampling_settings`), the token count from the next 4, the rest
/// the prompt (its first 40 bytes: a prompt that short runs through decode steps, a few
/// hundred times faster to fuzz than the batch prefill, which the prompt limit and parity
/// tests cover). Refused or run for at most 4 tokens, on the shipped micro model.
pub fn generation_settings(data: &[u8]) {
    let Some((head, prompt)) = data.split_first_chunk::<24>() else {
        return;
    };
    let (sampling, count) = head.split_first_chunk::<20>().expect("24 bytes hold 20");
    let count: [u8; 4] = count.try_into().expect("and 4 more");
    let opts = GenerateOptions {
        // At most 4 tokens run (the count itself is validated from the full value first).
        max_tokens: u32::from_le_bytes(count) as usize,
        sampling: sampling_settings(sampling),
        stop_at_end_of_text: count[0] & 1 == 0,
    };
    let (w, tok) = micro();
    let prompt = String::from_utf8_lossy(&prompt[..prompt.len().min(40)]);
    if let Ok(mut g) = Generation::start(w, tok, &prompt, opts) {
        for _ in 0..4 {
            if !matches!(g.next(w, tok), Ok(Some(_))) {
                break;
            }
        }
        let _ = g.finish();
    }
}

/// The sampler alone, fast enough for millions of runs: settings from the first 20 bytes
/// (`sampling_settings`), the rest as logits (any f32 bit patterns: NaN, ±∞, ties). Settings
/// the core accepts must sample an id inside the vocabulary, several times in a row.
pub fn sampling(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<20>() else {
        return;
    };
    let settings = sampling_settings(head);
    let logits: Vec<f32> = rest
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let Ok(mut sampler) = itera_core::sampling::Sampler::new(settings) else {
        return;
    };
    if logits.is_empty() {
        return;
    }
    for position in [0, 1, u32::MAX] {
        let id = sampler.sample(&logits, position) as usize;
        assert!(
            id < logits.len(),
            "sampled {id} of {} logits with {settings:?}",
            logits.len()
        );
    }
}

/// A request target for the dev server: it resolves to a file inside a served folder, or is
/// refused — never to anything outside them.
pub fn server_path(data: &[u8]) {
    let Ok(target) = std::str::from_utf8(data) else { return };
    let root = root();
    let m = mounts::Mounts::new(&root);
    if let Ok(path) = m.resolve(target) {
        let inside = ["web", "weights", "target/web"]
            .iter()
            .filter_map(|d| root.join(d).canonicalize().ok())
            .any(|d| path.starts_with(d));
        assert!(
            inside,
            "{target:?} resolved outside the served folders: {}",
            path.display()
        );
    }
}

/// The inputs a target starts from: the shipped files (and the reference data in
/// ../shared/data when present), a few hand-made ones.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let read = |p: PathBuf| std::fs::read(p).ok();
    match target {
        // The test shape in every precision: what the shipped files are, at a size that
        // mutates fast (a shipped model, 168 KB and up, slows every execution tenfold).
        "safetensors" => {
            let c = itera_core::Config::preset("test").expect("the test preset");
            let w = Weights::init_random(&c, 1).expect("random weights");
            itera_core::Precision::ALL
                .iter()
                .filter_map(|&p| itera_core::format::save(&w.to_precision(p)).ok())
                .collect()
        }
        "llama2c" => {
            let mut seeds = vec![llama2c_seed(&tiny_llama2c(), &tiny_llama2c_tokenizer())];
            let data = root().join("../shared/data/teacher");
            if let (Some(checkpoint), Some(tokenizer)) =
                (read(data.join("stories260K.bin")), read(data.join("tok512.bin")))
            {
                seeds.push(llama2c_seed(&checkpoint, &tokenizer));
            }
            seeds
        }
        // A small trained tokenizer (the shipped one is 250 KB of JSON: slow to mutate).
        "tokenizer_json" => {
            let text = "Once upon a time, a little fox found a red ball. 🦀 \"Hi!\" said Tom.\n".repeat(8);
            let tok = Tokenizer::train(std::iter::once(text), 300).expect("a small tokenizer");
            tok.to_json().map(String::into_bytes).into_iter().collect()
        }
        "generation_settings" => [(0.8f32, 0.9f32, 0u32, 8u32, "Once upon a time"), (0.0, 1.0, 40, 3, "")]
            .iter()
            .map(|&(temperature, top_p, top_k, tokens, prompt)| {
                let mut seed = Vec::new();
                for word in [temperature.to_bits(), top_p.to_bits(), top_k, 0, 7, tokens] {
                    seed.extend(word.to_le_bytes());
                }
                seed.extend(prompt.as_bytes());
                seed
            })
            .collect(),
        "sampling" => [(0.8f32, 0.9f32, 0u32), (0.0, 1.0, 3), (1.5, 0.5, 40)]
            .iter()
            .map(|&(temperature, top_p, top_k)| {
                let mut seed = Vec::new();
                for word in [temperature.to_bits(), top_p.to_bits(), top_k, 0, 7] {
                    seed.extend(word.to_le_bytes());
                }
                for i in 0..64 {
                    seed.extend(((i * 7 % 13) as f32 - 6.0).to_le_bytes());
                }
                seed
            })
            .collect(),
        "server_path" => [
            "/",
            "/weights/tokenizer.json?v=1",
            "/pkg/itera_web.js",
            "/%2e%2e/Cargo.toml",
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect(),
        _ => Vec::new(),
    }
}

/// A `llama2c` input: the checkpoint's length, the checkpoint, the tokenizer.
fn llama2c_seed(checkpoint: &[u8], tokenizer: &[u8]) -> Vec<u8> {
    let mut seed = (checkpoint.len() as u32).to_le_bytes().to_vec();
    seed.extend(checkpoint);
    seed.extend(tokenizer);
    seed
}

/// The smallest useful llama2.c checkpoint: dim 8, one layer, the 259 + 1 pieces of
/// `tiny_llama2c_tokenizer`, context 16, small deterministic weights.
fn tiny_llama2c() -> Vec<u8> {
    let c = itera_core::llama2c::Llama2Config {
        dim: 8,
        hidden_dim: 16,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 2,
        vocab_size: 260,
        seq_len: 16,
        shared_classifier: true,
    };
    let header = [
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.vocab_size,
        c.seq_len,
    ];
    let mut bytes: Vec<u8> = header.iter().flat_map(|&h| (h as i32).to_le_bytes()).collect();
    for i in 0..c.file_floats() as usize {
        bytes.extend((((i * 37) % 19) as f32 / 19.0 - 0.5).to_le_bytes());
    }
    bytes
}

/// A llama2.c tokenizer.bin: <unk>, <s>, </s>, the 256 byte pieces, a space.
fn tiny_llama2c_tokenizer() -> Vec<u8> {
    let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
    pieces.push(b" ".to_vec());
    let mut bytes = 6u32.to_le_bytes().to_vec(); // max_token_length
    for (i, piece) in pieces.iter().enumerate() {
        bytes.extend((-(i as f32)).to_le_bytes());
        bytes.extend((piece.len() as i32).to_le_bytes());
        bytes.extend(piece);
    }
    bytes
}

fn options(max_tokens: usize, temperature: f32) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingSettings {
            temperature,
            ..SamplingSettings::default()
        },
        stop_at_end_of_text: true,
    }
}

/// The shipped micro q4 model and the tokenizer, loaded once.
fn micro() -> &'static (Weights, Tokenizer) {
    static MODEL: OnceLock<(Weights, Tokenizer)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = root().join("weights");
        (
            itera_core::format::load_file(&dir.join("itera-micro-q4.safetensors")).expect("the shipped model"),
            Tokenizer::from_file(&dir.join("tokenizer.json")).expect("the shipped tokenizer"),
        )
    })
}
