//! Text generation on the GPU: the same request checks, prompt encoding and stopping rules as
//! the CPU `Generation`, with tokens sampled on the GPU in chunks of up to `chunk` tokens per
//! submission. Tokens past the first of a chunk were already fed back on the GPU, so only the
//! last token of a chunk starts the next one.

use std::collections::VecDeque;

use super::model::{GpuModel, MAX_STEPS};
use super::Gpu;
use crate::error::{Error, Result};
use crate::generate::{prompt_sequence, GenerateOptions, Generated, Token};
use crate::model::Route;
use crate::tokenizer::{StreamDecoder, Tokenizer};

pub struct GpuGeneration {
    decoder: StreamDecoder,
    opts: GenerateOptions,
    /// Sampled on the GPU, not yet handed out: (id, log-prob).
    pending: VecDeque<(u32, f32)>,
    /// Routing of each token handed out, recorded when the GPU consumed it.
    routing: VecDeque<Vec<Route>>,
    trace: bool,
    /// The last token sampled (not yet consumed on the GPU when `pending` is empty).
    last: u32,
    generated: usize,
    /// Routing entries already taken by `take_routing`.
    routing_taken: usize,
    sequence: Vec<u32>,
    prompt_len: usize,
    done: bool,
}

impl GpuGeneration {
    /// Checks the request, encodes the prompt and runs it; `trace` records the routing.
    pub async fn start(
        gpu: &Gpu,
        m: &mut GpuModel,
        tok: &Tokenizer,
        prompt: &str,
        opts: GenerateOptions,
        trace: bool,
    ) -> Result<GpuGeneration> {
        let sequence = prompt_sequence(m.vocab_size, tok, prompt, &opts, m.context)?;
        if sequence.len() >= m.context {
            return Err(Error::setting(
                "prompt length",
                format!("{} tokens", sequence.len()),
                format!(
                    "fewer tokens than the {} positions this model holds on the GPU",
                    m.context
                ),
            ));
        }
        m.set_sampling(gpu, opts.sampling)?;
        m.reset();
        let first = m.prefill(gpu, &sequence, false).await?;
        Ok(GpuGeneration {
            decoder: StreamDecoder::default(),
            opts,
            pending: first.tokens.into_iter().zip(first.logprobs).collect(),
            routing: VecDeque::new(),
            // A model without experts has no routing to trace (each token gets an empty one).
            trace: trace && m.routes(),
            last: 0,
            generated: 0,
            routing_taken: 0,
            prompt_len: sequence.len(),
            sequence,
            done: false,
        })
    }

    /// Up to `chunk` more tokens (fewer at the end); empty once the generation has ended.
    pub async fn next_tokens(
        &mut self,
        gpu: &Gpu,
        m: &mut GpuModel,
        tok: &Tokenizer,
        chunk: usize,
    ) -> Result<Vec<Token>> {
        if !(1..=MAX_STEPS).contains(&chunk) {
            return Err(Error::setting("tokens per submission", chunk, "between 1 and 64"));
        }
        let mut out = Vec::new();
        while out.len() < chunk && !self.done {
            let Some((id, logprob)) = self.pending.pop_front() else {
                // Every token handed out is one the model consumes (as on the CPU): a context
                // that is full (a Transformer's on the GPU) ends the generation.
                let room = m.context.saturating_sub(self.prompt_len + self.generated);
                if room == 0 {
                    self.done = true;
                    break;
                }
                let want = (chunk - out.len()).min(self.opts.max_tokens - self.generated).min(room);
                self.sample(gpu, m, want).await?;
                continue;
            };
            if self.opts.stop_at_end_of_text && Some(id) == tok.end_of_text() {
                self.done = true;
                break;
            }
            let text = self.decoder.push(tok.token_bytes(id)?);
            self.sequence.push(id);
            self.last = id;
            self.generated += 1;
            self.done = self.generated >= self.opts.max_tokens || self.prompt_len + self.generated >= m.context;
            out.push(Token { id, text, logprob });
        }
        if self.done && self.trace && self.routing_taken + self.routing.len() < self.generated {
            // The last token handed out was never consumed: one step records its routing.
            self.sample(gpu, m, 1).await?;
            self.pending.clear();
        }
        Ok(out)
    }

    async fn sample(&mut self, gpu: &Gpu, m: &mut GpuModel, k: usize) -> Result<()> {
        let r = m.generate(gpu, self.last, k, self.trace).await?;
        self.pending.extend(r.tokens.into_iter().zip(r.logprobs));
        // Step j consumed `last` (j = 0) or the j-th token sampled here: in order, these are
        // the tokens handed out, so routing[i] belongs to generated token i.
        self.routing.extend(r.routing);
        Ok(())
    }

    /// Routing of every token handed out so far whose routing is known, oldest first (an
    /// empty one per token for a model without experts).
    pub fn take_routing(&mut self) -> Vec<Vec<Route>> {
        if !self.trace {
            let n = self.generated - self.routing_taken;
            self.routing_taken = self.generated;
            return vec![Vec::new(); n];
        }
        let known = self.routing.len().min(self.generated - self.routing_taken);
        self.routing_taken += known;
        self.routing.drain(..known).collect()
    }

    /// Text held back at the end of the stream.
    pub fn finish(&mut self) -> String {
        self.decoder.finish()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Prompt + generated tokens, and where the generated part starts.
    pub fn sequence(&self) -> (&[u32], usize) {
        (&self.sequence, self.prompt_len)
    }
}

/// `generate` on the GPU, `chunk` tokens per submission, with the routing of every token.
pub async fn generate(
    gpu: &Gpu,
    m: &mut GpuModel,
    tok: &Tokenizer,
    prompt: &str,
    opts: GenerateOptions,
    chunk: usize,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    let mut g = GpuGeneration::start(gpu, m, tok, prompt, opts, true).await?;
    let mut out = Generated {
        prompt_tokens: g.sequence().0.to_vec(),
        ..Default::default()
    };
    'outer: while !g.is_done() {
        let tokens = g.next_tokens(gpu, m, tok, chunk).await?;
        if tokens.is_empty() {
            break;
        }
        for t in tokens {
            out.tokens.push(t.id);
            out.text.push_str(&t.text);
            if !t.text.is_empty() && !on_text(&t.text) {
                break 'outer;
            }
        }
    }
    out.routing = g.take_routing();
    let rest = g.finish();
    if !rest.is_empty() {
        on_text(&rest);
        out.text.push_str(&rest);
    }
    Ok(out)
}
