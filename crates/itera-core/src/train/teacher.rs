//! The one teacher interface of a distillation, for the CLI and the page: a model of either
//! family with the project's tokenizer (the student matches its logits), or a llama2.c
//! checkpoint with its own tokenizer (the student learns the stories it writes). It writes the
//! corpus (`teller`), is scored on the evaluation sets, writes samples beside the student's,
//! and hands its weights to the step when logits are distilled.

use crate::error::Result;
use crate::eval::{eval_llama2, eval_model, EvalReport};
use crate::generate::{generate, GenerateOptions};
use crate::llama2c::{Llama2, Llama2Tokenizer};
use crate::lm::AnyWeights;
use crate::tokenizer::Tokenizer;

use super::corpus::StoryTeller;

/// A model that teaches.
pub enum Teacher {
    Model(AnyWeights),
    Llama2(Llama2, Llama2Tokenizer),
}

impl Teacher {
    /// A weight file of either family (any precision).
    pub fn model(bytes: &[u8]) -> Result<Teacher> {
        Ok(Teacher::Model(AnyWeights::load(bytes)?))
    }

    /// A llama2.c checkpoint and its tokenizer.bin.
    pub fn llama2(checkpoint: &[u8], tokenizer: &[u8]) -> Result<Teacher> {
        let model = Llama2::from_bytes(checkpoint)?;
        let tok = Llama2Tokenizer::from_bytes(tokenizer, model.config.vocab_size)?;
        Ok(Teacher::Llama2(model, tok))
    }

    pub fn params(&self) -> usize {
        match self {
            Teacher::Model(w) => w.total_params(),
            Teacher::Llama2(m, _) => m.param_count(),
        }
    }

    /// Whether the student can match this teacher's logits (the same tokenizer).
    pub fn shares_tokenizer(&self) -> bool {
        matches!(self, Teacher::Model(_))
    }

    /// The weights whose logits the student matches (none across tokenizers).
    pub fn logits(&self) -> Option<&AnyWeights> {
        match self {
            Teacher::Model(w) => Some(w),
            Teacher::Llama2(..) => None,
        }
    }

    /// The corpus writer (`tokenizer`: the project's, which a model teacher reads).
    pub fn teller<'a>(&'a self, tokenizer: &'a Tokenizer) -> StoryTeller<'a> {
        match self {
            Teacher::Model(w) => StoryTeller::Model(w, tokenizer),
            Teacher::Llama2(m, tok) => StoryTeller::Llama2(m, tok),
        }
    }

    /// Bits per byte over `texts` (each scored on its own, then pooled).
    pub fn bits_per_byte(&self, tokenizer: &Tokenizer, texts: &[String]) -> Result<f64> {
        let mut r = EvalReport::default();
        for t in texts {
            r.merge(&match self {
                Teacher::Model(AnyWeights::Itera(w)) => eval_model(w, tokenizer, t)?,
                Teacher::Model(AnyWeights::Transformer(w)) => eval_model(w, tokenizer, t)?,
                Teacher::Llama2(m, tok) => eval_llama2(m, tok, t)?,
            });
        }
        Ok(r.bits_per_byte())
    }

    /// A story from `prompt` (the teacher's sample beside the student's).
    pub fn sample(&self, tokenizer: &Tokenizer, prompt: &str, opts: GenerateOptions) -> Result<String> {
        Ok(match self {
            Teacher::Model(AnyWeights::Itera(w)) => generate(w, tokenizer, prompt, opts, |_| true)?.text,
            Teacher::Model(AnyWeights::Transformer(w)) => generate(w, tokenizer, prompt, opts, |_| true)?.text,
            Teacher::Llama2(m, tok) => generate(&m.weights, tok, prompt, opts, |_| true)?.text,
        })
    }
}
