//! The whole model (SPEC "Model"): embedding → L × (SSM block, FFN block), each pre-normed
//! with a residual add → final rmsnorm → tied LM head. One implementation for every
//! precision: matrices multiply through their own kernels.
//!
//! - `forward` runs a batch of equal-length sequences (prefill, training, evaluation) and
//!   keeps what `backward` needs in a `Cache`;
//! - `backward` is the forward in reverse and adds into `Grads`;
//! - `State` + `decode_step` generate one token at a time, keeping only each layer's SSM
//!   state and conv tail, so the cost per token does not grow with the context.

use crate::error::{Error, Result};
use crate::layers::linear::linear_backward;
use crate::layers::loss::{check_teacher_logits, output_losses};
use crate::layers::moe::{moe_backward, moe_forward, moe_step, MoeCache, MoeScratch};
use crate::layers::norm::{rmsnorm_backward, rmsnorm_forward};
use crate::layers::scratch::{zeroed, MoeGradScratch, SsmGradScratch, SwigluGradScratch};
use crate::layers::ssm::{a_matrix, ssm_backward, ssm_forward, ssm_step, SsmCache, SsmScratch, SsmState};
use crate::layers::swiglu::{swiglu_backward, swiglu_forward, swiglu_step, SwigluCache};
use crate::params::FfnParams;
use crate::weights::{Grads, Weights};

pub use crate::layers::ssm::BatchDims;

/// Activations of one layer.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    pub ssm: SsmCache,
    pub x_ffn: Vec<f32>,  // (M, D) FFN block input (residual after the SSM block)
    pub xn_ffn: Vec<f32>, // (M, D)
    pub rstd_ffn: Vec<f32>,
    pub dense: SwigluCache,
    pub moe: MoeCache,
}

/// Everything a forward keeps: per-layer activations, the final norm, logits, aux losses.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    pub dims: Option<BatchDims>,
    pub tokens: Vec<u32>,
    pub layers: Vec<LayerCache>,
    pub x_final: Vec<f32>, // (M, D) residual before the final norm
    pub xf: Vec<f32>,      // (M, D) final_norm(x)
    pub rstd_f: Vec<f32>,
    pub logits: Vec<f32>, // (M, V)
    pub aux: Vec<f32>,    // per MoE layer, in layer order
    /// ∂L/∂logits (M, V), kept between steps so training reuses one allocation.
    dlogits: Vec<f32>,
    /// One block's output (M, D), added into the residual.
    out: Vec<f32>,
    scratch: GradScratch,
    trained: bool,
}

/// The backward's working buffers, kept in the cache so that a training step allocates
/// nothing once the first has sized them (`layers::scratch`).
#[derive(Clone, Debug, Default)]
pub struct GradScratch {
    dxf: Vec<f32>,
    dx: Vec<f32>,
    dnorm: Vec<f32>,
    dout: Vec<f32>,
    ssm: SsmGradScratch,
    moe: MoeGradScratch,
    swiglu: SwigluGradScratch,
}

/// Validates token ids against the vocabulary and the batch shape.
pub fn check_tokens(tokens: &[u32], bd: BatchDims, vocab_size: usize) -> Result<()> {
    if bd.batch == 0 || bd.t == 0 || tokens.is_empty() {
        return Err(Error::EmptyInput("token sequence"));
    }
    if tokens.len() != bd.rows() {
        return Err(Error::ShapeMismatch {
            op: "forward",
            detail: format!("{} tokens for batch {} × length {}", tokens.len(), bd.batch, bd.t),
        });
    }
    tokens.iter().try_for_each(|&id| Error::check_token(id, vocab_size))
}

/// Runs the model on `tokens` (B·T, row-major by sequence) from the empty context. `train`
/// keeps the full scan states needed by `backward`. Logits end up in `cache.logits` (B·T, V).
pub fn forward(w: &Weights, tokens: &[u32], bd: BatchDims, train: bool, cache: &mut Cache) -> Result<()> {
    forward_impl(w, tokens, bd, train, None, cache)
}

