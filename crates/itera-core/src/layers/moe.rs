//! Mixture-of-Experts FFN (SPEC "MoE FFN"): `p = softmax(router(x))`; the top-k experts
//! (ties to the lower index) get weights renormalised to sum 1; `out = Σ_j w_j·expert_j(x)`.
//! Training adds the Switch load-balancing loss (Fedus et al. 2021, eq. 4):
//! `aux = E · Σ_e f_e · P_e`, f_e the fraction of routed slots sent to e (a count, no
//! gradient), P_e the mean router probability of e.

use super::activations::softmax;
use super::linear::linear_backward;
use super::scratch::{zeroed, MoeGradScratch};
use super::swiglu::{swiglu_backward, swiglu_forward, swiglu_step, SwigluCache};
use crate::params::SwigluParams;
use crate::weights::{Grads, Weights};

/// Top-k of `probs` with ties to the lower index; writes expert ids and renormalised weights.
pub fn route(probs: &[f32], experts: &mut [usize], weights: &mut [f32]) {
    let top_k = experts.len();
    for j in 0..top_k {
        let mut best = usize::MAX;
        for (e, &p) in probs.iter().enumerate() {
            if experts[..j].contains(&e) {
                continue;
            }
            // Strictly greater keeps the lowest index among equals.
            if best == usize::MAX || p > probs[best] {
                best = e;
            }
        }
        experts[j] = best;
    }
    let sum: f32 = experts.iter().map(|&e| probs[e]).sum();
    for (w, &e) in weights.iter_mut().zip(experts.iter()) {
        *w = probs[e] / sum;
    }
}

/// The tokens one expert received: their row indices, the slot j they came through, their
/// gathered inputs and the expert's activations.
#[derive(Clone, Debug, Default)]
pub struct ExpertBatch {
    pub rows: Vec<usize>,
    pub slots: Vec<usize>,
    pub x: Vec<f32>,   // (n_e, D)
    pub out: Vec<f32>, // (n_e, D) expert output before weighting
    pub act: SwigluCache,
}

/// Routing and activations of one MoE layer over M rows.
#[derive(Clone, Debug, Default)]
pub struct MoeCache {
    pub probs: Vec<f32>,     // (M, E) router softmax
    pub experts: Vec<usize>, // (M, k) chosen experts
    pub weights: Vec<f32>,   // (M, k) renormalised weights
    pub counts: Vec<usize>,  // (E) routed slots per expert
    pub batches: Vec<ExpertBatch>,
}

/// out (M, D) = MoE(xn (M, D)). Returns this layer's aux loss `E · Σ f_e P_e`.
pub fn moe_forward(
    out: &mut [f32],
    xn: &[f32],
    m: usize,
    w: &Weights,
    router: usize,
    experts: &[SwigluParams],
    cache: &mut MoeCache,
) -> f32 {
    let (d, e_count, top_k) = (w.config.d_model, w.config.n_experts, w.config.top_k);
    cache.probs.clear();
    cache.probs.resize(m * e_count, 0.0);
    w.matrix(router).matmul(xn, m, &mut cache.probs);
    cache.experts.clear();
    cache.experts.resize(m * top_k, 0);
    cache.weights.clear();
    cache.weights.resize(m * top_k, 0.0);
    for row in 0..m {
        let probs = &mut cache.probs[row * e_count..(row + 1) * e_count];
        softmax(probs);
        route(
            probs,
            &mut cache.experts[row * top_k..(row + 1) * top_k],
            &mut cache.weights[row * top_k..(row + 1) * top_k],
        );
    }
    cache.batches.resize_with(e_count, ExpertBatch::default);
    for b in &mut cache.batches {
        b.rows.clear();
        b.slots.clear();
        b.x.clear();
    }
    for (i, &e) in cache.experts.iter().enumerate() {
        let b = &mut cache.batches[e];
        b.rows.push(i / top_k);
        b.slots.push(i % top_k);
        b.x.extend_from_slice(&xn[(i / top_k) * d..(i / top_k + 1) * d]);
    }
    out[..m * d].fill(0.0);
    for (e, b) in cache.batches.iter_mut().enumerate() {
        let n = b.rows.len();
        b.out.clear();
        b.out.resize(n * d, 0.0);
        if n == 0 {
            continue;
        }
        swiglu_forward(&mut b.out, &b.x, n, w, &experts[e], &mut b.act);
        for (i, (&row, &slot)) in b.rows.iter().zip(&b.slots).enumerate() {
            let wt = cache.weights[row * top_k + slot];
            for (o, v) in out[row * d..(row + 1) * d].iter_mut().zip(&b.out[i * d..(i + 1) * d]) {
                *o += wt * v;
            }
        }
    }
    cache.counts.clear();
    cache.counts.extend(cache.batches.iter().map(|b| b.rows.len()));
    aux_loss(&cache.probs, &cache.counts, m, e_count, top_k)
}

/// `E · Σ_e f_e · P_e` with f_e = counts_e / (M·k), P_e = mean_rows probs[·, e].
pub fn aux_loss(probs: &[f32], counts: &[usize], m: usize, e_count: usize, top_k: usize) -> f32 {
    (0..e_count)
        .map(|e| {
            let f = counts[e] as f32 / (m * top_k) as f32;
            let p = probs.iter().skip(e).step_by(e_count).sum::<f32>() / m as f32;
            f * p
        })
        .sum::<f32>()
        * e_count as f32
}

