//! Training losses on the logits (B, T, V):
//! - cross-entropy, the mean over the B·(T−1) positions that predict `tokens[t+1]`;
//! - distillation KL(teacher_τ ‖ student_τ) at temperature τ over the same positions,
//!   scaled by τ² (Hinton et al. 2015) so its gradients keep their size as τ changes.

use super::activations::{log_sum_exp, softmax};
use super::ssm::BatchDims;

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
    let mut probs = vec![0.0f32; v];
    for b in 0..bd.batch {
        for t in 0..bd.t - 1 {
            let row = b * bd.t + t;
            let z = &logits[row * v..(row + 1) * v];
            let target = tokens[row + 1] as usize;
            total += (log_sum_exp(z) - z[target]) as f64;
            if let Some(dl) = dlogits.as_deref_mut() {
                probs.copy_from_slice(z);
                softmax(&mut probs);
                probs[target] -= 1.0;
                let s = scale / count as f32;
                for (g, p) in dl[row * v..(row + 1) * v].iter_mut().zip(&probs) {
                    *g += s * p;
                }
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
    let (mut p, mut q) = (vec![0.0f32; v], vec![0.0f32; v]);
    for b in 0..bd.batch {
        for t in 0..bd.t - 1 {
            let row = b * bd.t + t;
            for i in 0..v {
                p[i] = teacher[row * v + i] / tau;
                q[i] = student[row * v + i] / tau;
            }
            let (lp, lq) = (log_sum_exp(&p), log_sum_exp(&q));
            // KL = Σ p_i (log p_i − log q_i)
            let mut kl = 0.0f64;
            for i in 0..v {
                let (logp, logq) = (p[i] - lp, q[i] - lq);
                kl += (logp.exp() * (logp - logq)) as f64;
            }
            total += kl;
            if let Some(dl) = dlogits.as_deref_mut() {
                softmax(&mut p);
                softmax(&mut q);
                let s = scale * tau / count as f32;
                for i in 0..v {
                    dl[row * v + i] += s * (q[i] - p[i]);
                }
            }
        }
    }
    (total / count as f64) as f32 * tau * tau
}
