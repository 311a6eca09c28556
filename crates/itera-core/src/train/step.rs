//! One optimisation step and the interface every backend implements (`StepBackend`).
//!
//! A step is cut into shards (`StepConfig::shard_ranges`): each shard's forward + loss +
//! backward runs on its own (`ShardScratch::gradients`, on a thread natively or in a browser
//! worker), then `finish_step` averages the shards' losses and gradients in shard order,
//! refuses a non-finite loss or gradient before any weight changes, clips by global norm and
//! applies AdamW. Because the order is fixed, a step gives the same bits however many threads
//! or workers computed its shards.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::optim::AdamW;
use super::spec::StepConfig;
use crate::error::{Error, Result};
use crate::family::Architecture;
use crate::itera::Itera;
use crate::lm::{AnyCache, AnyWeights};
use crate::model::{BatchDims, LossParts, LossWeights};
use crate::weights::{Grads, Weights};

/// What a checkpoint holds of a run: the f32 weights and the optimiser (moments and step).
#[derive(Debug)]
pub struct TrainState<A: Architecture = Itera> {
    pub weights: Weights<A>,
    pub opt: AdamW,
}

impl<A: Architecture> Clone for TrainState<A> {
    fn clone(&self) -> Self {
        TrainState {
            weights: self.weights.clone(),
            opt: self.opt.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The step taken, counted from 0.
    pub step: usize,
    pub loss: LossParts,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    pub lr: f32,
    /// How the step's tokens were routed (empty where a backend does not measure it).
    pub routing: ExpertLoad,
}

/// Per MoE layer of one step: the routed slots each expert received and the layer's Switch
/// load-balancing loss.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExpertLoad {
    /// (MoE layers × E) slot counts, layer by layer.
    pub counts: Vec<u32>,
    /// One aux loss per MoE layer.
    pub aux: Vec<f32>,
}

impl ExpertLoad {
    /// Each layer's fraction of routed slots per expert, for `experts` experts.
    pub fn fractions(&self, experts: usize) -> Vec<Vec<f32>> {
        self.counts
            .chunks(experts.max(1))
            .map(|layer| {
                let total = layer.iter().sum::<u32>().max(1) as f32;
                layer.iter().map(|&c| c as f32 / total).collect()
            })
            .collect()
    }
}

/// Runs optimisation steps somewhere: CPU threads (`CpuStep`), the GPU (`GpuStep`), or a pool
/// of browser workers (itera-web). The job owns the schedule, the batches and `state`.
#[allow(async_fn_in_trait)] // single-threaded callers (the CLI, a browser worker)
pub trait StepBackend<A: Architecture = Itera> {
    /// One step on `tokens` (batch × seq_len) at learning rate `lr`. On the CPU it updates
    /// `state`; a device may keep its own copy until `sync`. A non-finite loss or gradient
    /// returns `Error::Diverged` and changes nothing.
    async fn step(
        &mut self,
        state: &mut TrainState<A>,
        tokens: &[u32],
        lr: f32,
        teacher: Option<&AnyWeights>,
    ) -> Result<StepReport>;

    /// Makes `state` hold the backend's current weights and optimiser (a device reads them back).
    async fn sync(&mut self, state: &mut TrainState<A>) -> Result<()>;

    /// Where the steps run, for logs and the page ("2 threads", "WebGPU: …").
    fn describe(&self) -> String;
}

/// One shard's activations and gradients, kept between steps so a step allocates nothing.
#[derive(Debug)]
pub struct ShardScratch<A: Architecture = Itera> {
    cache: A::Cache,
    teacher_cache: AnyCache,
    pub grads: Grads,
}

impl<A: Architecture> ShardScratch<A> {
    pub fn new(w: &Weights<A>) -> ShardScratch<A> {
        ShardScratch {
            cache: A::Cache::default(),
            teacher_cache: AnyCache::default(),
            grads: Grads::zeros(&w.table),
        }
    }

    /// Forward, loss and backward of `tokens` (whole sequences of `seq_len`) into `self.grads`
    /// (zeroed first). With a `teacher` its forward runs too, for the distillation term.
    pub fn gradients(
        &mut self,
        w: &Weights<A>,
        tokens: &[u32],
        seq_len: usize,
        teacher: Option<&AnyWeights>,
        lw: LossWeights,
    ) -> Result<LossParts> {
        if seq_len == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(seq_len) {
            return Err(Error::ShapeMismatch {
                op: "shard",
                detail: format!("{} tokens are not whole sequences of {seq_len}", tokens.len()),
            });
        }
        let bd = BatchDims {
            batch: tokens.len() / seq_len,
            t: seq_len,
        };
        let teach = match teacher {
            Some(tw) => {
                check_teacher(w, tw)?;
                Some(tw.logits(tokens, bd, &mut self.teacher_cache)?)
            }
            None => None,
        };
        self.grads.zero();
        A::loss(w, tokens, bd, teach, lw, &mut self.cache, Some(&mut self.grads))
    }

