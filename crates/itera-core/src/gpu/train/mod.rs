//! Training on the GPU: the whole step — forward, loss, backward, gradient norm, clipping and
//! AdamW — recorded once at construction and replayed per step as ONE submission; the host
//! writes the step's tokens and learning rate and reads back eight floats (the loss parts and
//! the gradient norm). Same maths as the CPU's `train::CpuStep` (the parity tests compare
//! them), the batch cut into equal micro-batches as the CPU cuts it into shards, so that the
//! aux loss is taken over the same rows. `GpuStep` runs it behind the training job's
//! `StepBackend` interface.
//!
//! Distillation (`with_teacher`) runs the teacher's forward on the device per micro-batch and
//! copies its logits next to the student's for the KL term, inside the same submission.
//!
//! MoE layers compute every expert on every row and weight each by its (dense, mostly zero)
//! routing weight: the same gradients as the CPU's gathered experts at E/k times the FFN
//! arithmetic, with no data-dependent shapes inside the recorded step.

pub mod args;
mod device;
mod kernels;
pub mod layout;
mod record;

pub(crate) use kernels::TrainBuffers;
pub use kernels::TrainKernels;

use std::rc::Rc;

use super::dispatch::run_pass;
use super::{readback, Gpu};
use crate::error::{Error, Result};
use crate::model::LossParts;
use crate::precision::Precision;
use crate::train::{
    check_finite, check_step_input, StepBackend, StepConfig, StepReport, TrainState, BETA1, BETA2, EPS,
};
use crate::weights::{Grads, Weights};
use args::{report, AdamArgs};
use device::OnDevice;
use layout::{ActLayout, ParamLayout};
use record::{MicroBatch, TrainRecorder};

pub struct GpuTrainer {
    pub config: StepConfig,
    /// Sequences per micro-batch and micro-batches per step.
    pub seqs: usize,
    pub micro: usize,
    /// Optimisation steps taken (AdamW's t).
    pub step: usize,
    model: crate::config::Config,
    layout: ActLayout,
    params_len: usize,
    report_read: wgpu::Buffer,
    student: OnDevice,
    /// The distillation teacher and where its logits sit in its arena.
    teacher: Option<(OnDevice, usize)>,
}

impl GpuTrainer {
    /// Uploads `w` (f32) and records the step for `config.batch` sequences of `config.seq_len`
    /// tokens in `micro` micro-batches (`None`: the config's shards when they cut the batch
    /// evenly and fit the device — the CPU's maths — else the fewest that fit).
    pub fn new(gpu: &Gpu, w: &Weights, config: StepConfig, micro: Option<usize>) -> Result<GpuTrainer> {
        if config.loss.distill_beta > 0.0 {
            return Err(Error::Gpu(
                "distillation (β > 0) needs a teacher: GpuTrainer::with_teacher".into(),
            ));
        }
        GpuTrainer::build(gpu, w, None, config, micro)
    }

    /// `new` for logit distillation from `teacher` (an itera model of any precision with the
    /// student's vocabulary; run in f32): per micro-batch the teacher's forward runs on the
    /// device and its logits feed the loss's KL term.
    pub fn with_teacher(
        gpu: &Gpu,
        w: &Weights,
        teacher: &Weights,
        config: StepConfig,
        micro: Option<usize>,
    ) -> Result<GpuTrainer> {
        if teacher.config.vocab_size != w.config.vocab_size {
            return Err(Error::ShapeMismatch {
                op: "distillation",
                detail: format!(
                    "teacher vocabulary {} vs student {}",
                    teacher.config.vocab_size, w.config.vocab_size
                ),
            });
        }
        let teacher = teacher.to_precision(Precision::F32);
        GpuTrainer::build(gpu, w, Some(&teacher), config, micro)
    }

