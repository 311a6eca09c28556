//! `weights/manifest.json`: the shipped models as the page, the tests and the benchmarks read
//! them — each model's family, variants (every precision and the mixed `auto` files) with
//! their files, sizes and held-out bits per byte,
//! FLOPs and decoding state per token, the shared tokenizer, and the default model; the
//! Transformer baselines under `baselines` (the page does not run that family yet). Built
//! from the model cards (`NAME.json`, written by `xtask export`, which rebuilds the manifest
//! after writing its card), never by hand.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

pub const FILE: &str = "manifest.json";

#[derive(Args)]
pub struct ManifestArgs {
    /// The folder of exported models.
    #[arg(long, default_value = "weights")]
    dir: std::path::PathBuf,
    /// The model the page opens with, as NAME-PRECISION (default: the manifest's current one,
    /// else the first model's q8).
    #[arg(long)]
    default: Option<String>,
}

pub fn run(a: ManifestArgs) -> Result<()> {
    let m = rebuild(&a.dir, a.default.as_deref())?;
    eprintln!(
        "wrote {} ({} models, default {})",
        a.dir.join(FILE).display(),
        m["models"].as_array().map_or(0, Vec::len),
        m["default"]
    );
    Ok(())
}

/// `build`, written to `dir`/manifest.json; returns it.
pub fn rebuild(dir: &Path, default: Option<&str>) -> Result<Value> {
    let manifest = build(dir, default)?;
    std::fs::write(dir.join(FILE), serde_json::to_string_pretty(&manifest)? + "\n")?;
    Ok(manifest)
}

/// The manifest of the cards in `dir`: the models in the current manifest's order (new ones
/// after, by name), each checked against its files.
pub fn build(dir: &Path, default: Option<&str>) -> Result<Value> {
    let path = dir.join(FILE);
    let current: Option<Value> = match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?),
        Err(_) => None,
    };
    let order: Vec<String> = current
        .as_ref()
        .and_then(|m| m["models"].as_array())
        .map(|ms| ms.iter().filter_map(|m| m["name"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let mut cards = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "json") && p.file_name().is_some_and(|n| n != FILE) {
            let card: Value = serde_json::from_str(&std::fs::read_to_string(&p)?)
                .with_context(|| format!("reading the model card {}", p.display()))?;
            if card["precisions"].is_array() {
                cards.push(card);
            }
        }
    }
    let rank = |c: &Value| {
        let name = c["name"].as_str().unwrap_or_default();
        (
            order.iter().position(|n| n == name).unwrap_or(usize::MAX),
            name.to_string(),
        )
    };
    cards.sort_by_key(rank);
    let entries: Vec<Value> = cards.iter().map(|c| model_entry(dir, c)).collect::<Result<_>>()?;
    // The page runs the itera family; the Transformer baselines are listed apart until it
    // runs them too (`compare-arch` and the CLI read both).
    let (models, baselines): (Vec<Value>, Vec<Value>) = entries.into_iter().partition(|m| m["family"] == "itera");
    let keys = keys(&json!({ "models": models }));
    let first_q8 = keys.iter().find(|k| k.ends_with("-q8")).or(keys.first());
    let wanted = default.or_else(|| current.as_ref().and_then(|m| m["default"].as_str()));
    let default = match wanted {
        Some(k) if keys.iter().any(|x| x == k) => json!(k),
        Some(k) if default.is_some() => bail!("--default {k}: not one of {}", keys.join(", ")),
        // A folder of baselines alone has no model for the page to open.
        _ if models.is_empty() && !baselines.is_empty() => Value::Null,
        _ => json!(first_q8.context("no model cards (NAME.json with precisions) in the folder")?),
    };
    Ok(json!({
        "about": "The shipped models, written by `cargo xtask export` / `cargo xtask manifest` from the model cards.",
        "default": default,
        "tokenizer": "tokenizer.json",
        // Every precision a model file may have (the core's list): the page reads it from here.
        "precisions": itera_core::Precision::ALL.map(|p| p.as_str()),
        "models": models,
        "baselines": baselines,
    }))
}

/// One model: what the picker shows and the files it loads, checked against the folder.
fn model_entry(dir: &Path, card: &Value) -> Result<Value> {
    let name = card["name"].as_str().context("a model card without a name")?;
    let mut precisions = Vec::new();
    for v in card["precisions"].as_array().into_iter().flatten() {
        let (precision, file) = (v["precision"].as_str(), v["file"].as_str());
        let (Some(precision), Some(file)) = (precision, file) else {
            bail!("{name}.json: a precision without its name or file");
        };
        // A uniform file's variant is its precision (cards before mixed variants say only that).
        let variant = v["variant"].as_str().unwrap_or(precision);
        let bytes = std::fs::metadata(dir.join(file))
            .with_context(|| format!("{name}.json names {file}, which is not in {}", dir.display()))?
            .len();
        if Some(bytes) != v["bytes"].as_u64() {
            bail!(
                "{file} is {bytes} bytes but {name}.json says {}: export it again",
                v["bytes"]
            );
        }
        precisions.push(json!({
            "key": format!("{name}-{variant}"),
            "variant": variant,
            "precision": precision,
            // The file's precisions in one line ("q3 · 14 q4 · 2 q8"), and a mixed variant's
            // bound (percent of f32's bits per byte; null for a uniform file).
            "summary": v["summary"].as_str().unwrap_or(precision),
            "bound_bpb_change_pct": v["bound_bpb_change_pct"],
            "file": file,
            "bytes": bytes,
            "bits_per_byte": v["bits_per_byte"],
        }));
    }
    // Cards written before families existed are itera models.
    let family: itera_core::Family = card["family"].as_str().unwrap_or("itera").parse()?;
    let config = card["config"].to_string();
    let per_token = match family {
        itera_core::Family::Itera => {
            crate::export::token_costs::<itera_core::Itera>(&itera_core::Config::from_json(&config)?)
        }
        itera_core::Family::Transformer => crate::export::token_costs::<itera_core::Transformer>(
            &itera_core::transformer::TransformerConfig::from_json(&config)?,
        ),
    };
    Ok(json!({
        "name": name,
        "family": family,
        "card": format!("{name}.md"),
        "parameters": card["parameters"],
        // FLOPs and decoding state per token at a few context lengths (from the config).
        "per_token": per_token,
        "precisions": precisions,
    }))
}

/// weights/manifest.json as shipped.
pub fn shipped() -> Result<Value> {
    let path = crate::project_root().join("weights").join(FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

/// Every model key of a manifest (NAME-PRECISION), in order.
pub fn keys(m: &Value) -> Vec<String> {
    m["models"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["precisions"].as_array().into_iter().flatten())
        .filter_map(|p| p["key"].as_str().map(String::from))
        .collect()
}

/// The default model's key.
pub fn default_key(m: &Value) -> Result<String> {
    m["default"]
        .as_str()
        .map(String::from)
        .context("the manifest names no default")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_manifest_is_what_the_cards_and_files_give() {
        let dir = crate::project_root().join("weights");
        assert_eq!(
            shipped().unwrap(),
            build(&dir, None).unwrap(),
            "run `cargo xtask manifest` after changing weights/"
        );
        let m = shipped().unwrap();
        assert!(keys(&m).contains(&default_key(&m).unwrap()));
        let variants = itera_core::Precision::ALL.len() + 3;
        assert_eq!(
            keys(&m).len(),
            2 * variants,
            "two models in every precision, two mixed variants and a pruned one"
        );
    }
}
