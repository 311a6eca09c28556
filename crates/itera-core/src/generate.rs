//! Text generation with a model of any family: prompt → prefill → sample/decode loop. `Generation`
//! is the loop one token at a time (the playground streams it in slices and stops between
//! them); `generate` runs it to the end, streaming complete UTF-8 text to a callback that can
//! stop it. The routing of every generated token is recorded. Timing is left to callers
//! (there is no clock on bare wasm32).

use crate::error::{Error, Result};
use crate::family::Architecture;
use crate::itera::Itera;
use crate::layers::activations::log_sum_exp_fast;
use crate::model::Route;
use crate::sampling::{Sampler, SamplingSettings};
use crate::tokenizer::{Codec, StreamDecoder};
use crate::weights::Weights;

/// Most tokens a prompt may encode to (the start-of-story token before it not counted): the
/// one prompt limit every surface applies. Memory does not grow with it (the prefill runs in
/// `PREFILL_CHUNK`s); time does, linearly (about 4 s natively for the tiny model, so Stop is
/// never far away in the page).
pub const MAX_PROMPT_TOKENS: usize = 16_384;
/// Longest prompt in bytes, checked before the tokenizer runs so its work is bounded too:
/// four bytes a token, more than English takes with the shipped tokenizer (about 3.7).
pub const MAX_PROMPT_BYTES: usize = 4 * MAX_PROMPT_TOKENS;
/// Most tokens one generation may produce (every surface: CLI, page, GPU). A story is a few
/// hundred; the page keeps each token's routing for its heatmap, so this bounds that too.
pub const MAX_NEW_TOKENS: usize = 16_384;
/// Tokens generated when a request does not say.
pub const DEFAULT_NEW_TOKENS: usize = 256;
/// Prompts up to this many tokens run through recurrent steps instead of the batch prefill:
/// the batch path dequantizes every matrix for its GEMMs, which costs more than a few matvecs.
const SHORT_PROMPT_TOKENS: usize = 48;

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

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub id: u32,
    /// The text this token completes (empty while a character is split across tokens).
    pub text: String,
    /// Natural-log probability of the token under the model (temperature 1).
    pub logprob: f32,
}

/// A generation in progress: the prompt has been run; `next` samples a token and feeds it back.
/// It ends at the token budget, at the end of a story when asked, or where the model's
/// context ends (a Transformer's `max_seq_len`).
pub struct Generation<A: Architecture = Itera> {
    state: A::State,
    sampler: Sampler,
    decoder: StreamDecoder,
    logits: Vec<f32>,
    /// `<|endoftext|>` + the prompt's tokens, then every generated token.
    sequence: Vec<u32>,
    prompt_len: usize,
    opts: GenerateOptions,
    done: bool,
}

impl<A: Architecture> Generation<A> {
    /// Validates the settings, encodes `prompt` (which may be empty: the context then starts at
    /// end-of-text, the beginning of a story) and runs it through the model.
    pub fn start(w: &Weights<A>, tok: &impl Codec, prompt: &str, opts: GenerateOptions) -> Result<Generation<A>> {
        let sampler = Sampler::new(opts.sampling)?;
        let context = A::max_context(&w.config);
        let sequence = prompt_sequence(A::vocab_size(&w.config), tok, prompt, &opts, context)?;
        if sequence.len() >= context {
            return Err(Error::setting(
                "prompt length",
                format!("{} tokens", sequence.len()),
                format!("fewer tokens than the model's context ({context})"),
            ));
        }
        let mut state = A::new_state(w);
        let logits = if sequence.len() <= SHORT_PROMPT_TOKENS {
            let mut logits = Vec::new();
            for &t in &sequence {
                logits = A::decode_step(w, &mut state, t)?.to_vec();
            }
            logits
        } else {
            A::prefill_chunked(w, &sequence, &mut state, &mut A::Cache::default(), &mut |_, _| Ok(()))?;
            A::state_logits(&state).to_vec()
        };
        Ok(Generation {
            state,
            sampler,
            decoder: StreamDecoder::default(),
            logits,
            prompt_len: sequence.len(),
            sequence,
            opts,
            done: false,
        })
    }