    fn build(
        gpu: &Gpu,
        w: &Weights,
        teacher: Option<&Weights>,
        config: StepConfig,
        micro: Option<usize>,
    ) -> Result<GpuTrainer> {
        if w.precision != Precision::F32 {
            return Err(Error::setting("precision", w.precision, "f32 weights for training"));
        }
        let c = &w.config;
        let t = config.seq_len;
        if config.batch == 0 || t < 2 {
            return Err(Error::setting(
                "batch × seq_len",
                format!("{} × {t}", config.batch),
                "batch ≥ 1 and seq_len ≥ 2",
            ));
        }
        for m in std::iter::once(w).chain(teacher) {
            if m.config.d_state > 64 {
                return Err(Error::Gpu(format!(
                    "the GPU scan keeps at most 64 states per channel, a model here has {}",
                    m.config.d_state
                )));
            }
        }
        let limit = gpu.device.limits().max_storage_buffer_binding_size as usize;
        let fits = |micro: usize| {
            let seqs = config.batch / micro;
            std::iter::once(w).chain(teacher).all(|m| {
                let a = ActLayout::new(&m.config, seqs, t, micro, teacher.is_some());
                let states = seqs * t * m.config.d_inner() * m.config.d_state;
                a.len * 4 <= limit && states * 4 <= limit && seqs * t <= 65_535
            })
        };
        let micro = match micro {
            Some(n) if n == 0 || !config.batch.is_multiple_of(n) => {
                return Err(Error::setting("micro-batches", n, "a divisor of the batch size"));
            }
            Some(n) => n,
            None if config.batch.is_multiple_of(config.shards) && fits(config.shards) => config.shards,
            None => (1..=config.batch)
                .filter(|&n| config.batch.is_multiple_of(n))
                .find(|&n| fits(n))
                .ok_or_else(|| Error::Gpu("one sequence's activations exceed the device's binding limit".into()))?,
        };
        if !fits(micro) {
            return Err(Error::Gpu(format!(
                "{micro} micro-batches of {} sequences exceed the device's {limit}-byte binding limit",
                config.batch / micro
            )));
        }
        let seqs = config.batch / micro;
        let layout = ActLayout::new(c, seqs, t, micro, teacher.is_some());
        let plan = ParamLayout::new(&w.table);
        let kernels = gpu.train_kernels();
        let micro_batch = |i: usize, a: &ActLayout| MicroBatch {
            tokens_off: a.tokens + i * seqs * t,
            share: seqs as f32 / config.batch as f32,
            seqs,
            loss: config.loss,
            distill: teacher.is_some(),
        };

        // The student: per micro-batch forward + loss + backward, then the optimiser.
        let mut rec = TrainRecorder::new(kernels, c, &w.table, &plan, &layout);
        let mut cuts = Vec::new();
        for i in 0..micro {
            let mb = micro_batch(i, &layout);
            rec.forward(mb);
            rec.loss(mb);
            rec.backward(mb);
            cuts.push(rec.len());
        }
        rec.optimizer(AdamArgs {
            decay: config.weight_decay,
            beta1: BETA1,
            beta2: BETA2,
            eps: EPS,
            clip: config.clip,
            ..Default::default()
        });
        let student = OnDevice::new(gpu, w, &layout, true, &rec, &cuts)?;

        // The teacher: per micro-batch its forward, whose logits are copied into the student's.
        let teacher = match teacher {
            Some(tw) => {
                let tl = ActLayout::new(&tw.config, seqs, t, micro, false);
                let tp = ParamLayout::new(&tw.table);
                let mut rec = TrainRecorder::new(kernels, &tw.config, &tw.table, &tp, &tl);
                let mut cuts = Vec::new();
                for i in 0..micro {
                    rec.forward(micro_batch(i, &tl));
                    cuts.push(rec.len());
                }
                cuts.pop();
                Some((OnDevice::new(gpu, tw, &tl, false, &rec, &cuts)?, tl.logits))
            }
            None => None,
        };
        let report_read = gpu.buffer(
            "report read-back",
            report::LEN as u64 * 4,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        gpu.check()?;
        Ok(GpuTrainer {
            config,
            seqs,
            micro,
            step: 0,
            model: c.clone(),
            layout,
            params_len: plan.len,
            report_read,
            student,
            teacher,
        })
    }

    /// Dispatches in one step (every micro-batch's forward and backward, and the optimiser).
    pub fn dispatches_per_step(&self) -> usize {
        let count = |d: &OnDevice| d.segments.iter().map(Vec::len).sum::<usize>();
        count(&self.student) + self.teacher.as_ref().map_or(0, |(t, _)| count(t))
    }

    /// One optimisation step on `tokens` (batch × seq_len) at learning rate `lr`. A
    /// non-finite loss or gradient leaves the weights and moments untouched and returns
    /// `Error::Diverged`.
    pub async fn step(&mut self, gpu: &Gpu, tokens: &[u32], lr: f32) -> Result<StepReport> {
        let StepConfig { batch, seq_len, .. } = self.config;
        if tokens.len() != batch * seq_len {
            return Err(Error::ShapeMismatch {
                op: "train step",
                detail: format!("{} tokens for {batch} × {seq_len}", tokens.len()),
            });
        }
        tokens
            .iter()
            .try_for_each(|&id| Error::check_token(id, self.model.vocab_size))?;
        gpu.check()?;
        let step = self.step;
        let t = (step + 1) as i32;
        let mut header = [0.0f32; report::LEN];
        header[report::LR] = lr;
        header[report::C1] = 1.0 - BETA1.powi(t);
        header[report::C2] = 1.0 - BETA2.powi(t);
        let s = &self.student;
        gpu.queue
            .write_buffer(&s.act, self.layout.report as u64 * 4, bytemuck::cast_slice(&header));
        gpu.queue
            .write_buffer(&s.ints, self.layout.tokens as u64 * 4, bytemuck::cast_slice(tokens));
        if let Some((t, _)) = &self.teacher {
            gpu.queue.write_buffer(&t.ints, 0, bytemuck::cast_slice(tokens));
        }

        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.clear_buffer(&s.grads, 0, Some(self.params_len as u64 * 4));
        for i in 0..self.micro {
            if let (Some((t, logits)), Some(to)) = (&self.teacher, self.layout.teacher) {
                run_pass(&mut encoder, &t.segments[i], 1);
                let bytes = (self.layout.rows * self.model.vocab_size) as u64 * 4;
                encoder.copy_buffer_to_buffer(&t.act, *logits as u64 * 4, &s.act, to as u64 * 4, bytes);
            }
            run_pass(&mut encoder, &s.segments[i], 1);
        }
        run_pass(&mut encoder, &s.segments[self.micro], 1);
        let bytes = report::LEN as u64 * 4;
        encoder.copy_buffer_to_buffer(&s.act, self.layout.report as u64 * 4, &self.report_read, 0, bytes);
        gpu.submit(encoder);
        let out: Vec<f32> = bytemuck::pod_collect_to_vec(&readback::read(gpu, &self.report_read, bytes).await?);

        let (ce, kl, aux) = (out[report::CE], out[report::KL], out[report::AUX]);
        let total = self.config.loss.total(ce, kl, aux);
        let grad_norm = out[report::NORM_SQ].sqrt();
        check_finite(step, total, grad_norm)?;
        self.step += 1;
        Ok(StepReport {
            step,
            loss: LossParts { total, ce, aux, kl },
            grad_norm,
            lr,
            // The recorded step keeps its routing on the device.
            routing: Default::default(),
        })
    }

    /// `step` for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_blocking(&mut self, gpu: &Gpu, tokens: &[u32], lr: f32) -> Result<StepReport> {
        pollster::block_on(self.step(gpu, tokens, lr))
    }

