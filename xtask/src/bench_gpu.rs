//! `cargo xtask bench --backend gpu`: decode on the wgpu backend against the CPU in the same
//! run, per config and precision — tokens/s with one token per submission and with
//! `MULTI` tokens per submission, the structural counters per token after warm-up
//! (submissions, read-backs, bytes read back, resources created), and per-kernel GPU time of
//! one decode step where the adapter has timestamp queries — and training: tokens/s of the
//! GPU training step against the CPU trainer on all cores, same batch. Runs unchanged on
//! lavapipe and on a real GPU.

use std::rc::Rc;
use std::time::Instant;

use anyhow::Result;
use itera_core::gpu::model::GpuModel;
use itera_core::gpu::profile::profile_step;
use itera_core::gpu::train::GpuStep;
use itera_core::gpu::{CounterSnapshot, Gpu};
use itera_core::rng::Pcg32;
use itera_core::train::{sample_batch, CpuStep, StepBackend, TrainSpec, TrainState};
use itera_core::{Config, Precision, Weights};
use pollster::block_on;
use serde::Serialize;

/// Tokens per submission in multi-token mode.
const MULTI: usize = 16;
/// Context position the decode speed is measured at.
const POSITION: usize = 100;
/// Prompt length of the prefill measurement: two batched chunks and one forced step.
const PREFILL: usize = 129;

#[derive(Serialize)]
pub struct GpuRecord {
    kind: &'static str,
    config: String,
    precision: String,
    backend: &'static str,
    adapter: String,
    position: usize,
    tokens_per_s: f64,
    tokens_per_s_multi: f64,
    tokens_per_submission_multi: usize,
    cpu_tokens_per_s: f64,
    /// A PREFILL-token prompt: batched (64 tokens per submission) and as forced decode steps.
    prefill_tokens_per_s: f64,
    prefill_stepwise_tokens_per_s: f64,
    dispatches_per_token: usize,
    submissions_per_token: f64,
    readbacks_per_token: f64,
    readback_bytes_per_token: f64,
    submissions_per_token_multi: f64,
    readbacks_per_token_multi: f64,
    resources_created_after_warmup: u64,
    kernel_times_us: Option<Vec<(String, f64)>>,
}

/// One training measurement: a batch of `batch` × `seq_len` tokens per step.
#[derive(Serialize)]
pub struct TrainRecord {
    kind: &'static str,
    config: String,
    adapter: String,
    batch: usize,
    seq_len: usize,
    steps: usize,
    micro_batches: usize,
    dispatches_per_step: usize,
    tokens_per_s: f64,
    cpu_threads: usize,
    cpu_tokens_per_s: f64,
}

#[derive(Serialize)]
pub struct GpuBench {
    pub decode: Vec<GpuRecord>,
    pub train: Vec<TrainRecord>,
}

/// Training tokens/s of `config` on the GPU and on the CPU (all cores), each through the
/// training job's step interface after one warm-up step, on the same random-token batches.
fn train_speed(gpu: &Rc<Gpu>, name: &str, (batch, seq_len, steps): (usize, usize, usize)) -> Result<TrainRecord> {
    let config = Config::preset(name)?;
    let w = Weights::init_random(&config, 0)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = TrainSpec {
        batch,
        seq_len,
        shards: threads.min(batch),
        ..TrainSpec::DEFAULT
    };
    let cfg = spec.step_config();
    let mut rng = Pcg32::new(2);
    let stream: Vec<u32> = (0..batch * seq_len * 4)
        .map(|_| rng.below(config.vocab_size as u32))
        .collect();
    let batches: Vec<Vec<u32>> = (0..=steps)
        .map(|_| sample_batch(&stream, batch, seq_len, &mut rng))
        .collect::<itera_core::Result<_>>()?;
    fn speed<B: StepBackend>(b: &mut B, w: &Weights, batches: &[Vec<u32>], tokens: usize) -> Result<f64> {
        let mut state = TrainState::new(w, 0.1);
        pollster::block_on(b.step(&mut state, &batches[0], 1e-3, None))?;
        let start = Instant::now();
        for tokens in &batches[1..] {
            pollster::block_on(b.step(&mut state, tokens, 1e-3, None))?;
        }
        Ok(((batches.len() - 1) * tokens) as f64 / start.elapsed().as_secs_f64())
    }
    let mut on_gpu = GpuStep::new(gpu.clone(), &TrainState::new(&w, 0.1), cfg, None)?;
    let gpu_speed = speed(&mut on_gpu, &w, &batches, batch * seq_len)?;
    let cpu_speed = speed(&mut CpuStep::new(&w, cfg, threads), &w, &batches, batch * seq_len)?;
    eprintln!(
        "  {name:>5} training {batch}×{seq_len}: GPU {gpu_speed:8.1} tokens/s, CPU ({threads} threads) {cpu_speed:8.1}"
    );
    Ok(TrainRecord {
        kind: "train",
        config: name.to_string(),
        adapter: gpu.describe(),
        batch,
        seq_len,
        steps,
        micro_batches: on_gpu.trainer.micro,
        dispatches_per_step: on_gpu.trainer.dispatches_per_step(),
        tokens_per_s: gpu_speed,
        cpu_threads: threads,
        cpu_tokens_per_s: cpu_speed,
    })
}

