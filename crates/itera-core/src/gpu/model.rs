//! A model on the GPU: weights uploaded once in their file precision, the activation arena,
//! the control words, and one decode step recorded as a list of dispatches whose bind groups
//! and uniform blocks are all made at load. Decoding records `steps` copies of that list into
//! ONE command encoder, submits once and reads back only the sampled ids and their log-probs
//! (plus the routing trace when asked): the next step's embedding reads the id the sampler
//! wrote on the GPU, so K tokens cost one submission and one read-back.

use super::args::*;
use super::dispatch::{run_pass, Dispatch, Recorder};
use super::kernels::{Bindings, Kernel};
use super::linear::GpuMatrix;
use super::plan::{ffn_matrices, layer_matrices, Arena, CtlLayout, ParamOffsets, PREFILL_ROWS};
use super::{readback, Gpu};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Route;
use crate::precision::Precision;
use crate::sampling::SamplingSettings;
use crate::weights::Weights;

/// Most decode steps in one submission (prompts longer than this go in several).
pub const MAX_STEPS: usize = 64;

/// What one submission produced: for each step, the token it wrote, that token's log-prob
/// (temperature 1) and, when asked, the routing of every layer (empty for dense layers).
#[derive(Clone, Debug, Default)]
pub struct StepsOutput {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub routing: Vec<Vec<Route>>,
}

pub struct GpuModel {
    pub vocab_size: usize,
    /// Positions the model holds: a Transformer's KV cache on the GPU; unbounded (usize::MAX)
    /// for the SSM's fixed state.
    pub context: usize,
    pub precision: Precision,
    /// Which layers route, and how many experts each token takes (the trace's layout).
    routes: RouteLayout,
    /// Where the logits start in the arena, where the decode state starts (cleared on a
    /// reset), and the arena's length.
    logits_off: usize,
    state_off: usize,
    arena_len: usize,
    ctl_layout: CtlLayout,
    act: wgpu::Buffer,
    ctl: wgpu::Buffer,
    uniforms: wgpu::Buffer,
    ids_read: wgpu::Buffer,
    logits_read: wgpu::Buffer,
    pub(crate) step: Vec<Dispatch>,
    /// The batched prefill of PREFILL_ROWS tokens: tiled matmuls, conv and scan over the
    /// tokens, every token routed; it updates the decode state and samples nothing.
    prefill_step: Vec<Dispatch>,
    sample_slot: u64,
    needs_reset: bool,
    /// Tokens consumed since the last reset (the sampler's random stream position).
    pub position: usize,
    // Kept alive for the bind groups that reference them.
    _weights: Vec<GpuMatrix>,
    _params: wgpu::Buffer,
}

/// Which layers of a model route through experts, and the experts per token.
#[derive(Clone, Debug, Default)]
pub(super) struct RouteLayout {
    pub moe: Vec<bool>,
    pub top_k: usize,
}

/// What a family's recording hands `GpuModel::assemble`: the dispatches (the decode step's
/// first, then the batched prefill's, if the family has one), the uploaded matrices they
/// read, the f32 vectors, and the arena's layout.
pub(super) struct Recorded<'g> {
    pub rec: Recorder<'g, Option<usize>>,
    pub step_len: usize,
    pub sample_slot: u64,
    pub weights: Vec<GpuMatrix>,
    pub params: Vec<f32>,
    pub vocab_size: usize,
    pub context: usize,
    pub precision: Precision,
    pub routes: RouteLayout,
    pub ctl_layout: CtlLayout,
    pub logits_off: usize,
    pub state_off: usize,
    pub arena_len: usize,
}

/// The decode step's and the prefill's dispatches, recorded with the uploaded matrices at hand
/// (a dispatch's extra binding is the index of the matrix it reads, if any).
pub(super) struct StepRecorder<'g, 'w> {
    pub gpu: &'g Gpu,
    /// The uploaded matrices, addressed by their index in upload order.
    pub weights: &'w [GpuMatrix],
    pub rec: Recorder<'g, Option<usize>>,
}

