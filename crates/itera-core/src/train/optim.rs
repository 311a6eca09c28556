//! AdamW (Loshchilov & Hutter 2019) with moments laid out by the parameter table, and a
//! linear-warmup + cosine learning-rate schedule.

use crate::error::{Error, Result};
use crate::family::Architecture;
use crate::params::ParamKind;
use crate::weights::{Grads, Weights};

/// Learning rate: linear warmup from 0 to `max` over `warmup` steps, then cosine decay to
/// `min` at `total` steps (and `min` after).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub max: f32,
    pub min: f32,
    pub warmup: usize,
    pub total: usize,
}

impl LrSchedule {
    pub fn at(&self, step: usize) -> f32 {
        if step < self.warmup {
            return self.max * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f32 / span as f32).min(1.0);
        self.min + 0.5 * (self.max - self.min) * (1.0 + (std::f32::consts::PI * progress).cos())
    }
}

/// AdamW's moment decay rates and ε, the same on every backend (the GPU's `adamw.wgsl`
/// receives them from here).
pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.95;
pub const EPS: f32 = 1e-8;

/// AdamW state: first and second moments for every table slot, and the step count.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay, applied to matrices only (not norms, biases, A_log, Dskip).
    pub weight_decay: f32,
    pub m: Grads,
    pub v: Grads,
    pub step: usize,
}

impl AdamW {
    pub fn new<A: Architecture>(w: &Weights<A>, weight_decay: f32) -> AdamW {
        AdamW {
            beta1: BETA1,
            beta2: BETA2,
            eps: EPS,
            weight_decay,
            m: Grads::zeros(&w.table),
            v: Grads::zeros(&w.table),
            step: 0,
        }
    }

    /// One update of f32 weights with learning rate `lr`. The new weights and moments are
    /// computed and checked first: when any would not be finite the update is refused
    /// (`Error::Diverged`, "the weights") and the weights, moments and step stay as they were.
    pub fn update<A: Architecture>(&mut self, w: &mut Weights<A>, g: &Grads, lr: f32) -> Result<()> {
        let t = (self.step + 1) as i32;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let decays: Vec<f32> = w
            .specs()
            .iter()
            .map(|spec| {
                if spec.kind == ParamKind::Matrix {
                    self.weight_decay
                } else {
                    0.0
                }
            })
            .collect();
        // One element's update: (weight, m, v) after the step.
        let updated = |p: f32, m: f32, v: f32, g: f32, decay: f32| {
            let m = b1 * m + (1.0 - b1) * g;
            let v = b2 * v + (1.0 - b2) * g * g;
            let update = (m / c1) / ((v / c2).sqrt() + eps);
            (p - lr * (update + decay * p), m, v)
        };
        for (slot, &decay) in decays.iter().enumerate() {
            let p = w.tensors[slot].as_f32().expect("training needs f32 weights");
            let (m, v, g) = (&self.m.tensors[slot], &self.v.tensors[slot], &g.tensors[slot]);
            for i in 0..p.len() {
                let (p, m, v) = updated(p[i], m[i], v[i], g[i], decay);
                if !(p.is_finite() && m.is_finite() && v.is_finite()) {
                    return Err(Error::Diverged {
                        step: self.step,
                        what: "the weights",
                    });
                }
            }
        }
        for (slot, &decay) in decays.iter().enumerate() {
            let p = w.tensors[slot].as_f32_mut().expect("training needs f32 weights");
            let (m, v, g) = (&mut self.m.tensors[slot], &mut self.v.tensors[slot], &g.tensors[slot]);
            for i in 0..p.len() {
                (p[i], m[i], v[i]) = updated(p[i], m[i], v[i], g[i], decay);
            }
        }
        self.step += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let s = LrSchedule {
            max: 1.0,
            min: 0.1,
            warmup: 10,
            total: 110,
        };
        assert!((s.at(0) - 0.1).abs() < 1e-6 && (s.at(9) - 1.0).abs() < 1e-6);
        assert!((s.at(10) - 1.0).abs() < 1e-6);
        assert!((s.at(60) - 0.55).abs() < 1e-6);
        assert!((s.at(110) - 0.1).abs() < 1e-6 && (s.at(500) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn an_update_that_would_leave_a_weight_not_finite_changes_nothing() {
        let c = crate::config::Config::preset("test").unwrap();
        let mut w = Weights::init_random(&c, 1).unwrap();
        let mut opt = AdamW::new(&w, 0.1);
        let mut g = Grads::zeros(&w.table);
        g.tensors.iter_mut().flatten().for_each(|x| *x = 0.01);
        opt.update(&mut w, &g, 1e-3).unwrap();
        // Adam's step is bounded (about lr), so only a weight already out of range makes a
        // non-finite one: whatever put it there, the update is refused rather than spread.
        let last = w.tensors.len() - 1;
        w.tensors[last].as_f32_mut().unwrap()[0] = f32::INFINITY;
        let (before, opt_before) = (w.clone(), opt.clone());
        let e = opt.update(&mut w, &g, 1.0).unwrap_err();
        assert!(e.to_string().contains("the weights"), "{e}");
        assert_eq!(opt.step, opt_before.step);
        assert_eq!(
            (&opt.m.tensors, &opt.v.tensors),
            (&opt_before.m.tensors, &opt_before.v.tensors)
        );
        for (a, b) in w.tensors.iter().zip(&before.tensors) {
            assert_eq!(a.as_f32().unwrap(), b.as_f32().unwrap());
        }
    }
}
