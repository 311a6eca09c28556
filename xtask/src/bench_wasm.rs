//! `cargo xtask bench --wasm`: the playground's wasm decode speed against native CPU, same
//! models (weights/manifest.json), same engine code (`itera-web`), same greedy 256-token generations, in one run.
//! The wasm runs in Node's V8 (the engine inside Chromium), built exactly as for the page;
//! native runs before and after it and keeps its best round, so drift on a shared machine
//! cannot flatter the ratio.

use std::time::Instant;

use anyhow::{Context, Result};
use itera_web::engine::{Engine, GenerateRequest};
use serde::Serialize;

const TOKENS: usize = 256;
const ROUNDS: usize = 3;

#[derive(Serialize)]
pub struct WasmRecord {
    model: String,
    native_tokens_per_s: f64,
    wasm_tokens_per_s: f64,
    wasm_vs_native: f64,
}

fn native_speeds(engines: &mut [Engine], best: &mut [f64]) -> Result<()> {
    let req: GenerateRequest = serde_json::from_value(serde_json::json!({
        "prompt": "Once upon a time", "max_tokens": TOKENS, "stop_at_end_of_text": false
    }))?;
    for _ in 0..ROUNDS {
        for (e, best) in engines.iter_mut().zip(best.iter_mut()) {
            e.start(&req)?;
            let t = Instant::now();
            let mut n = 0;
            loop {
                let out = e.step(16)?;
                n += out.tokens.len();
                if out.done {
                    break;
                }
            }
            *best = best.max(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

pub fn run() -> Result<Vec<WasmRecord>> {
    let root = crate::project_root();
    let pkg = crate::web::build_dir().join("node");
    crate::web::build_wasm("nodejs", &pkg)?;
    let pkg_str = pkg.to_str().context("UTF-8 path")?;
    let weights = root.join("weights");
    let tokenizer = std::fs::read(weights.join("tokenizer.json"))?;
    let models = crate::manifest::keys(&crate::manifest::shipped()?);
    let mut engines = models
        .iter()
        .map(|m| {
            Engine::load(&std::fs::read(weights.join(format!("{m}.safetensors")))?, &tokenizer).map_err(Into::into)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut native = vec![0.0; models.len()];
    eprintln!("native decode ({ROUNDS} rounds)…");
    native_speeds(&mut engines, &mut native)?;
    eprintln!("wasm decode in node ({ROUNDS} rounds)…");
    let mut args = vec![
        "tests/bench/wasm-decode.cjs".to_string(),
        pkg_str.to_string(),
        weights.to_str().context("UTF-8 path")?.to_string(),
        TOKENS.to_string(),
        ROUNDS.to_string(),
    ];
    args.extend(models.iter().cloned());
    let out = std::process::Command::new("node")
        .args(&args)
        .current_dir(&root)
        .output()
        .context("running node")?;
    anyhow::ensure!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    eprintln!("native decode again…");
    native_speeds(&mut engines, &mut native)?;
    let records: Vec<WasmRecord> = models
        .into_iter()
        .zip(native)
        .map(|(model, native)| {
            let wasm = wasm.get(&model).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            WasmRecord {
                model,
                native_tokens_per_s: native,
                wasm_tokens_per_s: wasm,
                wasm_vs_native: wasm / native,
            }
        })
        .collect();
    println!(
        "\n{:<18} {:>14} {:>14} {:>8}",
        "model", "native tok/s", "wasm tok/s", "ratio"
    );
    for r in &records {
        println!(
            "{:<18} {:>14.0} {:>14.0} {:>8.2}",
            r.model, r.native_tokens_per_s, r.wasm_tokens_per_s, r.wasm_vs_native
        );
    }
    Ok(records)
}