impl<'g> StepRecorder<'g, '_> {
    pub fn push<A: bytemuck::Pod>(
        &mut self,
        kernel: &'g Kernel,
        args: A,
        weights: Option<usize>,
        groups: (u32, u32),
    ) -> u64 {
        self.rec.push(kernel, args, weights, groups)
    }

    /// `args` by uploaded matrix `weights` over `rows`: a matvec (one workgroup per row of W)
    /// for one token, the tiled Y = X·Wᵀ for many.
    pub(super) fn project(&mut self, weights: usize, rows: Rows, args: LinearArgs) {
        let precision = self.weights[weights].precision_index();
        if rows.count == 1 {
            let groups = groups_per_row(args.rows as usize);
            self.push(&self.gpu.kernels.matvec[precision], args, Some(weights), groups);
        } else {
            let groups = groups_for_tiles(args.rows as usize, args.tokens as usize);
            self.push(&self.gpu.kernels.matmul[precision], args, Some(weights), groups);
        }
    }

    /// A routed expert's matvec for each of `rows` (the y axis): each token reads the rows of
    /// its own expert in the slot `args` names.
    fn expert(&mut self, weights: usize, rows: Rows, args: LinearArgs) {
        let kernel = &self.gpu.kernels.matvec[self.weights[weights].precision_index()];
        let groups = if rows.count == 1 {
            groups_per_row(args.rows as usize)
        } else {
            (args.rows, rows.count as u32)
        };
        self.push(kernel, args, Some(weights), groups);
    }
}

/// The tokens one recording of the layers covers: one (a decode step, its activations at the
/// arena's single-token offsets) or PREFILL_ROWS (the batched prefill, rows `stride` apart
/// from `base`).
#[derive(Clone, Copy)]
pub(super) struct Rows {
    count: usize,
    base: usize,
    stride: usize,
}

impl Rows {
    pub(super) const DECODE: Rows = Rows {
        count: 1,
        base: 0,
        stride: 0,
    };

    fn prefill(a: &Arena) -> Rows {
        Rows {
            count: PREFILL_ROWS,
            base: a.prefill,
            stride: a.row,
        }
    }

    /// Where activation `off` starts for these rows (its row 0).
    fn at(&self, off: usize) -> usize {
        self.base + off
    }

    /// A (out × in) projection from activation `x` to `y` over these rows.
    fn linear(&self, (out, inp): (usize, usize), x: usize, y: usize) -> LinearArgs {
        LinearArgs::matmul(
            out,
            inp,
            self.count,
            (self.at(x), self.stride),
            (self.at(y), self.stride),
        )
    }
}

impl GpuModel {
    pub fn new(gpu: &Gpu, w: &Weights) -> Result<GpuModel> {
        let c = w.config.clone();
        if c.n_experts > 16 {
            return Err(Error::Gpu(format!(
                "the GPU router handles up to 16 experts, this model has {}",
                c.n_experts
            )));
        }
        let arena = Arena::new(&c);
        let ctl_layout = CtlLayout::new(&c, MAX_STEPS);
        let vectors = ParamOffsets::new(w);
        // Weight and parameter buffers are checked as they are made (Gpu::buffer_init), the
        // arena by `assemble`.

        // Upload: embed, then per layer in_proj, x_proj, dt_proj, out_proj, then the FFN:
        // dense w1, w3, w2, or MoE router + each of w1, w3, w2 stacked over the experts.
        let mut weights = vec![GpuMatrix::upload(gpu, w.matrix(w.table.embed))?];
        let mut layer_slots = Vec::new();
        for p in &w.table.layers {
            let first = weights.len();
            for slot in layer_matrices(p) {
                weights.push(GpuMatrix::upload(gpu, w.matrix(slot))?);
            }
            let (router, ffn) = ffn_matrices(p);
            if let Some(r) = router {
                weights.push(GpuMatrix::upload(gpu, w.matrix(r))?);
            }
            for part in 0..3 {
                let stack: Vec<_> = ffn.iter().map(|e| w.matrix(e[part])).collect();
                weights.push(GpuMatrix::upload_stacked(gpu, &stack)?);
            }
            layer_slots.push(first);
        }

        let mut rec = StepRecorder {
            gpu,
            weights: &weights,
            rec: Recorder::new(),
        };
        let plan = Plan {
            c: &c,
            a: &arena,
            l: &ctl_layout,
            v: &vectors,
            layer_slots: &layer_slots,
        };
        let sample_slot = record_step(&mut rec, &plan);
        let step_len = rec.rec.specs.len();
        record_layers(&mut rec, &plan, Rows::prefill(&arena));
        let rec = rec.rec;
        GpuModel::assemble(
            gpu,
            Recorded {
                rec,
                step_len,
                sample_slot,
                weights,
                params: vectors.values,
                vocab_size: c.vocab_size,
                context: usize::MAX,
                precision: w.precision,
                routes: RouteLayout {
                    moe: (0..c.n_layers).map(|l| c.is_moe(l)).collect(),
                    top_k: c.top_k,
                },
                ctl_layout,
                logits_off: arena.logits,
                state_off: arena.state,
                arena_len: arena.len,
            },
        )
    }

