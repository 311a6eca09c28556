//! The Transformer (llama2.c architecture, SPEC "Model families"): token embedding → L ×
//! (x += Attn(rmsnorm(x)), x += SwiGLU(rmsnorm(x))) → rmsnorm → classifier (the embedding
//! when tied). One implementation for every precision: matrices multiply through their own
//! kernels, as in the itera model.
//!
//! - `forward` runs B sequences from the empty context (training, evaluation) or, given a
//!   `TransformerState`, continues its context (prefill): keys and values are appended to
//!   the state's cache, which grows with the position;
//! - `backward` is the forward in reverse and adds into `Grads`;
//! - `decode_step` consumes one token through matvecs and the KV cache.

use super::config::TransformerConfig;
use super::Transformer;
use crate::error::{Error, Result};
use crate::layers::attention::{attention_backward, attention_forward, rope_angles, rope_rotate, AttnDims};
use crate::layers::linear::linear_backward;
use crate::layers::loss::{check_teacher_logits, output_losses};
use crate::layers::norm::{rmsnorm_backward, rmsnorm_forward};
use crate::layers::scratch::{zeroed, SwigluGradScratch};
use crate::layers::swiglu::{swiglu_backward, swiglu_forward, swiglu_step, SwigluCache};
use crate::model::{check_tokens, BatchDims, LossParts, LossWeights, PREFILL_CHUNK};
use crate::weights::{Grads, Weights};

pub type TransformerWeights = Weights<Transformer>;

