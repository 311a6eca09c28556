//! The variants `xtask export` writes beside one file per precision: mixed-precision files
//! (`autoB`, the smallest per-matrix choice within a BPB bound, `convert --precision auto`) and
//! pruned ones (`keepK-q4`: K experts per MoE layer, healed by a short fine-tune, in q4;
//! `xtask prune`), both chosen on a calibration text apart from the card's held-out text.

use std::path::PathBuf;

use anyhow::{bail, Result};
use itera_core::lm::AnyWeights;
use itera_core::sensitivity::Bound;
use itera_core::tokenizer::Tokenizer;
use itera_core::{format, Architecture, Precision, Weights};

use crate::prune::{prune_and_heal, Heal};
use crate::sensitivity::{auto_variant, calibration_probe, search_table};

/// The precision a pruned variant ships in: the smallest uniform one within 1 % of f32's BPB on
/// the shipped models, so the variant shows what removing experts adds to it.
pub const PRUNED_PRECISION: Precision = Precision::Q4;

/// A variant's file before it is measured.
pub struct Written {
    /// What follows the model's name in the file and the key.
    pub name: String,
    /// A mixed variant's bound, percent of f32's bits per byte on the calibration text.
    pub bound: Option<f64>,
    /// What the precisions alone do not say (a pruned variant's experts).
    pub note: Option<String>,
    pub bytes: Vec<u8>,
}

/// What to make besides the uniform precisions.
pub struct Request<'a> {
    pub auto: &'a [f64],
    pub prune: &'a [usize],
    pub calibration: &'a [PathBuf],
    pub heal_steps: usize,
    pub heal_text: &'a [PathBuf],
}

/// The mixed and pruned variants of the f32 model `base`, and the calibration they were chosen
/// on ("valid.txt (4064 positions)"; empty when there are none).
pub fn mixed_and_pruned<A: Architecture>(
    base: &Weights<A>,
    tokenizer: &Tokenizer,
    r: &Request,
) -> Result<(Vec<Written>, String)> {
    if r.auto.is_empty() && r.prune.is_empty() {
        return Ok((Vec::new(), String::new()));
    }
    let any = AnyWeights::load(&format::save(base)?)?;
    let probe = calibration_probe(tokenizer, r.calibration, 4096)?;
    let names: Vec<String> = r
        .calibration
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    let searched_on = format!("{} ({} positions)", names.join(", "), probe.positions());
    let mut out = Vec::new();
    if !r.auto.is_empty() {
        let table = search_table(&any, &probe)?;
        for &pct in r.auto {
            let bound = Bound::DeltaBitsPerByte(pct / 100.0 * table.f32_bits_per_byte);
            let (w, _) = auto_variant(&any, &probe, &table, bound)?;
            out.push(Written {
                name: format!("auto{pct}"),
                bound: Some(pct),
                note: None,
                bytes: w.save()?,
            });
        }
    }
    for &keep in r.prune {
        let Some(itera) = any.as_itera() else {
            bail!("--prune {keep}: a {} model has no experts to prune", A::FAMILY);
        };
        let heal = Heal {
            steps: r.heal_steps,
            texts: r.heal_text,
        };
        let p = prune_and_heal(itera, tokenizer, &probe, keep, Some(heal))?;
        let healed = if p.healed.is_some() { " (healed)" } else { "" };
        let w = p.healed.unwrap_or(p.pruned).to_precision(PRUNED_PRECISION);
        out.push(Written {
            name: format!("keep{keep}-{PRUNED_PRECISION}"),
            bound: None,
            note: Some(format!("{keep} of {} experts{healed}", itera.config.n_experts)),
            bytes: format::save(&w)?,
        });
    }
    Ok((out, searched_on))
}
