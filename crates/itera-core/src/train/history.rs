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

/// The lowest held-out figure of one evaluation set so far (`History::best`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Best {
    /// The step whose weights scored it (0: the weights the run started from).
    pub step: usize,
    pub bits_per_byte: f64,
    /// Evaluations of the set since, none of them lower.
    pub evals_since: usize,
}

impl History {
    /// The best (lowest) bits per byte of the set `name` so far: the earliest step on a tie.
    pub fn best(&self, name: &str) -> Option<Best> {
        let mut best: Option<Best> = None;
        for e in self.evals.iter().filter(|e| e.name == name) {
            match &mut best {
                Some(b) if e.bits_per_byte >= b.bits_per_byte => b.evals_since += 1,
                _ => {
                    best = Some(Best {
                        step: e.step,
                        bits_per_byte: e.bits_per_byte,
                        evals_since: 0,
                    })
                }
            }
        }
        best
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn point(step: usize, name: &str, bits_per_byte: f64) -> EvalPoint {
        EvalPoint {
            step,
            name: name.into(),
            bits_per_byte,
        }
    }

    #[test]
    fn the_best_is_the_lowest_figure_and_counts_the_evaluations_since() {
        let mut h = History::default();
        assert_eq!(h.best("a"), None);
        h.evals = vec![
            point(0, "a", 2.0),
            point(0, "b", 1.0),
            point(10, "a", 1.5),
            point(10, "b", 0.5),
            point(20, "a", 1.5),
            point(30, "a", 1.7),
        ];
        let b = h.best("a").unwrap();
        assert_eq!((b.step, b.bits_per_byte, b.evals_since), (10, 1.5, 2));
        let b = h.best("b").unwrap();
        assert_eq!((b.step, b.evals_since), (10, 0));
    }
}
