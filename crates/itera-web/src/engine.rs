//! The playground's model engine in plain Rust (no JS types, so it is tested natively): a
//! loaded model of either family (SSM + MoE or Transformer, a llama2.c checkpoint included)
//! with its tokenizer, the core's resumable `Generation` handed out a few tokens per call (the
//! worker streams them and can stop between calls), the cost of a token at a position, and
//! evaluation on a text. Comparing two engines is `compare`'s.

use std::hash::{DefaultHasher, Hash, Hasher};

use itera_core::eval::{eval_model, EvalReport};
use itera_core::family::TokenCost;
use itera_core::generate::{
    check_prompt_bytes, GenerateOptions, Generation, Token, DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS, MAX_PROMPT_BYTES,
    MAX_PROMPT_TOKENS,
};
use itera_core::gpu::model::{GpuModel, MAX_STEPS};
use itera_core::gpu::Gpu;
use itera_core::llama2c::{Llama2, Llama2Tokenizer};
use itera_core::lm::AnyWeights;
use itera_core::model::Route;
use itera_core::sampling::{SamplingSettings, MAX_TEMPERATURE};
use itera_core::tokenizer::{Codec, Tokenizer};
use itera_core::train::Limit;
use itera_core::transformer::TransformerConfig;
use itera_core::{Architecture, Error, Family, Itera, Result, Transformer, Weights};
use serde::{Deserialize, Serialize};

/// What the page asks for; field names are the JSON the worker sends. A field left out takes
/// the core's default (`GenerateRequest::default`, which the page also shows).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateRequest {
    pub prompt: String,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
    pub stop_at_end_of_text: bool,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        let s = SamplingSettings::default();
        GenerateRequest {
            prompt: String::new(),
            max_tokens: DEFAULT_NEW_TOKENS,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            seed: s.seed,
            stop_at_end_of_text: true,
        }
    }
}

/// What the page shows before a model is loaded: the request's defaults and every bound, all
/// read from the core (`SamplingSettings::default`, `generate`'s limits, the GPU's steps per
/// submission), so the HTML states none of them.
#[derive(Clone, Debug, Serialize)]
pub struct GenerationDefaults {
    pub request: GenerateRequest,
    /// `[{name, min, max}]` for the request's numeric fields.
    pub settings: Vec<Limit>,
    pub max_prompt_bytes: usize,
    pub max_prompt_tokens: usize,
    /// Most tokens one `step` call hands out on WebGPU (one submission); the worker uses it
    /// for the CPU's calls too.
    pub max_tokens_per_step: usize,
}

pub fn generation_defaults() -> GenerationDefaults {
    let limit = |name, min, max| Limit { name, min, max };
    GenerationDefaults {
        request: GenerateRequest::default(),
        settings: vec![
            limit("max_tokens", 1.0, MAX_NEW_TOKENS as f64),
            limit("temperature", 0.0, MAX_TEMPERATURE as f64),
            limit("top_k", 0.0, u32::MAX as f64),
            limit("top_p", 0.0, 1.0),
            limit("seed", 0.0, u64::MAX as f64),
        ],
        max_prompt_bytes: MAX_PROMPT_BYTES,
        max_prompt_tokens: MAX_PROMPT_TOKENS,
        max_tokens_per_step: MAX_STEPS,
    }
}

impl GenerateRequest {
    /// The core's options (its checks run when the generation starts: the prompt's length is
    /// checked here too, before anything is encoded).
    pub fn options(&self) -> Result<GenerateOptions> {
        check_prompt_bytes(&self.prompt)?;
        Ok(GenerateOptions {
            max_tokens: self.max_tokens,
            sampling: SamplingSettings {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            stop_at_end_of_text: self.stop_at_end_of_text,
        })
    }
}

/// A model's description for the page.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// "itera", "transformer", or "llama2" (a llama2.c checkpoint: a Transformer with its own
    /// tokenizer, one precision).
    pub kind: &'static str,
    pub family: Family,
    /// "SSM + MoE" or "Transformer".
    pub description: &'static str,
    pub precision: &'static str,
    /// The matrices in another precision than `precision` (a mixed file; empty otherwise).
    pub precision_map: itera_core::PrecisionMap,
    pub params: usize,
    pub active_params: usize,
    pub weight_bytes: usize,
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    /// Attention heads and key/value heads (0 for the SSM + MoE family).
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub n_experts: usize,
    pub top_k: usize,
    /// Which layers route through experts (the heatmap's rows).
    pub moe_layers: Vec<usize>,
    /// The longest context (none: unbounded, a recurrent state).
    pub max_context: Option<usize>,
    /// A fingerprint of the tokenizer's vocabulary: two models can be compared token by token
    /// only when theirs are equal.
    pub tokenizer: String,
    /// Whether this model decodes on WebGPU (either family with the page's tokenizer; a
    /// llama2.c checkpoint runs on the CPU).
    pub webgpu: bool,
}

