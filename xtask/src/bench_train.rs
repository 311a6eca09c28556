//! `cargo xtask bench --train-wasm`: training in the page against training natively, in one
//! run, for the page's jobs — a fine-tune of itera-tiny q8 on the sample stories, itera-tiny
//! q8 (and stories260K from ../shared/data, when present: `xtask corpus`'s teacher) writing a
//! corpus of stories, and a logit distillation of itera-tiny into a fresh micro student on its
//! corpus (8 × 64-token batches, one shard per CPU worker). Natively on
//! 1 and N threads (before and after the browser, best kept); in headless Chromium on 1 and N
//! CPU workers and on WebGPU, through the Benchmarks tab's "Run training benchmark"
//! (tests/bench/train-tab.mjs).

use std::time::Instant;

use anyhow::{Context, Result};
use itera_core::tokenizer::Tokenizer;
use itera_core::train::{Budget, CorpusSettings, CpuStep, TrainSpec};
use itera_core::train::{Start, Teacher};
use itera_core::Config;
use itera_web::page_job::{PageJob, PreparedText, Source};
use serde::Serialize;
use serde_json::Value;

/// Timed steps per measurement, after one warm-up step.
const STEPS: usize = 6;
/// The page's largest pool (trainer.js `MAX_WORKERS`).
const MAX_WORKERS: usize = 8;
/// Teacher tokens of each corpus measured (the page's `corpusTokens`).
const CORPUS_TOKENS: usize = 3000;
const JOBS: [&str; 4] = ["fine-tune", "corpus", "corpus-llama2", "distill"];

/// One job's speeds (tokens/s): natively and in the page.
#[derive(Serialize)]
pub struct JobSpeeds {
    pub job: &'static str,
    pub native_1_thread: f64,
    pub native_n_threads: f64,
    pub tab_1_worker: f64,
    pub tab_n_workers: f64,
    pub tab_webgpu: Option<f64>,
    /// The first step's loss on 1 and N workers: equal bits (the same maths).
    pub tab_first_losses: Vec<f64>,
}

#[derive(Serialize)]
pub struct TrainBench {
    pub workers: usize,
    pub jobs: Vec<JobSpeeds>,
    pub tab_webgpu_adapter: Option<String>,
    pub tab_rows: Vec<Value>,
}

fn read(path: &str) -> Result<Vec<u8>> {
    let p = crate::project_root().join(path);
    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
}

/// The measured settings: `shards` shards, a warm-up step and the timed ones, no evaluation.
fn timing(base: TrainSpec, shards: usize) -> TrainSpec {
    TrainSpec {
        steps: STEPS + 2,
        warmup: 1,
        eval_every: 1_000_000,
        checkpoint_every: 1_000_000,
        shards,
        ..base
    }
}

/// Tokens/s of a job on `threads` threads after one warm-up step.
fn steps_per_s(mut job: PageJob, threads: usize) -> Result<f64> {
    let spec = job.job.spec().clone();
    let mut cpu = CpuStep::new(&job.job.state().weights, spec.step_config(), threads);
    let mut step = |n| pollster::block_on(job.job.advance(&mut cpu, Budget::steps(n), &mut |_| Ok(())));
    step(1)?;
    let t0 = Instant::now();
    step(STEPS)?;
    Ok((STEPS * spec.tokens_per_step()) as f64 / t0.elapsed().as_secs_f64())
}

fn clock() -> itera_core::train::Clock {
    let start = Instant::now();
    Box::new(move || start.elapsed().as_secs_f64())
}

