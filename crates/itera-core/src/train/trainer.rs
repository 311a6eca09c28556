//! The CPU step backend: the batch's shards run on worker threads (each thread takes a
//! contiguous run of shards, each shard its own cache and gradients) and `finish_step`
//! averages them in shard order, so a step is the same on any thread count. One thread (the
//! browser worker) computes every shard in turn.

use super::optim::AdamW;
use super::spec::StepConfig;
use super::step::{check_teacher, finish_step, ExpertLoad, ShardScratch, StepBackend, StepReport, TrainState};
use crate::error::{Error, Result};
use crate::family::Architecture;
use crate::itera::Itera;
use crate::lm::AnyWeights;
use crate::model::LossParts;
use crate::precision::Precision;
use crate::rng::Pcg32;
use crate::weights::{Grads, Weights};

/// `batch` windows of `seq_len` tokens at random offsets of `stream`.
pub fn sample_batch(stream: &[u32], batch: usize, seq_len: usize, rng: &mut Pcg32) -> Result<Vec<u32>> {
    if stream.len() < seq_len {
        return Err(Error::setting(
            "seq_len",
            seq_len,
            "at most the number of tokens in the training text",
        ));
    }
    let starts = (stream.len() - seq_len + 1) as u32;
    let mut out = Vec::with_capacity(batch * seq_len);
    for _ in 0..batch {
        let s = rng.below(starts) as usize;
        out.extend_from_slice(&stream[s..s + seq_len]);
    }
    Ok(out)
}

/// Checks what every backend needs before a step: f32 weights and a whole batch of tokens.
pub fn check_step_input<A: Architecture>(w: &Weights<A>, cfg: &StepConfig, tokens: &[u32]) -> Result<()> {
    if w.precision != Precision::F32 {
        return Err(Error::setting(
            "precision",
            w.precision,
            "f32 weights for training (quantized models are dequantized first)",
        ));
    }
    if tokens.len() != cfg.batch * cfg.seq_len {
        return Err(Error::ShapeMismatch {
            op: "train step",
            detail: format!("{} tokens for {} × {}", tokens.len(), cfg.batch, cfg.seq_len),
        });
    }
    Ok(())
}

/// Training steps on this machine's CPU threads.
pub struct CpuStep<A: Architecture = Itera> {
    pub config: StepConfig,
    threads: usize,
    shards: Vec<ShardScratch<A>>,
}

impl<A: Architecture> CpuStep<A> {
    pub fn new(w: &Weights<A>, config: StepConfig, threads: usize) -> CpuStep<A> {
        let n = config.shard_ranges().len();
        CpuStep {
            config,
            threads: threads.clamp(1, n),
            shards: (0..n).map(|_| ShardScratch::new(w)).collect(),
        }
    }