/// Tokens produced by one `Engine::step`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepOutput {
    /// Complete UTF-8 text made by these tokens (a split character waits for the next call).
    pub text: String,
    pub tokens: Vec<u32>,
    /// Each token's own bytes as text (lossy: a token may hold part of a character).
    pub pieces: Vec<String>,
    /// Natural-log probability of each token under the model (temperature 1).
    pub logprobs: Vec<f32>,
    /// Per token, per MoE layer: the chosen experts and their weights.
    pub routing: Vec<Vec<RouteOut>>,
    /// True when the generation has ended (length reached or end of story).
    pub done: bool,
}

impl StepOutput {
    /// Appends one token, whose own bytes are `piece`, with its routing (per layer; dense
    /// layers are left out).
    pub fn push(&mut self, piece: &[u8], t: Token, routing: &[Route]) {
        self.pieces.push(String::from_utf8_lossy(piece).into_owned());
        self.text.push_str(&t.text);
        self.tokens.push(t.id);
        self.logprobs.push(t.logprob);
        self.routing.push(routes(routing));
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteOut {
    pub layer: usize,
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalOutput {
    pub documents: usize,
    pub tokens: usize,
    pub bytes: usize,
    pub mean_ce: f64,
    pub perplexity: f64,
    pub bits_per_byte: f64,
}

impl From<EvalReport> for EvalOutput {
    fn from(r: EvalReport) -> EvalOutput {
        EvalOutput {
            documents: r.documents,
            tokens: r.tokens,
            bytes: r.bytes,
            mean_ce: r.mean_ce(),
            perplexity: r.perplexity(),
            bits_per_byte: r.bits_per_byte(),
        }
    }
}

/// A loaded model of either family with the tokenizer it reads, and at most one generation in
/// progress. Everything but the description is written once over `Architecture` (`Session`);
/// this enum only chooses.
pub struct Engine {
    lm: Lm,
}

enum Lm {
    Itera(Session<Itera, Tokenizer>),
    Transformer(Session<Transformer, Tokenizer>),
    /// A llama2.c checkpoint with its tokenizer.bin.
    Llama2(Session<Transformer, Llama2Tokenizer>),
}

/// `$body` with `$s` bound to the session, whatever the model.
macro_rules! each {
    ($lm:expr, $s:ident => $body:expr) => {
        match $lm {
            Lm::Itera($s) => $body,
            Lm::Transformer($s) => $body,
            Lm::Llama2($s) => $body,
        }
    };
}

/// One model's weights, its codec and its generation in progress.
struct Session<A: Architecture, C: Codec + Sync> {
    weights: Weights<A>,
    codec: C,
    vocabulary: String,
    run: Option<Generation<A>>,
}

impl<A: Architecture, C: Codec + Sync> Session<A, C> {
    fn new(weights: Weights<A>, codec: C) -> Result<Session<A, C>> {
        let v = A::vocab_size(&weights.config);
        if codec.vocab_size() != v {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} ids but the model's vocabulary is {v}: this tokenizer does not belong to these weights",
                codec.vocab_size(),
            )));
        }
        let vocabulary = fingerprint(&codec);
        Ok(Session {
            weights,
            codec,
            vocabulary,
            run: None,
        })
    }

    fn start(&mut self, req: &GenerateRequest) -> Result<usize> {
        self.run = None;
        let run = Generation::start(&self.weights, &self.codec, &req.prompt, req.options()?)?;
        let prompt_len = run.sequence().1;
        self.run = Some(run);
        Ok(prompt_len)
    }

    fn step(&mut self, n: usize) -> Result<StepOutput> {
        let Some(run) = self.run.as_mut() else {
            return Err(Error::EmptyInput("generation (call start first)"));
        };
        let (w, codec) = (&self.weights, &self.codec);
        let mut out = StepOutput::default();
        for _ in 0..n {
            let prev = run.sequence().0.last().copied().unwrap_or_default();
            let Some(t) = run.next(w, codec)? else { break };
            out.push(codec.piece(prev, t.id)?, t, run.routing());
        }
        out.done = run.is_done();
        if out.done {
            out.text.push_str(&run.finish());
        }
        Ok(out)
    }

    fn sequence(&self) -> (&[u32], usize) {
        self.run.as_ref().map_or((&[][..], 0), |r| r.sequence())
    }

    fn eval(&self, text: &str) -> Result<EvalOutput> {
        Ok(eval_model(&self.weights, &self.codec, text)?.into())
    }

    fn token_cost(&self, position: usize) -> TokenCost {
        A::token_cost(&self.weights.config, position)
    }

    fn scorer(&self) -> Box<dyn ChunkScorer + '_> {
        Box::new(Prefill::<A> {
            w: &self.weights,
            state: A::new_state(&self.weights),
            cache: A::Cache::default(),
            logits: Vec::new(),
        })
    }

    /// What both families share in the description.
    fn info(&self, kind: &'static str) -> ModelInfo {
        let c = &self.weights.config;
        ModelInfo {
            kind,
            family: A::FAMILY,
            description: A::FAMILY.description(),
            precision: self.weights.precision.as_str(),
            precision_map: self.weights.precision_map(),
            params: self.weights.total_params(),
            active_params: A::active_params(c),
            weight_bytes: self.weights.size_bytes(),
            vocab_size: A::vocab_size(c),
            d_model: 0,
            n_layers: 0,
            n_heads: 0,
            n_kv_heads: 0,
            n_experts: A::n_experts(c),
            top_k: 0,
            moe_layers: Vec::new(),
            max_context: Some(A::max_context(c)).filter(|&n| n != usize::MAX),
            tokenizer: self.vocabulary.clone(),
            webgpu: false,
        }
    }
}

