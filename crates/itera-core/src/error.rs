//! The core crate's typed errors: every failure says what was expected, what was found, and where.

use std::fmt;

/// Result alias used throughout the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when loading, validating or running a model.
///
/// Variants carry enough context to fix the problem without reading the code: the tensor name,
/// the expected and the found value. The wasm edge turns these into `JsError` messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid config: {field} = {value} ({reason})")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: String,
    },

    #[error("invalid config: top_k = {top_k} exceeds n_experts = {n_experts}")]
    TopKExceedsExperts { top_k: usize, n_experts: usize },

    #[error("unknown config preset `{0}` (expected test, micro, tiny or 15m, or a .json file)")]
    UnknownPreset(String),

    #[error("unknown precision `{0}` (expected f32, f16, q8 or q4)")]
    UnknownPrecision(String),

    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),

    #[error("metadata: {0}")]
    Metadata(String),

    #[error("tensor `{name}`: expected dtype {expected}, found {found}")]
    DType {
        name: String,
        expected: String,
        found: String,
    },

    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("tensor `{name}` is missing from the weights file")]
    MissingTensor { name: String },

    #[error("tensor `{name}` is in the weights file but not in the config's parameter table")]
    UnexpectedTensor { name: String },

    #[error("tensor `{name}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite { name: String, index: usize, value: f32 },

    #[error("empty input: {0}")]
    EmptyInput(&'static str),

    #[error("token id {id} is out of range for a vocabulary of {vocab_size}")]
    TokenOutOfRange { id: u32, vocab_size: usize },

    #[error("invalid setting {name} = {value}: {expected}")]
    InvalidSetting {
        name: &'static str,
        value: String,
        expected: std::borrow::Cow<'static, str>,
    },

    #[error("invalid setting {name} = {value}: expected a number from {min} to {max}")]
    OutOfRange {
        name: &'static str,
        value: String,
        min: f64,
        max: f64,
    },

    #[error("shape mismatch in {op}: {detail}")]
    ShapeMismatch { op: &'static str, detail: String },

    /// No usable GPU (adapter, device, feature or kernel): callers fall back to the CPU.
    #[error("GPU: {0}")]
    Gpu(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("training diverged at step {step}: {what} is not finite; the weights were not updated")]
    Diverged { step: usize, what: &'static str },

    /// A text given for training or evaluation that cannot be used (not UTF-8, say).
    #[error("{0}")]
    InvalidText(String),

    /// A browser worker computing part of a training step failed or answered nonsense.
    #[error("a training worker failed: {0}")]
    Worker(String),

    #[error("llama2.c checkpoint: {0}")]
    Llama2c(String),

    #[error("i/o error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    /// `Ok` when `id` is a valid token of a vocabulary of `vocab_size`.
    pub(crate) fn check_token(id: u32, vocab_size: usize) -> Result<()> {
        if id as usize >= vocab_size {
            return Err(Error::TokenOutOfRange { id, vocab_size });
        }
        Ok(())
    }

    /// An out-of-range user setting: its name, the value given and what is accepted.
    pub fn setting(
        name: &'static str,
        value: impl fmt::Display,
        expected: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Self {
        Error::InvalidSetting {
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
