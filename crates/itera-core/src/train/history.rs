//! A run's curves: one value per step for every per-step quantity, and the held-out
//! evaluations. Kept by the job, saved in its checkpoints (so a resumed run's charts show the
//! whole run) and handed to the page as typed arrays.

use serde::{Deserialize, Serialize};

use super::step::StepReport;

/// Per-step curves (index i = step i + 1) and the evaluations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub loss: Vec<f32>,
    pub ce: Vec<f32>,
    pub aux: Vec<f32>,
    pub kl: Vec<f32>,
    pub lr: Vec<f32>,
    pub grad_norm: Vec<f32>,
    pub tokens_per_s: Vec<f32>,
    pub evals: Vec<EvalPoint>,
}

/// Bits per byte of one evaluation set after `step` steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    pub name: String,
    pub bits_per_byte: f64,
}

impl History {
    /// Steps recorded.
    pub fn len(&self) -> usize {
        self.loss.len()
    }

    pub fn is_empty(&self) -> bool {
        self.loss.is_empty()
    }

    pub fn push(&mut self, r: &StepReport, tokens_per_s: f64) {
        self.loss.push(r.loss.total);
        self.ce.push(r.loss.ce);
        self.aux.push(r.loss.aux);
        self.kl.push(r.loss.kl);
        self.lr.push(r.lr);
        self.grad_norm.push(r.grad_norm);
        self.tokens_per_s.push(tokens_per_s as f32);
    }

    /// Forgets everything after `steps` steps (a run rolled back to an earlier state).
    pub fn truncate(&mut self, steps: usize) {
        for (_, c) in self.columns_mut() {
            c.truncate(steps);
        }
        self.evals.retain(|e| e.step <= steps);
    }

    /// The per-step curves by name (checkpoint tensor names are `history.NAME`).
    pub fn columns(&self) -> [(&'static str, &Vec<f32>); 7] {
        [
            ("loss", &self.loss),
            ("ce", &self.ce),
            ("aux", &self.aux),
            ("kl", &self.kl),
            ("lr", &self.lr),
            ("grad_norm", &self.grad_norm),
            ("tokens_per_s", &self.tokens_per_s),
        ]
    }

    pub fn columns_mut(&mut self) -> [(&'static str, &mut Vec<f32>); 7] {
        [
            ("loss", &mut self.loss),
            ("ce", &mut self.ce),
            ("aux", &mut self.aux),
            ("kl", &mut self.kl),
            ("lr", &mut self.lr),
            ("grad_norm", &mut self.grad_norm),
            ("tokens_per_s", &mut self.tokens_per_s),
        ]
    }
}