/// A fingerprint of a codec's vocabulary (every token's bytes and the end of a story).
fn fingerprint(codec: &impl Codec) -> String {
    let mut h = DefaultHasher::new();
    for id in 0..codec.vocab_size() as u32 {
        codec.piece(0, id).ok().hash(&mut h);
    }
    codec.end_of_story().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A model's next-token logits along a sequence, one chunk at a time (the Compare tab's two
/// models walk the same tokens in step).
pub(crate) trait ChunkScorer {
    /// Runs `chunk` after the tokens already run; its rows' logits (chunk × vocabulary).
    fn run(&mut self, chunk: &[u32]) -> Result<&[f32]>;
    /// The experts each MoE layer chose at `row` of the last chunk (empty: no experts).
    fn routes(&self, row: usize) -> Vec<Vec<usize>>;
}

struct Prefill<'w, A: Architecture> {
    w: &'w Weights<A>,
    state: A::State,
    cache: A::Cache,
    logits: Vec<f32>,
}

impl<A: Architecture> ChunkScorer for Prefill<'_, A> {
    fn run(&mut self, chunk: &[u32]) -> Result<&[f32]> {
        let logits = &mut self.logits;
        logits.clear();
        A::prefill_chunked(self.w, chunk, &mut self.state, &mut self.cache, &mut |_, l| {
            logits.extend_from_slice(l);
            Ok(())
        })?;
        Ok(logits)
    }

    fn routes(&self, row: usize) -> Vec<Vec<usize>> {
        A::chunk_routes(&self.w.config, &self.cache, row)
    }
}

impl Engine {
    /// Parses a weight file of either family and the `tokenizer.json` it was trained with, and
    /// checks that they belong together.
    pub fn load(model: &[u8], tokenizer_json: &[u8]) -> Result<Engine> {
        Engine::from_weights(AnyWeights::load(model)?, Tokenizer::from_json(tokenizer_json)?)
    }

    /// A llama2.c checkpoint and its tokenizer.bin (refused by the core's loaders when the
    /// header does not match the size, or the tokenizer does not fit).
    pub fn llama2(checkpoint: &[u8], tokenizer_bin: &[u8]) -> Result<Engine> {
        let model = Llama2::from_bytes(checkpoint)?;
        let codec = Llama2Tokenizer::from_bytes(tokenizer_bin, model.config.vocab_size)?;
        Ok(Engine {
            lm: Lm::Llama2(Session::new(model.weights, codec)?),
        })
    }