    /// The current weights, read back into `Weights` (for checkpoints, evaluation, export).
    pub async fn weights(&self, gpu: &Gpu) -> Result<Weights> {
        self.read_flat(gpu, &self.student.params, 0)
            .await
            .map(|flat| self.split(flat))
    }

    /// The gradients of the last step (before clipping), by table slot — for the parity tests.
    pub async fn gradients(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let flat = self.read_flat(gpu, &self.student.grads, 0).await?;
        Ok(self.split(flat).tensors.iter().map(|t| t.dequantize()).collect())
    }

    async fn read_flat(&self, gpu: &Gpu, buffer: &wgpu::Buffer, offset: u64) -> Result<Vec<f32>> {
        let bytes = self.params_len as u64 * 4;
        let read = gpu.buffer(
            "weights read-back",
            bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, offset, &read, 0, bytes);
        gpu.submit(encoder);
        Ok(bytemuck::pod_collect_to_vec(&readback::read(gpu, &read, bytes).await?))
    }

    /// AdamW's moments (m, v) by table slot, for checkpoints.
    pub async fn moments(&self, gpu: &Gpu) -> Result<(Grads, Grads)> {
        let [m, v] = self.moment_buffers()?;
        let m = self.read_flat(gpu, m, 0).await?;
        let v = self.read_flat(gpu, v, 0).await?;
        let to_grads = |flat: Vec<f32>| Grads {
            tensors: self.split(flat).tensors.iter().map(|t| t.dequantize()).collect(),
        };
        Ok((to_grads(m), to_grads(v)))
    }

