//! itera-core: the Itera-Lite selective-SSM + Mixture-of-Experts language model and its
//! Transformer baseline, two families behind one interface (`family::Architecture`).
//!
//! CPU kernels for every weight precision, forward/backward, the recurrent decoder and the KV
//! cache, weight files, the tokenizers, one generation loop, evaluation, the training job and
//! the llama2.c teacher. Builds for native targets and wasm32.

pub mod config;
pub mod error;
pub mod eval;
pub mod family;
pub mod format;
pub mod generate;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod itera;
pub mod kernels;
pub mod layers;
pub mod llama2c;
pub mod lm;
pub mod lowbit;
pub mod matrix;
pub mod model;
pub mod params;
pub mod precision;
pub mod prune;
pub mod rng;
pub mod sampling;
pub mod sensitivity;
pub mod tokenizer;
pub mod train;
pub mod transformer;
pub mod weights;

pub use config::Config;
pub use error::{Error, Result};
pub use family::{Architecture, Family};
pub use itera::Itera;
pub use model::{BatchDims, Cache, LossParts, LossWeights, State};
pub use precision::{Precision, PrecisionMap};
pub use transformer::Transformer;
pub use weights::{Grads, Weights};