fn forward_impl(
    w: &Weights,
    tokens: &[u32],
    bd: BatchDims,
    train: bool,
    init: Option<&State>,
    cache: &mut Cache,
) -> Result<()> {
    let c = &w.config;
    check_tokens(tokens, bd, c.vocab_size)?;
    let (m, d) = (bd.rows(), c.d_model);
    cache.dims = Some(bd);
    cache.trained = train;
    cache.tokens.clear();
    cache.tokens.extend_from_slice(tokens);
    cache.layers.resize_with(c.n_layers, LayerCache::default);
    cache.aux.clear();

    let embed = w.matrix(w.table.embed);
    // The residual stream lives in `x_final`'s buffer (what it ends as) and the block output
    // in `out`'s: both reused from the previous call.
    let mut x = std::mem::take(&mut cache.x_final);
    zeroed(&mut x, m * d);
    for (row, &tok) in x.chunks_exact_mut(d).zip(tokens) {
        embed.row_into(tok as usize, row);
    }
    let mut out = std::mem::take(&mut cache.out);
    zeroed(&mut out, m * d);
    for (l, (p, lc)) in w.table.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
        ssm_forward(&mut out, &x, w, p, bd, train, init.map(|s| &s.layers[l]), &mut lc.ssm);
        add_into(&mut x, &out);
        lc.x_ffn.clear();
        lc.x_ffn.extend_from_slice(&x);
        lc.xn_ffn.resize(m * d, 0.0);
        lc.rstd_ffn.resize(m, 0.0);
        rmsnorm_forward(&mut lc.xn_ffn, &mut lc.rstd_ffn, &x, w.vector(p.ffn_norm), d);
        match &p.ffn {
            FfnParams::Dense(sp) => swiglu_forward(&mut out, &lc.xn_ffn, m, w, sp, &mut lc.dense),
            FfnParams::Moe { router, experts } => {
                let aux = moe_forward(&mut out, &lc.xn_ffn, m, w, *router, experts, &mut lc.moe);
                cache.aux.push(aux);
            }
        }
        add_into(&mut x, &out);
    }
    cache.xf.resize(m * d, 0.0);
    cache.rstd_f.resize(m, 0.0);
    rmsnorm_forward(&mut cache.xf, &mut cache.rstd_f, &x, w.vector(w.table.final_norm), d);
    cache.x_final = x;
    cache.out = out;
    cache.logits.resize(m * c.vocab_size, 0.0);
    embed.matmul(&cache.xf, m, &mut cache.logits);
    Ok(())
}

fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// Backward of `forward` for ∂L/∂logits = `dlogits`; `aux_scale` = ∂L/∂aux_l (the same for
/// every MoE layer: α / number of MoE layers). Adds into `grads`. Needs f32 weights and a
/// cache from `forward(.., train = true, ..)`; `s` holds the working buffers.
pub fn backward(w: &Weights, cache: &Cache, dlogits: &[f32], aux_scale: f32, grads: &mut Grads, s: &mut GradScratch) {
    let c = &w.config;
    let bd = cache.dims.expect("backward needs a forward first");
    assert!(cache.trained, "backward needs a forward with train = true");
    let (m, d, v) = (bd.rows(), c.d_model, c.vocab_size);
    let t = &w.table;

    // logits = xf · embedᵀ (tied head)
    let dxf = zeroed(&mut s.dxf, m * d);
    linear_backward(
        Some(&mut *dxf),
        &mut grads.tensors[t.embed],
        dlogits,
        &cache.xf,
        w.f32(t.embed),
        m,
        v,
        d,
    );
    let dx = zeroed(&mut s.dx, m * d);
    rmsnorm_backward(
        dx,
        &mut grads.tensors[t.final_norm],
        dxf,
        &cache.x_final,
        w.vector(t.final_norm),
        &cache.rstd_f,
        d,
    );

    for (p, lc) in t.layers.iter().zip(&cache.layers).rev() {
        // x ← x + FFN(rmsnorm(x)): the residual passes dx through, the branch adds to it.
        let dnorm = zeroed(&mut s.dnorm, m * d);
        match &p.ffn {
            FfnParams::Dense(sp) => swiglu_backward(dnorm, dx, &lc.xn_ffn, m, w, sp, &lc.dense, &mut s.swiglu, grads),
            FfnParams::Moe { router, experts } => moe_backward(
                dnorm, dx, &lc.xn_ffn, m, aux_scale, w, *router, experts, &lc.moe, &mut s.moe, grads,
            ),
        }
        rmsnorm_backward(
            dx,
            &mut grads.tensors[p.ffn_norm],
            dnorm,
            &lc.x_ffn,
            w.vector(p.ffn_norm),
            &lc.rstd_ffn,
            d,
        );
        // x ← x + SSM(rmsnorm(x))
        s.dout.clear();
        s.dout.extend_from_slice(dx);
        ssm_backward(dx, &s.dout, w, p, bd, &lc.ssm, &mut s.ssm, grads);
    }
    let dembed = &mut grads.tensors[t.embed];
    for (row, &tok) in dx.chunks_exact(d).zip(&cache.tokens) {
        add_into(&mut dembed[tok as usize * d..(tok as usize + 1) * d], row);
    }
}

