//! `cargo xtask train`: tokenizer (trained on the corpus unless given) then the model —
//! AdamW, warmup + cosine, clipping, batches split across cores, held-out BPB every N steps,
//! atomic checkpoints with `--resume`, a JSON-lines log, deterministic for a seed.
//!
//! Step s draws its batch from a generator seeded by (seed, s), so a resumed run continues
//! exactly as an uninterrupted one would. A non-finite loss or gradient stops the run with a
//! message and leaves the last good checkpoint in place.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use itera_core::eval::{eval_itera, EvalReport};
use itera_core::gpu::train::GpuTrainer;
use itera_core::gpu::Gpu;
use itera_core::model::LossWeights;
use itera_core::rng::Pcg32;
use itera_core::tokenizer::{Tokenizer, END_OF_TEXT};
use itera_core::train::{sample_batch, LrSchedule, Trainer, TrainerConfig};
use itera_core::{format, Weights};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::json;

use crate::models::{self, AnyModel};
use crate::run::read_text;

#[derive(Args)]
pub struct TrainArgs {
    /// Text corpus, documents separated by <|endoftext|>.
    #[arg(long)]
    corpus: PathBuf,
    /// Where tokenizer.json, model.safetensors, optimizer.safetensors and log.jsonl go.
    #[arg(long)]
    out_dir: PathBuf,
    /// Use this tokenizer instead of training one.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// BPE vocabulary when training the tokenizer (512–4096). 4096 gave the lowest held-out
    /// BPB in the tokenizer study recorded in weights/README.md.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// Preset or config JSON (its vocab_size is replaced by the tokenizer's); default `tiny`
    /// for train, `micro` for distill.
    #[arg(long, alias = "student-config")]
    config: Option<String>,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    // f64 here (f32 in the optimiser) so the log and the card show 0.003, not 0.0030000000.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 3e-4)]
    min_lr: f64,
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f32,
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// Weight α of the load-balancing loss.
    #[arg(long, default_value_t = 0.01)]
    alpha: f32,
    #[arg(long, default_value_t = 200)]
    eval_every: usize,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Held-out texts for BPB (default: ../shared/data/heldout/*.txt when present).
    #[arg(long)]
    heldout: Vec<PathBuf>,
    /// Texts drawn like the corpus but not in it (e.g. `xtask corpus` with another seed),
    /// scored with the held-out texts and logged as `valid_bpb`: the gap between the training
    /// loss and this shows when the run starts memorising its corpus.
    #[arg(long)]
    valid: Vec<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    threads: Option<usize>,
    /// Continue from the checkpoint in --out-dir.
    #[arg(long)]
    resume: bool,
    /// Stop (with a checkpoint) after this step, keeping the schedule of --steps: trains a
    /// long run in pieces; continue it with --resume.
    #[arg(long)]
    stop_at: Option<usize>,
    /// `cpu` (threads) or `gpu` (wgpu: the whole step on the device, the distillation
    /// teacher's forward included; checkpoints are the same files, so a run can switch
    /// backends on --resume).
    #[arg(long, value_enum, default_value_t = TrainBackend::Cpu)]
    backend: TrainBackend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainBackend {
    Cpu,
    Gpu,
}

/// The GPU trainer and its device, when training with `--backend gpu`. The CPU `Trainer`
/// still holds the optimiser state that checkpoints save and load.
struct OnGpu {
    gpu: Gpu,
    trainer: GpuTrainer,
}

impl OnGpu {
    fn new(w: &Weights, trainer: &Trainer, teacher: Option<&Weights>) -> Result<OnGpu> {
        let gpu = Gpu::new_blocking().context("--backend gpu")?;
        let t = match teacher {
            Some(tw) => GpuTrainer::with_teacher(&gpu, w, tw, trainer.config, None),
            None => GpuTrainer::new(&gpu, w, trainer.config, None),
        };
        let mut t = t.context("--backend gpu")?;
        t.set_optimizer_state(&gpu, trainer.opt.step, &trainer.opt.m, &trainer.opt.v)?;
        eprintln!(
            "GPU: {} ({} micro-batch(es) of {} sequences, {} dispatches per step)",
            gpu.describe(),
            t.micro,
            t.seqs,
            t.dispatches_per_step()
        );
        Ok(OnGpu { gpu, trainer: t })
    }

    /// Copies the weights (and, for a checkpoint, the moments) back from the device.
    fn sync(&self, w: &mut Weights, trainer: Option<&mut Trainer>) -> Result<()> {
        let mut fresh = self.trainer.weights_blocking(&self.gpu)?;
        fresh.config = w.config.clone();
        *w = fresh;
        if let Some(t) = trainer {
            (t.opt.m, t.opt.v) = self.trainer.moments_blocking(&self.gpu)?;
            t.opt.step = self.trainer.step;
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct DistillArgs {
    /// The teacher: an itera model file of any precision; the student uses its tokenizer.
    #[arg(long)]
    teacher: PathBuf,
    /// Weight β of the distillation term β·T²·KL (CE gets 1 − β).
    #[arg(long, default_value_t = 0.7)]
    beta: f64,
    /// Softmax temperature T of the distillation term.
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    #[command(flatten)]
    train: TrainArgs,
}

/// Logit distillation: the student is trained with a teacher loaded from `a.teacher`.
pub fn distill(mut a: DistillArgs) -> Result<()> {
    let valid = (0.0..=1.0).contains(&a.beta) && a.temperature.is_finite() && a.temperature > 0.0;
    if !valid {
        bail!(
            "--beta must lie in [0, 1] and --temperature be positive (got {} and {})",
            a.beta,
            a.temperature
        );
    }
    let AnyModel::Itera { weights, .. } = models::load(&a.teacher, None)? else {
        bail!(
            "{} is a llama2.c checkpoint: distill needs an itera teacher with the student's tokenizer \
             (sample a corpus from a llama2.c model with `cargo xtask corpus` and `train` on it instead)",
            a.teacher.display()
        );
    };
    if a.train.tokenizer.is_none() {
        let dir = a.teacher.parent().unwrap_or(Path::new("."));
        a.train.tokenizer = Some(models::find_itera_tokenizer(dir, weights.config.tokenizer.as_deref())?);
    }
    a.train.config.get_or_insert_with(|| "micro".into());
    let teacher = Teacher {
        path: a.teacher,
        weights,
        beta: a.beta,
        temperature: a.temperature,
    };
    run_with(a.train, Some(teacher))
}

/// The model a student learns from, and how strongly.
struct Teacher {
    path: PathBuf,
    weights: Weights,
    // f64 so the card records the values as typed (0.7, not 0.699999988).
    beta: f64,
    temperature: f64,
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn save_optimizer(t: &Trainer, w: &Weights, path: &Path) -> Result<()> {
    let mut buffers = Vec::new();
    for (slot, spec) in w.table.specs.iter().enumerate() {
        buffers.push((
            format!("m.{}", spec.name),
            spec.shape.clone(),
            bytemuck::cast_slice(&t.opt.m.tensors[slot]).to_vec(),
        ));
        buffers.push((
            format!("v.{}", spec.name),
            spec.shape.clone(),
            bytemuck::cast_slice(&t.opt.v.tensors[slot]).to_vec(),
        ));
    }
    let views = buffers
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([("step".to_string(), t.opt.step.to_string())]);
    write_atomic(path, &safetensors::serialize(views, Some(meta))?)
}

fn load_optimizer(t: &mut Trainer, w: &Weights, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let step = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("step"))
        .context("optimizer state has no step")?;
    t.opt.step = step.parse().context("optimizer step is not a number")?;
    for (slot, spec) in w.table.specs.iter().enumerate() {
        for (prefix, dst) in [("m", &mut t.opt.m.tensors[slot]), ("v", &mut t.opt.v.tensors[slot])] {
            let name = format!("{prefix}.{}", spec.name);
            let v = st
                .tensor(&name)
                .with_context(|| format!("optimizer state lacks {name}"))?;
            if v.dtype() != Dtype::F32 || v.shape() != spec.shape.as_slice() {
                bail!("optimizer tensor {name} has the wrong dtype or shape");
            }
            *dst = bytemuck::pod_collect_to_vec(v.data());
        }
    }
    Ok(())
}

pub fn run(a: TrainArgs) -> Result<()> {
    run_with(a, None)
}

fn run_with(a: TrainArgs, teacher: Option<Teacher>) -> Result<()> {
    std::fs::create_dir_all(&a.out_dir).with_context(|| format!("creating {}", a.out_dir.display()))?;
    let corpus = read_text(&a.corpus)?;
    if corpus.split(END_OF_TEXT).all(|d| d.trim().is_empty()) {
        bail!("corpus {} holds no text", a.corpus.display());
    }
    let tok_path = a.out_dir.join("tokenizer.json");
    let tokenizer = match &a.tokenizer {
        Some(p) => Tokenizer::from_file(p)?,
        None if a.resume && tok_path.exists() => Tokenizer::from_file(&tok_path)?,
        None => {
            eprintln!(
                "training a {}-id byte-level BPE tokenizer on {}",
                a.vocab_size,
                a.corpus.display()
            );
            let docs = corpus.split(END_OF_TEXT).map(|d| format!("{d}{END_OF_TEXT}"));
            Tokenizer::train(docs.collect::<Vec<_>>().into_iter(), a.vocab_size)?
        }
    };
    write_atomic(&tok_path, tokenizer.to_json()?.as_bytes())?;
    let stream = tokenizer.encode(&corpus)?;
    eprintln!(
        "corpus: {} bytes → {} tokens ({:.2} bytes/token)",
        corpus.len(),
        stream.len(),
        corpus.len() as f64 / stream.len() as f64
    );

    let heldout_files = crate::heldout_or_default(&a.heldout);
    let heldout: Vec<String> = heldout_files.iter().map(|p| read_text(p)).collect::<Result<_>>()?;
    let valid: Vec<String> = a.valid.iter().map(|p| read_text(p)).collect::<Result<_>>()?;

    let model_path = a.out_dir.join("model.safetensors");
    let opt_path = a.out_dir.join("optimizer.safetensors");
    let mut w = if a.resume {
        format::load_file(&model_path)
            .with_context(|| format!("--resume: no usable checkpoint at {}", model_path.display()))?
    } else {
        let mut config = crate::run::load_config(a.config.as_deref().unwrap_or("tiny"))?;
        config.vocab_size = tokenizer.vocab_size();
        config.tokenizer = Some("tokenizer.json".into());
        Weights::init_random(&config, a.seed)?
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = TrainerConfig {
        batch: a.batch,
        seq_len: a.seq_len,
        threads,
        loss: LossWeights {
            aux_alpha: a.alpha,
            distill_beta: teacher.as_ref().map_or(0.0, |t| t.beta as f32),
            temperature: teacher.as_ref().map_or(1.0, |t| t.temperature as f32),
        },
        clip: a.clip,
        schedule: LrSchedule {
            max: a.lr as f32,
            min: a.min_lr as f32,
            warmup: a.warmup,
            total: a.steps,
        },
        weight_decay: a.weight_decay,
    };
    if let Some(t) = &teacher {
        if t.weights.config.vocab_size != tokenizer.vocab_size() {
            bail!(
                "the teacher {} has {} token ids but the tokenizer has {}",
                t.path.display(),
                t.weights.config.vocab_size,
                tokenizer.vocab_size()
            );
        }
        eprintln!(
            "distilling from {} ({} parameters), β = {}, T = {}",
            t.path.display(),
            t.weights.table.total_params(),
            t.beta,
            t.temperature
        );
    }
    let mut trainer = Trainer::new(&w, config)?;
    if a.resume {
        load_optimizer(&mut trainer, &w, &opt_path)?;
        eprintln!("resumed at step {}", trainer.opt.step);
    }
    let mut on_gpu = match a.backend {
        TrainBackend::Gpu => Some(OnGpu::new(&w, &trainer, teacher.as_ref().map(|t| &t.weights))?),
        TrainBackend::Cpu => None,
    };
    eprintln!(
        "model: {} parameters ({} active per token); batch {} × {} tokens on {}",
        w.table.total_params(),
        w.table.active_params(&w.config),
        a.batch,
        a.seq_len,
        match on_gpu {
            Some(_) => "the GPU".to_string(),
            None => format!("{} threads", trainer.config.threads),
        }
    );

    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.out_dir.join("log.jsonl"))?;
    let bar = ProgressBar::new(a.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.opt.step as u64);
    let start = Instant::now();
    let first_step = trainer.opt.step;
    // Training time carried over from the run being resumed.
    let prior_seconds = w
        .config
        .training
        .as_ref()
        .and_then(|t| t["seconds"].as_f64())
        .unwrap_or(0.0);
    let save = |w: &Weights, trainer: &Trainer, elapsed: f64| -> Result<()> {
        let mut w = w.clone();
        w.config.training = Some(json!({
            "steps": trainer.opt.step, "batch": a.batch, "seq_len": a.seq_len, "corpus": a.corpus, "corpus_tokens": stream.len(),
            "seconds": prior_seconds + elapsed, "seed": a.seed, "lr": a.lr,
        }));
        if let (Some(t), Some(meta)) = (&teacher, w.config.training.as_mut()) {
            meta["distilled_from"] = json!({"teacher": t.path, "beta": t.beta, "temperature": t.temperature});
        }
        write_atomic(&model_path, &format::save(&w)?)?;
        save_optimizer(trainer, &w, &opt_path)
    };
    let mut saved_step = first_step;
    let end = a.stop_at.unwrap_or(a.steps).min(a.steps);
    while trainer.opt.step < end {
        let step = trainer.opt.step;
        let batch = sample_batch(
            &stream,
            a.batch,
            a.seq_len,
            &mut Pcg32::with_stream(a.seed, step as u64),
        )?;
        let stepped = match on_gpu.as_mut() {
            Some(g) => g
                .trainer
                .step_blocking(&g.gpu, &batch)
                .inspect(|_| trainer.opt.step += 1),
            None => trainer.step(&mut w, &batch, teacher.as_ref().map(|t| &t.weights)),
        };
        let report = match stepped {
            Ok(r) => r,
            Err(e) => {
                bar.abandon();
                bail!(
                    "{e}. The last good checkpoint is {} (step {saved_step}); lower --lr or --clip and --resume.",
                    model_path.display()
                );
            }
        };
        let elapsed = start.elapsed().as_secs_f64();
        let tps = ((step + 1 - first_step) * a.batch * a.seq_len) as f64 / elapsed;
        let mut record = json!({
            "step": step + 1, "loss": report.loss.total, "ce": report.loss.ce, "aux": report.loss.aux, "kl": report.loss.kl,
            "lr": report.lr, "grad_norm": report.grad_norm, "tokens_per_s": tps, "elapsed_s": elapsed,
        });
        let last = step + 1 == end;
        let evaluate = !(heldout.is_empty() && valid.is_empty()) && ((step + 1) % a.eval_every.max(1) == 0 || last);
        let checkpoint = (step + 1) % a.checkpoint_every.max(1) == 0 || last;
        if let Some(g) = &on_gpu {
            if evaluate || checkpoint {
                g.sync(&mut w, checkpoint.then_some(&mut trainer))?;
            }
        }
        if evaluate {
            let mut line = format!("step {:>6}: loss {:.4}", step + 1, report.loss.total);
            for (key, label, texts) in [("heldout_bpb", "held-out", &heldout), ("valid_bpb", "valid", &valid)] {
                if !texts.is_empty() {
                    let bpb = bits_per_byte(&w, &tokenizer, texts)?;
                    record[key] = json!(bpb);
                    line += &format!("  {label} {bpb:.4}");
                }
            }
            bar.println(line + " bits/byte");
        }
        writeln!(log, "{record}")?;
        bar.set_message(format!("loss {:.4}  {:.0} tok/s", report.loss.total, tps));
        bar.inc(1);
        if checkpoint {
            save(&w, &trainer, elapsed)?;
            saved_step = trainer.opt.step;
        }
    }
    bar.finish();
    let secs = start.elapsed().as_secs_f64();
    let done = end.saturating_sub(first_step);
    eprintln!(
        "trained {done} steps in {secs:.1} s ({:.0} tokens/s); checkpoint {} at step {end} of {}",
        (done * a.batch * a.seq_len) as f64 / secs,
        model_path.display(),
        a.steps
    );
    Ok(())
}

/// Bits per byte over `texts`, file by file as `cargo xtask eval` scores them (each file has
/// its own separators).
fn bits_per_byte(w: &Weights, tokenizer: &Tokenizer, texts: &[String]) -> Result<f64> {
    let mut r = EvalReport::default();
    for text in texts {
        r.merge(&eval_itera(w, tokenizer, text)?);
    }
    Ok(r.bits_per_byte())
}
