//! Where a training step keeps everything: parameters flat in table order (gradients and both
//! AdamW moments use the same offsets in the gradient buffer, one table-length apart), and the
//! activations of one micro-batch of M rows in one f32 arena, as `model::Cache` keeps them on
//! the CPU. Backward scratch is shared by the layers (each layer's backward finishes before
//! the next begins). Token and routing ids live in the u32 `ints` buffer; each layer's SSM
//! states h_t (M, Di, N) get their own buffer.

use super::args::report;
use crate::config::Config;
use crate::params::ParamTable;

/// Offset of every table slot in the flat parameter vector, and its length.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub offsets: Vec<usize>,
    pub len: usize,
}

impl ParamLayout {
    pub fn new(table: &ParamTable) -> ParamLayout {
        let mut offsets = Vec::with_capacity(table.len());
        let mut len = 0;
        for spec in &table.specs {
            offsets.push(len);
            len += spec.numel();
        }
        ParamLayout { offsets, len }
    }
}

/// One layer's activations.
#[derive(Clone, Debug)]
pub struct LayerActs {
    /// Block input (the residual stream), and the residual after the SSM block.
    pub x: usize,
    pub x_ffn: usize,
    pub xn: usize,
    pub rstd: usize,
    /// in_proj output [u_pre | z] (M, 2Di).
    pub xz: usize,
    pub conv: usize,
    pub u: usize,
    /// x_proj output [dt_r | B | C] (M, R + 2N).
    pub bc: usize,
    pub dt_pre: usize,
    pub dt: usize,
    pub y: usize,
    pub g: usize,
    pub xn_ffn: usize,
    pub rstd_ffn: usize,
    /// Per expert (one for a dense FFN): W1x, W3x, silu(W1x)⊙W3x (M, F) and, for MoE, the
    /// expert's output (M, D).
    pub ffn_a: Vec<usize>,
    pub ffn_b: Vec<usize>,
    pub ffn_h: Vec<usize>,
    pub expert_out: Vec<usize>,
    /// MoE: router probabilities and dense routing weights (M, E), counts per expert (E).
    pub probs: usize,
    pub route_w: usize,
    pub counts: usize,
    /// MoE: the chosen expert ids (M, k) in `ints`.
    pub experts: usize,
}

/// Backward scratch, shared by the layers.
#[derive(Clone, Debug)]
pub struct Scratch {
    pub dx: usize,
    pub dnorm: usize,
    pub dg: usize,
    pub dxz: usize,
    pub dy: usize,
    pub du: usize,
    pub ddt: usize,
    pub dbc: usize,
    pub dh: usize,
    pub da: usize,
    pub db: usize,
    pub dexp: usize,
    pub dw: usize,
    pub dlogits_r: usize,
}

#[derive(Clone, Debug)]
pub struct ActLayout {
    /// Rows per micro-batch (sequences × T) and the sequence length.
    pub rows: usize,
    pub t: usize,
    pub report: usize,
    pub partials: usize,
    pub layers: Vec<LayerActs>,
    pub x_final: usize,
    pub xf: usize,
    pub rstd_f: usize,
    /// Logits (M, V), overwritten in place by their gradient.
    pub logits: usize,
    /// Teacher logits (M, V) when distilling.
    pub teacher: Option<usize>,
    pub rowloss: usize,
    pub scratch: Scratch,
    pub len: usize,
    /// u32 words: every micro-batch's tokens, then each MoE layer's expert ids.
    pub ints_len: usize,
    pub tokens: usize,
}

impl ActLayout {
    /// The arena for micro-batches of `seqs` sequences of `t` tokens, `micro` of them a step.
    pub fn new(c: &Config, seqs: usize, t: usize, micro: usize, distill: bool) -> ActLayout {
        let m = seqs * t;
        let (d, di, f, e, xo) = (c.d_model, c.d_inner(), c.d_ff, c.n_experts, c.x_proj_out());
        let mut next = 0;
        let mut take = |len: usize| {
            let at = next;
            next += len;
            at
        };
        let report = take(report::LEN);
        let partials = take(report::PARTS);
        let mut ints_next = micro * m;
        let mut layers = Vec::new();
        for l in 0..c.n_layers {
            let moe = c.is_moe(l);
            let experts = if moe { e } else { 1 };
            let mut per_expert = |len: usize| (0..experts).map(|_| take(len)).collect::<Vec<_>>();
            let (ffn_a, ffn_b, ffn_h) = (per_expert(m * f), per_expert(m * f), per_expert(m * f));
            let expert_out = if moe { per_expert(m * d) } else { Vec::new() };
            let ids = ints_next;
            if moe {
                ints_next += m * c.top_k;
            }
            layers.push(LayerActs {
                x: take(m * d),
                x_ffn: take(m * d),
                xn: take(m * d),
                rstd: take(m),
                xz: take(m * 2 * di),
                conv: take(m * di),
                u: take(m * di),
                bc: take(m * xo),
                dt_pre: take(m * di),
                dt: take(m * di),
                y: take(m * di),
                g: take(m * di),
                xn_ffn: take(m * d),
                rstd_ffn: take(m),
                ffn_a,
                ffn_b,
                ffn_h,
                expert_out,
                probs: take(m * e),
                route_w: take(m * e),
                counts: take(e),
                experts: ids,
            });
        }
        let x_final = take(m * d);
        let xf = take(m * d);
        let rstd_f = take(m);
        let logits = take(m * c.vocab_size);
        let teacher = distill.then(|| take(m * c.vocab_size));
        let rowloss = take(2 * m);
        let scratch = Scratch {
            dx: take(m * d),
            dnorm: take(m * d),
            dg: take(m * di),
            dxz: take(m * 2 * di),
            dy: take(m * di),
            du: take(m * di),
            ddt: take(m * di),
            dbc: take(m * xo),
            dh: take(m * f),
            da: take(m * f),
            db: take(m * f),
            dexp: take(m * d),
            dw: take(m * e),
            dlogits_r: take(m * e),
        };
        ActLayout {
            rows: m,
            t,
            report,
            partials,
            layers,
            x_final,
            xf,
            rstd_f,
            logits,
            teacher,
            rowloss,
            scratch,
            len: next,
            ints_len: ints_next,
            tokens: 0,
        }
    }
}
