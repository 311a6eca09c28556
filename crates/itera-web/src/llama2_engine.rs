//! A llama2.c checkpoint in the page (the visitor's stories15M, say, or the TinyStories
//! teacher): generation on the CPU streamed a few tokens per call like the itera `Engine`
//! (with no routing: it has no experts), and evaluation. A checkpoint whose header does not
//! match its size, or a tokenizer.bin that does not fit it, is refused by the core's loaders.

use itera_core::eval::eval_llama2;
use itera_core::generate::Generation;
use itera_core::llama2c::{Llama2, Llama2Tokenizer};
use itera_core::Transformer;
use itera_core::{Error, Result};

use crate::engine::{EvalOutput, GenerateRequest, ModelInfo, StepOutput};

pub struct Llama2Engine {
    pub model: Llama2,
    pub tokenizer: Llama2Tokenizer,
    run: Option<Generation<Transformer>>,
}

impl Llama2Engine {
    pub fn load(checkpoint: &[u8], tokenizer: &[u8]) -> Result<Llama2Engine> {
        let model = Llama2::from_bytes(checkpoint)?;
        let tokenizer = Llama2Tokenizer::from_bytes(tokenizer, model.config.vocab_size)?;
        Ok(Llama2Engine {
            model,
            tokenizer,
            run: None,
        })
    }

    pub fn info(&self) -> ModelInfo {
        let c = &self.model.config;
        let params = self.model.param_count();
        ModelInfo {
            kind: "llama2",
            precision: "f32",
            params,
            active_params: params,
            weight_bytes: params * 4,
            vocab_size: c.vocab_size,
            d_model: c.dim,
            n_layers: c.n_layers,
            n_experts: 0,
            top_k: 0,
            moe_layers: Vec::new(),
        }
    }

    /// As `Engine::start`: BOS and the prompt run, the prompt's token count returned.
    pub fn start(&mut self, req: &GenerateRequest) -> Result<usize> {
        self.run = None;
        let run = Generation::start(&self.model.weights, &self.tokenizer, &req.prompt, req.options()?)?;
        let n = run.sequence().1;
        self.run = Some(run);
        Ok(n)
    }

    pub fn step(&mut self, n: usize) -> Result<StepOutput> {
        let Some(run) = self.run.as_mut() else {
            return Err(Error::EmptyInput("generation (call start first)"));
        };
        let mut out = StepOutput::default();
        for _ in 0..n {
            let prev = run.sequence().0.last().copied().unwrap_or_default();
            let Some(t) = run.next(&self.model.weights, &self.tokenizer)? else {
                break;
            };
            let piece = String::from_utf8_lossy(self.tokenizer.decode_piece(prev, t.id)).into_owned();
            out.push_piece(piece, t, Vec::new());
        }
        out.done = run.is_done();
        if out.done {
            out.text.push_str(&run.finish());
        }
        Ok(out)
    }

    pub fn sequence(&self) -> (&[u32], usize) {
        self.run.as_ref().map_or((&[][..], 0), |r| r.sequence())
    }

    pub fn eval(&self, text: &str) -> Result<EvalOutput> {
        let r = eval_llama2(&self.model, &self.tokenizer, text)?;
        Ok(EvalOutput {
            documents: r.documents,
            tokens: r.tokens,
            bytes: r.bytes,
            mean_ce: r.mean_ce(),
            perplexity: r.perplexity(),
            bits_per_byte: r.bits_per_byte(),
        })
    }
}
