//! Memory is bounded by design, not by the prompt: a counting allocator measures the peak heap
//! of starting a generation (encode + prefill) and of scoring a text. A prompt of the most
//! tokens accepted peaks within a fixed bound and no higher than one sixteen times shorter
//! (beyond its own ids), because the CPU prefill runs one `PREFILL_CHUNK` at a time; a
//! 65,536-byte prompt of one token a byte is refused by the token limit within the same bound.
//!
//! One test function: the allocator's counters are process-wide, so nothing else may run
//! beside the measurement.

mod peak_heap;

use itera_core::eval::eval_itera;
use itera_core::generate::{GenerateOptions, Generation, MAX_PROMPT_BYTES, MAX_PROMPT_TOKENS};
use itera_core::sampling::SamplingSettings;
use itera_core::tokenizer::Tokenizer;
use itera_core::Error;
use peak_heap::{peak_of, BOUND};

const MIB: f64 = (1 << 20) as f64;

#[test]
fn the_longest_prompts_peak_within_a_fixed_bound() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weights");
    let w = itera_core::format::load_file(&dir.join("itera-tiny-q8.safetensors")).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let opts = GenerateOptions {
        max_tokens: 1,
        sampling: SamplingSettings {
            temperature: 0.0,
            ..SamplingSettings::default()
        },
        stop_at_end_of_text: false,
    };
    let start = |prompt: &str| {
        let mut g = Generation::start(&w, &tok, prompt, opts)?;
        g.next(&w, &tok)?;
        Ok::<usize, Error>(g.sequence().1 - 1)
    };
    // A crab is four bytes, each byte its own token.
    let longest = "🦀".repeat(MAX_PROMPT_TOKENS / 4);
    let shorter = "🦀".repeat(MAX_PROMPT_TOKENS / 64);
    let t = std::time::Instant::now();
    let (long_peak, long_tokens) = peak_of(|| start(&longest).unwrap());
    let long_took = t.elapsed();
    let (short_peak, short_tokens) = peak_of(|| start(&shorter).unwrap());
    assert_eq!(long_tokens, MAX_PROMPT_TOKENS);

    let too_many = "🦀".repeat(MAX_PROMPT_BYTES / 4);
    let (refused_peak, refused) = peak_of(|| start(&too_many));
    let e = refused.unwrap_err().to_string();
    assert!(
        e.contains("prompt length") && e.contains(&format!("at most {MAX_PROMPT_TOKENS} tokens")),
        "{e}"
    );

    let story = "Once upon a time, a little fox found a red ball in the garden. ".repeat(2000);
    let story = &story[..MAX_PROMPT_BYTES];
    let (eval_peak, report) = peak_of(|| eval_itera(&w, &tok, story).unwrap());
    println!(
        "peak heap: a prompt of {long_tokens} tokens {:.1} MiB ({long_took:.1?}), of {short_tokens} \
         tokens {:.1} MiB; {} bytes refused ({e}) {:.1} MiB; eval of {} bytes ({} tokens) {:.1} MiB",
        long_peak as f64 / MIB,
        short_peak as f64 / MIB,
        too_many.len(),
        refused_peak as f64 / MIB,
        story.len(),
        report.tokens,
        eval_peak as f64 / MIB,
    );
    for (what, peak) in [
        ("generation", long_peak),
        ("refusal", refused_peak),
        ("eval", eval_peak),
    ] {
        assert!(peak < BOUND, "{what} peaked at {peak} bytes");
    }
    // The prompt's own text and its encoding (the tokenizer keeps an id, offsets and a piece
    // a token) grow with it, tens of bytes a token; nothing else may (an unchunked prefill
    // grows by about 70 KB a token).
    let growth = long_peak.saturating_sub(short_peak);
    let own = 64 * (longest.len() - shorter.len());
    assert!(growth <= own, "the peak grew by {growth} bytes for a 16× longer prompt");
}
