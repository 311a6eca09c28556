//! A training run's checkpoint as one file's bytes: the f32 weights, AdamW's moments and step,
//! the run's settings, the typed summary, a fingerprint of the token stream it trains on and
//! its curves — everything needed to continue it bit for bit, in one safetensors file so
//! that it is written (and replaced) as a whole.
//!
//! Tensors: every parameter under its table name (F32), `adam.m.NAME` and `adam.v.NAME`, and
//! `history.NAME` (F32, one value per step). `__metadata__`: `format` = "itera-checkpoint",
//! `format_version`, `config` (the model's, its summary included), `spec`, `step`, `data`,
//! `evals`.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::history::History;
use super::optim::AdamW;
use super::spec::TrainSpec;
use super::step::TrainState;
use crate::error::{Error, Result};
use crate::family::{Architecture, Specs};
use crate::format::{f32s, metadata};
use crate::itera::Itera;
use crate::tokenizer::Tokenizer;
use crate::weights::{Grads, Weights};

pub const CHECKPOINT_FORMAT: &str = "itera-checkpoint";
pub const CHECKPOINT_VERSION: &str = "1";

/// Identifies the token stream a run trains on and the tokenizer that made it, so a resume on
/// other text or with another tokenizer is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub tokens: usize,
    /// FNV-1a (64-bit) over the token ids' little-endian bytes, in hex.
    pub fnv1a: String,
    /// FNV-1a over the tokenizer's vocabulary (each id's byte length and bytes, in id order),
    /// in hex; absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl DataFingerprint {
    pub fn of(stream: &[u32], tokenizer: &Tokenizer) -> DataFingerprint {
        DataFingerprint {
            tokens: stream.len(),
            fnv1a: fnv1a(stream.iter().flat_map(|t| t.to_le_bytes())),
            tokenizer: Some(DataFingerprint::of_tokenizer(tokenizer)),
        }
    }

    /// The `tokenizer` field: two tokenizers with the same fingerprint encode alike.
    pub fn of_tokenizer(tokenizer: &Tokenizer) -> String {
        fnv1a((0..tokenizer.vocab_size() as u32).flat_map(|id| {
            let piece = tokenizer.token_bytes(id).unwrap_or_default();
            (piece.len() as u32)
                .to_le_bytes()
                .into_iter()
                .chain(piece.iter().copied())
        }))
    }

    /// Refuses `found` (the data a resume was given) unless it is the data of this run.
    pub fn check_resume(&self, found: &DataFingerprint) -> Result<()> {
        if let (Some(run), Some(given)) = (&self.tokenizer, &found.tokenizer) {
            if run != given {
                return Err(Error::Tokenizer(format!(
                    "this checkpoint's run used another tokenizer (vocabulary fingerprint {run}, the one given is \
                     {given}): resume with the run's own tokenizer"
                )));
            }
        }
        if (self.tokens, &self.fnv1a) != (found.tokens, &found.fnv1a) {
            return Err(Error::Metadata(format!(
                "this checkpoint trained on {} tokens (fingerprint {}), the text given has {} ({}): resume on the \
                 same text, or start a new run from these weights",
                self.tokens, self.fnv1a, found.tokens, found.fnv1a
            )));
        }
        Ok(())
    }
}

/// The family a checkpoint trains (absent = itera, for checkpoints written before families).
pub fn checkpoint_family(bytes: &[u8]) -> Result<crate::family::Family> {
    let info = metadata(bytes)?;
    info.get("family")
        .map_or(Ok(crate::family::Family::Itera), |f| f.parse())
}

#[derive(Clone, Debug)]
pub struct Checkpoint<A: Architecture = Itera> {
    pub spec: TrainSpec,
    /// The weights carry the run's summary in `config.training`.
    pub state: TrainState<A>,
    pub data: DataFingerprint,
    pub history: History,
}

fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Metadata(e.to_string()))
}