    /// The buffers, bind groups and sampler of a recorded model (either family).
    pub(super) fn assemble<'g>(gpu: &'g Gpu, r: Recorded<'g>) -> Result<GpuModel> {
        use wgpu::BufferUsages as U;
        gpu.check_binding("the activation arena", r.arena_len as u64 * 4)?;
        let params = gpu.buffer_init("params", bytemuck::cast_slice(&r.params), U::STORAGE)?;
        let act = gpu.buffer(
            "activations",
            r.arena_len as u64 * 4,
            U::STORAGE | U::COPY_SRC | U::COPY_DST,
        );
        let l = r.ctl_layout;
        let ctl = gpu.buffer("control", l.len as u64 * 4, U::STORAGE | U::COPY_SRC | U::COPY_DST);
        let ids_read = gpu.buffer(
            "ids read-back",
            ((2 * MAX_STEPS) + MAX_STEPS * l.trace_stride) as u64 * 4,
            U::MAP_READ | U::COPY_DST,
        );
        let logits_read = gpu.buffer("logits read-back", r.vocab_size as u64 * 4, U::MAP_READ | U::COPY_DST);
        let uniforms = gpu.buffer_init("uniform blocks", &r.rec.uniform_bytes, U::UNIFORM)?;
        let weights = r.weights;
        let mut step = r.rec.bind(gpu, &uniforms, |kernel, matrix, uniform| {
            Ok(kernel.signature.resources(Bindings {
                uniform,
                weights: matrix.map(|i| &weights[i]),
                params: &params,
                act: &act,
                ctl: &ctl,
            }))
        })?;
        let prefill_step = step.split_off(r.step_len);
        let mut model = GpuModel {
            vocab_size: r.vocab_size,
            context: r.context,
            precision: r.precision,
            routes: r.routes,
            logits_off: r.logits_off,
            state_off: r.state_off,
            arena_len: r.arena_len,
            ctl_layout: l,
            act,
            ctl,
            uniforms,
            ids_read,
            logits_read,
            step,
            prefill_step,
            sample_slot: r.sample_slot,
            needs_reset: true,
            position: 0,
            _weights: weights,
            _params: params,
        };
        model.set_sampling(gpu, SamplingSettings::greedy())?;
        Ok(model)
    }

    /// Whether tokens are routed (the routing trace means something).
    pub fn routes(&self) -> bool {
        self.routes.moe.iter().any(|&m| m)
    }

    /// Sampling settings for the following steps (a uniform write, nothing created).
    pub fn set_sampling(&mut self, gpu: &Gpu, s: SamplingSettings) -> Result<()> {
        s.validate()?;
        let args = SampleArgs {
            vocab: self.vocab_size as u32,
            logits_off: self.logits_off as u32,
            temperature: s.temperature,
            top_k: s.top_k.min(u32::MAX as usize) as u32,
            top_p: s.top_p,
            seed_lo: s.seed as u32,
            seed_hi: (s.seed >> 32) as u32,
            tokens_base: self.ctl_layout.tokens as u32,
            logprobs_base: self.ctl_layout.logprobs as u32,
        };
        gpu.queue
            .write_buffer(&self.uniforms, self.sample_slot, bytemuck::bytes_of(&args));
        Ok(())
    }

    /// Back to the empty context (the state is cleared at the start of the next submission).
    pub fn reset(&mut self) {
        self.needs_reset = true;
        self.position = 0;
    }

    /// Number of dispatches in one decode step.
    pub fn dispatches_per_step(&self) -> usize {
        self.step.len()
    }

    /// Runs `steps` decode steps in one submission. Step s consumes `forced[s]` while s is
    /// inside `forced`, otherwise the token sampled by step s − 1. With `read`, returns the
    /// `steps` tokens written (the last one not yet consumed) and their log-probs; `trace`
    /// adds the routing of every step.
    pub async fn run(
        &mut self,
        gpu: &Gpu,
        forced: &[u32],
        steps: usize,
        read: bool,
        trace: bool,
    ) -> Result<StepsOutput> {
        let l = self.ctl_layout;
        if forced.is_empty() || forced.len() > steps || steps > l.cap {
            return Err(Error::ShapeMismatch {
                op: "gpu decode",
                detail: format!(
                    "{} forced tokens for {steps} steps (1 ≤ forced ≤ steps ≤ {})",
                    forced.len(),
                    l.cap
                ),
            });
        }
        let vocab = self.vocab_size;
        forced.iter().try_for_each(|&id| Error::check_token(id, vocab))?;
        if self.position + steps > self.context {
            return Err(Error::setting(
                "decode position",
                self.position + steps,
                format!("at most the {} positions this model holds on the GPU", self.context),
            ));
        }
        let mut encoder = self.begin(gpu, forced);
        run_pass(&mut encoder, &self.step, steps);
        let n = steps as u64 * 4;
        let trace_words = if trace { steps * l.trace_stride } else { 0 } as u64 * 4;
        if read {
            encoder.copy_buffer_to_buffer(&self.ctl, (l.tokens as u64 + 1) * 4, &self.ids_read, 0, n);
            encoder.copy_buffer_to_buffer(&self.ctl, (l.logprobs as u64 + 1) * 4, &self.ids_read, n, n);
            if trace {
                encoder.copy_buffer_to_buffer(&self.ctl, l.trace as u64 * 4, &self.ids_read, 2 * n, trace_words);
            }
        }
        gpu.submit(encoder);
        self.position += steps;
        if !read {
            return Ok(StepsOutput::default());
        }
        let bytes = readback::read(gpu, &self.ids_read, 2 * n + trace_words).await?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let mut out = StepsOutput {
            tokens: words[..steps].to_vec(),
            logprobs: words[steps..2 * steps].iter().map(|&b| f32::from_bits(b)).collect(),
            routing: Vec::new(),
        };
        if trace && l.trace_stride == 0 {
            out.routing = vec![Vec::new(); steps];
        } else if trace {
            let r = &self.routes;
            let top_k = r.top_k;
            for step in words[2 * steps..].chunks_exact(l.trace_stride) {
                let layers = step.chunks_exact(2 * top_k).enumerate().map(|(layer, slots)| {
                    if !r.moe[layer] {
                        return Route::default();
                    }
                    Route {
                        experts: slots.iter().step_by(2).map(|&e| e as usize).collect(),
                        weights: slots.iter().skip(1).step_by(2).map(|&b| f32::from_bits(b)).collect(),
                    }
                });
                out.routing.push(layers.collect());
            }
        }
        Ok(out)
    }

    /// Writes the control header and the forced tokens, and starts an encoder that clears the
    /// decode state first when a reset is pending.
    pub(crate) fn begin(&mut self, gpu: &Gpu, forced: &[u32]) -> wgpu::CommandEncoder {
        let mut header = vec![0u32, forced.len() as u32, self.position as u32, 0];
        header.extend_from_slice(forced);
        gpu.queue.write_buffer(&self.ctl, 0, bytemuck::cast_slice(&header));
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        if self.needs_reset {
            let state = self.state_off as u64 * 4;
            if self.arena_len > self.state_off {
                encoder.clear_buffer(&self.act, state, Some(self.arena_len as u64 * 4 - state));
            }
            self.needs_reset = false;
        }
        encoder
    }

    /// Consumes `prompt` and returns the first sampled token with its log-prob and routing:
    /// all but the last 1..=PREFILL_ROWS tokens in batched chunks of PREFILL_ROWS (one
    /// submission each), the rest as forced decode steps, the last of which samples.
    pub async fn prefill(&mut self, gpu: &Gpu, prompt: &[u32], trace: bool) -> Result<StepsOutput> {
        self.prefill_with(gpu, prompt, trace, true).await
    }

    /// `prefill`, batched or (`batched = false`) every token as a forced decode step in
    /// submissions of up to MAX_STEPS — the two must agree (tests/gpu_model.rs).
    pub async fn prefill_with(&mut self, gpu: &Gpu, prompt: &[u32], trace: bool, batched: bool) -> Result<StepsOutput> {
        if prompt.is_empty() {
            return Err(Error::EmptyInput("prompt"));
        }
        let vocab = self.vocab_size;
        prompt.iter().try_for_each(|&id| Error::check_token(id, vocab))?;
        // A family without a batched prefill runs its prompt as forced decode steps.
        let split = if batched && !self.prefill_step.is_empty() {
            (prompt.len() - 1) / PREFILL_ROWS * PREFILL_ROWS
        } else {
            0
        };
        for chunk in prompt[..split].chunks(PREFILL_ROWS) {
            let mut encoder = self.begin(gpu, chunk);
            run_pass(&mut encoder, &self.prefill_step, 1);
            gpu.submit(encoder);
            self.position += chunk.len();
        }
        let chunks: Vec<&[u32]> = prompt[split..].chunks(MAX_STEPS).collect();
        for chunk in &chunks[..chunks.len() - 1] {
            self.run(gpu, chunk, chunk.len(), false, false).await?;
        }
        let last = chunks[chunks.len() - 1];
        let mut out = self.run(gpu, last, last.len(), true, trace).await?;
        let keep = out.tokens.len() - 1;
        out.tokens.drain(..keep);
        out.logprobs.drain(..keep);
        out.routing.drain(..keep.min(out.routing.len()));
        Ok(out)
    }

    /// Consumes `last` and samples `k` tokens in one submission (k ≤ MAX_STEPS).
    pub async fn generate(&mut self, gpu: &Gpu, last: u32, k: usize, trace: bool) -> Result<StepsOutput> {
        self.run(gpu, &[last], k, true, trace).await
    }

    /// The logits of the last step (a separate read-back: for tests and inspection).
    pub async fn logits(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let len = self.vocab_size as u64 * 4;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.act, self.logits_off as u64 * 4, &self.logits_read, 0, len);
        gpu.submit(encoder);
        Ok(bytemuck::pod_collect_to_vec(
            &readback::read(gpu, &self.logits_read, len).await?,
        ))
    }
}

