//! Text generation with an itera model: prompt → prefill → sample/decode loop, streaming
//! complete UTF-8 text to a callback that can stop it. The routing of every generated token
//! is recorded. Timing is left to callers (there is no clock on bare wasm32).

use crate::error::{Error, Result};
use crate::model::{decode_step, prefill, Route, State};
use crate::sampling::{Sampler, SamplingSettings};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::weights::Weights;

/// Longest prompt accepted (in bytes): far beyond any story, small enough to stay responsive.
pub const MAX_PROMPT_BYTES: usize = 1 << 20;
/// Most tokens one call may generate.
pub const MAX_NEW_TOKENS: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingSettings,
    /// Stop when the model emits `<|endoftext|>` (the end of a story).
    pub stop_at_end_of_text: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Generated {
    pub prompt_tokens: Vec<u32>,
    pub tokens: Vec<u32>,
    pub text: String,
    /// Per generated token, per layer: the experts chosen for it (empty for dense layers).
    pub routing: Vec<Vec<Route>>,
}

/// Generates after `prompt` (which may be empty: the context then starts at end-of-text, the
/// beginning of a story). `on_text` receives each complete piece of text and returns false
/// to stop.
pub fn generate(
    w: &Weights,
    tok: &Tokenizer,
    prompt: &str,
    opts: GenerateOptions,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(Error::setting("prompt length", prompt.len(), "at most 1 MiB"));
    }
    if opts.max_tokens == 0 || opts.max_tokens > MAX_NEW_TOKENS {
        return Err(Error::setting("max_tokens", opts.max_tokens, "between 1 and 1048576"));
    }
    if tok.vocab_size() != w.config.vocab_size {
        return Err(Error::Tokenizer(format!(
            "tokenizer has {} ids but the model's vocabulary is {}",
            tok.vocab_size(),
            w.config.vocab_size
        )));
    }
    let mut sampler = Sampler::new(opts.sampling)?;
    let mut prompt_tokens: Vec<u32> = tok.end_of_text().into_iter().collect();
    prompt_tokens.extend(tok.encode(prompt)?);
    if prompt_tokens.is_empty() {
        return Err(Error::EmptyInput(
            "prompt (and the tokenizer has no end-of-text token to start from)",
        ));
    }
    let mut st = State::new(w);
    let mut logits = prefill(w, &prompt_tokens, &mut st)?.to_vec();
    let mut out = Generated {
        prompt_tokens,
        ..Default::default()
    };
    let mut decoder = StreamDecoder::default();
    for _ in 0..opts.max_tokens {
        let next = sampler.sample(&logits);
        if opts.stop_at_end_of_text && Some(next) == tok.end_of_text() {
            break;
        }
        out.tokens.push(next);
        let piece = decoder.push(tok.token_bytes(next)?);
        out.text.push_str(&piece);
        logits.copy_from_slice(decode_step(w, &mut st, next)?);
        out.routing.push(st.routing.clone());
        if !piece.is_empty() && !on_text(&piece) {
            break;
        }
    }
    let rest = decoder.finish();
    if !rest.is_empty() {
        on_text(&rest);
        out.text.push_str(&rest);
    }
    Ok(out)
}
