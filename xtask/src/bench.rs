//! `cargo xtask bench`: single-thread decode speed of the `tiny` and `15m` configs in every
//! precision, at context positions 100 and 4000, the sampler's cost per token, plus the
//! llama2.c teacher. Prints a table
//! and writes JSON records {config, precision, backend, threads, position, tokens_per_s, …}.
//! Ratios in the table come from the same run, so they survive a noisy shared machine.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use itera_core::llama2c::{Llama2, BOS};
use itera_core::model::{decode_step, prefill, State};
use itera_core::rng::Pcg32;
use itera_core::sampling::{argmax, Sampler, SamplingSettings};
use itera_core::{Config, Precision, Weights};
use serde::Serialize;

use crate::run::Backend;

#[derive(Args)]
pub struct BenchArgs {
    /// Also write the records as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A seconds-long smoke run (small config, short contexts) for CI.
    #[arg(long)]
    quick: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: Backend,
    /// Instead: the playground's wasm (in Node's V8) vs native CPU on the shipped models.
    #[arg(long)]
    wasm: bool,
    /// Instead: fine-tuning in the page (headless Chromium: 1 and N CPU workers, WebGPU) vs
    /// native training on 1 and N threads, the same job, in one run.
    #[arg(long)]
    train_wasm: bool,
    /// Comma-separated presets to measure (default: tiny,15m; with --quick: micro).
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
}

#[derive(Serialize)]
struct Record {
    kind: &'static str,
    config: String,
    precision: String,
    backend: &'static str,
    threads: usize,
    position: usize,
    tokens_per_s: f64,
    params: usize,
    active_params: usize,
    weight_bytes: usize,
    /// `kernels::kernel_set()`: which CPU kernels ran.
    kernels: &'static str,
}

/// Decode tokens/s of every model in `models` after prefills to each of `positions`
/// (result `[model][position]`). All (model, position) states are timed in turn, in `ROUNDS`
/// rounds of `steps` tokens, keeping each state's best round: interleaving makes the ratios
/// between precisions and positions immune to slow drifts in the load of a shared machine.
/// Each token is fed back greedily as in generation.
pub(crate) fn decode_speeds(models: &[Weights], positions: &[usize], steps: usize) -> Result<Vec<Vec<f64>>> {
    const ROUNDS: usize = 7;
    let mut runs = Vec::new();
    for (m, w) in models.iter().enumerate() {
        for &position in positions {
            let mut rng = Pcg32::new(1);
            let prompt: Vec<u32> = (0..position).map(|_| rng.below(w.config.vocab_size as u32)).collect();
            let mut st = State::new(w);
            let token = argmax(prefill(w, &prompt, &mut st)?);
            runs.push((m, st, token, 0.0f64));
        }
    }
    for _ in 0..ROUNDS {
        for (m, st, token, best) in runs.iter_mut() {
            let w = &models[*m];
            let start = Instant::now();
            for _ in 0..steps {
                *token = argmax(decode_step(w, st, *token)?);
            }
            *best = best.max(steps as f64 / start.elapsed().as_secs_f64());
        }
    }
    Ok(runs
        .chunks(positions.len())
        .map(|c| c.iter().map(|r| r.3).collect())
        .collect())
}