    /// The next token, or None once the generation has ended (length reached, or end of
    /// story when asked to stop there); then `finish` returns any text still held back.
    pub fn next(&mut self, w: &Weights<A>, tok: &impl Codec) -> Result<Option<Token>> {
        if self.done {
            return Ok(None);
        }
        // The random stream is counted by the position of the token just consumed.
        let id = self.sampler.sample(&self.logits, (self.sequence.len() - 1) as u32);
        if self.opts.stop_at_end_of_text && Some(id) == tok.end_of_story() {
            self.done = true;
            return Ok(None);
        }
        let logprob = self.logits[id as usize] - log_sum_exp_fast(&self.logits);
        let prev = self.sequence.last().copied().unwrap_or_default();
        let text = self.decoder.push(tok.piece(prev, id)?);
        // The token is consumed (its routing then describes it) unless the context is full,
        // which ends the generation.
        let context = A::max_context(&w.config);
        if A::position(&self.state) < context {
            self.logits.copy_from_slice(A::decode_step(w, &mut self.state, id)?);
        }
        self.sequence.push(id);
        self.done =
            self.sequence.len() - self.prompt_len >= self.opts.max_tokens || A::position(&self.state) >= context;
        Ok(Some(Token { id, text, logprob }))
    }

    /// Text held back at the end of the stream (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        self.decoder.finish()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Routing of the last token consumed, per layer (empty for dense layers).
    pub fn routing(&self) -> &[Route] {
        A::routing(&self.state)
    }

    /// Prompt + generated tokens, and where the generated part starts.
    pub fn sequence(&self) -> (&[u32], usize) {
        (&self.sequence, self.prompt_len)
    }
}

/// Checks a generation request and encodes its prompt after `<|endoftext|>` (the beginning of
/// a story), as every backend starts from it.
pub(crate) fn prompt_sequence(
    vocab_size: usize,
    tok: &impl Codec,
    prompt: &str,
    opts: &GenerateOptions,
    context: usize,
) -> Result<Vec<u32>> {
    check_prompt_bytes(prompt)?;
    if opts.max_tokens == 0 || opts.max_tokens > MAX_NEW_TOKENS {
        return Err(Error::setting(
            "max_tokens",
            opts.max_tokens,
            format!("between 1 and {MAX_NEW_TOKENS}"),
        ));
    }
    if tok.vocab_size() != vocab_size {
        return Err(Error::Tokenizer(format!(
            "tokenizer has {} ids but the model's vocabulary is {vocab_size}",
            tok.vocab_size(),
        )));
    }
    opts.sampling.validate()?;
    let sequence = tok.story_prompt(prompt, context)?;
    if sequence.is_empty() {
        return Err(Error::EmptyInput(
            "prompt (and the tokenizer has no end-of-text token to start from)",
        ));
    }
    Ok(sequence)
}

/// Refuses a prompt longer than `MAX_PROMPT_BYTES`, before it is encoded.
pub fn check_prompt_bytes(prompt: &str) -> Result<()> {
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(Error::setting(
            "prompt length",
            format!("{} bytes", prompt.len()),
            format!("at most {MAX_PROMPT_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Refuses a prompt that encodes to more than `MAX_PROMPT_TOKENS`.
pub fn check_prompt_tokens(tokens: usize) -> Result<()> {
    if tokens > MAX_PROMPT_TOKENS {
        return Err(Error::setting(
            "prompt length",
            format!("{tokens} tokens"),
            format!("at most {MAX_PROMPT_TOKENS} tokens"),
        ));
    }
    Ok(())
}

/// Generates after `prompt`. `on_text` receives each complete piece of text and returns false
/// to stop.
pub fn generate<A: Architecture>(
    w: &Weights<A>,
    tok: &impl Codec,
    prompt: &str,
    opts: GenerateOptions,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    let mut g = Generation::start(w, tok, prompt, opts)?;
    let mut out = Generated {
        prompt_tokens: g.sequence().0.to_vec(),
        ..Default::default()
    };
    while let Some(t) = g.next(w, tok)? {
        out.tokens.push(t.id);
        out.text.push_str(&t.text);
        out.routing.push(g.routing().to_vec());
        if !t.text.is_empty() && !on_text(&t.text) {
            break;
        }
    }
    let rest = g.finish();
    if !rest.is_empty() {
        on_text(&rest);
        out.text.push_str(&rest);
    }
    Ok(out)
}
