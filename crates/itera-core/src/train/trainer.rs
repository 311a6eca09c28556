//! One training step: the batch's sequences are split across worker threads, each runs
//! forward + backward on its share with its own cache and gradients, the gradients are
//! averaged in a fixed order (so a run is deterministic for a seed and a thread count),
//! clipped by global norm and applied with AdamW. A non-finite loss or gradient stops the
//! step before any weight changes.

use super::optim::{AdamW, LrSchedule};
use crate::error::{Error, Result};
use crate::model::{forward, loss, BatchDims, Cache, LossParts, LossWeights};
use crate::precision::Precision;
use crate::rng::Pcg32;
use crate::weights::{Grads, Weights};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainerConfig {
    pub batch: usize,
    pub seq_len: usize,
    /// Worker threads (1 in the browser).
    pub threads: usize,
    pub loss: LossWeights,
    /// Global gradient-norm clip.
    pub clip: f32,
    pub schedule: LrSchedule,
    pub weight_decay: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    pub step: usize,
    pub loss: LossParts,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    pub lr: f32,
}

struct Worker {
    cache: Cache,
    grads: Grads,
    /// The teacher's activations when distilling.
    teacher_cache: Cache,
}

pub struct Trainer {
    pub config: TrainerConfig,
    pub opt: AdamW,
    workers: Vec<Worker>,
}

