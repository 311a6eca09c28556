//! The playground's WebGPU engine in plain Rust (tested natively on lavapipe, run in the
//! browser on WebGPU): a model of either family uploaded to the GPU and its generation, handed out a few tokens
//! per call like the CPU `Engine`, but async — the browser delivers GPU read-backs on its
//! event loop. Tokens are sampled on the GPU, `n` per submission.
//!
//! A token's routing is known once the GPU has consumed it, which for the last token of a
//! submission is in the next one; a token is handed out together with its routing, so the
//! last token of a call may wait for the next call (at the end, one extra step fetches it).
//! A Transformer's tokens carry an empty routing and wait for nothing.

use std::rc::Rc;

use itera_core::generate::Token;
use itera_core::gpu::generate::GpuGeneration;
use itera_core::gpu::model::{GpuModel, MAX_STEPS};
use itera_core::gpu::Gpu;
use itera_core::tokenizer::Tokenizer;
use itera_core::{Error, Result, Weights};

use crate::engine::{GenerateRequest, StepOutput};

pub struct GpuEngine {
    pub gpu: Rc<Gpu>,
    model: GpuModel,
    tokenizer: Tokenizer,
    run: Option<GpuGeneration>,
    /// Tokens sampled whose routing is not known yet.
    held: Vec<Token>,
}

impl GpuEngine {
    /// Uploads SSM + MoE `weights` to `gpu`.
    pub fn new(gpu: Rc<Gpu>, weights: &Weights, tokenizer: Tokenizer) -> Result<GpuEngine> {
        let model = GpuModel::new(&gpu, weights)?;
        Ok(GpuEngine::of(gpu, model, tokenizer))
    }

    /// A model already on `gpu` (either family) with its tokenizer.
    pub fn of(gpu: Rc<Gpu>, model: GpuModel, tokenizer: Tokenizer) -> GpuEngine {
        GpuEngine {
            gpu,
            model,
            tokenizer,
            run: None,
            held: Vec::new(),
        }
    }

    /// As `Engine::start`: returns the number of prompt tokens.
    pub async fn start(&mut self, req: &GenerateRequest) -> Result<usize> {
        self.run = None;
        self.held.clear();
        let opts = req.options()?;
        let run = GpuGeneration::start(&self.gpu, &mut self.model, &self.tokenizer, &req.prompt, opts, true).await?;
        let prompt_len = run.sequence().1;
        self.run = Some(run);
        Ok(prompt_len)
    }

    /// Up to `n` more tokens (n ≤ 64: one submission).
    pub async fn step(&mut self, n: usize) -> Result<StepOutput> {
        let Some(run) = self.run.as_mut() else {
            return Err(Error::EmptyInput("generation (call start first)"));
        };
        let n = n.clamp(1, MAX_STEPS);
        let fresh = run.next_tokens(&self.gpu, &mut self.model, &self.tokenizer, n).await?;
        self.held.extend(fresh);
        let routing = run.take_routing();
        let mut out = StepOutput::default();
        // One routing per handed-out token, in order (GpuGeneration never returns more).
        let paired = routing.len().min(self.held.len());
        for (t, r) in self.held.drain(..paired).zip(routing) {
            out.push(self.tokenizer.token_bytes(t.id)?, t, &r);
        }
        out.done = run.is_done() && self.held.is_empty();
        if out.done {
            out.text.push_str(&run.finish());
        }
        Ok(out)
    }

    /// Prompt + generated tokens of the current generation, and where the generated part starts.
    pub fn sequence(&self) -> (&[u32], usize) {
        self.run.as_ref().map_or((&[][..], 0), |r| r.sequence())
    }
}