fn dims(c: &TransformerConfig) -> AttnDims {
    AttnDims {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_size: c.head_size(),
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// Activations of one block over M = B·T rows.
#[derive(Clone, Debug, Default)]
pub struct BlockCache {
    pub x_att: Vec<f32>,  // (M, D) block input
    pub xn_att: Vec<f32>, // (M, D) attention_norm(x)
    pub rstd_att: Vec<f32>,
    pub q: Vec<f32>,     // (M, D) rotated queries
    pub k: Vec<f32>,     // (M, KV) rotated keys
    pub v: Vec<f32>,     // (M, KV)
    pub probs: Vec<f32>, // (B, H, T, T) softmax probabilities; empty unless training
    pub att: Vec<f32>,   // (M, D) attention output before wo
    pub x_ffn: Vec<f32>, // (M, D) FFN block input
    pub xn_ffn: Vec<f32>,
    pub rstd_ffn: Vec<f32>,
    pub ffn: SwigluCache,
}

/// Everything a forward keeps.
#[derive(Clone, Debug, Default)]
pub struct TransformerCache {
    pub dims: Option<BatchDims>,
    pub tokens: Vec<u32>,
    pub layers: Vec<BlockCache>,
    pub x_final: Vec<f32>, // (M, D)
    pub xf: Vec<f32>,      // (M, D) norm(x)
    pub rstd_f: Vec<f32>,
    pub logits: Vec<f32>, // (M, V)
    /// cos, sin of the rotary angles of every position of a sequence (T, hs/2).
    cos: Vec<f32>,
    sin: Vec<f32>,
    row: Vec<f32>,
    /// One block's output (M, D), added into the residual.
    out: Vec<f32>,
    dlogits: Vec<f32>,
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
    datt: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dp: Vec<f32>,
    swiglu: SwigluGradScratch,
}

/// The KV cache and scratch of one sequence being decoded: memory grows with the position
/// (bounded by `max_seq_len`, checked by the config against `MAX_KV_CACHE_BYTES`).
#[derive(Clone, Debug)]
pub struct TransformerState {
    pub pos: usize,
    keys: Vec<Vec<f32>>,   // per layer (pos, KV), rotated
    values: Vec<Vec<f32>>, // per layer (pos, KV)
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    out: Vec<f32>,
    hb: Vec<f32>,
    hb2: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    row: Vec<f32>,
    logits: Vec<f32>,
}

impl TransformerState {
    pub fn new(w: &TransformerWeights) -> TransformerState {
        let c = &w.config;
        let (d, kv, h) = (c.dim, c.kv_dim(), c.hidden_dim);
        TransformerState {
            pos: 0,
            keys: vec![Vec::new(); c.n_layers],
            values: vec![Vec::new(); c.n_layers],
            x: vec![0.0; d],
            xn: vec![0.0; d],
            q: vec![0.0; d],
            k: vec![0.0; kv],
            v: vec![0.0; kv],
            att: vec![0.0; d],
            out: vec![0.0; d],
            hb: vec![0.0; h],
            hb2: vec![0.0; h],
            cos: vec![0.0; c.head_size() / 2],
            sin: vec![0.0; c.head_size() / 2],
            row: Vec::new(),
            logits: vec![0.0; c.vocab_size],
        }
    }

    /// Back to the empty context, keeping the cache's allocations.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.keys.iter_mut().chain(self.values.iter_mut()).for_each(Vec::clear);
    }

    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Bytes the KV cache holds now.
    pub fn cache_bytes(&self) -> usize {
        4 * self.keys.iter().chain(&self.values).map(Vec::len).sum::<usize>()
    }
}

fn check_context(c: &TransformerConfig, past: usize, t: usize) -> Result<()> {
    if past + t > c.max_seq_len {
        return Err(Error::setting(
            "context length",
            format!("{} tokens", past + t),
            format!("at most the model's max_seq_len, {}", c.max_seq_len),
        ));
    }
    Ok(())
}

/// Runs `tokens` (B·T) from the empty context; `train` keeps the attention probabilities
/// for `backward`. Logits end up in `cache.logits` (B·T, V).
pub fn forward(
    w: &TransformerWeights,
    tokens: &[u32],
    bd: BatchDims,
    train: bool,
    cache: &mut TransformerCache,
) -> Result<()> {
    forward_impl(w, tokens, bd, train, None, cache)
}

fn forward_impl(
    w: &TransformerWeights,
    tokens: &[u32],
    bd: BatchDims,
    train: bool,
    mut state: Option<&mut TransformerState>,
    cache: &mut TransformerCache,
) -> Result<()> {
    let c = &w.config;
    check_tokens(tokens, bd, c.vocab_size)?;
    let past = state.as_ref().map_or(0, |s| s.pos);
    assert!(
        state.is_none() || (bd.batch == 1 && !train),
        "a state continues one sequence, not training"
    );
    check_context(c, past, bd.t)?;
    let a = dims(c);
    let (m, d, kv, t, hs) = (bd.rows(), c.dim, c.kv_dim(), bd.t, c.head_size());
    cache.dims = Some(bd);
    cache.trained = train;
    cache.tokens.clear();
    cache.tokens.extend_from_slice(tokens);
    cache.layers.resize_with(c.n_layers, BlockCache::default);
    zeroed(&mut cache.cos, t * hs / 2);
    zeroed(&mut cache.sin, t * hs / 2);
    for (i, (cos, sin)) in cache
        .cos
        .chunks_exact_mut(hs / 2)
        .zip(cache.sin.chunks_exact_mut(hs / 2))
        .enumerate()
    {
        rope_angles(past + i, hs, cos, sin);
    }

    let embed = w.matrix(w.table.embed);
    // The residual stream lives in `x_final`'s buffer and the block output in `out`'s: both
    // reused from the previous call.
    let mut x = std::mem::take(&mut cache.x_final);
    zeroed(&mut x, m * d);
    for (row, &tok) in x.chunks_exact_mut(d).zip(tokens) {
        embed.row_into(tok as usize, row);
    }
    let mut out = std::mem::take(&mut cache.out);
    zeroed(&mut out, m * d);
    for (l, (p, lc)) in w.table.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
        lc.x_att.clear();
        lc.x_att.extend_from_slice(&x);
        zeroed(&mut lc.xn_att, m * d);
        zeroed(&mut lc.rstd_att, m);
        rmsnorm_forward(&mut lc.xn_att, &mut lc.rstd_att, &x, w.vector(p.attention_norm), d);
        zeroed(&mut lc.q, m * d);
        zeroed(&mut lc.k, m * kv);
        zeroed(&mut lc.v, m * kv);
        w.matrix(p.wq).matmul(&lc.xn_att, m, &mut lc.q);
        w.matrix(p.wk).matmul(&lc.xn_att, m, &mut lc.k);
        w.matrix(p.wv).matmul(&lc.xn_att, m, &mut lc.v);
        for (r, (q, k)) in lc.q.chunks_exact_mut(d).zip(lc.k.chunks_exact_mut(kv)).enumerate() {
            let at = (r % t) * hs / 2;
            let (cos, sin) = (&cache.cos[at..at + hs / 2], &cache.sin[at..at + hs / 2]);
            rope_rotate(q, hs, cos, sin, false);
            rope_rotate(k, hs, cos, sin, false);
        }
        zeroed(&mut lc.att, m * d);
        match state.as_deref_mut() {
            Some(st) => {
                st.keys[l].extend_from_slice(&lc.k);
                st.values[l].extend_from_slice(&lc.v);
                let (keys, values) = (&st.keys[l], &st.values[l]);
                attention_forward(&mut lc.att, &lc.q, keys, values, past, t, a, None, &mut cache.row);
            }
            None => {
                let per_seq = a.n_heads * t * t;
                if train {
                    zeroed(&mut lc.probs, bd.batch * per_seq);
                } else {
                    lc.probs.clear();
                }
                for b in 0..bd.batch {
                    let rows = b * t..(b + 1) * t;
                    let probs = train.then(|| &mut lc.probs[b * per_seq..(b + 1) * per_seq]);
                    attention_forward(
                        &mut lc.att[rows.start * d..rows.end * d],
                        &lc.q[rows.start * d..rows.end * d],
                        &lc.k[rows.start * kv..rows.end * kv],
                        &lc.v[rows.start * kv..rows.end * kv],
                        0,
                        t,
                        a,
                        probs,
                        &mut cache.row,
                    );
                }
            }
        }
        w.matrix(p.wo).matmul(&lc.att, m, &mut out);
        add_into(&mut x, &out);
        lc.x_ffn.clear();
        lc.x_ffn.extend_from_slice(&x);
        zeroed(&mut lc.xn_ffn, m * d);
        zeroed(&mut lc.rstd_ffn, m);
        rmsnorm_forward(&mut lc.xn_ffn, &mut lc.rstd_ffn, &x, w.vector(p.ffn_norm), d);
        swiglu_forward(&mut out, &lc.xn_ffn, m, w, &p.ffn, &mut lc.ffn);
        add_into(&mut x, &out);
    }
    zeroed(&mut cache.xf, m * d);
    zeroed(&mut cache.rstd_f, m);
    rmsnorm_forward(&mut cache.xf, &mut cache.rstd_f, &x, w.vector(w.table.norm), d);
    cache.x_final = x;
    cache.out = out;
    zeroed(&mut cache.logits, m * c.vocab_size);
    w.matrix(w.table.classifier()).matmul(&cache.xf, m, &mut cache.logits);
    if let Some(st) = state {
        st.pos += t;
    }
    Ok(())
}