/// `batch` windows of `seq_len` tokens at random offsets of `stream`.
pub fn sample_batch(stream: &[u32], batch: usize, seq_len: usize, rng: &mut Pcg32) -> Result<Vec<u32>> {
    if stream.len() < seq_len {
        return Err(Error::setting(
            "seq_len",
            seq_len,
            "at most the number of corpus tokens",
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

impl Trainer {
    pub fn new(w: &Weights, config: TrainerConfig) -> Result<Trainer> {
        if w.precision != Precision::F32 {
            return Err(Error::setting(
                "precision",
                w.precision,
                "f32 weights for training (convert first)",
            ));
        }
        if config.batch == 0 || config.seq_len < 2 {
            return Err(Error::setting(
                "batch × seq_len",
                format!("{} × {}", config.batch, config.seq_len),
                "batch ≥ 1 and seq_len ≥ 2",
            ));
        }
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !positive(config.clip) || !positive(config.schedule.max) {
            return Err(Error::setting(
                "clip / lr",
                format!("{} / {}", config.clip, config.schedule.max),
                "positive numbers",
            ));
        }
        let threads = config.threads.clamp(1, config.batch);
        let workers = (0..threads)
            .map(|_| Worker {
                cache: Cache::default(),
                grads: Grads::zeros(&w.table),
                teacher_cache: Cache::default(),
            })
            .collect();
        Ok(Trainer {
            config: TrainerConfig { threads, ..config },
            opt: AdamW::new(w, config.weight_decay),
            workers,
        })
    }

    /// Sequences per worker: the batch split as evenly as possible, in order.
    fn shares(&self) -> Vec<usize> {
        let (b, n) = (self.config.batch, self.workers.len());
        (0..n).map(|i| b / n + usize::from(i < b % n)).collect()
    }

    /// One optimisation step on `tokens` (batch × seq_len). With a `teacher` (any precision,
    /// same vocabulary) each worker also runs the teacher on its share and the loss gains the
    /// distillation term weighted by `config.loss.distill_beta`.
    pub fn step(&mut self, w: &mut Weights, tokens: &[u32], teacher: Option<&Weights>) -> Result<StepReport> {
        let TrainerConfig {
            batch,
            seq_len: t,
            loss: lw,
            ..
        } = self.config;
        if tokens.len() != batch * t {
            return Err(Error::ShapeMismatch {
                op: "train step",
                detail: format!("{} tokens for {batch} × {t}", tokens.len()),
            });
        }
        let v = w.config.vocab_size;
        if let Some(tw) = teacher {
            if tw.config.vocab_size != v {
                return Err(Error::ShapeMismatch {
                    op: "distillation",
                    detail: format!("teacher vocabulary {} vs student {v}", tw.config.vocab_size),
                });
            }
        }
        let shares = self.shares();
        let weights: &Weights = w;
        let run = |(i, worker): (usize, &mut Worker)| -> Result<LossParts> {
            let first: usize = shares[..i].iter().sum();
            let bd = BatchDims { batch: shares[i], t };
            let rows = first * t..(first + shares[i]) * t;
            let teach = match teacher {
                Some(tw) => {
                    forward(tw, &tokens[rows.clone()], bd, false, &mut worker.teacher_cache)?;
                    Some(worker.teacher_cache.logits.as_slice())
                }
                None => None,
            };
            worker.grads.zero();
            loss(
                weights,
                &tokens[rows],
                bd,
                teach,
                lw,
                &mut worker.cache,
                Some(&mut worker.grads),
            )
        };
        let parts: Vec<Result<LossParts>> = if self.workers.len() == 1 {
            self.workers.iter_mut().enumerate().map(run).collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = self
                    .workers
                    .iter_mut()
                    .enumerate()
                    .map(|job| scope.spawn(move || run(job)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        // Average in worker order, weighting by each worker's share of the batch.
        let mut total = LossParts::default();
        for (p, &share) in parts.into_iter().zip(&shares) {
            let p = p?;
            let f = share as f32 / batch as f32;
            total.total += f * p.total;
            total.ce += f * p.ce;
            total.aux += f * p.aux;
            total.kl += f * p.kl;
        }
        let (first, rest) = self.workers.split_at_mut(1);
        let g = &mut first[0].grads;
        let f0 = shares[0] as f32 / batch as f32;
        for (slot, acc) in g.tensors.iter_mut().enumerate() {
            acc.iter_mut().for_each(|x| *x *= f0);
            for (wk, &share) in rest.iter().zip(&shares[1..]) {
                let f = share as f32 / batch as f32;
                acc.iter_mut()
                    .zip(&wk.grads.tensors[slot])
                    .for_each(|(a, b)| *a += f * b);
            }
        }
        let step = self.opt.step;
        if !total.total.is_finite() {
            return Err(Error::Diverged { step, what: "the loss" });
        }
        let grad_norm = g.norm();
        if !grad_norm.is_finite() {
            return Err(Error::Diverged {
                step,
                what: "the gradient",
            });
        }
        if grad_norm > self.config.clip {
            let s = self.config.clip / grad_norm;
            g.tensors.iter_mut().flatten().for_each(|x| *x *= s);
        }
        let lr = self.config.schedule.at(step);
        self.opt.update(w, g, lr);
        Ok(StepReport {
            step,
            loss: total,
            grad_norm,
            lr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn setup(threads: usize) -> (Weights, Trainer, Vec<u32>) {
        let c = Config::preset("test").unwrap();
        let w = Weights::init_random(&c, 3).unwrap();
        // A repetitive stream the model can learn quickly.
        let stream: Vec<u32> = (0..2000).map(|i| [1, 5, 9, 5, 2, 7, 30, 11][i % 8]).collect();
        let config = TrainerConfig {
            batch: 4,
            seq_len: 16,
            threads,
            loss: LossWeights::default(),
            clip: 1.0,
            schedule: LrSchedule {
                max: 1e-2,
                min: 1e-3,
                warmup: 5,
                total: 60,
            },
            weight_decay: 0.01,
        };
        let t = Trainer::new(&w, config).unwrap();
        (w, t, stream)
    }

    fn run(threads: usize) -> (Vec<f32>, Weights) {
        let (mut w, mut t, stream) = setup(threads);
        let mut rng = Pcg32::new(1);
        let losses = (0..60)
            .map(|_| {
                let b = sample_batch(&stream, 4, 16, &mut rng).unwrap();
                t.step(&mut w, &b, None).unwrap().loss.ce
            })
            .collect();
        (losses, w)
    }

    #[test]
    fn training_lowers_the_loss_and_is_deterministic() {
        let (losses, w) = run(2);
        let (first, last) = (
            losses[..5].iter().sum::<f32>() / 5.0,
            losses[55..].iter().sum::<f32>() / 5.0,
        );
        assert!(last < 0.3 * first, "CE went from {first} to {last}");
        let (again, w2) = run(2);
        assert_eq!(losses, again);
        assert_eq!(w.tensors, w2.tensors);
    }

    #[test]
    fn one_and_two_threads_agree() {
        // Same maths split differently: equal up to float reassociation (the aux loss is
        // per worker, but with α = 0.01 its share of the gradient is small).
        let (a, _) = run(1);
        let (b, _) = run(2);
        for (x, y) in a.iter().zip(&b).take(10) {
            assert!((x - y).abs() < 2e-3 * x.abs().max(1.0), "{x} vs {y}");
        }
    }

    #[test]
    fn distillation_pulls_the_student_towards_the_teacher() {
        let (_, teacher) = run(1);
        let (mut w, mut t, stream) = setup(2);
        t.config.loss = LossWeights {
            aux_alpha: 0.01,
            distill_beta: 1.0,
            temperature: 2.0,
        };
        let mut rng = Pcg32::new(4);
        let kl: Vec<f32> = (0..40)
            .map(|_| {
                let b = sample_batch(&stream, 4, 16, &mut rng).unwrap();
                let r = t.step(&mut w, &b, Some(&teacher)).unwrap();
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
        assert!(matches!(t.step(&mut w, &b, None), Err(Error::ShapeMismatch { .. })));
    }

    #[test]
    fn a_teacher_with_another_vocabulary_is_refused() {
        let (mut w, mut t, stream) = setup(1);
        let mut c = Config::preset("test").unwrap();
        c.vocab_size = 40;
        let teacher = Weights::init_random(&c, 1).unwrap();
        let b = sample_batch(&stream, 4, 16, &mut Pcg32::new(0)).unwrap();
        let before = w.tensors.clone();
        assert!(matches!(
            t.step(&mut w, &b, Some(&teacher)),
            Err(Error::ShapeMismatch { .. })
        ));
        assert_eq!(format!("{:?}", w.tensors), format!("{before:?}"));
    }

    #[test]
    fn divergence_stops_before_touching_the_weights() {
        let (mut w, mut t, stream) = setup(1);
        let slot = w.table.index_of("layers.0.in_proj").unwrap();
        w.tensors[slot].as_f32_mut().unwrap()[0] = f32::NAN;
        let before = w.tensors.clone();
        let b = sample_batch(&stream, 4, 16, &mut Pcg32::new(0)).unwrap();
        assert!(matches!(t.step(&mut w, &b, None), Err(Error::Diverged { step: 0, .. })));
        assert_eq!(format!("{:?}", w.tensors), format!("{before:?}"));
    }
}
