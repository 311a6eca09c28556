//! `cargo xtask bench --train-wasm`: fine-tuning speed in the page against native training,
//! in one run. The same job each time — itera-tiny q8 on the sample stories, the page's
//! 8 × 64-token batches, one shard per CPU worker — natively on 1 and N threads (before and
//! after the browser, best kept) and in headless Chromium on 1 and N CPU workers and on
//! WebGPU, through the Benchmarks tab's "Run training benchmark" (tests/bench/train-tab.mjs).

use std::time::Instant;

use anyhow::{Context, Result};
use itera_core::train::{Budget, CpuStep, TrainSpec};
use itera_web::page_job::{PageJob, Source};
use serde::Serialize;
use serde_json::Value;

/// Timed steps per measurement, after one warm-up step.
const STEPS: usize = 6;
/// The page's largest pool (fine-tune.js `MAX_WORKERS`).
const MAX_WORKERS: usize = 8;

#[derive(Serialize)]
pub struct TrainBench {
    pub workers: usize,
    pub native_1_thread: f64,
    pub native_n_threads: f64,
    pub tab_1_worker: f64,
    pub tab_n_workers: f64,
    pub tab_webgpu: Option<f64>,
    pub tab_webgpu_adapter: Option<String>,
    /// The first step's loss on 1 and N workers: equal bits (the same maths).
    pub tab_first_losses: Vec<f64>,
    pub tab_rows: Vec<Value>,
}

/// Tokens/s of the page's fine-tune job natively on `threads` threads, `shards` shards.
fn native(shards: usize, threads: usize) -> Result<f64> {
    let root = crate::project_root();
    let base = std::fs::read(root.join("weights/itera-tiny-q8.safetensors"))?;
    let tok = std::fs::read(root.join("weights/tokenizer.json"))?;
    let text = std::fs::read(root.join("web/finetune-stories.txt"))?;
    let spec = TrainSpec {
        steps: STEPS + 2,
        warmup: 1,
        eval_every: 1_000_000,
        checkpoint_every: 1_000_000,
        shards,
        ..TrainSpec::FINE_TUNE
    };
    let sources = [Source {
        name: "finetune-stories.txt",
        bytes: &text,
    }];
    let start = Instant::now();
    let clock = Box::new(move || start.elapsed().as_secs_f64());
    let mut t = PageJob::fine_tune(&base, &tok, &sources, spec.clone(), "itera-tiny-q8", clock)?;
    let mut cpu = CpuStep::new(&t.job.state().weights, spec.step_config(), threads);
    let mut step = |n| pollster::block_on(t.job.advance(&mut cpu, Budget::steps(n), &mut |_| Ok(())));
    step(1)?;
    let t0 = Instant::now();
    step(STEPS)?;
    Ok((STEPS * spec.tokens_per_step()) as f64 / t0.elapsed().as_secs_f64())
}

pub fn run() -> Result<TrainBench> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = cores.clamp(1, MAX_WORKERS.min(TrainSpec::FINE_TUNE.batch));
    crate::web::build()?;
    eprintln!("native training, 1 and {n} threads…");
    let mut best = [native(n, 1)?, native(n, n)?];
    eprintln!("in the page (headless Chromium): 1 and {n} CPU workers, WebGPU…");
    let server = crate::web::Server::start(None)?;
    let out = std::process::Command::new("node")
        .args(["tests/bench/train-tab.mjs", &server.url])
        .current_dir(crate::project_root())
        .output()
        .context("running node")?;
    drop(server);
    anyhow::ensure!(
        out.status.success(),
        "the page's training benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).context("the page's benchmark rows")?;
    eprintln!("native training again…");
    best[0] = best[0].max(native(n, 1)?);
    best[1] = best[1].max(native(n, n)?);
    let cpu = |workers: usize| {
        rows.iter()
            .find(|r| r["backend"] == "cpu" && r["workers"] == workers)
            .and_then(|r| r["tokensPerSecond"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let gpu = rows.iter().find(|r| r["backend"] == "webgpu");
    let bench = TrainBench {
        workers: n,
        native_1_thread: best[0],
        native_n_threads: best[1],
        tab_1_worker: cpu(1),
        tab_n_workers: cpu(n),
        tab_webgpu: gpu.and_then(|r| r["tokensPerSecond"].as_f64()),
        tab_webgpu_adapter: gpu.and_then(|r| r["adapter"].as_str().or(r["error"].as_str()).map(String::from)),
        tab_first_losses: rows
            .iter()
            .filter(|r| r["backend"] == "cpu")
            .filter_map(|r| r["firstLoss"].as_f64())
            .collect(),
        tab_rows: rows,
    };
    let b = &bench;
    println!("\nfine-tuning itera-tiny q8, 8 × 64 tokens per step, {n} shards (tokens/s)");
    println!("{:<26} {:>10} {:>16}", "", "tokens/s", "ratio");
    println!("{:<26} {:>10.0}", "native, 1 thread", b.native_1_thread);
    println!(
        "{:<26} {:>10.0} {:>16}",
        format!("native, {n} threads"),
        b.native_n_threads,
        format!("{:.2}× 1 thread", b.native_n_threads / b.native_1_thread)
    );
    println!(
        "{:<26} {:>10.0} {:>16}",
        "page, 1 CPU worker",
        b.tab_1_worker,
        format!("{:.2}× native 1", b.tab_1_worker / b.native_1_thread)
    );
    println!(
        "{:<26} {:>10.0} {:>16}",
        format!("page, {n} CPU workers"),
        b.tab_n_workers,
        format!("{:.2}× 1 worker", b.tab_n_workers / b.tab_1_worker)
    );
    match b.tab_webgpu {
        Some(g) => println!(
            "{:<26} {:>10.1}   ({})",
            "page, WebGPU",
            g,
            b.tab_webgpu_adapter.as_deref().unwrap_or("")
        ),
        None => println!(
            "page, WebGPU: {}",
            b.tab_webgpu_adapter.as_deref().unwrap_or("unavailable")
        ),
    }
    let same = b.tab_first_losses.windows(2).all(|w| w[0].to_bits() == w[1].to_bits());
    println!(
        "first step's loss on 1 and {n} workers: {:?} ({})",
        b.tab_first_losses,
        if same { "equal bits" } else { "DIFFERENT" }
    );
    Ok(bench)
}
