//! Causal multi-head self-attention with grouped-query heads (query head h reads kv head
//! h / group, Ainslie et al. 2023) and rotary position embeddings (RoPE, Su et al. 2021,
//! RoFormer eq. 34) on adjacent pairs with θ = 10000, as llama2.c's `run.c` and `model.py`:
//! pair (2i, 2i+1) of every head at position p turns by p · θ^(−2i/hs).
//!
//! The forward serves training (B sequences from the empty context, keeping the softmax
//! probabilities for the backward), prefill and decoding (queries after `past` cached keys).

use super::activations::softmax;

/// RoPE base (llama2.c, model.py `theta`).
pub const ROPE_THETA: f32 = 10000.0;

/// Head layout of an attention block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_size: usize,
}

impl AttnDims {
    /// Width of the queries and the output (D).
    pub fn dim(&self) -> usize {
        self.n_heads * self.head_size
    }

    /// Width of the keys and values (KV).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_size
    }

    /// Query heads per kv head.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
}

/// cos and sin of every pair's angle at `pos` (hs/2 each): the same for every head and layer.
pub fn rope_angles(pos: usize, head_size: usize, cos: &mut [f32], sin: &mut [f32]) {
    for (i, (c, s)) in cos.iter_mut().zip(sin.iter_mut()).enumerate().take(head_size / 2) {
        let freq = 1.0 / ROPE_THETA.powf((2 * i) as f32 / head_size as f32);
        (*s, *c) = (pos as f32 * freq).sin_cos();
    }
}

/// `rope_angles` of every position below `context`, position after position (hs/2 values
/// each): the tables a GPU decode reads, so its angles are the CPU's exactly.
pub fn rope_table(context: usize, head_size: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_size / 2;
    let (mut cos, mut sin) = (vec![0.0; context * half], vec![0.0; context * half]);
    for (pos, (c, s)) in cos.chunks_exact_mut(half).zip(sin.chunks_exact_mut(half)).enumerate() {
        rope_angles(pos, head_size, c, s);
    }
    (cos, sin)
}

/// Rotates each head of the row `v` (heads × hs) by the angles; `inverse` turns back (the
/// rotation's transpose, which is its backward).
pub fn rope_rotate(v: &mut [f32], head_size: usize, cos: &[f32], sin: &[f32], inverse: bool) {
    for head in v.chunks_exact_mut(head_size) {
        for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
            let s = if inverse { -s } else { s };
            let (v0, v1) = (pair[0], pair[1]);
            pair[0] = v0 * c - v1 * s;
            pair[1] = v0 * s + v1 * c;
        }
    }
}

/// q · k over a head, in 8 independent lanes (vectorised; a head is a few dozen values, and a
/// sequential sum would make every score wait on the previous addition).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `t` queries at positions `past..past + t` attend to keys `0..=` their own position:
/// out_i = Σ_j softmax_j(q_i · k_j / √hs) v_j per head. `q`, `out`: (t, D); `keys`,
/// `values`: (past + t, KV), already rotated. With `probs` ((H, t, t), only from the empty
/// context) the probabilities are kept for the backward. `row` is scratch.
///
/// The query heads that share a kv head are done together, so each key and value is read
/// once per kv head (decoding a long context is bound by reading the cache); every head's
/// arithmetic is in the same order as one head at a time.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    past: usize,
    t: usize,
    a: AttnDims,
    mut probs: Option<&mut [f32]>,
    row: &mut Vec<f32>,
) {
    let (d, kv, hs, g) = (a.dim(), a.kv_dim(), a.head_size, a.group());
    assert!(
        probs.is_none() || past == 0,
        "attention probabilities are kept from the empty context only"
    );
    assert!(keys.len() >= (past + t) * kv && values.len() >= (past + t) * kv && q.len() >= t * d);
    let stride = past + t;
    if row.len() < g * stride {
        row.resize(g * stride, 0.0);
    }
    let scale = (hs as f32).sqrt();
    for kvh in 0..a.n_kv_heads {
        let heads = kvh * g..(kvh + 1) * g;
        for i in 0..t {
            let n = past + i + 1;
            let qi = &q[i * d..(i + 1) * d];
            for (j, kj) in keys.chunks_exact(kv).take(n).enumerate() {
                let kj = &kj[kvh * hs..(kvh + 1) * hs];
                for (gi, h) in heads.clone().enumerate() {
                    row[gi * stride + j] = dot(&qi[h * hs..(h + 1) * hs], kj) / scale;
                }
            }
            for (gi, h) in heads.clone().enumerate() {
                let p = &mut row[gi * stride..gi * stride + n];
                softmax(p);
                if let Some(kept) = probs.as_deref_mut() {
                    kept[(h * t + i) * t..][..n].copy_from_slice(p);
                }
                out[i * d + h * hs..][..hs].fill(0.0);
            }
            for (j, vj) in values.chunks_exact(kv).take(n).enumerate() {
                let vj = &vj[kvh * hs..(kvh + 1) * hs];
                for (gi, h) in heads.clone().enumerate() {
                    let pj = row[gi * stride + j];
                    out[i * d + h * hs..][..hs]
                        .iter_mut()
                        .zip(vj)
                        .for_each(|(o, v)| *o += pj * v);
                }
            }
        }
    }
}

/// Backward of `attention_forward` from the empty context: with P the kept probabilities and
/// dP_ij = dout_i · v_j, dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij') / √hs;
/// dq_i += Σ_j dS_ij k_j,  dk_j += Σ_i dS_ij q_i,  dv_j += Σ_i P_ij dout_i (over the query heads
/// that share a kv head). Adds into `dq` (t, D), `dk`, `dv` (t, KV); `dp` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    probs: &[f32],
    t: usize,
    a: AttnDims,
    dp: &mut Vec<f32>,
) {
    let (d, kv, hs) = (a.dim(), a.kv_dim(), a.head_size);
    if dp.len() < t {
        dp.resize(t, 0.0);
    }
    let scale = (hs as f32).sqrt();
    for h in 0..a.n_heads {
        let kvh = (h / a.group()) * hs;
        for i in 0..t {
            let n = i + 1;
            let p = &probs[(h * t + i) * t..][..n];
            let doi = &dout[i * d + h * hs..][..hs];
            let dpi = &mut dp[..n];
            for (j, g) in dpi.iter_mut().enumerate() {
                *g = dot(doi, &values[j * kv + kvh..][..hs]);
            }
            let mean = dot(p, dpi);
            let qi = &q[i * d + h * hs..][..hs];
            for j in 0..n {
                let ds = p[j] * (dpi[j] - mean) / scale;
                let kj = &keys[j * kv + kvh..][..hs];
                dq[i * d + h * hs..][..hs]
                    .iter_mut()
                    .zip(kj)
                    .for_each(|(g, k)| *g += ds * k);
                dk[j * kv + kvh..][..hs]
                    .iter_mut()
                    .zip(qi)
                    .for_each(|(g, q)| *g += ds * q);
                dv[j * kv + kvh..][..hs]
                    .iter_mut()
                    .zip(doi)
                    .for_each(|(g, o)| *g += p[j] * o);
            }
        }
    }
}