/// Weights of the training loss terms: `(1−β)·CE + β·τ²·KL + α·mean_l(aux_l)`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossWeights {
    pub aux_alpha: f32,
    pub distill_beta: f32,
    pub temperature: f32,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            aux_alpha: 0.01,
            distill_beta: 0.0,
            temperature: 1.0,
        }
    }
}

impl LossWeights {
    /// The training loss from its terms (`kl` already includes τ²): the one formula every
    /// backend reports.
    pub fn total(&self, ce: f32, kl: f32, aux: f32) -> f32 {
        let beta = self.distill_beta;
        (1.0 - beta) * ce + beta * kl + self.aux_alpha * aux
    }
}

/// The loss and its parts (`kl` already includes the τ² factor).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossParts {
    pub total: f32,
    pub ce: f32,
    pub aux: f32,
    pub kl: f32,
}

/// Forward plus loss; with `grads`, also the backward. `teacher` holds teacher logits
/// (B·T, V) for distillation (required when β > 0).
pub fn loss(
    w: &Weights,
    tokens: &[u32],
    bd: BatchDims,
    teacher: Option<&[f32]>,
    lw: LossWeights,
    cache: &mut Cache,
    grads: Option<&mut Grads>,
) -> Result<LossParts> {
    let v = w.config.vocab_size;
    check_teacher_logits(teacher, lw, bd, v)?;
    forward(w, tokens, bd, grads.is_some(), cache)?;
    let mut dlogits = grads.is_some().then(|| std::mem::take(&mut cache.dlogits));
    let (ce, kl) = output_losses(&cache.logits, tokens, bd, v, teacher, lw, dlogits.as_mut())?;
    let n_moe = cache.aux.len();
    let aux = if n_moe > 0 {
        cache.aux.iter().sum::<f32>() / n_moe as f32
    } else {
        0.0
    };
    let total = lw.total(ce, kl, aux);
    if let (Some(g), Some(dl)) = (grads, dlogits) {
        let aux_scale = if n_moe > 0 { lw.aux_alpha / n_moe as f32 } else { 0.0 };
        let mut scratch = std::mem::take(&mut cache.scratch);
        backward(w, cache, &dl, aux_scale, g, &mut scratch);
        cache.scratch = scratch;
        cache.dlogits = dl;
    }
    Ok(LossParts { total, ce, aux, kl })
}

/// Routing decision of one MoE layer for one token: experts and their renormalised weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Route {
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Recurrent decode state: per layer the SSM state and conv tail, plus preallocated scratch
/// for every activation of a step. (The q4 and x86 q8 matvecs still allocate a few hundred
/// bytes per call: x split into even/odd halves, one row of scales.)
#[derive(Clone, Debug)]
pub struct State {
    /// Number of tokens consumed so far.
    pub pos: usize,
    pub layers: Vec<SsmState>,
    /// Routing of the last token, per layer (empty for dense layers).
    pub routing: Vec<Route>,
    a: Vec<Vec<f32>>,
    x: Vec<f32>,
    xn: Vec<f32>,
    out: Vec<f32>,
    logits: Vec<f32>,
    ssm: SsmScratch,
    moe: MoeScratch,
}

impl State {
    pub fn new(w: &Weights) -> State {
        let c = &w.config;
        State {
            pos: 0,
            layers: (0..c.n_layers).map(|_| SsmState::new(c)).collect(),
            routing: (0..c.n_layers)
                .map(|l| {
                    if c.is_moe(l) {
                        Route {
                            experts: vec![0; c.top_k],
                            weights: vec![0.0; c.top_k],
                        }
                    } else {
                        Route::default()
                    }
                })
                .collect(),
            a: w.table.layers.iter().map(|p| a_matrix(w.vector(p.a_log))).collect(),
            x: vec![0.0; c.d_model],
            xn: vec![0.0; c.d_model],
            out: vec![0.0; c.d_model],
            logits: vec![0.0; c.vocab_size],
            ssm: SsmScratch::new(c),
            moe: MoeScratch {
                probs: vec![0.0; c.n_experts],
                a: vec![0.0; c.d_ff],
                b: vec![0.0; c.d_ff],
                out: vec![0.0; c.d_model],
            },
        }
    }

