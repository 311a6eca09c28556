//! A model on the GPU: weights uploaded once in their file precision, the activation arena,
//! the control words, and one decode step recorded as a list of dispatches whose bind groups
//! and uniform blocks are all made at load. Decoding records `steps` copies of that list into
//! ONE command encoder, submits once and reads back only the sampled ids and their log-probs
//! (plus the routing trace when asked): the next step's embedding reads the id the sampler
//! wrote on the GPU, so K tokens cost one submission and one read-back.

use super::args::*;
use super::dispatch::{run_pass, Dispatch};
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

/// Uniform blocks sit at multiples of WebGPU's minimum uniform offset alignment.
const UNIFORM_SLOT: u64 = 256;

/// What one submission produced: for each step, the token it wrote, that token's log-prob
/// (temperature 1) and, when asked, the routing of every layer (empty for dense layers).
#[derive(Clone, Debug, Default)]
pub struct StepsOutput {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub routing: Vec<Vec<Route>>,
}

pub struct GpuModel {
    pub config: Config,
    pub precision: Precision,
    arena: Arena,
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

/// Builds the dispatch list: uniform blocks first (one buffer), then the bind groups.
struct Recorder<'g> {
    gpu: &'g Gpu,
    /// The uploaded matrices, addressed by their index in upload order.
    weights: &'g [GpuMatrix],
    uniform_bytes: Vec<u8>,
    specs: Vec<Spec<'g>>,
}

/// A dispatch before its bind group exists: kernel, uniform slot, weight matrix, workgroups.
type Spec<'g> = (&'g Kernel, u64, Option<usize>, (u32, u32));

impl<'g> Recorder<'g> {
    fn push<A: bytemuck::Pod>(
        &mut self,
        kernel: &'g Kernel,
        args: A,
        weights: Option<usize>,
        groups: (u32, u32),
    ) -> u64 {
        let slot = self.uniform_bytes.len() as u64;
        self.uniform_bytes.extend_from_slice(bytemuck::bytes_of(&args));
        self.uniform_bytes.resize((slot + UNIFORM_SLOT) as usize, 0);
        self.specs.push((kernel, slot, weights, groups));
        slot
    }

    /// A matvec by uploaded matrix `weights`, one workgroup per dispatched row.
    fn linear(&mut self, weights: usize, args: LinearArgs, rows_dispatched: usize) {
        let kernel = &self.gpu.kernels.matvec[self.weights[weights].precision_index()];
        self.push(kernel, args, Some(weights), groups_per_row(rows_dispatched));
    }

    /// A matvec per token (`args.tokens` of them on the y axis): the prefill's routed experts.
    fn linear_tokens(&mut self, weights: usize, args: LinearArgs) {
        let kernel = &self.gpu.kernels.matvec[self.weights[weights].precision_index()];
        self.push(kernel, args, Some(weights), (args.rows, args.tokens));
    }

