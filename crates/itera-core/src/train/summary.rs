//! The training summary a model file carries in its config (`Config::training`): how it was
//! made, typed. Files written before this type existed hold the same keys, so they load.

use serde::{Deserialize, Serialize};

/// How a model was trained. Every field but the counts is optional so that any earlier file's
/// summary still loads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Optimisation steps taken.
    pub steps: usize,
    pub batch: usize,
    pub seq_len: usize,
    /// Where the text came from (a file path, or what the page was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
    #[serde(default)]
    pub corpus_tokens: usize,
    /// Seconds spent stepping, over every session of the run.
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub seed: u64,
    /// Peak learning rate.
    #[serde(default)]
    pub lr: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distilled_from: Option<DistilledFrom>,
    /// The model a fine-tune started from (`train --init`, the page's Fine-tune tab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tuned_from: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DistilledFrom {
    pub teacher: String,
    /// Logit distillation (β·T²·KL + (1 − β)·CE, `beta` and `temperature`), or
    /// sequence-level (the student learnt the teacher's stories with CE; `beta` 0).
    #[serde(default)]
    pub mode: DistillMode,
    pub beta: f64,
    pub temperature: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistillMode {
    /// The student matches the teacher's next-token distributions (a shared tokenizer).
    #[default]
    Logits,
    /// The student learns text the teacher wrote (any tokenizers).
    Sequence,
}
