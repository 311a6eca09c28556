//! Model hyper-parameters (`Config`), the named presets, and the sizes derived from them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::TrainingSummary;

/// Every hyper-parameter of an Itera model. Serialised as JSON into the weights file's metadata.
///
/// Notation (SPEC "Model"): D = `d_model`, Di = `expand`·D, N = `d_state`, K = `d_conv`,
/// R = `dt_rank`, E = `n_experts`, k = `top_k`, F = `d_ff`, V = `vocab_size`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub expand: usize,
    pub d_state: usize,
    pub d_conv: usize,
    pub dt_rank: usize,
    pub n_experts: usize,
    pub top_k: usize,
    /// Hidden size F of every SwiGLU FFN, expert or dense.
    pub d_ff: usize,
    /// Layer `l` has a MoE FFN when `moe_every > 0 && (l + 1) % moe_every == 0`; 1 = every
    /// layer, 2 = every second layer (starting with layer 1), 0 = dense everywhere.
    pub moe_every: usize,
    /// File name of the tokenizer that belongs to these weights (looked up next to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// How the weights were trained, written by the training job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingSummary>,
}

/// The most tensors a model may have (64 layers with 64 experts in each: 13,058).
pub const MAX_TENSORS: usize = 1 << 16;
/// The most scalar parameters a model may have: 4 GiB of f32, beyond what a tab can hold.
pub const MAX_PARAMS: usize = 1 << 30;

impl Config {
    /// A named preset: `test` (odd sizes for gradient checks), `micro` (~260K), `tiny` (~1.5M),
    /// `15m` (~15M, the benchmark size). micro and tiny are the shipped models; their 4096-id
    /// vocabulary won the tokenizer study (weights/README.md) and makes the embedding half of
    /// micro, which is why micro is narrow (D = 32) rather than shallow.
    pub fn preset(name: &str) -> Result<Config> {
        let base = |vocab_size, d_model, n_layers, n_experts, top_k, d_ff, moe_every| Config {
            vocab_size,
            d_model,
            n_layers,
            expand: 2,
            d_state: 16,
            d_conv: 4,
            dt_rank: d_model.div_ceil(16),
            n_experts,
            top_k,
            d_ff,
            moe_every,
            tokenizer: None,
            training: None,
        };
        let config = match name {
            // D=12, Di=24, N=11, R=3, E=3, k=2, F=10, V=37: nothing is a multiple of anything;
            // N = 11 runs both the 8-lane chunk and the scalar tail of the scan; layer 0 is
            // dense while layer 1 is MoE, so one model covers both FFN kinds.
            "test" => Config {
                d_state: 11,
                dt_rank: 3,
                ..base(37, 12, 2, 3, 2, 10, 2)
            },
            "micro" => base(4096, 32, 4, 4, 2, 96, 2),
            "tiny" => base(4096, 128, 4, 4, 2, 128, 2),
            "15m" => base(4096, 288, 6, 4, 2, 512, 1),
            other => return Err(Error::UnknownPreset(other.to_string())),
        };
        config.validate()?;
        Ok(config)
    }

    /// Parses a config from JSON and validates it.
    pub fn from_json(text: &str) -> Result<Config> {
        let config: Config = serde_json::from_str(text).map_err(|e| Error::Metadata(format!("config JSON: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field is usable; the first problem found is returned.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("expand", self.expand),
            ("d_state", self.d_state),
            ("d_conv", self.d_conv),
            ("dt_rank", self.dt_rank),
            ("n_experts", self.n_experts),
            ("top_k", self.top_k),
            ("d_ff", self.d_ff),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        if self.top_k > self.n_experts {
            return Err(Error::TopKExceedsExperts {
                top_k: self.top_k,
                n_experts: self.n_experts,
            });
        }
        // Keeps every tensor far below the sizes where usize products or file offsets matter
        // and a hostile config cannot make us allocate terabytes.
        const MAX_DIM: usize = 1 << 20;
        for (field, value) in positive {
            if value > MAX_DIM {
                return Err(Error::InvalidConfig {
                    field,
                    value: value.to_string(),
                    reason: format!("larger than the supported maximum {MAX_DIM}"),
                });
            }
        }
        // Each dimension is bounded, but their products are not: n_layers = n_experts = 2^20
        // in a 300-byte file would build a table of 2^41 tensors. The counts come first.
        let implied = crate::params::Implied::of(self);
        if implied.tensors > MAX_TENSORS as u128 || implied.params > MAX_PARAMS as u128 {
            return Err(Error::InvalidConfig {
                field: "shape",
                value: format!("{} tensors, {} parameters", implied.tensors, implied.params),
                reason: format!("the supported maximum is {MAX_TENSORS} tensors and {MAX_PARAMS} parameters"),
            });
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(Error::InvalidConfig {
                field: "vocab_size",
                value: self.vocab_size.to_string(),
                reason: "token ids are u32".into(),
            });
        }
        Ok(())
    }

    /// Di: the SSM's inner width.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    /// Output width of `x_proj`: R + 2N (dt_r, B, C).
    pub fn x_proj_out(&self) -> usize {
        self.dt_rank + 2 * self.d_state
    }

    /// Whether layer `l` uses a MoE FFN (otherwise a dense SwiGLU).
    pub fn is_moe(&self, layer: usize) -> bool {
        self.moe_every > 0 && (layer + 1).is_multiple_of(self.moe_every)
    }

    /// Number of MoE layers (the aux loss is averaged over them).
    pub fn n_moe_layers(&self) -> usize {
        (0..self.n_layers).filter(|&l| self.is_moe(l)).count()
    }

    /// Config without the tokenizer/training annotations: what shapes depend on.
    pub fn architecture(&self) -> Config {
        Config {
            tokenizer: None,
            training: None,
            ..self.clone()
        }
    }
}
