//! A Transformer on the GPU: its weights uploaded in their file precision, its KV cache in the
//! activation arena, and its decode step recorded once as dispatches — embedding, then per
//! layer RMSNorm, the q/k/v matvecs, RoPE + the cache append (`rope_kv`), attention over the
//! cache, the output projection, RMSNorm and SwiGLU — then the final norm, the logits and the
//! sampler, so K tokens are one submission like the SSM's (`GpuModel::run`). CPU twin:
//! `transformer::model::decode_step`. The prompt runs as forced decode steps (no batched
//! prefill for this family yet).

use super::args::*;
use super::dispatch::Recorder;
use super::linear::GpuMatrix;
use super::model::{GpuModel, Recorded, RouteLayout, Rows, StepRecorder, MAX_STEPS};
use super::plan::CtlLayout;
use super::Gpu;
use crate::error::Result;
use crate::layers::attention::rope_table;
use crate::transformer::{Transformer, TransformerConfig};
use crate::weights::Weights;

/// Most positions of a Transformer's context the GPU holds (its KV cache, scores and RoPE
/// tables are sized for them): a context beyond it ends a generation there.
pub const MAX_GPU_CONTEXT: usize = 8192;

/// Offsets (f32 elements) of one step's activations and of the caches in the arena.
struct Arena {
    x: usize,
    xn: usize,
    q: usize,
    k: usize,
    v: usize,
    att: usize,
    ffn_a: usize,
    ffn_b: usize,
    logits: usize,
    scores: usize,
    /// Layer l's key cache, then its value cache (context × kv_dim each). A step writes its
    /// row before attention reads rows up to it, so a reset needs no clearing.
    caches: Vec<(usize, usize)>,
    len: usize,
}

impl Arena {
    fn new(c: &TransformerConfig, context: usize) -> Arena {
        let mut at = 0;
        let mut take = |n: usize| {
            at += n;
            at - n
        };
        let (d, kv, hid) = (c.dim, c.kv_dim(), c.hidden_dim);
        let (x, xn, q, k, v, att) = (take(d), take(d), take(d), take(kv), take(kv), take(d));
        let (ffn_a, ffn_b, logits) = (take(hid), take(hid), take(c.vocab_size));
        let scores = take(c.n_heads * context);
        let caches = (0..c.n_layers)
            .map(|_| (take(context * kv), take(context * kv)))
            .collect();
        Arena {
            x,
            xn,
            q,
            k,
            v,
            att,
            ffn_a,
            ffn_b,
            logits,
            scores,
            caches,
            len: take(0),
        }
    }
}