fn per_token(c: CounterSnapshot, tokens: usize) -> (f64, f64, f64) {
    let n = tokens as f64;
    (
        c.submissions as f64 / n,
        c.readbacks as f64 / n,
        c.readback_bytes as f64 / n,
    )
}

/// Greedy decode of `tokens` tokens, `k` per submission; returns tokens/s and the counters.
fn timed(gpu: &Gpu, m: &mut GpuModel, last: &mut u32, tokens: usize, k: usize) -> Result<(f64, CounterSnapshot)> {
    let before = gpu.counters();
    let start = Instant::now();
    let mut done = 0;
    while done < tokens {
        let out = block_on(m.generate(gpu, *last, k.min(tokens - done), false))?;
        *last = *out.tokens.last().expect("k ≥ 1 tokens");
        done += out.tokens.len();
    }
    Ok((tokens as f64 / start.elapsed().as_secs_f64(), gpu.counters() - before))
}

/// Decode speeds and counters (`tokens` per measurement), then training speeds with batches
/// of `train` = (sequences, length, timed steps).
pub fn run(configs: &[String], tokens: usize, train: (usize, usize, usize)) -> Result<GpuBench> {
    let gpu = Rc::new(Gpu::new_blocking()?);
    let adapter = gpu.describe();
    eprintln!("GPU: {adapter}");
    let mut records = Vec::new();
    for name in configs {
        let config = Config::preset(name)?;
        let base = Weights::init_random(&config, 0)?;
        for precision in Precision::ALL {
            let w = base.to_precision(precision);
            let mut rng = Pcg32::new(1);
            let prompt: Vec<u32> = (0..POSITION).map(|_| rng.below(config.vocab_size as u32)).collect();
            let mut m = GpuModel::new(&gpu, &w)?;
            let mut last = block_on(m.prefill(&gpu, &prompt, false))?.tokens[0];
            // Warm-up: both modes once (pipelines, first binds, driver caches).
            timed(&gpu, &mut m, &mut last, 2, 1)?;
            timed(&gpu, &mut m, &mut last, MULTI, MULTI)?;
            let created_before = gpu.counters().resources;
            let (single, c1) = timed(&gpu, &mut m, &mut last, tokens, 1)?;
            let (multi, cm) = timed(&gpu, &mut m, &mut last, tokens.max(MULTI), MULTI)?;
            let created = gpu.counters().resources - created_before;
            let kernel_times = block_on(profile_step(&gpu, &mut m, last))?
                .map(|t| t.into_iter().map(|(k, s)| (k.to_string(), s * 1e6)).collect());
            let long: Vec<u32> = (0..PREFILL).map(|_| rng.below(config.vocab_size as u32)).collect();
            let mut prefill = |batched: bool| -> Result<f64> {
                m.reset();
                let start = Instant::now();
                block_on(m.prefill_with(&gpu, &long, false, batched))?;
                Ok(PREFILL as f64 / start.elapsed().as_secs_f64())
            };
            prefill(true)?;
            let (batched, stepwise) = (prefill(true)?, prefill(false)?);
            let cpu = crate::bench::decode_speeds(std::slice::from_ref(&w), &[POSITION], tokens.min(64))?[0][0];
            let (s1, r1, b1) = per_token(c1, tokens);
            let (sm, rm, _) = per_token(cm, tokens.max(MULTI));
            eprintln!(
                "  {name:>5} {precision}: GPU {single:7.1} tokens/s, ×{MULTI} per submission {multi:7.1}, CPU {cpu:7.1}; \
                 prefill {batched:7.1} batched vs {stepwise:7.1} step by step"
            );
            records.push(GpuRecord {
                kind: "decode",
                config: name.clone(),
                precision: precision.to_string(),
                backend: "gpu",
                adapter: adapter.clone(),
                position: POSITION,
                tokens_per_s: single,
                tokens_per_s_multi: multi,
                tokens_per_submission_multi: MULTI,
                cpu_tokens_per_s: cpu,
                prefill_tokens_per_s: batched,
                prefill_stepwise_tokens_per_s: stepwise,
                dispatches_per_token: m.dispatches_per_step(),
                submissions_per_token: s1,
                readbacks_per_token: r1,
                readback_bytes_per_token: b1,
                submissions_per_token_multi: sm,
                readbacks_per_token_multi: rm,
                resources_created_after_warmup: created,
                kernel_times_us: kernel_times,
            });
        }
    }
    let mut trains = Vec::new();
    for name in configs {
        trains.push(train_speed(&gpu, name, train)?);
    }
    print_table(&records);
    print_train_table(&trains);
    Ok(GpuBench {
        decode: records,
        train: trains,
    })
}

