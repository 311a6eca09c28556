//! The `transformer` family (SPEC "Model families"): the llama2.c architecture — RMSNorm,
//! causal grouped-query attention with RoPE, SwiGLU — as a baseline of the same size as the
//! itera models, trained, quantized, evaluated and generated through the same interfaces.
//! llama2.c `.bin` checkpoints load into it (`crate::llama2c`).

pub mod config;
pub mod model;
pub mod params;

pub use config::TransformerConfig;
pub use model::{TransformerCache, TransformerState, TransformerWeights};
pub use params::TransformerTable;

use crate::error::Result;
use crate::family::{Architecture, Family, TokenCost};
use crate::model::{BatchDims, LossParts, LossWeights};
use crate::rng::Pcg32;
use crate::train::TrainingSummary;
use crate::weights::{Grads, Weights};

/// The Transformer family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transformer;

impl Architecture for Transformer {
    const FAMILY: Family = Family::Transformer;
    type Config = TransformerConfig;
    type Table = TransformerTable;
    type Cache = TransformerCache;
    type State = TransformerState;

    fn config_from_json(text: &str) -> Result<TransformerConfig> {
        TransformerConfig::from_json(text)
    }

    fn preset(name: &str) -> Result<TransformerConfig> {
        TransformerConfig::preset(name)
    }

    fn with_tokenizer(c: &TransformerConfig, vocab_size: usize, tokenizer: Option<String>) -> TransformerConfig {
        TransformerConfig {
            vocab_size,
            tokenizer,
            ..c.clone()
        }
    }

    fn table(c: &TransformerConfig) -> TransformerTable {
        TransformerTable::new(c)
    }

    fn vocab_size(c: &TransformerConfig) -> usize {
        c.vocab_size
    }

    fn max_context(c: &TransformerConfig) -> usize {
        c.max_seq_len
    }

    fn architecture(c: &TransformerConfig) -> TransformerConfig {
        c.architecture()
    }

    fn tokenizer(c: &TransformerConfig) -> Option<&str> {
        c.tokenizer.as_deref()
    }

    fn training(c: &TransformerConfig) -> Option<&TrainingSummary> {
        c.training.as_ref()
    }

    fn training_mut(c: &mut TransformerConfig) -> &mut Option<TrainingSummary> {
        &mut c.training
    }

    fn active_params(c: &TransformerConfig) -> usize {
        params::Implied::of(c).params as usize
    }

    /// Per layer: wq and wo (D·D each), wk and wv (KV·D each), the scores q·k and the
    /// weighted sum of values over the `n` positions of the context (2·D·n: every query head
    /// reads a head of hs keys and values), the FFN (3·H·D); then the classifier (V·D).
    fn token_cost(c: &TransformerConfig, context: usize) -> TokenCost {
        let [v, d, kv, h, l, n] =
            [c.vocab_size, c.dim, c.kv_dim(), c.hidden_dim, c.n_layers, context].map(|x| x as u64);
        let per_layer = 2 * d * d + 2 * kv * d + 2 * d * n + 3 * h * d;
        TokenCost {
            flops: 2 * (v * d + l * per_layer),
            state_bytes: 4 * 2 * l * kv * n,
        }
    }

    /// llama2.c `model.py`'s initialisation: every matrix N(0, 0.02²), the residual outputs
    /// (`w3`, `wo`) N(0, (0.02/√(2L))²) as in GPT-2; norms 1.
    fn init_random(c: &TransformerConfig, seed: u64) -> Result<TransformerWeights> {
        c.validate()?;
        let table = TransformerTable::new(c);
        let mut rng = Pcg32::new(seed);
        let residual = 0.02 / (2.0 * c.n_layers as f32).sqrt();
        let values = table
            .specs
            .iter()
            .map(|spec| {
                let n = spec.numel();
                if spec.name.ends_with("norm.weight") {
                    return vec![1.0; n];
                }
                let std = if spec.name.ends_with("w3.weight") || spec.name.ends_with("wo.weight") {
                    residual
                } else {
                    0.02
                };
                (0..n).map(|_| rng.normal() * std).collect()
            })
            .collect();
        Ok(Weights::from_f32_tensors(c.clone(), values))
    }

    fn loss(
        w: &TransformerWeights,
        tokens: &[u32],
        bd: BatchDims,
        teacher: Option<&[f32]>,
        lw: LossWeights,
        cache: &mut TransformerCache,
        grads: Option<&mut Grads>,
    ) -> Result<LossParts> {
        model::loss(w, tokens, bd, teacher, lw, cache, grads)
    }

    fn logits(cache: &TransformerCache) -> &[f32] {
        &cache.logits
    }

    fn new_state(w: &TransformerWeights) -> TransformerState {
        TransformerState::new(w)
    }

    fn reset(st: &mut TransformerState) {
        st.reset()
    }

    fn position(st: &TransformerState) -> usize {
        st.pos
    }

    fn decode_step<'s>(w: &TransformerWeights, st: &'s mut TransformerState, token: u32) -> Result<&'s [f32]> {
        model::decode_step(w, st, token)
    }

    fn prefill_chunked(
        w: &TransformerWeights,
        tokens: &[u32],
        st: &mut TransformerState,
        cache: &mut TransformerCache,
        on_chunk: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        model::prefill_chunked(w, tokens, st, cache, on_chunk)
    }

    fn state_logits(st: &TransformerState) -> &[f32] {
        st.logits()
    }
}