/// Records one decode step — the layers over one token, the final norm, the logits and the
/// sampler; returns the sampler's uniform slot (rewritten per run).
fn record_step(rec: &mut StepRecorder, m: &Plan) -> u64 {
    let (c, a) = (m.c, m.a);
    let kernels = &rec.gpu.kernels;
    record_layers(rec, m, Rows::DECODE);
    rec.push(
        &kernels.rmsnorm,
        norm_args(c, a.x, a.xn, m.v.final_norm, Rows::DECODE),
        None,
        (1, 1),
    );
    let logits = LinearArgs::matvec(c.vocab_size, c.d_model, a.xn, a.logits);
    rec.project(0, Rows::DECODE, logits);
    let placeholder = SampleArgs {
        vocab: 0,
        logits_off: 0,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed_lo: 0,
        seed_hi: 0,
        tokens_base: 0,
        logprobs_base: 0,
    };
    rec.push(&kernels.sample, placeholder, None, (1, 1))
}

/// What recording the layers reads: the model's shape, its arena, control and parameter
/// layouts, and where each layer's matrices start in upload order.
struct Plan<'p> {
    c: &'p Config,
    a: &'p Arena,
    l: &'p CtlLayout,
    v: &'p ParamOffsets,
    layer_slots: &'p [usize],
}