/// Backward of `forward` for ∂L/∂logits = `dlogits`; adds into `grads`. Needs f32 weights and
/// a cache from `forward(.., train = true, ..)`; `s` holds the working buffers.
pub fn backward(
    w: &TransformerWeights,
    cache: &TransformerCache,
    dlogits: &[f32],
    grads: &mut Grads,
    s: &mut GradScratch,
) {
    let c = &w.config;
    let bd = cache.dims.expect("backward needs a forward first");
    assert!(cache.trained, "backward needs a forward with train = true");
    let a = dims(c);
    let (m, d, kv, v, t, hs) = (bd.rows(), c.dim, c.kv_dim(), c.vocab_size, bd.t, c.head_size());
    let tb = &w.table;
    let g = &mut grads.tensors;

    let dxf = zeroed(&mut s.dxf, m * d);
    let head = tb.classifier();
    linear_backward(Some(&mut *dxf), &mut g[head], dlogits, &cache.xf, w.f32(head), m, v, d);
    let dx = zeroed(&mut s.dx, m * d);
    rmsnorm_backward(
        dx,
        &mut g[tb.norm],
        dxf,
        &cache.x_final,
        w.vector(tb.norm),
        &cache.rstd_f,
        d,
    );
    let (dnorm, datt) = (zeroed(&mut s.dnorm, m * d), zeroed(&mut s.datt, m * d));
    let (dq, dk, dv) = (
        zeroed(&mut s.dq, m * d),
        zeroed(&mut s.dk, m * kv),
        zeroed(&mut s.dv, m * kv),
    );
    for (p, lc) in tb.layers.iter().zip(&cache.layers).rev() {
        // x ← x + SwiGLU(ffn_norm(x))
        dnorm.fill(0.0);
        swiglu_backward(dnorm, dx, &lc.xn_ffn, m, w, &p.ffn, &lc.ffn, &mut s.swiglu, grads);
        let g = &mut grads.tensors;
        rmsnorm_backward(
            dx,
            &mut g[p.ffn_norm],
            dnorm,
            &lc.x_ffn,
            w.vector(p.ffn_norm),
            &lc.rstd_ffn,
            d,
        );
        // x ← x + wo · Attn(rope(wq x̂), rope(wk x̂), wv x̂), x̂ = attention_norm(x)
        datt.fill(0.0);
        linear_backward(Some(&mut *datt), &mut g[p.wo], dx, &lc.att, w.f32(p.wo), m, d, d);
        for buf in [&mut *dq, &mut *dk, &mut *dv] {
            buf.fill(0.0);
        }
        let per_seq = a.n_heads * t * t;
        for b in 0..bd.batch {
            let (rd, rk) = (b * t * d..(b + 1) * t * d, b * t * kv..(b + 1) * t * kv);
            attention_backward(
                &mut dq[rd.clone()],
                &mut dk[rk.clone()],
                &mut dv[rk.clone()],
                &datt[rd.clone()],
                &lc.q[rd],
                &lc.k[rk.clone()],
                &lc.v[rk],
                &lc.probs[b * per_seq..(b + 1) * per_seq],
                t,
                a,
                &mut s.dp,
            );
        }
        for (r, (dq, dk)) in dq.chunks_exact_mut(d).zip(dk.chunks_exact_mut(kv)).enumerate() {
            let at = (r % t) * hs / 2;
            let (cos, sin) = (&cache.cos[at..at + hs / 2], &cache.sin[at..at + hs / 2]);
            rope_rotate(dq, hs, cos, sin, true);
            rope_rotate(dk, hs, cos, sin, true);
        }
        dnorm.fill(0.0);
        linear_backward(Some(&mut *dnorm), &mut g[p.wq], dq, &lc.xn_att, w.f32(p.wq), m, d, d);
        linear_backward(Some(&mut *dnorm), &mut g[p.wk], dk, &lc.xn_att, w.f32(p.wk), m, kv, d);
        linear_backward(Some(&mut *dnorm), &mut g[p.wv], dv, &lc.xn_att, w.f32(p.wv), m, kv, d);
        rmsnorm_backward(
            dx,
            &mut g[p.attention_norm],
            dnorm,
            &lc.x_att,
            w.vector(p.attention_norm),
            &lc.rstd_att,
            d,
        );
    }
    let dembed = &mut grads.tensors[tb.embed];
    for (row, &tok) in dx.chunks_exact(d).zip(&cache.tokens) {
        add_into(&mut dembed[tok as usize * d..(tok as usize + 1) * d], row);
    }
}

