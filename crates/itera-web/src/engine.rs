//! The playground's model engine in plain Rust (no JS types, so it is tested natively):
//! a loaded model with its tokenizer, the core's resumable `Generation` handed out a few tokens
//! per call (the worker streams them and can stop between calls), precision comparison on a
//! shared token sequence, and evaluation on a text.

use itera_core::eval::eval_itera;
use itera_core::generate::{
    check_prompt_bytes, GenerateOptions, Generation, Token, DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS, MAX_PROMPT_BYTES,
    MAX_PROMPT_TOKENS,
};
use itera_core::gpu::model::MAX_STEPS;
use itera_core::layers::activations::log_sum_exp;
use itera_core::model::{prefill_with_cache, Cache, Route, State, PREFILL_CHUNK};
use itera_core::sampling::{argmax, SamplingSettings, MAX_TEMPERATURE};
use itera_core::tokenizer::Tokenizer;
use itera_core::train::Limit;
use itera_core::{format, Error, Result, Weights};
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
    /// "itera", or "llama2" for a llama2.c checkpoint (no experts, no precisions).
    pub kind: &'static str,
    pub precision: &'static str,
    pub params: usize,
    pub active_params: usize,
    pub weight_bytes: usize,
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_experts: usize,
    pub top_k: usize,
    /// Which layers route through experts (the heatmap's rows).
    pub moe_layers: Vec<usize>,
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
    /// Appends one token with its routing (per layer; dense layers are left out).
    pub fn push(&mut self, tok: &Tokenizer, t: Token, routing: &[Route]) -> Result<()> {
        let piece = String::from_utf8_lossy(tok.token_bytes(t.id)?).into_owned();
        self.push_piece(piece, t, routes(routing));
        Ok(())
    }

    /// Appends one token whose bytes read as `piece`.
    pub fn push_piece(&mut self, piece: String, t: Token, routing: Vec<RouteOut>) {
        self.pieces.push(piece);
        self.text.push_str(&t.text);
        self.tokens.push(t.id);
        self.logprobs.push(t.logprob);
        self.routing.push(routing);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteOut {
    pub layer: usize,
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// How a variant's next-token distributions differ from a reference's on the same tokens.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    /// KL(reference ‖ variant) in nats at each scored position.
    pub kl: Vec<f32>,
    pub mean_kl: f64,
    /// Fraction of positions whose most likely next token is the same.
    pub top1_agreement: f64,
    /// Fraction of (position, MoE layer) pairs that route to the same set of experts.
    pub routing_agreement: f64,
    pub positions: usize,
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

/// A loaded model, its tokenizer and at most one generation in progress.
pub struct Engine {
    pub weights: Weights,
    pub tokenizer: Tokenizer,
    run: Option<Generation>,
}

impl Engine {
    /// Parses a weight file and a `tokenizer.json`, and checks that they belong together.
    pub fn load(model: &[u8], tokenizer_json: &[u8]) -> Result<Engine> {
        Engine::new(format::load(model)?, Tokenizer::from_json(tokenizer_json)?)
    }

    /// Weights and a tokenizer already in memory (a training job's current weights, say).
    pub fn new(weights: Weights, tokenizer: Tokenizer) -> Result<Engine> {
        if tokenizer.vocab_size() != weights.config.vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} ids but the model's vocabulary is {}: this tokenizer does not belong to these weights",
                tokenizer.vocab_size(),
                weights.config.vocab_size
            )));
        }
        Ok(Engine {
            weights,
            tokenizer,
            run: None,
        })
    }

    pub fn info(&self) -> ModelInfo {
        let c = &self.weights.config;
        ModelInfo {
            kind: "itera",
            precision: self.weights.precision.as_str(),
            params: self.weights.table.total_params(),
            active_params: self.weights.table.active_params(c),
            weight_bytes: self.weights.size_bytes(),
            vocab_size: c.vocab_size,
            d_model: c.d_model,
            n_layers: c.n_layers,
            n_experts: c.n_experts,
            top_k: c.top_k,
            moe_layers: (0..c.n_layers).filter(|&l| c.is_moe(l)).collect(),
        }
    }

    /// Validates the request, encodes the prompt after `<|endoftext|>` (the start of a story)
    /// and runs it through the model. Returns the number of prompt tokens. Replaces any
    /// generation in progress; on error the engine is left without one.
    pub fn start(&mut self, req: &GenerateRequest) -> Result<usize> {
        self.run = None;
        let opts = req.options()?;
        let run = Generation::start(&self.weights, &self.tokenizer, &req.prompt, opts)?;
        let prompt_len = run.sequence().1;
        self.run = Some(run);
        Ok(prompt_len)
    }

    /// Generates up to `n` more tokens of the current generation.
    pub fn step(&mut self, n: usize) -> Result<StepOutput> {
        let Some(run) = self.run.as_mut() else {
            return Err(Error::EmptyInput("generation (call start first)"));
        };
        let (w, tok) = (&self.weights, &self.tokenizer);
        let mut out = StepOutput::default();
        for _ in 0..n {
            let Some(t) = run.next(w, tok)? else { break };
            out.push(tok, t, run.routing())?;
        }
        out.done = run.is_done();
        if out.done {
            out.text.push_str(&run.finish());
        }
        Ok(out)
    }

    /// Prompt + generated tokens of the current generation, and where the generated part starts.
    pub fn sequence(&self) -> (&[u32], usize) {
        self.run.as_ref().map_or((&[][..], 0), |r| r.sequence())
    }

    pub fn eval(&self, text: &str) -> Result<EvalOutput> {
        let r = eval_itera(&self.weights, &self.tokenizer, text)?;
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

/// Runs both models over `tokens` and compares their predictions for every position from
/// `from - 1` on (the predictions of the tokens at `from..`): KL(reference ‖ other), top-1
/// agreement and routing agreement. The two models must share a tokenizer and architecture.
pub fn compare(reference: &Engine, other: &Engine, tokens: &[u32], from: usize) -> Result<Comparison> {
    let (a, b) = (&reference.weights, &other.weights);
    if a.config.architecture() != b.config.architecture() {
        return Err(Error::ShapeMismatch {
            op: "compare",
            detail: "the two models have different architectures; compare precisions of one model".into(),
        });
    }
    if tokens.len() < 2 || from == 0 || from >= tokens.len() {
        return Err(Error::EmptyInput(
            "comparison sequence (generate at least one token first)",
        ));
    }
    let c = &a.config;
    let (v, k) = (c.vocab_size, c.top_k);
    let mut out = Comparison::default();
    let (mut agree, mut routed, mut same_route) = (0usize, 0usize, 0usize);
    // Both models step through the sequence one prefill chunk at a time, so memory is that of
    // one chunk however long the sequence; the last token predicts nothing and is not run.
    let (mut state_a, mut state_b) = (State::new(a), State::new(b));
    let (mut ca, mut cb) = (Cache::default(), Cache::default());
    let predicting = &tokens[..tokens.len() - 1];
    for (i, chunk) in predicting.chunks(PREFILL_CHUNK).enumerate() {
        prefill_with_cache(a, chunk, &mut state_a, &mut ca)?;
        prefill_with_cache(b, chunk, &mut state_b, &mut cb)?;
        let start = i * PREFILL_CHUNK;
        for row in (from - 1).saturating_sub(start)..chunk.len() {
            let (la, lb) = (&ca.logits[row * v..][..v], &cb.logits[row * v..][..v]);
            out.kl.push(kl_divergence(la, lb));
            agree += usize::from(argmax(la) == argmax(lb));
            for l in (0..c.n_layers).filter(|&l| c.is_moe(l)) {
                let mut ea = ca.layers[l].moe.experts[row * k..][..k].to_vec();
                let mut eb = cb.layers[l].moe.experts[row * k..][..k].to_vec();
                ea.sort_unstable();
                eb.sort_unstable();
                routed += 1;
                same_route += usize::from(ea == eb);
            }
        }
    }
    out.positions = out.kl.len();
    out.mean_kl = out.kl.iter().map(|&x| x as f64).sum::<f64>() / out.positions as f64;
    out.top1_agreement = agree as f64 / out.positions as f64;
    out.routing_agreement = if routed == 0 {
        1.0
    } else {
        same_route as f64 / routed as f64
    };
    Ok(out)
}

/// KL(softmax(p) ‖ softmax(q)) in nats.
fn kl_divergence(p: &[f32], q: &[f32]) -> f32 {
    let (lp, lq) = (log_sum_exp(p), log_sum_exp(q));
    let kl: f64 = p
        .iter()
        .zip(q)
        .map(|(&zp, &zq)| {
            let log_p = (zp - lp) as f64;
            log_p.exp() * (log_p - (zq - lq) as f64)
        })
        .sum();
    kl.max(0.0) as f32
}
