//! Training losses on the logits (B, T, V):
//! - cross-entropy, the mean over the B·(T−1) positions that predict `tokens[t+1]`;
//! - distillation KL(teacher_τ ‖ student_τ) at temperature τ over the same positions,
//!   scaled by τ² (Hinton et al. 2015) so its gradients keep their size as τ changes.

use super::activations::exp_shifted;
use super::ssm::BatchDims;
use crate::error::{Error, Result};
use crate::model::LossWeights;

/// Refuses distillation without teacher logits for every row (B·T, V): checked before a
/// forward runs, so a bad teacher costs nothing.
pub fn check_teacher_logits(teacher: Option<&[f32]>, lw: LossWeights, bd: BatchDims, v: usize) -> Result<()> {
    if lw.distill_beta > 0.0 && teacher.is_none_or(|t| t.len() != bd.rows() * v) {
        return Err(Error::ShapeMismatch {
            op: "distillation",
            detail: format!("teacher logits must be {} × {v}", bd.rows()),
        });
    }
    Ok(())
}

/// The terms of the training loss that read the logits — `(1−β)·CE` and `β·τ²·KL` — for any
/// family (teacher logits checked by `check_teacher_logits`); with `dlogits` (resized to the
/// logits) fills in ∂/∂logits. Returns (CE, τ²·KL).
pub fn output_losses(
    logits: &[f32],
    tokens: &[u32],
    bd: BatchDims,
    v: usize,
    teacher: Option<&[f32]>,
    lw: LossWeights,
    mut dlogits: Option<&mut Vec<f32>>,
) -> Result<(f32, f32)> {
    check_teacher_logits(teacher, lw, bd, v)?;
    if let Some(d) = dlogits.as_deref_mut() {
        d.clear();
        d.resize(bd.rows() * v, 0.0);
    }
    let beta = lw.distill_beta;
    let mut dl = dlogits.map(|d| d.as_mut_slice());
    let ce = cross_entropy(logits, tokens, bd, v, dl.as_deref_mut(), 1.0 - beta);
    let kl = match teacher {
        Some(t) if beta > 0.0 => distill_kl(logits, t, bd, v, lw.temperature, dl, beta),
        _ => 0.0,
    };
    Ok((ce, kl))
}

/// Number of positions the losses average over.
pub fn predicted_positions(bd: BatchDims) -> usize {
    bd.batch * bd.t.saturating_sub(1)
}

/// Mean CE; when `dlogits` is given, adds `scale · ∂CE/∂logits` into it.
pub fn cross_entropy(
    logits: &[f32],
    tokens: &[u32],
    bd: BatchDims,
    v: usize,
    mut dlogits: Option<&mut [f32]>,
    scale: f32,
) -> f32 {
    let count = predicted_positions(bd);
    if count == 0 {
        return 0.0;
    }
    let mut total = 0.0f64;
    let mut e = vec![0.0f32; v];
    for b in 0..bd.batch {
        for t in 0..bd.t - 1 {
            let row = b * bd.t + t;
            let z = &logits[row * v..(row + 1) * v];
            let target = tokens[row + 1] as usize;
            let (max, sum) = exp_shifted(z, &mut e);
            total += (max + sum.ln() - z[target]) as f64;
            if let Some(dl) = dlogits.as_deref_mut() {
                // ∂CE/∂z = softmax(z) − onehot(target)
                let s = scale / count as f32;
                let g = &mut dl[row * v..(row + 1) * v];
                let f = s / sum;
                for (g, &e) in g.iter_mut().zip(&e) {
                    *g += f * e;
                }
                g[target] -= s;
            }
        }
    }
    (total / count as f64) as f32
}

/// Mean τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ)); when `dlogits` is given, adds
/// `scale · ∂/∂student` = scale · τ · (q − p) / count into it.
#[allow(clippy::too_many_arguments)]
pub fn distill_kl(
    student: &[f32],
    teacher: &[f32],
    bd: BatchDims,
    v: usize,
    tau: f32,
    mut dlogits: Option<&mut [f32]>,
    scale: f32,
) -> f32 {
    let count = predicted_positions(bd);
    if count == 0 {
        return 0.0;
    }
    let mut total = 0.0f64;
    // Scaled logits p = teacher/τ, q = student/τ, and their shifted exponentials.
    let (mut p, mut q) = (vec![0.0f32; v], vec![0.0f32; v]);
    let (mut ep, mut eq) = (vec![0.0f32; v], vec![0.0f32; v]);
    for b in 0..bd.batch {
        for t in 0..bd.t - 1 {
            let row = b * bd.t + t;
            for i in 0..v {
                p[i] = teacher[row * v + i] / tau;
                q[i] = student[row * v + i] / tau;
            }
            let (max_p, sum_p) = exp_shifted(&p, &mut ep);
            let (max_q, sum_q) = exp_shifted(&q, &mut eq);
            let (lp, lq) = (max_p + sum_p.ln(), max_q + sum_q.ln());
            // KL = Σ p_i (log p_i − log q_i), p_i = ep_i / Σ ep
            let mut kl = 0.0f64;
            for i in 0..v {
                kl += (ep[i] / sum_p * ((p[i] - lp) - (q[i] - lq))) as f64;
            }
            total += kl;
            if let Some(dl) = dlogits.as_deref_mut() {
                let s = scale * tau / count as f32;
                let (fp, fq) = (1.0 / sum_p, 1.0 / sum_q);
                for i in 0..v {
                    dl[row * v + i] += s * (eq[i] * fq - ep[i] * fp);
                }
            }
        }
    }
    (total / count as f64) as f32 * tau * tau
}