/// Native tokens/s of `job` with `shards` shards on `threads` threads.
fn native(job: &str, shards: usize, threads: usize) -> Result<f64> {
    let tok = read("weights/tokenizer.json")?;
    // The page's jobs start from the default model (weights/manifest.json).
    let default = crate::manifest::default_key(&crate::manifest::shipped()?)?;
    let default_file = format!("weights/{default}.safetensors");
    let teacher = || -> Result<Teacher> { Ok(Teacher::model(&read(&default_file)?)?) };
    let corpus = CorpusSettings {
        tokens: CORPUS_TOKENS,
        ..CorpusSettings::PAGE
    };
    match job {
        "fine-tune" => {
            let text = read("web/finetune-stories.txt")?;
            let sources = [Source {
                name: "finetune-stories.txt",
                bytes: &text,
            }];
            let spec = timing(TrainSpec::FINE_TUNE, shards);
            let text = PreparedText::new(Tokenizer::from_json(&tok)?, &sources, &mut |_, _| {})?;
            steps_per_s(
                PageJob::fine_tune(&read(&default_file)?, text, spec, &default, clock())?,
                threads,
            )
        }
        "corpus-llama2" => {
            let dir = crate::shared_data()
                .context("../shared/data is absent")?
                .join("teacher");
            let t = Teacher::llama2(
                &std::fs::read(dir.join("stories260K.bin"))?,
                &std::fs::read(dir.join("tok512.bin"))?,
            )?;
            let tokenizer = Tokenizer::from_json(&tok)?;
            let t0 = Instant::now();
            let written = crate::corpus::write(&t.teller(&tokenizer), &corpus, threads)?;
            Ok(written.tokens() as f64 / t0.elapsed().as_secs_f64())
        }
        "corpus" => {
            let t = teacher()?;
            let tokenizer = Tokenizer::from_json(&tok)?;
            let t0 = Instant::now();
            let written = crate::corpus::write(&t.teller(&tokenizer), &corpus, threads)?;
            Ok(written.tokens() as f64 / t0.elapsed().as_secs_f64())
        }
        _ => {
            let t = teacher()?;
            let tokenizer = Tokenizer::from_json(&tok)?;
            let text = crate::corpus::write(&t.teller(&tokenizer), &corpus, threads)?.text();
            let spec = timing(TrainSpec::DISTILL, shards);
            let job = PageJob::distill(
                Start::Fresh(Config::preset("micro")?),
                "",
                t,
                &default,
                &text,
                &[],
                &tok,
                spec,
                clock(),
            )?;
            steps_per_s(job, threads)
        }
    }
}

pub fn run() -> Result<TrainBench> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = cores.clamp(1, MAX_WORKERS.min(TrainSpec::FINE_TUNE.batch));
    crate::web::build()?;
    eprintln!("native, 1 and {n} threads…");
    // stories260K writes stories when ../shared/data holds it.
    let jobs: Vec<&'static str> = JOBS
        .into_iter()
        .filter(|&j| j != "corpus-llama2" || crate::shared_data().is_some())
        .collect();
    let mut best: Vec<[f64; 2]> = jobs
        .iter()
        .map(|j| Ok([native(j, n, 1)?, native(j, n, n)?]))
        .collect::<Result<_>>()?;
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
    eprintln!("native again…");
    for (j, b) in jobs.iter().zip(&mut best) {
        b[0] = b[0].max(native(j, n, 1)?);
        b[1] = b[1].max(native(j, n, n)?);
    }
    let tab = |job: &str, backend: &str, workers: Option<usize>| {
        rows.iter()
            .find(|r| r["job"] == job && r["backend"] == backend && workers.is_none_or(|w| r["workers"] == w))
    };
    let speed = |r: Option<&Value>| r.and_then(|r| r["tokensPerSecond"].as_f64());
    let jobs: Vec<JobSpeeds> = jobs
        .iter()
        .zip(&best)
        .map(|(&job, b)| JobSpeeds {
            job,
            native_1_thread: b[0],
            native_n_threads: b[1],
            tab_1_worker: speed(tab(job, "cpu", Some(1))).unwrap_or(f64::NAN),
            tab_n_workers: speed(tab(job, "cpu", Some(n))).unwrap_or(f64::NAN),
            tab_webgpu: speed(tab(job, "webgpu", None)),
            tab_first_losses: rows
                .iter()
                .filter(|r| r["job"] == job && r["backend"] == "cpu")
                .filter_map(|r| r["firstLoss"].as_f64())
                .collect(),
        })
        .collect();
    let adapter = rows
        .iter()
        .find(|r| r["backend"] == "webgpu")
        .and_then(|r| r["adapter"].as_str().or(r["error"].as_str()).map(String::from));
    println!(
        "\ntokens/s in one run ({n} shards; corpus: teacher tokens written; WebGPU: {})",
        adapter.as_deref().unwrap_or("–")
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>13} {:>12}",
        "job",
        "native 1",
        format!("native {n}"),
        "page 1",
        format!("page {n}"),
        "WebGPU",
        "page÷native 1",
        format!("page {n}÷1")
    );
    for j in &jobs {
        let same = j.tab_first_losses.windows(2).all(|w| w[0].to_bits() == w[1].to_bits());
        println!(
            "{:<10} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>13.2} {:>12}",
            j.job,
            j.native_1_thread,
            j.native_n_threads,
            j.tab_1_worker,
            j.tab_n_workers,
            j.tab_webgpu.map_or("–".into(), |g| format!("{g:.1}")),
            j.tab_1_worker / j.native_1_thread,
            format!(
                "{:.2}{}",
                j.tab_n_workers / j.tab_1_worker,
                if same { "" } else { " (losses DIFFER)" }
            ),
        );
    }
    Ok(TrainBench {
        workers: n,
        jobs,
        tab_webgpu_adapter: adapter,
        tab_rows: rows,
    })
}