    /// Continues from a checkpoint: the optimiser's step count and moments.
    pub fn set_optimizer_state(&mut self, gpu: &Gpu, step: usize, m: &Grads, v: &Grads) -> Result<()> {
        for (buffer, moment) in self.moment_buffers()?.into_iter().zip([m, v]) {
            let flat: Vec<f32> = moment.tensors.iter().flatten().copied().collect();
            if flat.len() != self.params_len {
                return Err(Error::ShapeMismatch {
                    op: "optimizer state",
                    detail: format!("{} values for {} parameters", flat.len(), self.params_len),
                });
            }
            gpu.queue.write_buffer(buffer, 0, bytemuck::cast_slice(&flat));
        }
        self.step = step;
        gpu.check()
    }

    fn moment_buffers(&self) -> Result<[&wgpu::Buffer; 2]> {
        match &self.student.moments {
            Some([m, v]) => Ok([m, v]),
            None => Err(Error::Gpu("the student has no optimiser state on the device".into())),
        }
    }

    fn split(&self, flat: Vec<f32>) -> Weights {
        let table = crate::params::ParamTable::new(&self.model);
        let mut at = 0;
        let values = table
            .specs
            .iter()
            .map(|s| {
                let v = flat[at..at + s.numel()].to_vec();
                at += s.numel();
                v
            })
            .collect();
        Weights::from_f32_tensors(self.model.clone(), values)
    }

    /// `weights` for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn weights_blocking(&self, gpu: &Gpu) -> Result<Weights> {
        pollster::block_on(self.weights(gpu))
    }

    /// `moments` for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn moments_blocking(&self, gpu: &Gpu) -> Result<(Grads, Grads)> {
        pollster::block_on(self.moments(gpu))
    }

    /// `gradients` for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gradients_blocking(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.gradients(gpu))
    }
}

/// The GPU behind the training job's step interface: the device holds the weights and moments
/// between steps; `sync` reads them back into the job's host state.
pub struct GpuStep {
    pub gpu: Rc<Gpu>,
    pub trainer: GpuTrainer,
}

impl GpuStep {
    /// Uploads `state` (weights, moments, step) and records the step; with a `teacher` (an
    /// itera model: the GPU runs that family's forward only), the distillation step.
    pub fn new(
        gpu: Rc<Gpu>,
        state: &TrainState,
        config: StepConfig,
        teacher: Option<&crate::lm::AnyWeights>,
    ) -> Result<GpuStep> {
        let w = &state.weights;
        let mut trainer = match teacher {
            Some(t) => {
                let t = t.as_itera().ok_or_else(|| {
                    Error::Gpu(format!(
                        "a {} teacher's forward runs on the CPU only: distil from it with the CPU backend",
                        t.family().description()
                    ))
                })?;
                GpuTrainer::with_teacher(&gpu, w, t, config, None)?
            }
            None => GpuTrainer::new(&gpu, w, config, None)?,
        };
        trainer.set_optimizer_state(&gpu, state.opt.step, &state.opt.m, &state.opt.v)?;
        Ok(GpuStep { gpu, trainer })
    }
}

impl StepBackend for GpuStep {
    async fn step(
        &mut self,
        state: &mut TrainState,
        tokens: &[u32],
        lr: f32,
        _teacher: Option<&crate::lm::AnyWeights>,
    ) -> Result<StepReport> {
        check_step_input(&state.weights, &self.trainer.config, tokens)?;
        self.trainer.step(&self.gpu, tokens, lr).await
    }

    async fn sync(&mut self, state: &mut TrainState) -> Result<()> {
        let fresh = self.trainer.weights(&self.gpu).await?;
        let (m, v) = self.trainer.moments(&self.gpu).await?;
        // The device updates without a per-step read-back, so its weights are checked here,
        // before they replace the host's last good state (which a checkpoint then keeps).
        let finite = |xs: &[f32]| xs.iter().all(|x| x.is_finite());
        let weights_finite = fresh.tensors.iter().all(|t| t.as_f32().is_some_and(finite));
        if !(weights_finite && m.tensors.iter().chain(&v.tensors).all(|t| finite(t))) {
            return Err(Error::Diverged {
                step: self.trainer.step,
                what: "the weights on the device",
            });
        }
        for (dst, src) in state.weights.tensors.iter_mut().zip(fresh.tensors) {
            *dst = src;
        }
        (state.opt.m, state.opt.v, state.opt.step) = (m, v, self.trainer.step);
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} micro-batch(es) of {} sequences)",
            self.gpu.describe(),
            self.trainer.micro,
            self.trainer.seqs
        )
    }
}
