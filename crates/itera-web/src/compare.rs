//! The Compare tab's per-token figures: how one model's next-token distributions differ from a
//! reference's on the same tokens (any two models that share a tokenizer: precisions of one
//! model, or the two families side by side).

use itera_core::layers::activations::log_sum_exp;
use itera_core::model::PREFILL_CHUNK;
use itera_core::sampling::argmax;
use itera_core::{Error, Result};
use serde::Serialize;

use crate::engine::Engine;

/// How a model's next-token distributions differ from a reference's on the same tokens.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    /// KL(reference ‖ other) in nats at each scored position.
    pub kl: Vec<f32>,
    pub mean_kl: f64,
    /// Fraction of positions whose most likely next token is the same.
    pub top1_agreement: f64,
    /// Fraction of (position, MoE layer) pairs that route to the same set of experts; none
    /// unless both models route through the same MoE layers with the same top-k.
    pub routing_agreement: Option<f64>,
    pub positions: usize,
}

/// Runs both models over `tokens` and compares their predictions for every position from
/// `from - 1` on (the predictions of the tokens at `from..`): KL(reference ‖ other), top-1
/// agreement and, where both route alike (the same MoE layers, experts and top-k), routing
/// agreement. The two must share a tokenizer.
pub fn compare(reference: &Engine, other: &Engine, tokens: &[u32], from: usize) -> Result<Comparison> {
    let (ia, ib) = (reference.info(), other.info());
    if ia.tokenizer != ib.tokenizer {
        return Err(Error::ShapeMismatch {
            op: "compare",
            detail: "the two models use different tokenizers, so their predictions cannot be compared token by token"
                .into(),
        });
    }
    if tokens.len() < 2 || from == 0 || from >= tokens.len() {
        return Err(Error::EmptyInput(
            "comparison sequence (generate at least one token first)",
        ));
    }
    let v = ia.vocab_size;
    // Expert ids mean the same only in models of the same experts (a pruned model numbers its
    // kept experts afresh).
    let routed_alike = !ia.moe_layers.is_empty()
        && (&ia.moe_layers, ia.top_k, ia.n_experts) == (&ib.moe_layers, ib.top_k, ib.n_experts);
    let mut out = Comparison::default();
    let (mut agree, mut routed, mut same_route) = (0usize, 0usize, 0usize);
    // Both models step through the sequence one prefill chunk at a time, so memory is that of
    // one chunk however long the sequence; the last token predicts nothing and is not run.
    let (mut sa, mut sb) = (reference.scorer(), other.scorer());
    let predicting = &tokens[..tokens.len() - 1];
    for (i, chunk) in predicting.chunks(PREFILL_CHUNK).enumerate() {
        let la = sa.run(chunk)?;
        let lb = sb.run(chunk)?;
        let start = i * PREFILL_CHUNK;
        for row in (from - 1).saturating_sub(start)..chunk.len() {
            let (pa, pb) = (&la[row * v..][..v], &lb[row * v..][..v]);
            out.kl.push(kl_divergence(pa, pb));
            agree += usize::from(argmax(pa) == argmax(pb));
        }
        if routed_alike {
            for row in (from - 1).saturating_sub(start)..chunk.len() {
                let (ra, rb) = (sa.routes(row), sb.routes(row));
                routed += ra.len();
                same_route += ra.iter().zip(&rb).filter(|(a, b)| a == b).count();
            }
        }
    }
    out.positions = out.kl.len();
    out.mean_kl = out.kl.iter().map(|&x| x as f64).sum::<f64>() / out.positions as f64;
    out.top1_agreement = agree as f64 / out.positions as f64;
    out.routing_agreement = routed_alike.then(|| same_route as f64 / routed.max(1) as f64);
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
