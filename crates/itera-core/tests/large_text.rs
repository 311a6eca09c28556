//! Large texts in bounded memory: the tokenizer is handed `ENCODE_WINDOW` bytes at a time and
//! gives the whole text's ids (windows that fall inside words and multi-byte characters move to
//! the next cut point), and scoring a multi-MiB text of one long document peaks within 4 bytes
//! per token of it plus a fixed 64 MiB, a token budget ends it early and says so, and threads
//! give the single thread's figures.
//!
//! One test function measures the heap (the allocator's counters are process-wide).

mod peak_heap;

use itera_core::eval::{eval_model, eval_model_with, EvalOptions};
use itera_core::tokenizer::{encode_pieces, Codec, Tokenizer, ENCODE_WINDOW};
use peak_heap::peak_of;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weights")
}

/// Sentences with multi-byte characters, double spaces and (one of them) a newline, no blank
/// line; `one_line` keeps the newline out (one long document, as the held-out files' format
/// reads a text without `<|endoftext|>`: a document per line).
fn text(bytes: usize, one_line: bool) -> String {
    let parts = [
        "Once upon a time, Zoë met a fox named Léon.",
        "The 🦊 said: «bonjour»  to the bird.",
        "They ate 日本の apples\nand drank tea.",
        "It was fun!   Then they slept.",
    ];
    let mut s = String::new();
    let mut i = 0;
    while s.len() < bytes {
        let part = parts[i % parts.len()];
        s.push_str(&if one_line {
            part.replace('\n', " ")
        } else {
            part.to_string()
        });
        s.push(' ');
        i += 1;
    }
    s
}

#[test]
fn large_texts_tokenize_and_score_in_bounded_memory() {
    let tok = Tokenizer::from_file(&root().join("tokenizer.json")).unwrap();
    // Pieces: each within a window (plus a stretch with no cut point), the text again when
    // joined, and the whole text's ids when encoded one by one.
    let t = text(5 * ENCODE_WINDOW + 1234, false);
    let pieces: Vec<&str> = encode_pieces(&t).collect();
    assert!(pieces.len() >= 5 && pieces.iter().all(|p| p.len() <= ENCODE_WINDOW));
    assert_eq!(pieces.concat(), t);
    let mut streamed = Vec::new();
    tok.encode_long(&t, &mut |ids| {
        streamed.extend_from_slice(ids);
        true
    })
    .unwrap();
    assert_eq!(
        streamed,
        tok.encode(&t).unwrap(),
        "the pieces' ids are the whole text's"
    );
    let spaceless = "ab".repeat(ENCODE_WINDOW);
    assert_eq!(encode_pieces(&spaceless).count(), 1, "no cut point: one piece");

    // A 6 MiB document, the budget scoring 20,000 of its tokens: memory is its ids and a fixed
    // amount, whatever the text's length.
    let w = itera_core::format::load_file(&root().join("itera-micro-q8.safetensors")).unwrap();
    let big = text(6 << 20, true);
    let opts = EvalOptions {
        max_tokens: Some(20_000),
        ..EvalOptions::default()
    };
    let t0 = std::time::Instant::now();
    let (peak, r) = peak_of(|| eval_model_with(&w, &tok, &big, opts).unwrap());
    let ids = big.len() / 2; // fewer than one token per two bytes here (checked below)
    println!(
        "a {:.1} MiB document, 20,000 tokens scored: peak heap {:.1} MiB in {:.1?}",
        big.len() as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        t0.elapsed()
    );
    assert!(r.truncated && r.tokens == 20_000 && r.documents == 1, "{r:?}");
    assert!(
        r.bytes > 20_000 && r.bytes < big.len() / 10,
        "the scored part's bytes: {}",
        r.bytes
    );
    assert!(peak <= 4 * ids + (64 << 20), "peak {peak} bytes");

    // Threads give one thread's report; progress ends at every byte.
    let docs = text(80_000, true).replace(". ", ".\n");
    let one = eval_model(&w, &tok, &docs).unwrap();
    let last = std::sync::Mutex::new(None);
    let progress = |p: itera_core::eval::EvalProgress| *last.lock().unwrap() = Some(p);
    let two = eval_model_with(
        &w,
        &tok,
        &docs,
        EvalOptions {
            threads: 2,
            progress: Some(&progress),
            ..EvalOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        (one.documents, one.tokens, one.bytes),
        (two.documents, two.tokens, two.bytes)
    );
    assert!((one.total_ce - two.total_ce).abs() < 1e-9 * one.total_ce);
    let p = last.lock().unwrap().unwrap();
    assert_eq!((p.tokens, p.bytes_total), (one.tokens, one.bytes));
    assert!(p.bytes_done.abs_diff(p.bytes_total) < p.bytes_total / 100, "{p:?}");
}