    /// Every shard's loss (gradients into each scratch), threads taking contiguous runs.
    fn shard_losses(&mut self, w: &Weights<A>, tokens: &[u32], teacher: Option<&AnyWeights>) -> Result<Vec<LossParts>> {
        let StepConfig { seq_len, loss: lw, .. } = self.config;
        let ranges = self.config.shard_ranges();
        let run = |(scratch, range): (&mut ShardScratch<A>, &std::ops::Range<usize>)| {
            scratch.gradients(
                w,
                &tokens[range.start * seq_len..range.end * seq_len],
                seq_len,
                teacher,
                lw,
            )
        };
        if self.threads == 1 {
            return self.shards.iter_mut().zip(&ranges).map(run).collect();
        }
        let per = self.shards.len().div_ceil(self.threads);
        let results: Vec<Vec<Result<LossParts>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .shards
                .chunks_mut(per)
                .zip(ranges.chunks(per))
                .map(|(scratch, ranges)| scope.spawn(move || scratch.iter_mut().zip(ranges).map(run).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        results.into_iter().flatten().collect()
    }

    /// One step (the `StepBackend` interface without the future, for native callers).
    pub fn step_now(
        &mut self,
        state: &mut TrainState<A>,
        tokens: &[u32],
        lr: f32,
        teacher: Option<&AnyWeights>,
    ) -> Result<StepReport> {
        check_step_input(&state.weights, &self.config, tokens)?;
        if let Some(tw) = teacher {
            check_teacher(&state.weights, tw)?;
        }
        let losses = self.shard_losses(&state.weights, tokens, teacher)?;
        let loads: Vec<ExpertLoad> = self.shards.iter().map(ShardScratch::expert_load).collect();
        let mut grads: Vec<&mut Grads> = self.shards.iter_mut().map(|s| &mut s.grads).collect();
        finish_step(state, &self.config, lr, &losses, &loads, &mut grads)
    }
}

impl<A: Architecture> StepBackend<A> for CpuStep<A> {
    async fn step(
        &mut self,
        state: &mut TrainState<A>,
        tokens: &[u32],
        lr: f32,
        teacher: Option<&AnyWeights>,
    ) -> Result<StepReport> {
        self.step_now(state, tokens, lr, teacher)
    }

    async fn sync(&mut self, _state: &mut TrainState<A>) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        match self.threads {
            1 => "1 thread".into(),
            n => format!("{n} threads"),
        }
    }
}

impl<A: Architecture> TrainState<A> {
    /// A fresh optimiser for `weights` (converted to f32 if quantized).
    pub fn new(weights: &Weights<A>, weight_decay: f32) -> TrainState<A> {
        let weights = weights.to_precision(Precision::F32);
        TrainState {
            opt: AdamW::new(&weights, weight_decay),
            weights,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::LossWeights;
    use crate::train::spec::TrainSpec;

    fn setup(shards: usize) -> (TrainState, StepConfig, TrainSpec, Vec<u32>) {
        let c = Config::preset("test").unwrap();
        let w = Weights::init_random(&c, 3).unwrap();
        // A repetitive stream the model can learn quickly.
        let stream: Vec<u32> = (0..2000).map(|i| [1, 5, 9, 5, 2, 7, 30, 11][i % 8]).collect();
        let spec = TrainSpec {
            steps: 60,
            batch: 4,
            seq_len: 16,
            lr: 1e-2,
            min_lr: 1e-3,
            warmup: 5,
            weight_decay: 0.01,
            shards,
            ..TrainSpec::default()
        };
        let state = TrainState::new(&w, spec.weight_decay as f32);
        (state, spec.step_config(), spec, stream)
    }

    fn run(shards: usize, threads: usize) -> (Vec<f32>, Weights) {
        let (mut state, cfg, spec, stream) = setup(shards);
        let mut t = CpuStep::new(&state.weights, cfg, threads);
        let mut rng = Pcg32::new(1);
        let losses = (0..60)
            .map(|s| {
                let b = sample_batch(&stream, 4, 16, &mut rng).unwrap();
                t.step_now(&mut state, &b, spec.schedule().at(s), None).unwrap().loss.ce
            })
            .collect();
        (losses, state.weights)
    }

    #[test]
    fn training_lowers_the_loss_and_is_deterministic() {
        let (losses, w) = run(2, 2);
        let (first, last) = (
            losses[..5].iter().sum::<f32>() / 5.0,
            losses[55..].iter().sum::<f32>() / 5.0,
        );
        assert!(last < 0.3 * first, "CE went from {first} to {last}");
        let (again, w2) = run(2, 2);
        assert_eq!(losses, again);
        assert_eq!(w.tensors, w2.tensors);
    }

    #[test]
    fn the_thread_count_does_not_change_a_step() {
        // Four shards on one, two or four threads: the same bits.
        let (a, wa) = run(4, 1);
        for threads in [2, 3, 4] {
            let (b, wb) = run(4, threads);
            assert_eq!(a, b, "{threads} threads");
            assert_eq!(wa.tensors, wb.tensors, "{threads} threads");
        }
    }

    #[test]
    fn a_step_reports_how_its_tokens_were_routed() {
        let (mut state, cfg, spec, stream) = setup(2);
        let mut t = CpuStep::new(&state.weights, cfg, 2);
        let b = sample_batch(&stream, 4, 16, &mut Pcg32::new(0)).unwrap();
        let r = t.step_now(&mut state, &b, spec.schedule().at(0), None).unwrap();
        let c = &state.weights.config;
        // One MoE layer (the test preset's layer 1): every token's k slots are counted.
        assert_eq!(r.routing.counts.len(), c.n_experts);
        assert_eq!(r.routing.counts.iter().sum::<u32>() as usize, 4 * 16 * c.top_k);
        assert_eq!(r.routing.aux.len(), 1);
        assert!(
            (r.routing.aux[0] - r.loss.aux).abs() < 1e-6,
            "one MoE layer: its aux is the mean"
        );
        let f = r.routing.fractions(c.n_experts);
        assert!((f[0].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn one_and_two_shards_agree_closely() {
        // Same maths cut differently: equal up to float reassociation (the aux loss is per
        // shard, but with α = 0.01 its share of the gradient is small).
        let (a, _) = run(1, 1);
        let (b, _) = run(2, 2);
        for (x, y) in a.iter().zip(&b).take(10) {
            assert!((x - y).abs() < 2e-3 * x.abs().max(1.0), "{x} vs {y}");
        }
    }

    #[test]
    fn distillation_pulls_the_student_towards_the_teacher() {
        let (_, teacher) = run(1, 1);
        let teacher = AnyWeights::from(teacher);
        let (mut state, mut cfg, spec, stream) = setup(2);
        cfg.loss = LossWeights {
            aux_alpha: 0.01,
            distill_beta: 1.0,
            temperature: 2.0,
        };
        let mut t = CpuStep::new(&state.weights, cfg, 2);
        let mut rng = Pcg32::new(4);
        let kl: Vec<f32> = (0..40)
            .map(|s| {
                let b = sample_batch(&stream, 4, 16, &mut rng).unwrap();
                let r = t
                    .step_now(&mut state, &b, spec.schedule().at(s), Some(&teacher))
                    .unwrap();
                assert!(r.loss.ce.is_finite() && r.loss.ce > 0.0);
                r.loss.kl
            })
            .collect();
        assert!(kl[0] > 0.0);
        assert!(
            kl[35..].iter().all(|&k| k < 0.3 * kl[0]),
            "KL went from {} to {:?}",
            kl[0],
            &kl[35..]
        );
        // β = 1 without a teacher is an error, not a silent CE run.
        let b = sample_batch(&stream, 4, 16, &mut rng).unwrap();
        assert!(matches!(
            t.step_now(&mut state, &b, 1e-3, None),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn a_teacher_with_another_vocabulary_is_refused() {
        let (mut state, cfg, _, stream) = setup(1);
        let mut c = Config::preset("test").unwrap();
        c.vocab_size = 40;
        let teacher = AnyWeights::from(Weights::init_random(&c, 1).unwrap());
        let b = sample_batch(&stream, 4, 16, &mut Pcg32::new(0)).unwrap();
        let before = state.weights.tensors.clone();
        let mut t = CpuStep::new(&state.weights, cfg, 1);
        assert!(matches!(
            t.step_now(&mut state, &b, 1e-3, Some(&teacher)),
            Err(Error::ShapeMismatch { .. })
        ));
        assert_eq!(state.weights.tensors, before);
    }

    #[test]
    fn divergence_stops_before_touching_the_weights() {
        let (mut state, cfg, _, stream) = setup(1);
        let slot = state.weights.table.index_of("layers.0.in_proj").unwrap();
        state.weights.tensors[slot].as_f32_mut().unwrap()[0] = f32::NAN;
        let before = format!("{:?}", state.weights.tensors);
        let b = sample_batch(&stream, 4, 16, &mut Pcg32::new(0)).unwrap();
        let mut t = CpuStep::new(&state.weights, cfg, 1);
        assert!(matches!(
            t.step_now(&mut state, &b, 1e-3, None),
            Err(Error::Diverged { step: 0, .. })
        ));
        assert_eq!(format!("{:?}", state.weights.tensors), before);
        assert_eq!(state.opt.step, 0);
    }
}