    /// The routing of the last `gradients` call's tokens.
    pub fn expert_load(&self) -> ExpertLoad {
        A::expert_load(&self.cache)
    }
}

/// A teacher must predict the student's vocabulary.
pub fn check_teacher<A: Architecture>(student: &Weights<A>, teacher: &AnyWeights) -> Result<()> {
    let (s, t) = (A::vocab_size(&student.config), teacher.vocab_size());
    if s != t {
        return Err(Error::ShapeMismatch {
            op: "distillation",
            detail: format!("teacher vocabulary {t} vs student {s}"),
        });
    }
    Ok(())
}

/// A step's loss or gradient that is not finite stops the run before the weights change.
pub fn check_finite(step: usize, loss: f32, grad_norm: f32) -> Result<()> {
    if !loss.is_finite() {
        return Err(Error::Diverged { step, what: "the loss" });
    }
    if !grad_norm.is_finite() {
        return Err(Error::Diverged {
            step,
            what: "the gradient",
        });
    }
    Ok(())
}

/// Averages the shards' losses and gradients in shard order (each weighted by its share of the
/// batch; the sum lands in `grads[0]`), checks them, clips by global norm and updates `state`
/// with AdamW at `lr`. The shards' routing counts add up; their aux losses average like the
/// losses.
pub fn finish_step<A: Architecture>(
    state: &mut TrainState<A>,
    cfg: &StepConfig,
    lr: f32,
    losses: &[LossParts],
    loads: &[ExpertLoad],
    grads: &mut [&mut Grads],
) -> Result<StepReport> {
    let ranges = cfg.shard_ranges();
    if losses.len() != ranges.len() || grads.len() != ranges.len() {
        return Err(Error::ShapeMismatch {
            op: "train step",
            detail: format!(
                "{} losses and {} gradients for {} shards",
                losses.len(),
                grads.len(),
                ranges.len()
            ),
        });
    }
    let share = |i: usize| ranges[i].len() as f32 / cfg.batch as f32;
    let mut total = LossParts::default();
    for (i, p) in losses.iter().enumerate() {
        let f = share(i);
        total.total += f * p.total;
        total.ce += f * p.ce;
        total.aux += f * p.aux;
        total.kl += f * p.kl;
    }
    let (first, rest) = grads.split_at_mut(1);
    let g = &mut *first[0];
    let f0 = share(0);
    for (slot, acc) in g.tensors.iter_mut().enumerate() {
        acc.iter_mut().for_each(|x| *x *= f0);
        for (i, other) in rest.iter().enumerate() {
            let f = share(i + 1);
            acc.iter_mut().zip(&other.tensors[slot]).for_each(|(a, b)| *a += f * b);
        }
    }
    let mut routing = ExpertLoad::default();
    for (i, load) in loads.iter().enumerate() {
        if routing.counts.len() < load.counts.len() {
            routing.counts.resize(load.counts.len(), 0);
            routing.aux.resize(load.aux.len(), 0.0);
        }
        routing.counts.iter_mut().zip(&load.counts).for_each(|(a, b)| *a += b);
        routing
            .aux
            .iter_mut()
            .zip(&load.aux)
            .for_each(|(a, b)| *a += share(i) * b);
    }
    let step = state.opt.step;
    let grad_norm = g.norm();
    check_finite(step, total.total, grad_norm)?;
    if grad_norm > cfg.clip {
        let s = cfg.clip / grad_norm;
        g.tensors.iter_mut().flatten().for_each(|x| *x *= s);
    }
    state.opt.update(&mut state.weights, g, lr)?;
    Ok(StepReport {
        step,
        loss: total,
        grad_norm,
        lr,
        routing,
    })
}

/// The result of a future that needs no waiting (a CPU step): CPU backends are `async` only
/// to share the interface with devices, so native callers without an executor use this.
pub fn ready<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(Error::Gpu(
            "this step waits on a device: run it with an executor".into(),
        )),
    }
}