    /// SSM + MoE weights and a tokenizer already in memory.
    pub fn new(weights: Weights, tokenizer: Tokenizer) -> Result<Engine> {
        Engine::from_weights(weights.into(), tokenizer)
    }

    /// Weights of either family and a tokenizer already in memory (a training job's, say).
    pub fn from_weights(weights: AnyWeights, tokenizer: Tokenizer) -> Result<Engine> {
        let lm = match weights {
            AnyWeights::Itera(w) => Lm::Itera(Session::new(w, tokenizer)?),
            AnyWeights::Transformer(w) => Lm::Transformer(Session::new(w, tokenizer)?),
        };
        Ok(Engine { lm })
    }

    /// The SSM + MoE weights and tokenizer, when that is the family.
    pub fn itera(&self) -> Option<(&Weights, &Tokenizer)> {
        match &self.lm {
            Lm::Itera(s) => Some((&s.weights, &s.codec)),
            _ => None,
        }
    }

    /// This model uploaded to `gpu` with its tokenizer (the WebGPU engine's). A llama2.c
    /// checkpoint is refused: the GPU generation reads the project's tokenizer only.
    pub fn upload(&self, gpu: &Gpu) -> Result<(GpuModel, Tokenizer)> {
        match &self.lm {
            Lm::Itera(s) => Ok((GpuModel::new(gpu, &s.weights)?, s.codec.clone())),
            Lm::Transformer(s) => Ok((GpuModel::transformer(gpu, &s.weights)?, s.codec.clone())),
            Lm::Llama2(_) => Err(Error::Gpu(
                "a llama2.c checkpoint decodes on the CPU (its tokenizer is not the page's)".into(),
            )),
        }
    }

    pub fn info(&self) -> ModelInfo {
        match &self.lm {
            Lm::Itera(s) => {
                let c = &s.weights.config;
                ModelInfo {
                    d_model: c.d_model,
                    n_layers: c.n_layers,
                    top_k: c.top_k,
                    moe_layers: (0..c.n_layers).filter(|&l| c.is_moe(l)).collect(),
                    webgpu: true,
                    ..s.info("itera")
                }
            }
            Lm::Transformer(s) => ModelInfo {
                webgpu: true,
                ..transformer_info(s.info("transformer"), &s.weights.config)
            },
            Lm::Llama2(s) => transformer_info(s.info("llama2"), &s.weights.config),
        }
    }

    /// FLOPs of one decode step at `position` and the bytes of decode state held there
    /// (the recurrent state, or the KV cache that grows with the position).
    pub fn token_cost(&self, position: usize) -> TokenCost {
        each!(&self.lm, s => s.token_cost(position))
    }

    /// Validates the request, encodes the prompt after the start of a story and runs it
    /// through the model. Returns the number of prompt tokens. Replaces any generation in
    /// progress; on error the engine is left without one.
    pub fn start(&mut self, req: &GenerateRequest) -> Result<usize> {
        each!(&mut self.lm, s => s.start(req))
    }

    /// Generates up to `n` more tokens of the current generation.
    pub fn step(&mut self, n: usize) -> Result<StepOutput> {
        each!(&mut self.lm, s => s.step(n))
    }

    /// Prompt + generated tokens of the current generation, and where the generated part starts.
    pub fn sequence(&self) -> (&[u32], usize) {
        each!(&self.lm, s => s.sequence())
    }

    pub fn eval(&self, text: &str) -> Result<EvalOutput> {
        each!(&self.lm, s => s.eval(text))
    }

    pub(crate) fn scorer(&self) -> Box<dyn ChunkScorer + '_> {
        each!(&self.lm, s => s.scorer())
    }
}

fn transformer_info(common: ModelInfo, c: &TransformerConfig) -> ModelInfo {
    ModelInfo {
        d_model: c.dim,
        n_layers: c.n_layers,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        ..common
    }
}

fn routes(routing: &[Route]) -> Vec<RouteOut> {
    routing
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.experts.is_empty())
        .map(|(layer, r)| RouteOut {
            layer,
            experts: r.experts.clone(),
            weights: r.weights.clone(),
        })
        .collect()
}