impl GpuModel {
    /// Uploads a Transformer and records its decode step; the GPU holds the first
    /// min(max_seq_len, MAX_GPU_CONTEXT) positions.
    pub fn transformer(gpu: &Gpu, w: &Weights<Transformer>) -> Result<GpuModel> {
        let c = &w.config;
        let context = c.max_seq_len.min(MAX_GPU_CONTEXT);
        let (d, kv, hid, hs) = (c.dim, c.kv_dim(), c.hidden_dim, c.head_size());
        let a = Arena::new(c, context);

        // The f32 vectors: each layer's two norms, the final norm, then the RoPE tables.
        let mut params = Vec::new();
        let mut vector = |v: &[f32]| {
            params.extend_from_slice(v);
            params.len() - v.len()
        };
        let norms: Vec<(usize, usize)> = w
            .table
            .layers
            .iter()
            .map(|p| (vector(w.vector(p.attention_norm)), vector(w.vector(p.ffn_norm))))
            .collect();
        let final_norm = vector(w.vector(w.table.norm));
        let (cos, sin) = rope_table(context, hs);
        let (cos_off, sin_off) = (vector(&cos), vector(&sin));

        // Upload: the embedding, per layer wq, wk, wv, wo, w1, w3, w2, then the classifier
        // when it is not the embedding.
        let mut weights = vec![GpuMatrix::upload(gpu, w.matrix(w.table.embed))?];
        for p in &w.table.layers {
            for m in [p.wq, p.wk, p.wv, p.wo, p.ffn.w1, p.ffn.w3, p.ffn.w2] {
                weights.push(GpuMatrix::upload(gpu, w.matrix(m))?);
            }
        }
        let classifier = match w.table.output {
            Some(o) => {
                weights.push(GpuMatrix::upload(gpu, w.matrix(o))?);
                weights.len() - 1
            }
            None => 0,
        };

        let ctl_layout = CtlLayout::with_trace(0, MAX_STEPS);
        let mut rec = StepRecorder {
            gpu,
            weights: &weights,
            rec: Recorder::new(),
        };
        let kernels = &gpu.kernels;
        let one = Rows::DECODE;
        let norm = |x: usize, y: usize, w_off: usize| NormArgs {
            d: d as u32,
            rows: 1,
            x_off: x as u32,
            y_off: y as u32,
            w_off: w_off as u32,
            stride: d as u32,
        };
        let embed = LinearArgs {
            token_base: ctl_layout.tokens as u32,
            y_stride: 0,
            ..LinearArgs::matvec(c.vocab_size, d, 0, a.x)
        };
        rec.push(
            &kernels.embed_row[weights[0].precision_index()],
            embed,
            Some(0),
            (groups_for(d).0, 1),
        );
        for (layer, &(attention_norm, ffn_norm)) in norms.iter().enumerate() {
            let first = 1 + 7 * layer;
            let [wq, wk, wv, wo, w1, w3, w2] = std::array::from_fn(|i| first + i);
            let (k_cache, v_cache) = a.caches[layer];
            rec.push(&kernels.rmsnorm, norm(a.x, a.xn, attention_norm), None, (1, 1));
            rec.project(wq, one, LinearArgs::matvec(d, d, a.xn, a.q));
            rec.project(wk, one, LinearArgs::matvec(kv, d, a.xn, a.k));
            rec.project(wv, one, LinearArgs::matvec(kv, d, a.xn, a.v));
            let attention = AttentionArgs {
                q_off: a.q as u32,
                k_off: a.k as u32,
                v_off: a.v as u32,
                out_off: a.att as u32,
                scores_off: a.scores as u32,
                k_cache: k_cache as u32,
                v_cache: v_cache as u32,
                cos_off: cos_off as u32,
                sin_off: sin_off as u32,
                head_size: hs as u32,
                n_heads: c.n_heads as u32,
                n_kv_heads: c.n_kv_heads as u32,
                context: context as u32,
                scale: (1.0 / (hs as f32).sqrt()).to_bits(),
            };
            rec.push(&kernels.rope_kv, attention, None, (1, 1));
            rec.push(&kernels.attention, attention, None, (c.n_heads as u32, 1));
            rec.project(wo, one, LinearArgs::matvec(d, d, a.att, a.x).accumulating());
            rec.push(&kernels.rmsnorm, norm(a.x, a.xn, ffn_norm), None, (1, 1));
            rec.project(w1, one, LinearArgs::matvec(hid, d, a.xn, a.ffn_a));
            rec.project(w3, one, LinearArgs::matvec(hid, d, a.xn, a.ffn_b));
            let swiglu = SwigluArgs {
                n: hid as u32,
                a_off: a.ffn_a as u32,
                b_off: a.ffn_b as u32,
                tokens: 1,
                stride: hid as u32,
            };
            rec.push(&kernels.swiglu, swiglu, None, groups_for(hid));
            rec.project(w2, one, LinearArgs::matvec(d, hid, a.ffn_a, a.x).accumulating());
        }
        rec.push(&kernels.rmsnorm, norm(a.x, a.xn, final_norm), None, (1, 1));
        rec.project(classifier, one, LinearArgs::matvec(c.vocab_size, d, a.xn, a.logits));
        let placeholder: SampleArgs = bytemuck::Zeroable::zeroed(); // set_sampling writes it
        let sample_slot = rec.push(&kernels.sample, placeholder, None, (1, 1));
        let rec = rec.rec;
        let step_len = rec.specs.len();
        GpuModel::assemble(
            gpu,
            Recorded {
                rec,
                step_len,
                sample_slot,
                weights,
                params,
                vocab_size: c.vocab_size,
                context,
                precision: w.precision,
                routes: RouteLayout::default(),
                ctl_layout,
                logits_off: a.logits,
                // Nothing to clear on a reset (see `Arena::caches`).
                state_off: a.len,
                arena_len: a.len,
            },
        )
    }
}
