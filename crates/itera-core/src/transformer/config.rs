//! The Transformer's hyper-parameters under llama2.c `model.py`'s `ModelArgs` names (SPEC
//! "Model families"), its presets, and the sizes derived from them.

use serde::{Deserialize, Serialize};

use crate::config::{MAX_PARAMS, MAX_TENSORS};
use crate::error::{Error, Result};
use crate::layers::norm::EPS;

/// `layers::norm::EPS` as the config states it.
pub const NORM_EPS: f64 = 1e-5;
use crate::llama2c::MAX_KV_CACHE_BYTES;
use crate::train::TrainingSummary;

/// Every hyper-parameter of a Transformer (llama2.c `model.py` keys), serialised as JSON into
/// the weights file's metadata. `hidden_dim` is explicit (model.py derives it from
/// `multiple_of` when absent; a file states what its tensors are).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub hidden_dim: usize,
    /// RMSNorm's ε, which must be the 1e-5 every model here normalises with (an f64 so that a
    /// file says 1e-5, as model.py does, not the f32 nearest to it).
    pub norm_eps: f64,
    /// The longest context: positions beyond it are refused.
    pub max_seq_len: usize,
    /// Whether the classifier is the token embedding (model.py ties them); otherwise the
    /// file holds `output.weight`. Absent = tied.
    #[serde(default = "tied", skip_serializing_if = "is_tied")]
    pub shared_classifier: bool,
    /// File name of the tokenizer that belongs to these weights (looked up next to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// How the weights were trained, written by the training job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingSummary>,
}

fn tied() -> bool {
    true
}

fn is_tied(shared: &bool) -> bool {
    *shared
}

/// The longest context a preset accepts: the prompt limit plus a generation's, so that any
/// request the other family serves is served (the comparison runs both to 8,192 positions).
pub const PRESET_MAX_SEQ_LEN: usize = 32_768;

impl TransformerConfig {
    /// A named preset. `test` has odd sizes for gradient checks (two query heads per kv head);
    /// `micro` and `tiny` have exactly the parameters of the itera presets of the same name
    /// (same vocabulary, width and depth; the FFN's width takes up the rest), so the two
    /// families compare at equal size.
    pub fn preset(name: &str) -> Result<TransformerConfig> {
        let base = |vocab_size, dim, n_layers, n_heads, n_kv_heads, hidden_dim| TransformerConfig {
            dim,
            n_layers,
            n_heads,
            n_kv_heads,
            vocab_size,
            hidden_dim,
            norm_eps: NORM_EPS,
            max_seq_len: PRESET_MAX_SEQ_LEN,
            shared_classifier: true,
            tokenizer: None,
            training: None,
        };
        let config = match name {
            // head size 6 (three rotated pairs), 4 query heads over 2 kv heads, F = 10, V = 37.
            "test" => TransformerConfig {
                max_seq_len: 64,
                ..base(37, 24, 2, 4, 2, 10)
            },
            // itera micro: 263,456 parameters; itera tiny: 1,483,904.
            "micro" => base(4096, 32, 4, 4, 2, 312),
            "tiny" => base(4096, 128, 4, 4, 2, 496),
            "15m" => base(4096, 288, 6, 6, 6, 768),
            other => return Err(Error::UnknownPreset(other.to_string())),
        };
        config.validate()?;
        Ok(config)
    }

    pub fn from_json(text: &str) -> Result<TransformerConfig> {
        let config: TransformerConfig =
            serde_json::from_str(text).map_err(|e| Error::Metadata(format!("transformer config JSON: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Width of the keys and values: `n_kv_heads` heads of `head_size`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_size()
    }

    /// Checks every field is usable; the first problem found is returned.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, value: String, reason: String| Error::InvalidConfig { field, value, reason };
        let fields = [
            ("dim", self.dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("vocab_size", self.vocab_size),
            ("hidden_dim", self.hidden_dim),
            ("max_seq_len", self.max_seq_len),
        ];
        const MAX_DIM: usize = 1 << 20;
        for (field, value) in fields {
            if value == 0 || value > MAX_DIM {
                return Err(invalid(
                    field,
                    value.to_string(),
                    format!("must be from 1 to {MAX_DIM}"),
                ));
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) || !self.head_size().is_multiple_of(2) {
            return Err(invalid(
                "n_heads",
                self.n_heads.to_string(),
                format!(
                    "must divide dim = {} into heads of an even size (RoPE rotates pairs)",
                    self.dim
                ),
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(invalid(
                "n_kv_heads",
                self.n_kv_heads.to_string(),
                format!("must divide n_heads = {}", self.n_heads),
            ));
        }
        // Within an f32's rounding of 1e-5: a file written with the f32 value still loads.
        if (self.norm_eps - NORM_EPS).abs() > 1e-12 {
            return Err(invalid(
                "norm_eps",
                self.norm_eps.to_string(),
                format!("every model here normalises with {EPS}"),
            ));
        }
        // Decoding grows a KV cache up to max_seq_len: bounded like a llama2.c checkpoint's.
        let kv_bytes = 2 * 4 * self.n_layers as u128 * self.max_seq_len as u128 * self.kv_dim() as u128;
        if kv_bytes > MAX_KV_CACHE_BYTES as u128 {
            return Err(invalid(
                "max_seq_len",
                self.max_seq_len.to_string(),
                format!("its KV cache would reach {kv_bytes} bytes, more than the {MAX_KV_CACHE_BYTES} allowed"),
            ));
        }
        let implied = super::params::Implied::of(self);
        if implied.tensors > MAX_TENSORS as u128 || implied.params > MAX_PARAMS as u128 {
            return Err(invalid(
                "shape",
                format!("{} tensors, {} parameters", implied.tensors, implied.params),
                format!("the supported maximum is {MAX_TENSORS} tensors and {MAX_PARAMS} parameters"),
            ));
        }
        Ok(())
    }

    /// Config without the tokenizer/training annotations: what shapes depend on.
    pub fn architecture(&self) -> TransformerConfig {
        TransformerConfig {
            tokenizer: None,
            training: None,
            ..self.clone()
        }
    }
}
