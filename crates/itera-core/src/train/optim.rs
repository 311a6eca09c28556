//! AdamW (Loshchilov & Hutter 2019) with moments laid out by the parameter table, and a
//! linear-warmup + cosine learning-rate schedule.

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
    pub fn new(w: &Weights, weight_decay: f32) -> AdamW {
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

    /// One update of f32 weights with learning rate `lr`.
    pub fn update(&mut self, w: &mut Weights, g: &Grads, lr: f32) {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (slot, spec) in w.table.specs.clone().iter().enumerate() {
            let decay = if spec.kind == ParamKind::Matrix {
                self.weight_decay
            } else {
                0.0
            };
            let p = w.tensors[slot].as_f32_mut().expect("training needs f32 weights");
            let (m, v, g) = (&mut self.m.tensors[slot], &mut self.v.tensors[slot], &g.tensors[slot]);
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let update = (m[i] / c1) / ((v[i] / c2).sqrt() + self.eps);
                p[i] -= lr * (update + decay * p[i]);
            }
        }
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
}
