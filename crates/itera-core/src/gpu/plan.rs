//! Where everything lives on the GPU for decoding, and the recorded list of dispatches of one
//! decode step. Activations share one f32 arena and the kernels address them by offset (like
//! llm.c's single activation buffer), so every bind group can be made once at load.
//!
//! Control words (`ctl`, u32): a header — [0] step within the current submission, [1] number
//! of forced (prompt) tokens, [2] absolute position of step 0 — then `cap + 1` token ids,
//! `cap + 1` log-probs (f32 bits) and the routing trace: for each step, layer and slot the
//! chosen expert and its weight (f32 bits). Step s reads tokens[s] and writes tokens[s + 1].

use crate::config::Config;
use crate::params::{FfnParams, LayerParams};
use crate::weights::Weights;

pub const HEADER_WORDS: usize = 4;

/// Tokens of one batched prefill submission.
pub const PREFILL_ROWS: usize = 64;

/// Offsets of the control words for submissions of up to `cap` steps.
#[derive(Clone, Copy, Debug)]
pub struct CtlLayout {
    pub cap: usize,
    pub tokens: usize,
    pub logprobs: usize,
    pub trace: usize,
    /// Trace words per step: layers · k · 2.
    pub trace_stride: usize,
    pub len: usize,
}

impl CtlLayout {
    pub fn new(c: &Config, cap: usize) -> CtlLayout {
        CtlLayout::with_trace(c.n_layers * c.top_k * 2, cap)
    }

    /// The layout with `trace_stride` routing words per step (0: a model without experts).
    pub fn with_trace(trace_stride: usize, cap: usize) -> CtlLayout {
        let tokens = HEADER_WORDS;
        let logprobs = tokens + cap + 1;
        let trace = logprobs + cap + 1;
        CtlLayout {
            cap,
            tokens,
            logprobs,
            trace,
            trace_stride,
            len: trace + (cap + 1) * trace_stride,
        }
    }

    /// Trace index of layer `l`'s slot 0 at step 0.
    pub fn route_base(&self, c: &Config, l: usize) -> usize {
        self.trace + l * c.top_k * 2
    }
}

/// Offsets in the activation arena: one step's activations, then each layer's decode state,
/// then the rows of a batched prefill.
#[derive(Clone, Debug)]
pub struct Arena {
    pub x: usize,
    pub xn: usize,
    /// in_proj output: u before the conv (Di), then z (Di).
    pub xz: usize,
    pub u: usize,
    /// x_proj output: dt_r (R), B (N), C (N).
    pub bc: usize,
    pub dt: usize,
    pub y: usize,
    pub ffn_a: usize,
    pub ffn_b: usize,
    pub router: usize,
    pub logits: usize,
    /// Per layer: the SSM state h (Di × N) and the conv tail ((K − 1) × Di).
    pub h: Vec<usize>,
    pub tail: Vec<usize>,
    /// Where the decode state starts (everything from here on is cleared on reset).
    pub state: usize,
    /// The batched prefill's rows: token t's activations at `prefill + t·row`, laid out as
    /// one step's (x at `x`, xn at `xn`, …), so each kernel reads row t at offset + t·row.
    pub row: usize,
    pub prefill: usize,
    pub len: usize,
}

impl Arena {
    pub fn new(c: &Config) -> Arena {
        let (d, di, n) = (c.d_model, c.d_inner(), c.d_state);
        let mut next = 0;
        let mut take = |len: usize| {
            let at = next;
            next += len;
            at
        };
        let x = take(d);
        let xn = take(d);
        let xz = take(2 * di);
        let u = take(di);
        let bc = take(c.dt_rank + 2 * n);
        let dt = take(di);
        let y = take(di);
        let ffn_a = take(c.d_ff);
        let ffn_b = take(c.d_ff);
        let router = take(c.n_experts);
        let logits = take(c.vocab_size);
        let state = take(0);
        let h = (0..c.n_layers).map(|_| take(di * n)).collect();
        let tail = (0..c.n_layers).map(|_| take((c.d_conv - 1) * di)).collect();
        // One token's activations are x..router (the logits come last and are not needed).
        let row = logits;
        let prefill = take(PREFILL_ROWS * row);
        Arena {
            row,
            prefill,
            x,
            xn,
            xz,
            u,
            bc,
            dt,
            y,
            ffn_a,
            ffn_b,
            router,
            logits,
            h,
            tail,
            state,
            len: take(0),
        }
    }
}

/// Offsets of every f32 vector parameter in the params buffer.
#[derive(Clone, Debug)]
pub struct ParamOffsets {
    pub layers: Vec<LayerVectors>,
    pub final_norm: usize,
    pub values: Vec<f32>,
}

#[derive(Clone, Copy, Debug)]
pub struct LayerVectors {
    pub ssm_norm: usize,
    pub conv_w: usize,
    pub conv_b: usize,
    pub dt_b: usize,
    pub a_log: usize,
    pub d_skip: usize,
    pub ffn_norm: usize,
}

impl ParamOffsets {
    pub fn new(w: &Weights) -> ParamOffsets {
        let mut values = Vec::new();
        let mut put = |slot: usize| {
            let at = values.len();
            values.extend_from_slice(w.vector(slot));
            at
        };
        let layers = w
            .table
            .layers
            .iter()
            .map(|p: &LayerParams| LayerVectors {
                ssm_norm: put(p.ssm_norm),
                conv_w: put(p.conv_w),
                conv_b: put(p.conv_b),
                dt_b: put(p.dt_b),
                a_log: put(p.a_log),
                d_skip: put(p.d_skip),
                ffn_norm: put(p.ffn_norm),
            })
            .collect();
        let final_norm = put(w.table.final_norm);
        ParamOffsets {
            layers,
            final_norm,
            values,
        }
    }
}

/// The matrices of one layer, in the order `GpuModel` uploads them.
pub fn layer_matrices(p: &LayerParams) -> [usize; 4] {
    [p.in_proj, p.x_proj, p.dt_proj, p.out_proj]
}

/// A layer's FFN matrices: dense (w1, w3, w2) or MoE (router; w1, w3, w2 of every expert).
pub fn ffn_matrices(p: &LayerParams) -> (Option<usize>, Vec<[usize; 3]>) {
    match &p.ffn {
        FfnParams::Dense(s) => (None, vec![[s.w1, s.w3, s.w2]]),
        FfnParams::Moe { router, experts } => (Some(*router), experts.iter().map(|s| [s.w1, s.w3, s.w2]).collect()),
    }
}