/// Backward: dxn (M, D) += ∂L/∂xn for `dout` (M, D) and `aux_scale` = ∂L/∂aux of this layer.
#[allow(clippy::too_many_arguments)]
pub fn moe_backward(
    dxn: &mut [f32],
    dout: &[f32],
    xn: &[f32],
    m: usize,
    aux_scale: f32,
    w: &Weights,
    router: usize,
    experts: &[SwigluParams],
    cache: &MoeCache,
    s: &mut MoeGradScratch,
    grads: &mut Grads,
) {
    let (d, e_count, top_k) = (w.config.d_model, w.config.n_experts, w.config.top_k);
    // ∂L/∂w_j for every routed slot, then each expert's backward on its weighted gradient.
    let dweights = zeroed(&mut s.dweights, m * top_k);
    for (e, b) in cache.batches.iter().enumerate() {
        let n = b.rows.len();
        if n == 0 {
            continue;
        }
        let dexp = zeroed(&mut s.dexp, n * d);
        for (i, (&row, &slot)) in b.rows.iter().zip(&b.slots).enumerate() {
            let go = &dout[row * d..(row + 1) * d];
            let wt = cache.weights[row * top_k + slot];
            dweights[row * top_k + slot] = go.iter().zip(&b.out[i * d..(i + 1) * d]).map(|(g, o)| g * o).sum();
            for (dst, g) in dexp[i * d..(i + 1) * d].iter_mut().zip(go) {
                *dst = wt * g;
            }
        }
        let dx = zeroed(&mut s.dx, n * d);
        swiglu_backward(dx, dexp, &b.x, n, w, &experts[e], &b.act, &mut s.swiglu, grads);
        for (i, &row) in b.rows.iter().enumerate() {
            for (dst, v) in dxn[row * d..(row + 1) * d].iter_mut().zip(&dx[i * d..(i + 1) * d]) {
                *dst += v;
            }
        }
    }
    router_backward(
        &cache.probs,
        &cache.experts,
        &cache.weights,
        dweights,
        &cache.counts,
        aux_scale,
        top_k,
        &mut s.dlogits,
        &mut s.dp,
    );
    linear_backward(
        Some(dxn),
        &mut grads.tensors[router],
        &s.dlogits,
        xn,
        w.f32(router),
        m,
        e_count,
        d,
    );
}

/// The router logits' gradient (M, E) from ∂L/∂w of every routed slot (`dweights`, M × k)
/// and `aux_scale` = ∂L/∂aux: through the renormalisation w_j = p_j / S (S = Σ_sel p:
/// ∂L/∂p_j = (∂L/∂w_j − Σ_l ∂L/∂w_l · w_l) / S), the aux loss (∂aux/∂p[t, e] = E · f_e / M)
/// and the softmax. Writes `dlogits`; `dp` is one row's working space.
#[allow(clippy::too_many_arguments)]
pub fn router_backward(
    probs: &[f32],
    experts: &[usize],
    weights: &[f32],
    dweights: &[f32],
    counts: &[usize],
    aux_scale: f32,
    top_k: usize,
    dlogits: &mut Vec<f32>,
    dp: &mut Vec<f32>,
) {
    let e_count = counts.len();
    let m = probs.len() / e_count;
    let dlogits = zeroed(dlogits, m * e_count);
    for row in 0..m {
        let probs = &probs[row * e_count..(row + 1) * e_count];
        let sel = &experts[row * top_k..(row + 1) * top_k];
        let wts = &weights[row * top_k..(row + 1) * top_k];
        let dw = &dweights[row * top_k..(row + 1) * top_k];
        let s: f32 = sel.iter().map(|&e| probs[e]).sum();
        let mean: f32 = dw.iter().zip(wts).map(|(a, b)| a * b).sum();
        let dp = zeroed(dp, e_count);
        for (j, &e) in sel.iter().enumerate() {
            dp[e] += (dw[j] - mean) / s;
        }
        for (e, v) in dp.iter_mut().enumerate() {
            *v += aux_scale * e_count as f32 * (counts[e] as f32 / (m * top_k) as f32) / m as f32;
        }
        // softmax backward: dlogit = p ⊙ (dp − Σ p⊙dp)
        let dot: f32 = probs.iter().zip(dp.iter()).map(|(p, g)| p * g).sum();
        for e in 0..e_count {
            dlogits[row * e_count + e] = probs[e] * (dp[e] - dot);
        }
    }
}

/// Per-token scratch for the MoE decode step.
#[derive(Clone, Debug)]
pub struct MoeScratch {
    pub probs: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub out: Vec<f32>,
}

/// One decode step: out (D) = MoE(xn (D)); the chosen experts and weights are written to
/// `experts` / `weights` (k each) — the routing trace.
#[allow(clippy::too_many_arguments)]
pub fn moe_step(
    out: &mut [f32],
    xn: &[f32],
    w: &Weights,
    router: usize,
    params: &[SwigluParams],
    experts: &mut [usize],
    weights: &mut [f32],
    s: &mut MoeScratch,
) {
    w.matrix(router).matvec(xn, &mut s.probs);
    softmax(&mut s.probs);
    route(&s.probs, experts, weights);
    out.fill(0.0);
    for (&e, &wt) in experts.iter().zip(weights.iter()) {
        swiglu_step(&mut s.out, xn, w, &params[e], &mut s.a, &mut s.b);
        for (o, v) in out.iter_mut().zip(&s.out) {
            *o += wt * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn ties_go_to_the_lower_index_and_weights_renormalise() {
        let probs = [0.3, 0.3, 0.1, 0.3];
        let (mut e, mut w) = ([0; 2], [0.0; 2]);
        route(&probs, &mut e, &mut w);
        assert_eq!(e, [0, 1]);
        assert_eq!(w, [0.5, 0.5]);
        let probs = [0.1, 0.2, 0.6, 0.1];
        route(&probs, &mut e, &mut w);
        assert_eq!(e, [2, 1]);
        assert!((w[0] - 0.75).abs() < 1e-6 && (w[1] - 0.25).abs() < 1e-6);
    }
}
