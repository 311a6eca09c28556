//! Loads any model the commands accept: a safetensors file of either family (any precision)
//! with its tokenizer.json, or a llama2.c checkpoint with its tokenizer.bin.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use itera_core::llama2c::{Llama2, Llama2Tokenizer};
use itera_core::tokenizer::Tokenizer;
use itera_core::{format, Family, Transformer, Weights};

// One per command: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum AnyModel {
    Itera {
        weights: Weights,
        tokenizer: Tokenizer,
    },
    Transformer {
        weights: Weights<Transformer>,
        tokenizer: Tokenizer,
    },
    Llama2 {
        model: Llama2,
        tokenizer: Llama2Tokenizer,
    },
}

/// safetensors files start with a little-endian u64 header length followed by `{`.
fn is_safetensors(bytes: &[u8]) -> bool {
    bytes.len() > 9
        && bytes[8] == b'{'
        && u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()) < bytes.len() as u64
}

pub fn load(path: &Path, tokenizer: Option<&Path>) -> Result<AnyModel> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if is_safetensors(&bytes) {
        let loading = || format!("loading {}", path.display());
        let tok = |named: Option<&str>| -> Result<Tokenizer> {
            let tok_path = match tokenizer {
                Some(p) => p.to_path_buf(),
                None => find_itera_tokenizer(dir, named)?,
            };
            Tokenizer::from_file(&tok_path).with_context(|| format!("loading tokenizer {}", tok_path.display()))
        };
        return Ok(match format::read_family(&bytes).with_context(loading)? {
            Family::Itera => {
                let weights = format::load(&bytes).with_context(loading)?;
                let tokenizer = tok(weights.config.tokenizer.as_deref())?;
                AnyModel::Itera { weights, tokenizer }
            }
            Family::Transformer => {
                let weights = format::load_as::<Transformer>(&bytes).with_context(loading)?;
                let tokenizer = tok(weights.config.tokenizer.as_deref())?;
                AnyModel::Transformer { weights, tokenizer }
            }
        });
    }
    // Not safetensors: say why first, and mention llama2.c only when the bytes begin like a
    // checkpoint of it.
    let not_safetensors = match format::read_family(&bytes) {
        Err(e) => e.to_string(),
        Ok(_) => "its header is not at the start of the file".into(),
    };
    if !Llama2::looks_like_checkpoint(&bytes) {
        bail!("{} is not a model file: {not_safetensors}", path.display());
    }
    let model = Llama2::from_bytes(&bytes).with_context(|| {
        format!(
            "{} is not a safetensors file ({not_safetensors}) and, read as a llama2.c checkpoint",
            path.display()
        )
    })?;
    let v = model.config.vocab_size;
    let tok_path = match tokenizer {
        Some(p) => p.to_path_buf(),
        None => [format!("tok{v}.bin"), "tokenizer.bin".into()]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "no tok{v}.bin or tokenizer.bin next to {}; pass --tokenizer",
                    path.display()
                )
            })?,
    };
    let tokenizer =
        Llama2Tokenizer::from_file(&tok_path, v).with_context(|| format!("loading {}", tok_path.display()))?;
    Ok(AnyModel::Llama2 { model, tokenizer })
}

pub fn find_itera_tokenizer(dir: &Path, named: Option<&str>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = named
        .into_iter()
        .map(|n| dir.join(n))
        .chain([dir.join("tokenizer.json")])
        .collect();
    match candidates.iter().find(|p| p.exists()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "no tokenizer found (looked for {}); pass --tokenizer FILE",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
