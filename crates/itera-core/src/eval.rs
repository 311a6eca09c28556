//! Held-out evaluation in bits per byte (BPB = total CE in bits / UTF-8 bytes of the text),
//! comparable across tokenizers and architectures.
//!
//! A text is split into documents — on `<|endoftext|>` when it has any, otherwise one per
//! non-empty line (the held-out TinyStories files hold one story per line) — and every
//! document is scored from a fresh context, so itera models and the llama2.c teacher (whose
//! context is limited to seq_len) see exactly the same task. Every byte of a document is
//! predicted: itera models start from `<|endoftext|>`, the teacher from BOS.

use crate::error::{Error, Result};
use crate::family::Architecture;
use crate::layers::activations::log_sum_exp;
use crate::llama2c::{Llama2, Llama2Tokenizer};
use crate::tokenizer::{Codec, Tokenizer, END_OF_TEXT};
use crate::weights::Weights;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EvalReport {
    pub documents: usize,
    /// Predicted tokens.
    pub tokens: usize,
    pub bytes: usize,
    /// Σ −ln p(token) over predicted tokens, in nats.
    pub total_ce: f64,
}

impl EvalReport {
    pub fn mean_ce(&self) -> f64 {
        self.total_ce / self.tokens.max(1) as f64
    }
    pub fn perplexity(&self) -> f64 {
        self.mean_ce().exp()
    }
    pub fn bits_per_byte(&self) -> f64 {
        self.total_ce / std::f64::consts::LN_2 / self.bytes.max(1) as f64
    }
    /// Adds another text's counts: the sum of several files' reports is their joint report.
    pub fn merge(&mut self, other: &EvalReport) {
        self.documents += other.documents;
        self.tokens += other.tokens;
        self.bytes += other.bytes;
        self.total_ce += other.total_ce;
    }
}

/// The documents of an evaluation text (see module docs).
pub fn documents(text: &str) -> Vec<&str> {
    let docs: Vec<&str> = if text.contains(END_OF_TEXT) {
        text.split(END_OF_TEXT).collect()
    } else {
        text.lines().collect()
    };
    docs.into_iter().map(str::trim).filter(|d| !d.is_empty()).collect()
}

fn check_text(text: &str) -> Result<Vec<&str>> {
    let docs = documents(text);
    if docs.is_empty() {
        return Err(Error::EmptyInput("evaluation text (no non-blank document)"));
    }
    Ok(docs)
}

pub fn eval_itera(w: &Weights, tok: &Tokenizer, text: &str) -> Result<EvalReport> {
    eval_model(w, tok, text)
}

/// Evaluates a model of any family with its tokenizer (the project's, or a llama2.c
/// checkpoint's). A document longer than the model's context is scored in windows that each
/// restart from the story's start token (never for itera models, whose context is unbounded).
pub fn eval_model<A: Architecture>(w: &Weights<A>, tok: &impl Codec, text: &str) -> Result<EvalReport> {
    let v = A::vocab_size(&w.config);
    if tok.vocab_size() != v {
        return Err(Error::Tokenizer(format!(
            "tokenizer has {} ids but the model's vocabulary is {v}: wrong tokenizer for these weights",
            tok.vocab_size(),
        )));
    }
    let start = tok.story_start();
    // Targets per window: the context less the start token (at least one).
    let window = A::max_context(&w.config).saturating_sub(start.len()).max(1);
    let mut report = EvalReport::default();
    let mut st = A::new_state(w);
    let mut cache = A::Cache::default();
    let mut ids = Vec::new();
    for doc in check_text(text)? {
        let targets = tok.encode_text(doc)?;
        for piece in targets.chunks(window) {
            ids.clear();
            ids.extend_from_slice(&start);
            ids.extend_from_slice(piece);
            A::reset(&mut st);
            // Position i's logits predict ids[i + 1].
            A::prefill_chunked(w, &ids, &mut st, &mut cache, &mut |at, logits| {
                for (i, logits) in logits.chunks_exact(v).enumerate() {
                    if let Some(&target) = ids.get(at + i + 1) {
                        report.total_ce += (log_sum_exp(logits) - logits[target as usize]) as f64;
                        report.tokens += 1;
                    }
                }
                Ok(())
            })?;
        }
        report.documents += 1;
        report.bytes += doc.len();
    }
    Ok(report)
}

/// Evaluates a llama2.c model: its Transformer with its own tokenizer, documents longer than
/// its context in windows that each restart from BOS (slightly pessimistic, and rare for
/// TinyStories-length stories).
pub fn eval_llama2(model: &Llama2, tok: &Llama2Tokenizer, text: &str) -> Result<EvalReport> {
    eval_model(&model.weights, tok, text)
}
