//! The model families (SPEC "Model families") and the one interface they share.
//!
//! `Family` names a family at run time (file metadata, CLI flags, the page); `Architecture` is
//! what a family implements so that everything above it — weight files, the optimiser,
//! checkpoints, the training job, generation and evaluation — is written once:
//! `Weights<A>`, `Job<A>`, `eval_model::<A>` and so on. A third family adds its own module,
//! one `impl Architecture`, and one variant here and in `AnyWeights` (`crate::lm`).
//!
//! - `Itera` (the default type argument everywhere, so older code reads `Weights`): the
//!   selective-SSM + MoE model of `crate::model`.
//! - `Transformer` (`crate::transformer`): the llama2.c architecture.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{BatchDims, LossParts, LossWeights};
use crate::params::ParamSpec;
use crate::train::{ExpertLoad, TrainingSummary};
use crate::weights::{Grads, Weights};

/// A model family, as written in a weight file's `family` metadata (absent = `itera`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Itera,
    Transformer,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Itera, Family::Transformer];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Itera => "itera",
            Family::Transformer => "transformer",
        }
    }

    /// What a person reads: the architecture, not the code name.
    pub fn description(self) -> &'static str {
        match self {
            Family::Itera => "SSM + MoE",
            Family::Transformer => "Transformer",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = Error;
    fn from_str(s: &str) -> Result<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| Error::setting("family", s, "itera or transformer"))
    }
}

/// Anything that lists parameter specs in table order (every family's parameter table).
pub trait Specs {
    fn specs(&self) -> &[ParamSpec];
}

/// Cost of the decode step that consumes a context's `n`-th token, counted from the config
/// (SPEC "Model families").
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TokenCost {
    /// 2 × the multiply-adds of every matrix product the step executes (the experts a token
    /// is routed to only; attention over the `n` positions of the context).
    pub flops: u64,
    /// Bytes of the state decoding keeps after it: the SSM and conv state (constant) or the
    /// keys and values of all `n` positions (f32, as the CPU keeps them).
    pub state_bytes: u64,
}

/// What a model family implements. Weights are `Weights<Self>`; every function above the
/// family's own module is generic over this trait.
pub trait Architecture: Sized + Send + Sync + 'static {
    const FAMILY: Family;
    /// Every hyper-parameter, serialised as the weight file's `config` metadata.
    type Config: Clone + fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// The ONE (name, shape) table of the family's parameters, with named slots.
    type Table: Clone + fmt::Debug + Send + Sync + Specs;
    /// Activations a batch forward keeps (for the backward, and every position's logits).
    type Cache: Default + fmt::Debug + Send;
    /// What decoding keeps between tokens (recurrent state, or the KV cache) and its scratch.
    type State: Clone + fmt::Debug + Send;

    /// Parses and validates a config (the file's metadata, a `--config FILE.json`).
    fn config_from_json(text: &str) -> Result<Self::Config>;
    /// A named preset (`test`, `micro`, `tiny`, `15m`).
    fn preset(name: &str) -> Result<Self::Config>;
    /// The config for a tokenizer of `vocab_size` ids saved as `tokenizer` next to the weights.
    fn with_tokenizer(c: &Self::Config, vocab_size: usize, tokenizer: Option<String>) -> Self::Config;
    fn table(c: &Self::Config) -> Self::Table;
    fn vocab_size(c: &Self::Config) -> usize;
    /// Experts per MoE layer (0 for a family without routing).
    fn n_experts(_c: &Self::Config) -> usize {
        0
    }
    /// The longest context the model accepts (`usize::MAX` when unbounded).
    fn max_context(_c: &Self::Config) -> usize {
        usize::MAX
    }
    /// The config without its tokenizer and training annotations: what shapes depend on.
    fn architecture(c: &Self::Config) -> Self::Config;
    fn tokenizer(c: &Self::Config) -> Option<&str>;
    fn training(c: &Self::Config) -> Option<&TrainingSummary>;
    fn training_mut(c: &mut Self::Config) -> &mut Option<TrainingSummary>;
    /// Parameters touched per token (all of them, less the experts a token is not routed to).
    fn active_params(c: &Self::Config) -> usize;
    fn token_cost(c: &Self::Config, context: usize) -> TokenCost;

    /// Random f32 weights, deterministic for a seed.
    fn init_random(c: &Self::Config, seed: u64) -> Result<Weights<Self>>;

    /// Forward (from the empty context) of `tokens` (B·T) plus the training loss
    /// `(1−β)·CE + β·τ²·KL + α·aux`; with `grads`, also the backward (added into them).
    fn loss(
        w: &Weights<Self>,
        tokens: &[u32],
        bd: BatchDims,
        teacher: Option<&[f32]>,
        lw: LossWeights,
        cache: &mut Self::Cache,
        grads: Option<&mut Grads>,
    ) -> Result<LossParts>;
    /// Every position's logits (B·T, V) of the last forward.
    fn logits(cache: &Self::Cache) -> &[f32];
    /// Routing counts and aux losses of the last training forward (empty without MoE).
    fn expert_load(_cache: &Self::Cache) -> ExpertLoad {
        ExpertLoad::default()
    }

    fn new_state(w: &Weights<Self>) -> Self::State;
    /// Back to the empty context (keeping allocations).
    fn reset(st: &mut Self::State);
    fn position(st: &Self::State) -> usize;
    /// Consumes one token and returns the logits for the next.
    fn decode_step<'s>(w: &Weights<Self>, st: &'s mut Self::State, token: u32) -> Result<&'s [f32]>;
    /// Consumes `tokens` in bounded chunks through the batch path; `on_chunk(start, logits)`
    /// sees each chunk's logits (positions `start..start + chunk length`, relative to the
    /// call). Leaves the state as if each token had been stepped.
    fn prefill_chunked(
        w: &Weights<Self>,
        tokens: &[u32],
        st: &mut Self::State,
        cache: &mut Self::Cache,
        on_chunk: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()>;
    /// Logits after the last step or prefill.
    fn state_logits(st: &Self::State) -> &[f32];
    /// Routing of the last token consumed, per layer (empty for dense layers and families).
    fn routing(_st: &Self::State) -> &[crate::model::Route] {
        &[]
    }
    /// The experts each MoE layer chose (sorted, one list per MoE layer) for row `row` of the
    /// last forward or prefill chunk in `cache`; empty for a family without experts.
    fn chunk_routes(_c: &Self::Config, _cache: &Self::Cache, _row: usize) -> Vec<Vec<usize>> {
        Vec::new()
    }
}