fn print_train_table(records: &[TrainRecord]) {
    println!(
        "\n{:<6} {:>12} {:>7} {:>11} {:>12} {:>8}",
        "config", "batch", "micro", "GPU tok/s", "CPU tok/s", "GPU/CPU"
    );
    for r in records {
        println!(
            "{:<6} {:>12} {:>7} {:>11.1} {:>12.1} {:>8.2}",
            r.config,
            format!("{}×{}", r.batch, r.seq_len),
            r.micro_batches,
            r.tokens_per_s,
            r.cpu_tokens_per_s,
            r.tokens_per_s / r.cpu_tokens_per_s
        );
    }
    println!("(training: one full step — forward, backward, AdamW — per batch; CPU on all its threads)");
}

fn print_table(records: &[GpuRecord]) {
    println!();
    println!(
        "{:<6} {:<5} {:>10} {:>12} {:>10} {:>8} {:>13} {:>9} {:>10} {:>9} {:>8}",
        "config",
        "prec",
        "GPU tok/s",
        format!("×{MULTI} tok/s"),
        "CPU tok/s",
        "GPU/CPU",
        "prefill ×",
        "subm/tok",
        "reads/tok",
        "bytes/tok",
        "created"
    );
    for r in records {
        println!(
            "{:<6} {:<5} {:>10.1} {:>12.1} {:>10.1} {:>8.2} {:>13.2} {:>9.3} {:>10.3} {:>9.1} {:>8}",
            r.config,
            r.precision,
            r.tokens_per_s,
            r.tokens_per_s_multi,
            r.cpu_tokens_per_s,
            r.tokens_per_s_multi / r.cpu_tokens_per_s,
            r.prefill_tokens_per_s / r.prefill_stepwise_tokens_per_s,
            r.submissions_per_token,
            r.readbacks_per_token,
            r.readback_bytes_per_token,
            r.resources_created_after_warmup
        );
    }
    if let Some(r) = records.iter().find(|r| r.kernel_times_us.is_some()) {
        println!(
            "\nGPU time per kernel in one decode step ({} {}, timestamp queries):",
            r.config, r.precision
        );
        for (kernel, us) in r.kernel_times_us.as_deref().unwrap_or_default() {
            println!("  {kernel:<16} {us:9.1} µs");
        }
    } else {
        println!("\n(no per-kernel times: this adapter has no timestamp queries)");
    }
    println!(
        "(greedy decode at position {POSITION}; GPU/CPU uses the ×{MULTI} mode against one CPU thread; \
         reads/tok and bytes/tok are for one token per submission; created = buffers and bind groups \
         made after warm-up; prefill × = batched prefill speed over step-by-step, {PREFILL}-token prompt)"
    );
}