impl<A: Architecture> Checkpoint<A> {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let w = &self.state.weights;
        let opt = &self.state.opt;
        let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        for (slot, spec) in w.specs().iter().enumerate() {
            tensors.push((spec.name.clone(), spec.shape.clone(), w.f32(slot)));
            tensors.push((
                format!("adam.m.{}", spec.name),
                spec.shape.clone(),
                &opt.m.tensors[slot],
            ));
            tensors.push((
                format!("adam.v.{}", spec.name),
                spec.shape.clone(),
                &opt.v.tensors[slot],
            ));
        }
        for (name, values) in self.history.columns() {
            tensors.push((format!("history.{name}"), vec![values.len()], values));
        }
        let views = tensors
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::Safetensors(format!("{name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("format_version".to_string(), CHECKPOINT_VERSION.to_string()),
            ("family".to_string(), A::FAMILY.to_string()),
            ("config".to_string(), json(&w.config)?),
            ("spec".to_string(), json(&self.spec)?),
            ("step".to_string(), opt.step.to_string()),
            ("data".to_string(), json(&self.data)?),
            ("evals".to_string(), json(&self.history.evals)?),
        ]);
        safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Safetensors(e.to_string()))
    }

    /// Parses and checks a checkpoint: metadata, every tensor's presence, shape and finiteness,
    /// curves as long as the step count.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint<A>> {
        let info = metadata(bytes)?;
        let get = |key: &str| {
            info.get(key)
                .map(String::as_str)
                .ok_or_else(|| Error::Metadata(format!("checkpoint: missing key `{key}`")))
        };
        let parse = |key: &str| -> Result<serde_json::Value> {
            serde_json::from_str(get(key)?).map_err(|e| Error::Metadata(format!("checkpoint `{key}`: {e}")))
        };
        let format = get("format")?;
        if format != CHECKPOINT_FORMAT {
            return Err(Error::Metadata(format!(
                "format is `{format}`, expected `{CHECKPOINT_FORMAT}` (a training checkpoint)"
            )));
        }
        if get("format_version")? != CHECKPOINT_VERSION {
            return Err(Error::Metadata(format!(
                "checkpoint format_version {} is not supported (this build reads {CHECKPOINT_VERSION})",
                get("format_version")?
            )));
        }
        let family = info.get("family").map_or("itera", String::as_str);
        if family != A::FAMILY.as_str() {
            return Err(Error::Metadata(format!(
                "this checkpoint trains a {family} model, not a {} one",
                A::FAMILY
            )));
        }
        let config = A::config_from_json(get("config")?)?;
        let spec: TrainSpec =
            serde_json::from_value(parse("spec")?).map_err(|e| Error::Metadata(format!("checkpoint `spec`: {e}")))?;
        spec.validate()?;
        let data: DataFingerprint =
            serde_json::from_value(parse("data")?).map_err(|e| Error::Metadata(format!("checkpoint `data`: {e}")))?;
        let step: usize = get("step")?
            .parse()
            .map_err(|_| Error::Metadata("checkpoint `step` is not a whole number".into()))?;
        // The optimiser's step, the model's summary and the run's length must tell one story.
        let model_steps = A::training(&config).map_or(step, |t| t.steps);
        if model_steps != step || step > spec.steps {
            return Err(Error::Metadata(format!(
                "checkpoint: the optimiser is at step {step}, the model's summary at step {model_steps} and the run \
                 has {} steps; a checkpoint holds one step of one run",
                spec.steps
            )));
        }

        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
        let table = A::table(&config);
        let specs = table.specs();
        let mut weights = Vec::with_capacity(specs.len());
        let (mut m, mut v) = (Vec::with_capacity(specs.len()), Vec::with_capacity(specs.len()));
        for spec in specs {
            weights.push(f32s(&st, &spec.name, &spec.shape)?);
            m.push(f32s(&st, &format!("adam.m.{}", spec.name), &spec.shape)?);
            v.push(f32s(&st, &format!("adam.v.{}", spec.name), &spec.shape)?);
        }
        let mut history = History {
            evals: serde_json::from_value(parse("evals")?)
                .map_err(|e| Error::Metadata(format!("checkpoint `evals`: {e}")))?,
            ..History::default()
        };
        for (name, column) in history.columns_mut() {
            *column = f32s(&st, &format!("history.{name}"), &[step])?;
        }
        let expected = 3 * specs.len() + history.columns().len();
        if st.len() != expected {
            return Err(Error::Metadata(format!(
                "checkpoint holds {} tensors, expected {expected} for this config",
                st.len()
            )));
        }
        let weights = Weights::<A>::from_f32_tensors(config, weights);
        let mut opt = AdamW::new(&weights, spec.weight_decay as f32);
        opt.m = Grads { tensors: m };
        opt.v = Grads { tensors: v };
        opt.step = step;
        Ok(Checkpoint {
            spec,
            state: TrainState { weights, opt },
            data,
            history,
        })
    }
}