/// Forward plus `(1−β)·CE + β·τ²·KL` (no aux term: nothing is routed); with `grads`, also
/// the backward.
pub fn loss(
    w: &TransformerWeights,
    tokens: &[u32],
    bd: BatchDims,
    teacher: Option<&[f32]>,
    lw: LossWeights,
    cache: &mut TransformerCache,
    grads: Option<&mut Grads>,
) -> Result<LossParts> {
    let v = w.config.vocab_size;
    check_teacher_logits(teacher, lw, bd, v)?;
    forward(w, tokens, bd, grads.is_some(), cache)?;
    let mut dlogits = grads.is_some().then(|| std::mem::take(&mut cache.dlogits));
    let (ce, kl) = output_losses(&cache.logits, tokens, bd, v, teacher, lw, dlogits.as_mut())?;
    let total = lw.total(ce, kl, 0.0);
    if let (Some(g), Some(dl)) = (grads, dlogits) {
        let mut scratch = std::mem::take(&mut cache.scratch);
        backward(w, cache, &dl, g, &mut scratch);
        cache.scratch = scratch;
        cache.dlogits = dl;
    }
    Ok(LossParts {
        total,
        ce,
        aux: 0.0,
        kl,
    })
}

/// Consumes one token at `st.pos` and returns the logits for the next.
pub fn decode_step<'s>(w: &TransformerWeights, st: &'s mut TransformerState, token: u32) -> Result<&'s [f32]> {
    let c = &w.config;
    Error::check_token(token, c.vocab_size)?;
    check_context(c, st.pos, 1)?;
    let (d, hs, pos) = (c.dim, c.head_size(), st.pos);
    let a = dims(c);
    w.matrix(w.table.embed).row_into(token as usize, &mut st.x);
    rope_angles(pos, hs, &mut st.cos, &mut st.sin);
    let mut rstd = [0.0];
    for (l, p) in w.table.layers.iter().enumerate() {
        rmsnorm_forward(&mut st.xn, &mut rstd, &st.x, w.vector(p.attention_norm), d);
        w.matrix(p.wq).matvec(&st.xn, &mut st.q);
        w.matrix(p.wk).matvec(&st.xn, &mut st.k);
        w.matrix(p.wv).matvec(&st.xn, &mut st.v);
        rope_rotate(&mut st.q, hs, &st.cos, &st.sin, false);
        rope_rotate(&mut st.k, hs, &st.cos, &st.sin, false);
        st.keys[l].extend_from_slice(&st.k);
        st.values[l].extend_from_slice(&st.v);
        attention_forward(
            &mut st.att,
            &st.q,
            &st.keys[l],
            &st.values[l],
            pos,
            1,
            a,
            None,
            &mut st.row,
        );
        w.matrix(p.wo).matvec(&st.att, &mut st.out);
        add_into(&mut st.x, &st.out);
        rmsnorm_forward(&mut st.xn, &mut rstd, &st.x, w.vector(p.ffn_norm), d);
        swiglu_step(&mut st.out, &st.xn, w, &p.ffn, &mut st.hb, &mut st.hb2);
        add_into(&mut st.x, &st.out);
    }
    rmsnorm_forward(&mut st.xn, &mut rstd, &st.x, w.vector(w.table.norm), d);
    w.matrix(w.table.classifier()).matvec(&st.xn, &mut st.logits);
    st.pos += 1;
    Ok(&st.logits)
}

/// Runs `tokens` through the batch forward `PREFILL_CHUNK` tokens at a time, continuing the
/// state's context; `on_chunk(start, logits)` sees each chunk's logits.
pub fn prefill_chunked(
    w: &TransformerWeights,
    tokens: &[u32],
    st: &mut TransformerState,
    cache: &mut TransformerCache,
    on_chunk: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::EmptyInput("prefill tokens"));
    }
    check_context(&w.config, st.pos, tokens.len())?;
    let v = w.config.vocab_size;
    for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
        let bd = BatchDims {
            batch: 1,
            t: chunk.len(),
        };
        forward_impl(w, chunk, bd, false, Some(st), cache)?;
        st.logits.copy_from_slice(&cache.logits[(chunk.len() - 1) * v..]);
        on_chunk(i * PREFILL_CHUNK, &cache.logits)?;
    }
    Ok(())
}