fn norm_args(c: &Config, x: usize, y: usize, w_off: usize, rows: Rows) -> NormArgs {
    NormArgs {
        d: c.d_model as u32,
        rows: rows.count as u32,
        x_off: rows.at(x) as u32,
        y_off: rows.at(y) as u32,
        w_off: w_off as u32,
        stride: if rows.count == 1 { c.d_model } else { rows.stride } as u32,
    }
}

/// Records the embedding of `rows` tokens (the ids in the control words) and every layer over
/// them — the one layer sequence of both the decode step (one token: matvecs) and the batched
/// prefill (PREFILL_ROWS tokens: tiled matmuls; it continues the decode state and samples
/// nothing). CPU twins: `model::decode_step` and `model::prefill`. MoE tokens are each routed
/// and sent to their own experts.
fn record_layers(rec: &mut StepRecorder, m: &Plan, rows: Rows) {
    let (c, a, l, v) = (m.c, m.a, m.l, m.v);
    let gpu = rec.gpu;
    let kernels = &gpu.kernels;
    let (d, di, n, r, f) = (c.d_model, c.d_inner(), c.d_state, c.dt_rank, c.d_ff);
    let (t, w) = (rows.count as u32, rows.stride as u32);
    let embed = LinearArgs {
        token_base: l.tokens as u32,
        tokens: t,
        y_stride: w,
        ..LinearArgs::matvec(c.vocab_size, d, 0, rows.at(a.x))
    };
    let embed_kernel = &kernels.embed_row[rec.weights[0].precision_index()];
    rec.push(embed_kernel, embed, Some(0), (groups_for(d).0, t));
    for (layer, &first) in m.layer_slots.iter().enumerate() {
        let lv = &v.layers[layer];
        let [in_proj, x_proj, dt_proj, out_proj] = [first, first + 1, first + 2, first + 3];
        rec.push(
            &kernels.rmsnorm,
            norm_args(c, a.x, a.xn, lv.ssm_norm, rows),
            None,
            (t, 1),
        );
        rec.project(in_proj, rows, rows.linear((2 * di, d), a.xn, a.xz));
        let conv = ConvArgs {
            channels: di as u32,
            k: c.d_conv as u32,
            x_off: rows.at(a.xz) as u32,
            tail_off: a.tail[layer] as u32,
            y_off: rows.at(a.u) as u32,
            w_off: lv.conv_w as u32,
            b_off: lv.conv_b as u32,
            tokens: t,
            x_stride: w,
            y_stride: w,
        };
        rec.push(&kernels.conv, conv, None, groups_for(di));
        rec.project(x_proj, rows, rows.linear((r + 2 * n, di), a.u, a.bc));
        rec.project(dt_proj, rows, rows.linear((di, r), a.bc, a.dt));
        let scan = ScanArgs {
            channels: di as u32,
            n: n as u32,
            u_off: rows.at(a.u) as u32,
            dt_off: rows.at(a.dt) as u32,
            b_off: (rows.at(a.bc) + r) as u32,
            z_off: (rows.at(a.xz) + di) as u32,
            h_off: a.h[layer] as u32,
            y_off: rows.at(a.y) as u32,
            dt_b_off: lv.dt_b as u32,
            a_log_off: lv.a_log as u32,
            d_skip_off: lv.d_skip as u32,
            tokens: t,
            in_stride: w,
            out_stride: w,
        };
        rec.push(&kernels.scan, scan, None, groups_for(di));
        rec.project(out_proj, rows, rows.linear((d, di), a.y, a.x).accumulating());

        rec.push(
            &kernels.rmsnorm,
            norm_args(c, a.x, a.xn, lv.ffn_norm, rows),
            None,
            (t, 1),
        );
        let swiglu = SwigluArgs {
            n: f as u32,
            a_off: rows.at(a.ffn_a) as u32,
            b_off: rows.at(a.ffn_b) as u32,
            tokens: t,
            stride: w,
        };
        let swiglu_groups = (groups_for(f).0, t);
        let w1 = rows.linear((f, d), a.xn, a.ffn_a);
        let w3 = rows.linear((f, d), a.xn, a.ffn_b);
        let w2 = rows.linear((d, f), a.ffn_a, a.x).accumulating();
        if c.is_moe(layer) {
            let (router, w1s, w3s, w2s) = (first + 4, first + 5, first + 6, first + 7);
            let e = c.n_experts;
            rec.project(router, rows, rows.linear((e, d), a.xn, a.router));
            let (base, stride) = (l.route_base(c, layer), l.trace_stride);
            let route = RouteArgs {
                experts: e as u32,
                k: c.top_k as u32,
                logits_off: rows.at(a.router) as u32,
                route_base: base as u32,
                route_stride: stride as u32,
                stride: w,
            };
            rec.push(&kernels.route, route, None, (t, 1));
            for slot in 0..c.top_k {
                rec.expert(w1s, rows, w1.routed(slot, base, stride, false));
                rec.expert(w3s, rows, w3.routed(slot, base, stride, false));
                rec.push(&kernels.swiglu, swiglu, None, swiglu_groups);
                rec.expert(w2s, rows, w2.routed(slot, base, stride, true));
            }
        } else {
            let (w1i, w3i, w2i) = (first + 4, first + 5, first + 6);
            rec.project(w1i, rows, w1);
            rec.project(w3i, rows, w3);
            rec.push(&kernels.swiglu, swiglu, None, swiglu_groups);
            rec.project(w2i, rows, w2);
        }
    }
}