    /// The tiled Y = X·Wᵀ over `args.tokens` tokens.
    fn matmul(&mut self, weights: usize, args: LinearArgs) {
        let kernel = &self.gpu.kernels.matmul[self.weights[weights].precision_index()];
        let groups = groups_for_tiles(args.rows as usize, args.tokens as usize);
        self.push(kernel, args, Some(weights), groups);
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
        // Weight and parameter buffers are checked as they are made (Gpu::buffer_init).
        gpu.check_binding("the activation arena", arena.len as u64 * 4)?;

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

        use wgpu::BufferUsages as U;
        let params = gpu.buffer_init("params", bytemuck::cast_slice(&vectors.values), U::STORAGE)?;
        let act = gpu.buffer(
            "activations",
            arena.len as u64 * 4,
            U::STORAGE | U::COPY_SRC | U::COPY_DST,
        );
        let ctl = gpu.buffer(
            "control",
            ctl_layout.len as u64 * 4,
            U::STORAGE | U::COPY_SRC | U::COPY_DST,
        );
        let ids_read = gpu.buffer(
            "ids read-back",
            ((2 * MAX_STEPS) + MAX_STEPS * ctl_layout.trace_stride) as u64 * 4,
            U::MAP_READ | U::COPY_DST,
        );
        let logits_read = gpu.buffer("logits read-back", c.vocab_size as u64 * 4, U::MAP_READ | U::COPY_DST);

        let mut rec = Recorder {
            gpu,
            weights: &weights,
            uniform_bytes: Vec::new(),
            specs: Vec::new(),
        };
        let sample_slot = record_step(&mut rec, &c, &arena, &ctl_layout, &vectors, &layer_slots);
        let step_len = rec.specs.len();
        record_prefill(&mut rec, &c, &arena, &ctl_layout, &vectors, &layer_slots);
        let uniforms = gpu.buffer_init("uniform blocks", &rec.uniform_bytes, U::UNIFORM)?;
        let mut step: Vec<Dispatch> = rec
            .specs
            .iter()
            .map(|&(kernel, slot, wi, groups)| {
                let uniform = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &uniforms,
                    offset: slot,
                    size: wgpu::BufferSize::new(UNIFORM_SLOT),
                });
                let resources = kernel.signature.resources(Bindings {
                    uniform,
                    weights: wi.map(|i| &weights[i]),
                    params: &params,
                    act: &act,
                    ctl: &ctl,
                });
                Dispatch {
                    label: kernel.label,
                    pipeline: kernel.pipeline.clone(),
                    bind_group: gpu.bind_group(gpu.kernels.layout(kernel.signature), &resources),
                    groups,
                }
            })
            .collect();
        let prefill_step = step.split_off(step_len);
        let mut model = GpuModel {
            precision: w.precision,
            config: c,
            arena,
            ctl_layout,
            act,
            ctl,
            uniforms,
            ids_read,
            logits_read,
            step,
            prefill_step,
            sample_slot,
            needs_reset: true,
            position: 0,
            _weights: weights,
            _params: params,
        };
        model.set_sampling(gpu, SamplingSettings::greedy())?;
        Ok(model)
    }

    /// Sampling settings for the following steps (a uniform write, nothing created).
    pub fn set_sampling(&mut self, gpu: &Gpu, s: SamplingSettings) -> Result<()> {
        s.validate()?;
        let args = SampleArgs {
            vocab: self.config.vocab_size as u32,
            logits_off: self.arena.logits as u32,
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
        let vocab = self.config.vocab_size;
        forced.iter().try_for_each(|&id| Error::check_token(id, vocab))?;
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
        if trace {
            let c = &self.config;
            let k = c.top_k;
            for step in words[2 * steps..].chunks_exact(l.trace_stride) {
                let layers = step.chunks_exact(2 * k).enumerate().map(|(layer, slots)| {
                    if !c.is_moe(layer) {
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
            let state = self.arena.state as u64 * 4;
            encoder.clear_buffer(&self.act, state, Some(self.arena.len as u64 * 4 - state));
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
        let vocab = self.config.vocab_size;
        prompt.iter().try_for_each(|&id| Error::check_token(id, vocab))?;
        let split = if batched {
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
        let len = self.config.vocab_size as u64 * 4;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.act, self.arena.logits as u64 * 4, &self.logits_read, 0, len);
        gpu.submit(encoder);
        Ok(bytemuck::pod_collect_to_vec(
            &readback::read(gpu, &self.logits_read, len).await?,
        ))
    }
}

/// Records one decode step; returns the uniform slot of the sampler (rewritten per run).
fn record_step<'g>(
    rec: &mut Recorder<'g>,
    c: &Config,
    a: &Arena,
    l: &CtlLayout,
    v: &ParamOffsets,
    layer_slots: &[usize],
) -> u64 {
    let gpu = rec.gpu;
    let k = &gpu.kernels;
    let (d, di, n, r) = (c.d_model, c.d_inner(), c.d_state, c.dt_rank);
    let embed = &rec.weights[0];
    let embed_args = LinearArgs {
        token_base: l.tokens as u32,
        ..LinearArgs::matvec(c.vocab_size, d, 0, a.x)
    };
    rec.push(
        &k.embed_row[embed.precision_index()],
        embed_args,
        Some(0),
        groups_for(d),
    );
    let norm = |rec: &mut Recorder<'g>, x: usize, y: usize, w_off: usize| {
        let args = NormArgs {
            d: d as u32,
            rows: 1,
            x_off: x as u32,
            y_off: y as u32,
            w_off: w_off as u32,
            stride: d as u32,
        };
        rec.push(&k.rmsnorm, args, None, (1, 1));
    };
    for (layer, &first) in layer_slots.iter().enumerate() {
        let lv = &v.layers[layer];
        let [in_proj, x_proj, dt_proj, out_proj] = [first, first + 1, first + 2, first + 3];
        norm(rec, a.x, a.xn, lv.ssm_norm);
        rec.linear(in_proj, LinearArgs::matvec(2 * di, d, a.xn, a.xz), 2 * di);
        let conv = ConvArgs {
            channels: di as u32,
            k: c.d_conv as u32,
            x_off: a.xz as u32,
            tail_off: a.tail[layer] as u32,
            y_off: a.u as u32,
            w_off: lv.conv_w as u32,
            b_off: lv.conv_b as u32,
            tokens: 1,
            x_stride: 0,
            y_stride: 0,
        };
        rec.push(&k.conv, conv, None, groups_for(di));
        rec.linear(x_proj, LinearArgs::matvec(r + 2 * n, di, a.u, a.bc), r + 2 * n);
        rec.linear(dt_proj, LinearArgs::matvec(di, r, a.bc, a.dt), di);
        let scan = ScanArgs {
            channels: di as u32,
            n: n as u32,
            u_off: a.u as u32,
            dt_off: a.dt as u32,
            b_off: (a.bc + r) as u32,
            z_off: (a.xz + di) as u32,
            h_off: a.h[layer] as u32,
            y_off: a.y as u32,
            dt_b_off: lv.dt_b as u32,
            a_log_off: lv.a_log as u32,
            d_skip_off: lv.d_skip as u32,
            tokens: 1,
            in_stride: 0,
            out_stride: 0,
        };
        rec.push(&k.scan, scan, None, groups_for(di));
        let residual = LinearArgs::matvec(d, di, a.y, a.x).accumulating();
        rec.linear(out_proj, residual, d);

        norm(rec, a.x, a.xn, lv.ffn_norm);
        let f = c.d_ff;
        let swiglu = SwigluArgs {
            n: f as u32,
            a_off: a.ffn_a as u32,
            b_off: a.ffn_b as u32,
            tokens: 1,
            stride: 0,
        };
        let w1 = LinearArgs::matvec(f, d, a.xn, a.ffn_a);
        let w3 = LinearArgs::matvec(f, d, a.xn, a.ffn_b);
        let w2 = LinearArgs::matvec(d, f, a.ffn_a, a.x).accumulating();
        if c.is_moe(layer) {
            let (router, w1s, w3s, w2s) = (first + 4, first + 5, first + 6, first + 7);
            let e = c.n_experts;
            rec.linear(router, LinearArgs::matvec(e, d, a.xn, a.router), e);
            let (base, stride) = (l.route_base(c, layer), l.trace_stride);
            let route = RouteArgs {
                experts: e as u32,
                k: c.top_k as u32,
                logits_off: a.router as u32,
                route_base: base as u32,
                route_stride: stride as u32,
                stride: 0,
            };
            rec.push(&k.route, route, None, (1, 1));
            for slot in 0..c.top_k {
                rec.linear(w1s, w1.routed(slot, base, stride, false), f);
                rec.linear(w3s, w3.routed(slot, base, stride, false), f);
                rec.push(&k.swiglu, swiglu, None, groups_for(f));
                rec.linear(w2s, w2.routed(slot, base, stride, true), d);
            }
        } else {
            let (w1i, w3i, w2i) = (first + 4, first + 5, first + 6);
            rec.linear(w1i, w1, f);
            rec.linear(w3i, w3, f);
            rec.push(&k.swiglu, swiglu, None, groups_for(f));
            rec.linear(w2i, w2, d);
        }
    }
    norm(rec, a.x, a.xn, v.final_norm);
    rec.linear(0, LinearArgs::matvec(c.vocab_size, d, a.xn, a.logits), c.vocab_size);
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
    rec.push(&k.sample, placeholder, None, (1, 1))
}

/// Records the batched prefill of PREFILL_ROWS tokens (the decode step's layers over all of
/// them at once; CPU twin: `model::prefill`): the embedding rows of tokens[0..T], then per
/// layer the norms, tiled matmuls, conv and scan over T (continuing the decode state), and
/// the FFN — MoE tokens each routed and sent to their own experts. No logits, no sampling.
fn record_prefill<'g>(
    rec: &mut Recorder<'g>,
    c: &Config,
    a: &Arena,
    l: &CtlLayout,
    v: &ParamOffsets,
    layer_slots: &[usize],
) {
    let gpu = rec.gpu;
    let k = &gpu.kernels;
    let (t, w) = (PREFILL_ROWS, a.row);
    let (d, di, n, r, f) = (c.d_model, c.d_inner(), c.d_state, c.dt_rank, c.d_ff);
    // Row 0 of an activation; row i is `w` further.
    let at = |off: usize| a.prefill + off;
    let rows = |rows: usize, cols: usize, x: usize, y: usize| LinearArgs::matmul(rows, cols, t, (at(x), w), (at(y), w));
    let embed = LinearArgs {
        token_base: l.tokens as u32,
        tokens: t as u32,
        y_stride: w as u32,
        ..LinearArgs::matvec(c.vocab_size, d, 0, at(a.x))
    };
    let embed_kernel = &k.embed_row[rec.weights[0].precision_index()];
    rec.push(embed_kernel, embed, Some(0), (groups_for(d).0, t as u32));
    let norm = |rec: &mut Recorder<'g>, w_off: usize| {
        let args = NormArgs {
            d: d as u32,
            rows: t as u32,
            x_off: at(a.x) as u32,
            y_off: at(a.xn) as u32,
            w_off: w_off as u32,
            stride: w as u32,
        };
        rec.push(&k.rmsnorm, args, None, (t as u32, 1));
    };
    for (layer, &first) in layer_slots.iter().enumerate() {
        let lv = &v.layers[layer];
        let [in_proj, x_proj, dt_proj, out_proj] = [first, first + 1, first + 2, first + 3];
        norm(rec, lv.ssm_norm);
        rec.matmul(in_proj, rows(2 * di, d, a.xn, a.xz));
        let conv = ConvArgs {
            channels: di as u32,
            k: c.d_conv as u32,
            x_off: at(a.xz) as u32,
            tail_off: a.tail[layer] as u32,
            y_off: at(a.u) as u32,
            w_off: lv.conv_w as u32,
            b_off: lv.conv_b as u32,
            tokens: t as u32,
            x_stride: w as u32,
            y_stride: w as u32,
        };
        rec.push(&k.conv, conv, None, groups_for(di));
        rec.matmul(x_proj, rows(r + 2 * n, di, a.u, a.bc));
        rec.matmul(dt_proj, rows(di, r, a.bc, a.dt));
        let scan = ScanArgs {
            channels: di as u32,
            n: n as u32,
            u_off: at(a.u) as u32,
            dt_off: at(a.dt) as u32,
            b_off: (at(a.bc) + r) as u32,
            z_off: (at(a.xz) + di) as u32,
            h_off: a.h[layer] as u32,
            y_off: at(a.y) as u32,
            dt_b_off: lv.dt_b as u32,
            a_log_off: lv.a_log as u32,
            d_skip_off: lv.d_skip as u32,
            tokens: t as u32,
            in_stride: w as u32,
            out_stride: w as u32,
        };
        rec.push(&k.scan, scan, None, groups_for(di));
        rec.matmul(out_proj, rows(d, di, a.y, a.x).accumulating());

        norm(rec, lv.ffn_norm);
        let swiglu = SwigluArgs {
            n: f as u32,
            a_off: at(a.ffn_a) as u32,
            b_off: at(a.ffn_b) as u32,
            tokens: t as u32,
            stride: w as u32,
        };
        let swiglu_groups = (groups_for(f).0, t as u32);
        if c.is_moe(layer) {
            let (router, w1s, w3s, w2s) = (first + 4, first + 5, first + 6, first + 7);
            let e = c.n_experts;
            rec.matmul(router, rows(e, d, a.xn, a.router));
            let (base, stride) = (l.route_base(c, layer), l.trace_stride);
            let route = RouteArgs {
                experts: e as u32,
                k: c.top_k as u32,
                logits_off: at(a.router) as u32,
                route_base: base as u32,
                route_stride: stride as u32,
                stride: w as u32,
            };
            rec.push(&k.route, route, None, (t as u32, 1));
            // Each token's slot-j expert, one matvec per token (the y axis).
            let per_token = |rows: usize, cols: usize, x: usize, y: usize| LinearArgs {
                tokens: t as u32,
                x_stride: w as u32,
                y_stride: w as u32,
                ..LinearArgs::matvec(rows, cols, at(x), at(y))
            };
            for slot in 0..c.top_k {
                rec.linear_tokens(w1s, per_token(f, d, a.xn, a.ffn_a).routed(slot, base, stride, false));
                rec.linear_tokens(w3s, per_token(f, d, a.xn, a.ffn_b).routed(slot, base, stride, false));
                rec.push(&k.swiglu, swiglu, None, swiglu_groups);
                let down = per_token(d, f, a.ffn_a, a.x).accumulating();
                rec.linear_tokens(w2s, down.routed(slot, base, stride, true));
            }
        } else {
            let (w1i, w3i, w2i) = (first + 4, first + 5, first + 6);
            rec.matmul(w1i, rows(f, d, a.xn, a.ffn_a));
            rec.matmul(w3i, rows(f, d, a.xn, a.ffn_b));
            rec.push(&k.swiglu, swiglu, None, swiglu_groups);
            rec.matmul(w2i, rows(d, f, a.ffn_a, a.x).accumulating());
        }
    }
}