fn teacher_speed(model: &Llama2) -> Result<f64> {
    let steps = 256.min(model.config.seq_len);
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mut st = model.new_state();
        let mut token = BOS;
        let start = Instant::now();
        for _ in 0..steps {
            token = argmax(model.forward(&mut st, token)?);
        }
        best = best.max(steps as f64 / start.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Writes the records as JSON to `path`, when one was given.
/// Tokens sampled per second from the logits `w` gives after a few tokens (its whole
/// vocabulary), for each `settings`: the sampler alone, as every generated token pays it.
fn sampler_speeds(w: &Weights, settings: &[SamplingSettings]) -> Result<Vec<f64>> {
    let mut st = State::new(w);
    let mut logits = Vec::new();
    for token in [0, 13, 250, 7] {
        logits = decode_step(w, &mut st, token)?.to_vec();
    }
    let mut best = vec![0.0f64; settings.len()];
    for _ in 0..5 {
        for (s, best) in settings.iter().zip(best.iter_mut()) {
            let mut sampler = Sampler::new(*s)?;
            let n = 2000;
            let t = Instant::now();
            let mut sum = 0u64;
            for position in 0..n {
                sum += u64::from(sampler.sample(&logits, position));
            }
            std::hint::black_box(sum);
            *best = best.max(f64::from(n) / t.elapsed().as_secs_f64());
        }
    }
    Ok(best)
}

fn write_json(path: Option<&std::path::Path>, records: &impl Serialize) -> Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(records)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.train_wasm {
        return write_json(a.json.as_deref(), &crate::bench_train::run()?);
    }
    if a.wasm {
        return write_json(a.json.as_deref(), &crate::bench_wasm::run()?);
    }
    let (defaults, positions, steps): (&[&str], [usize; 2], usize) = if a.quick {
        (&["micro"], [100, 300], 4)
    } else {
        (&["tiny", "15m"], [100, 4000], 32)
    };
    let configs: Vec<String> = if a.configs.is_empty() {
        defaults.iter().map(|s| s.to_string()).collect()
    } else {
        a.configs
    };
    if a.backend == Backend::Gpu {
        let (tokens, train) = if a.quick {
            (8, (2, 32, 2))
        } else {
            (steps * 2, (8, 256, 5))
        };
        return write_json(a.json.as_deref(), &crate::bench_gpu::run(&configs, tokens, train)?);
    }
    let mut records = Vec::new();
    for name in &configs {
        let config = Config::preset(name)?;
        let base = Weights::init_random(&config, 0)?;
        let models: Vec<Weights> = Precision::ALL.iter().map(|&p| base.to_precision(p)).collect();
        let speeds = decode_speeds(&models, &positions, steps)?;
        for (w, speeds) in models.iter().zip(speeds) {
            for (&position, tokens_per_s) in positions.iter().zip(speeds) {
                eprintln!(
                    "  {name:>5} {} @ {position:>4}: {tokens_per_s:8.1} tokens/s",
                    w.precision
                );
                records.push(Record {
                    kind: "decode",
                    config: name.clone(),
                    precision: w.precision.to_string(),
                    backend: "cpu",
                    threads: 1,
                    position,
                    tokens_per_s,
                    params: w.table.total_params(),
                    active_params: w.table.active_params(&w.config),
                    weight_bytes: w.size_bytes(),
                    kernels: itera_core::kernels::kernel_set(),
                });
            }
        }
    }
    // The sampler on the default shipped model's logits, greedy to top-k + top-p.
    let manifest = crate::manifest::shipped()?;
    let default = crate::manifest::default_key(&manifest)?;
    let vocab_model =
        itera_core::format::load_file(&crate::project_root().join(format!("weights/{default}.safetensors")))?;
    let sampled = |temperature, top_k, top_p| SamplingSettings {
        temperature,
        top_k,
        top_p,
        seed: 1,
    };
    let settings = [
        ("greedy", SamplingSettings::greedy()),
        ("T 0.8, top-p 0.9 (default)", SamplingSettings::default()),
        ("T 1, top-k 40, top-p 0.95", sampled(1.0, 40, 0.95)),
        ("T 1, no limits", sampled(1.0, 0, 1.0)),
    ];
    let speeds = sampler_speeds(&vocab_model, &settings.map(|s| s.1))?;
    for ((label, _), samples_per_s) in settings.iter().zip(speeds) {
        eprintln!("  sampler, {label}: {:.1} µs a token", 1e6 / samples_per_s);
        records.push(Record {
            kind: "sample",
            config: label.to_string(),
            precision: "-".into(),
            backend: "cpu",
            threads: 1,
            position: 0,
            tokens_per_s: samples_per_s,
            params: vocab_model.config.vocab_size,
            active_params: 0,
            weight_bytes: 0,
            kernels: itera_core::kernels::kernel_set(),
        });
    }
    match crate::shared_data()
        .map(|d| d.join("teacher/stories260K.bin"))
        .filter(|p| p.exists())
    {
        Some(path) => {
            let model = Llama2::from_file(&path)?;
            let tokens_per_s = teacher_speed(&model)?;
            records.push(Record {
                kind: "teacher",
                config: "stories260K".into(),
                precision: "f32".into(),
                backend: "cpu",
                threads: 1,
                position: 128,
                tokens_per_s,
                params: model.param_count(),
                active_params: model.param_count(),
                weight_bytes: model.param_count() * 4,
                kernels: itera_core::kernels::kernel_set(),
            });
        }
        None => {
            eprintln!("teacher benchmark skipped: ../shared/data/teacher/stories260K.bin is absent")
        }
    }
    print_table(&records, positions);
    write_json(a.json.as_deref(), &records)
}

fn print_table(records: &[Record], [near, far]: [usize; 2]) {
    let find = |kind: &str, config: &str, precision: &str, position: usize| {
        records
            .iter()
            .find(|r| r.kind == kind && r.config == config && r.precision == precision && r.position == position)
            .map_or(f64::NAN, |r| r.tokens_per_s)
    };
    println!();
    println!(
        "{:<12} {:<5} {:>9} {:>12} {:>12} {:>9} {:>11}",
        "config",
        "prec",
        "params",
        "weights MB",
        "tokens/s",
        "× f32",
        format!("@{far}/@{near}")
    );
    for r in records.iter().filter(|r| r.kind == "decode" && r.position == near) {
        let f32_speed = find("decode", &r.config, "f32", near);
        let far_speed = find("decode", &r.config, &r.precision, far);
        println!(
            "{:<12} {:<5} {:>9} {:>12.2} {:>12.1} {:>9.2} {:>11.3}",
            r.config,
            r.precision,
            r.params,
            r.weight_bytes as f64 / 1e6,
            r.tokens_per_s,
            r.tokens_per_s / f32_speed,
            far_speed / r.tokens_per_s
        );
    }
    for r in records.iter().filter(|r| r.kind == "teacher") {
        println!(
            "{:<12} {:<5} {:>9} {:>12.2} {:>12.1}   (llama2.c teacher, positions 0..256)",
            r.config,
            r.precision,
            r.params,
            r.weight_bytes as f64 / 1e6,
            r.tokens_per_s
        );
    }
    println!(
        "(single thread, CPU: {}; tokens/s at position {near}; last column: speed at {far} ÷ speed at {near})",
        itera_core::kernels::kernel_set()
    );
    for r in records.iter().filter(|r| r.kind == "sample") {
        println!(
            "sampler over {} logits, {:<28} {:>8.1} µs a token",
            r.params,
            r.config,
            1e6 / r.tokens_per_s
        );
    }
}
