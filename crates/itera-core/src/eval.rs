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
    /// The token budget (`EvalOptions::max_tokens`) ended it before the text did: the counts
    /// are those of the part scored (the last document's bytes: those of its scored tokens).
    pub truncated: bool,
}

/// How an evaluation runs.
#[derive(Clone, Copy, Default)]
pub struct EvalOptions<'a> {
    /// Stop after scoring this many tokens (the report says it was `truncated`).
    pub max_tokens: Option<usize>,
    /// Worker threads over the documents (independent); 0 or 1: this thread. Without a token
    /// budget only (a budget is spent in document order).
    pub threads: usize,
    /// Told the text's bytes scored so far (approximately, within a document) and the tokens.
    pub progress: Option<&'a (dyn Fn(EvalProgress) + Sync)>,
}

/// Where an evaluation is.
#[derive(Clone, Copy, Debug)]
pub struct EvalProgress {
    pub bytes_done: usize,
    pub bytes_total: usize,
    pub tokens: usize,
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
        self.truncated |= other.truncated;
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
pub fn eval_model<A: Architecture>(w: &Weights<A>, tok: &(impl Codec + Sync), text: &str) -> Result<EvalReport> {
    eval_model_with(w, tok, text, EvalOptions::default())
}

/// `eval_model` with a token budget, threads and progress. Memory: the ids of one window (a
/// document, or a context's worth for a Transformer; 4 bytes per token) and one prefill
/// chunk's activations per thread — the tokenizer is handed `ENCODE_WINDOW` bytes at a time.
pub fn eval_model_with<A: Architecture>(
    w: &Weights<A>,
    tok: &(impl Codec + Sync),
    text: &str,
    opts: EvalOptions,
) -> Result<EvalReport> {
    let v = A::vocab_size(&w.config);
    if tok.vocab_size() != v {
        return Err(Error::Tokenizer(format!(
            "tokenizer has {} ids but the model's vocabulary is {v}: wrong tokenizer for these weights",
            tok.vocab_size(),
        )));
    }
    let docs = check_text(text)?;
    let bytes_total: usize = docs.iter().map(|d| d.len()).sum();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let scored = std::sync::atomic::AtomicUsize::new(0);
    let tell = |bytes: usize, tokens: usize| {
        use std::sync::atomic::Ordering::Relaxed;
        let (b, t) = (
            done.fetch_add(bytes, Relaxed) + bytes,
            scored.fetch_add(tokens, Relaxed) + tokens,
        );
        if let Some(progress) = opts.progress {
            progress(EvalProgress {
                bytes_done: b,
                bytes_total,
                tokens: t,
            });
        }
    };
    let threads = opts.threads.max(1).min(docs.len());
    if threads == 1 || opts.max_tokens.is_some() {
        return eval_documents(w, tok, &docs, opts.max_tokens, &tell);
    }
    // Contiguous groups of about equal bytes, merged in order.
    let per = bytes_total.div_ceil(threads);
    let mut groups: Vec<&[&str]> = Vec::new();
    let (mut from, mut acc) = (0, 0);
    for (i, d) in docs.iter().enumerate() {
        acc += d.len();
        if acc >= per * (groups.len() + 1) || i + 1 == docs.len() {
            groups.push(&docs[from..=i]);
            from = i + 1;
        }
    }
    let reports: Vec<Result<EvalReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .iter()
            .map(|g| scope.spawn(|| eval_documents(w, tok, g, None, &tell)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Worker("an evaluation thread panicked".into())))
            })
            .collect()
    });
    let mut total = EvalReport::default();
    for r in reports {
        total.merge(&r?);
    }
    Ok(total)
}

/// Scores `docs` in order on this thread, up to `budget` tokens.
fn eval_documents<A: Architecture>(
    w: &Weights<A>,
    tok: &impl Codec,
    docs: &[&str],
    budget: Option<usize>,
    tell: &(dyn Fn(usize, usize) + Sync),
) -> Result<EvalReport> {
    let v = A::vocab_size(&w.config);
    let start = tok.story_start();
    // Targets per window: the context less the start token (at least one).
    let window = A::max_context(&w.config).saturating_sub(start.len()).max(1);
    let mut report = EvalReport::default();
    let mut st = A::new_state(w);
    let mut cache = A::Cache::default();
    // The document's ids after the start (4 bytes per token), and a context's window of them.
    let mut ids: Vec<u32> = Vec::new();
    let mut scratch: Vec<u32> = Vec::new();
    // Scores `ids` (the start, then up to `window` targets) from a fresh context.
    let mut score = |ids: &[u32], report: &mut EvalReport, bytes_per_token: f64| -> Result<()> {
        A::reset(&mut st);
        // Position i's logits predict ids[i + 1].
        A::prefill_chunked(w, ids, &mut st, &mut cache, &mut |at, logits| {
            let before = report.tokens;
            for (i, logits) in logits.chunks_exact(v).enumerate() {
                if let Some(&target) = ids.get(at + i + 1) {
                    report.total_ce += (log_sum_exp(logits) - logits[target as usize]) as f64;
                    report.tokens += 1;
                }
            }
            let n = report.tokens - before;
            tell((n as f64 * bytes_per_token) as usize, n);
            Ok(())
        })
    };
    for doc in docs {
        let left = budget.map(|b| b.saturating_sub(report.tokens));
        if left == Some(0) {
            report.truncated = true;
            break;
        }
        ids.clear();
        ids.extend_from_slice(&start);
        // Enough tokens for the budget end the tokenizing too.
        let want = left.map_or(usize::MAX, |l| start.len() + l);
        tok.encode_long(doc, &mut |piece| {
            ids.extend_from_slice(piece);
            ids.len() < want
        })?;
        let mut doc_bytes = doc.len();
        if let Some(left) = left.filter(|&l| l <= ids.len() - start.len()) {
            ids.truncate(start.len() + left);
            // The bytes of the tokens scored: each token's own bytes after the one before it.
            let mut prev = start.last().copied().unwrap_or_default();
            doc_bytes = 0;
            for &t in &ids[start.len()..] {
                doc_bytes += tok.piece(prev, t)?.len();
                prev = t;
            }
            report.truncated = true;
        }
        let targets = ids.len() - start.len();
        let bytes_per_token = doc_bytes as f64 / targets.max(1) as f64;
        if targets <= window {
            score(&ids, &mut report, bytes_per_token)?;
        } else {
            for piece in ids[start.len()..].chunks(window) {
                scratch.clear();
                scratch.extend_from_slice(&start);
                scratch.extend_from_slice(piece);
                score(&scratch, &mut report, bytes_per_token)?;
            }
        }
        report.documents += 1;
        report.bytes += doc_bytes;
        if report.truncated {
            break;
        }
    }
    Ok(report)
}

/// Evaluates a llama2.c model: its Transformer with its own tokenizer, documents longer than
/// its context in windows that each restart from BOS (slightly pessimistic, and rare for
/// TinyStories-length stories).
pub fn eval_llama2(model: &Llama2, tok: &Llama2Tokenizer, text: &str) -> Result<EvalReport> {
    eval_model(&model.weights, tok, text)
}
