//! The `itera` family (SPEC "Model"): the selective-SSM + MoE model of `crate::model`, behind
//! the family interface (`Architecture`).

use crate::config::Config;
use crate::error::Result;
use crate::family::{Architecture, Family, TokenCost};
use crate::model::{self, BatchDims, Cache, LossParts, LossWeights, Route, State};
use crate::params::ParamTable;
use crate::train::{ExpertLoad, TrainingSummary};
use crate::weights::{Grads, Weights};

/// The SSM + MoE family (the default type argument of `Weights`, `Job`, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Itera;

impl Architecture for Itera {
    const FAMILY: Family = Family::Itera;
    type Config = Config;
    type Table = ParamTable;
    type Cache = Cache;
    type State = State;

    fn config_from_json(text: &str) -> Result<Config> {
        Config::from_json(text)
    }

    fn preset(name: &str) -> Result<Config> {
        Config::preset(name)
    }

    fn with_tokenizer(c: &Config, vocab_size: usize, tokenizer: Option<String>) -> Config {
        Config {
            vocab_size,
            tokenizer,
            ..c.clone()
        }
    }

    fn table(c: &Config) -> ParamTable {
        ParamTable::new(c)
    }

    fn vocab_size(c: &Config) -> usize {
        c.vocab_size
    }

    fn n_experts(c: &Config) -> usize {
        c.n_experts
    }

    fn architecture(c: &Config) -> Config {
        c.architecture()
    }

    fn tokenizer(c: &Config) -> Option<&str> {
        c.tokenizer.as_deref()
    }

    fn training(c: &Config) -> Option<&TrainingSummary> {
        c.training.as_ref()
    }

    fn training_mut(c: &mut Config) -> &mut Option<TrainingSummary> {
        &mut c.training
    }

    fn active_params(c: &Config) -> usize {
        ParamTable::new(c).active_params(c)
    }

    /// Per layer: in_proj (2Di·D), the conv (Di·K), x_proj ((R+2N)·Di), dt_proj (Di·R), the
    /// scan's state update and read-out (2·Di·N), out_proj (D·Di); the FFN: the router (E·D)
    /// and k experts (3·F·D each) or one dense SwiGLU; then the tied head (V·D). None of it
    /// depends on the context.
    fn token_cost(c: &Config, _context: usize) -> TokenCost {
        let [v, d, di, n, r, k, f] = [
            c.vocab_size,
            c.d_model,
            c.d_inner(),
            c.d_state,
            c.dt_rank,
            c.d_conv,
            c.d_ff,
        ]
        .map(|x| x as u64);
        let ssm = 2 * di * d + di * k + (r + 2 * n) * di + di * r + 2 * di * n + d * di;
        let mut macs = v * d;
        for l in 0..c.n_layers {
            macs += ssm;
            macs += if c.is_moe(l) {
                c.n_experts as u64 * d + c.top_k as u64 * 3 * f * d
            } else {
                3 * f * d
            };
        }
        let state = c.n_layers as u64 * (di * n + (k - 1) * di);
        TokenCost {
            flops: 2 * macs,
            state_bytes: 4 * state,
        }
    }

    fn init_random(c: &Config, seed: u64) -> Result<Weights> {
        Weights::init_random(c, seed)
    }

    fn loss(
        w: &Weights,
        tokens: &[u32],
        bd: BatchDims,
        teacher: Option<&[f32]>,
        lw: LossWeights,
        cache: &mut Cache,
        grads: Option<&mut Grads>,
    ) -> Result<LossParts> {
        model::loss(w, tokens, bd, teacher, lw, cache, grads)
    }

    fn logits(cache: &Cache) -> &[f32] {
        &cache.logits
    }

    fn expert_load(cache: &Cache) -> ExpertLoad {
        let layers = cache.layers.iter().filter(|l| !l.moe.counts.is_empty());
        ExpertLoad {
            counts: layers.flat_map(|l| l.moe.counts.iter().map(|&c| c as u32)).collect(),
            aux: cache.aux.clone(),
        }
    }

    fn new_state(w: &Weights) -> State {
        State::new(w)
    }

    fn reset(st: &mut State) {
        st.reset()
    }

    fn position(st: &State) -> usize {
        st.pos
    }

    fn decode_step<'s>(w: &Weights, st: &'s mut State, token: u32) -> Result<&'s [f32]> {
        model::decode_step(w, st, token)
    }

    fn prefill_chunked(
        w: &Weights,
        tokens: &[u32],
        st: &mut State,
        cache: &mut Cache,
        on_chunk: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        model::prefill_chunked(w, tokens, st, cache, |start, cache| on_chunk(start, &cache.logits))?;
        Ok(())
    }

    fn state_logits(st: &State) -> &[f32] {
        st.logits()
    }

    fn routing(st: &State) -> &[Route] {
        &st.routing
    }

    fn chunk_routes(c: &Config, cache: &Cache, row: usize) -> Vec<Vec<usize>> {
        (0..c.n_layers)
            .filter(|&l| c.is_moe(l))
            .map(|l| {
                let mut experts = cache.layers[l].moe.experts[row * c.top_k..][..c.top_k].to_vec();
                experts.sort_unstable();
                experts
            })
            .collect()
    }
}
