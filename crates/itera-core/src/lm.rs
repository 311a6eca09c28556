//! A model of either family chosen at run time (a file's `family` metadata): what the CLI, the
//! page and a distillation teacher hold when the family is not known when compiling. Code
//! that knows its family uses `Weights<A>` directly; this enum only dispatches.

use crate::error::Result;
use crate::family::{Architecture, Family};
use crate::itera::Itera;
use crate::model::{self, BatchDims, Cache};
use crate::precision::{Precision, PrecisionMap};
use crate::transformer::{self, Transformer, TransformerCache};
use crate::weights::Weights;

/// Weights of any family.
#[derive(Clone, Debug)]
pub enum AnyWeights {
    Itera(Weights<Itera>),
    Transformer(Weights<Transformer>),
}

/// Activations of a teacher's forward, for either family (kept between steps).
#[derive(Debug, Default)]
pub struct AnyCache {
    itera: Cache,
    transformer: TransformerCache,
}

impl From<Weights<Itera>> for AnyWeights {
    fn from(w: Weights<Itera>) -> AnyWeights {
        AnyWeights::Itera(w)
    }
}

impl From<Weights<Transformer>> for AnyWeights {
    fn from(w: Weights<Transformer>) -> AnyWeights {
        AnyWeights::Transformer(w)
    }
}

impl AnyWeights {
    /// Loads and validates a weights file of whichever family it holds.
    pub fn load(bytes: &[u8]) -> Result<AnyWeights> {
        Ok(match crate::format::read_family(bytes)? {
            Family::Itera => AnyWeights::Itera(crate::format::load_as(bytes)?),
            Family::Transformer => AnyWeights::Transformer(crate::format::load_as(bytes)?),
        })
    }

    pub fn family(&self) -> Family {
        match self {
            AnyWeights::Itera(_) => Family::Itera,
            AnyWeights::Transformer(_) => Family::Transformer,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            AnyWeights::Itera(w) => Itera::vocab_size(&w.config),
            AnyWeights::Transformer(w) => Transformer::vocab_size(&w.config),
        }
    }

    pub fn total_params(&self) -> usize {
        match self {
            AnyWeights::Itera(w) => w.total_params(),
            AnyWeights::Transformer(w) => w.total_params(),
        }
    }

    pub fn precision(&self) -> Precision {
        match self {
            AnyWeights::Itera(w) => w.precision,
            AnyWeights::Transformer(w) => w.precision,
        }
    }

    /// The same weights in `precision` (each matrix requantised from its f32 values).
    pub fn to_precision(&self, precision: Precision) -> AnyWeights {
        match self {
            AnyWeights::Itera(w) => w.to_precision(precision).into(),
            AnyWeights::Transformer(w) => w.to_precision(precision).into(),
        }
    }

    /// `Weights::to_precision_map` of either family.
    pub fn to_precision_map(&self, base: Precision, map: &PrecisionMap) -> Result<AnyWeights> {
        Ok(match self {
            AnyWeights::Itera(w) => w.to_precision_map(base, map)?.into(),
            AnyWeights::Transformer(w) => w.to_precision_map(base, map)?.into(),
        })
    }

    /// `Weights::precision_map` of either family.
    pub fn precision_map(&self) -> PrecisionMap {
        match self {
            AnyWeights::Itera(w) => w.precision_map(),
            AnyWeights::Transformer(w) => w.precision_map(),
        }
    }

    /// The weights as a model file (`format::save`).
    pub fn save(&self) -> Result<Vec<u8>> {
        match self {
            AnyWeights::Itera(w) => crate::format::save(w),
            AnyWeights::Transformer(w) => crate::format::save(w),
        }
    }

    /// The parameter table's specs, in table order.
    pub fn specs(&self) -> &[crate::params::ParamSpec] {
        match self {
            AnyWeights::Itera(w) => w.specs(),
            AnyWeights::Transformer(w) => w.specs(),
        }
    }

    /// Bytes the tensors occupy in memory.
    pub fn size_bytes(&self) -> usize {
        match self {
            AnyWeights::Itera(w) => w.size_bytes(),
            AnyWeights::Transformer(w) => w.size_bytes(),
        }
    }

    /// The itera weights, when that is the family.
    pub fn as_itera(&self) -> Option<&Weights<Itera>> {
        match self {
            AnyWeights::Itera(w) => Some(w),
            AnyWeights::Transformer(_) => None,
        }
    }

    /// Every position's logits (B·T, V) of `tokens` from the empty context: what a
    /// distillation teacher gives its student.
    pub fn logits<'c>(&self, tokens: &[u32], bd: BatchDims, cache: &'c mut AnyCache) -> Result<&'c [f32]> {
        Ok(match self {
            AnyWeights::Itera(w) => {
                model::forward(w, tokens, bd, false, &mut cache.itera)?;
                &cache.itera.logits
            }
            AnyWeights::Transformer(w) => {
                transformer::model::forward(w, tokens, bd, false, &mut cache.transformer)?;
                &cache.transformer.logits
            }
        })
    }
}