    /// Back to the empty context.
    pub fn reset(&mut self) {
        self.pos = 0;
        for l in &mut self.layers {
            l.h.fill(0.0);
            l.conv_tail.fill(0.0);
        }
    }

    /// Logits after the last step or prefill.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
}

/// Consumes one token and returns the logits for the next.
pub fn decode_step<'s>(w: &Weights, st: &'s mut State, token: u32) -> Result<&'s [f32]> {
    let c = &w.config;
    Error::check_token(token, c.vocab_size)?;
    let d = c.d_model;
    let embed = w.matrix(w.table.embed);
    embed.row_into(token as usize, &mut st.x);
    let mut rstd = [0.0];
    for (l, p) in w.table.layers.iter().enumerate() {
        ssm_step(&mut st.out, &st.x, w, p, &st.a[l], &mut st.layers[l], &mut st.ssm);
        add_into(&mut st.x, &st.out);
        rmsnorm_forward(&mut st.xn, &mut rstd, &st.x, w.vector(p.ffn_norm), d);
        match &p.ffn {
            FfnParams::Dense(sp) => swiglu_step(&mut st.out, &st.xn, w, sp, &mut st.moe.a, &mut st.moe.b),
            FfnParams::Moe { router, experts } => {
                let route = &mut st.routing[l];
                moe_step(
                    &mut st.out,
                    &st.xn,
                    w,
                    *router,
                    experts,
                    &mut route.experts,
                    &mut route.weights,
                    &mut st.moe,
                )
            }
        }
        add_into(&mut st.x, &st.out);
    }
    rmsnorm_forward(&mut st.xn, &mut rstd, &st.x, w.vector(w.table.final_norm), d);
    embed.matvec(&st.xn, &mut st.logits);
    st.pos += 1;
    Ok(&st.logits)
}

/// Runs `tokens` through the batch forward (GEMMs instead of T matvecs), continuing from
/// `st`, and leaves the state as if each token had been stepped. Returns the last position's
/// logits; every position's logits stay in `cache.logits`.
pub fn prefill_with_cache<'s>(w: &Weights, tokens: &[u32], st: &'s mut State, cache: &mut Cache) -> Result<&'s [f32]> {
    if tokens.is_empty() {
        return Err(Error::EmptyInput("prefill tokens"));
    }
    let bd = BatchDims {
        batch: 1,
        t: tokens.len(),
    };
    forward_impl(w, tokens, bd, false, Some(st), cache)?;
    let c = &w.config;
    let last = (tokens.len() - 1) * c.top_k;
    for (l, lc) in cache.layers.iter().enumerate() {
        st.layers[l].from_cache(c, &lc.ssm, bd, 0);
        if c.is_moe(l) {
            let route = &mut st.routing[l];
            route.experts.copy_from_slice(&lc.moe.experts[last..last + c.top_k]);
            route.weights.copy_from_slice(&lc.moe.weights[last..last + c.top_k]);
        }
    }
    let v = c.vocab_size;
    st.logits.copy_from_slice(&cache.logits[(tokens.len() - 1) * v..]);
    st.pos += tokens.len();
    Ok(&st.logits)
}

/// Tokens per CPU prefill chunk. A chunk's cache (every position's activations, scan states
/// and logits) is what a prefill holds, so memory stays that of one chunk whatever the prompt's
/// length; 128 rows keep the GEMMs as fast as whole-prompt batches.
pub const PREFILL_CHUNK: usize = 128;

/// Runs `tokens` through the batch forward `PREFILL_CHUNK` tokens at a time, continuing from
/// `st`, reusing `cache` for each chunk; `on_chunk(start, cache)` sees each chunk's cache
/// (its logits are those of positions `start..start + chunk length`). Returns the last
/// position's logits.
pub fn prefill_chunked<'s>(
    w: &Weights,
    tokens: &[u32],
    st: &'s mut State,
    cache: &mut Cache,
    mut on_chunk: impl FnMut(usize, &Cache) -> Result<()>,
) -> Result<&'s [f32]> {
    if tokens.is_empty() {
        return Err(Error::EmptyInput("prefill tokens"));
    }
    for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
        prefill_with_cache(w, chunk, st, cache)?;
        on_chunk(i * PREFILL_CHUNK, cache)?;
    }
    Ok(&st.logits)
}

/// A chunked prefill when only the last logits matter.
pub fn prefill<'s>(w: &Weights, tokens: &[u32], st: &'s mut State) -> Result<&'s [f32]> {
    prefill_chunked(w, tokens, st, &mut Cache::default(), |_, _| Ok(()))
}
