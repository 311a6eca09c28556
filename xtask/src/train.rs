//! `cargo xtask train` and `distill`: argument parsing, files, the progress bar and the log
//! over itera-core's training job (`train::Job`), which owns the loop — batches, schedule,
//! held-out BPB, divergence, checkpoints — exactly as the page's Fine-tune tab runs it.
//!
//! A run directory holds `tokenizer.json`, `checkpoint.safetensors` (weights + AdamW + the
//! run's settings and curves: what `--resume` continues from, bit for bit),
//! `model.safetensors` (the same weights as a plain model file, for `eval` and `export`) and
//! `log.jsonl` (one line per step). A non-finite loss or gradient stops the run with a
//! message and leaves the last good checkpoint in place.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use itera_core::gpu::train::GpuStep;
use itera_core::gpu::Gpu;
use itera_core::lm::AnyWeights;
use itera_core::tokenizer::{Tokenizer, END_OF_TEXT};
use itera_core::train::{
    encode_corpus, Base, Budget, Checkpoint, CorpusSettings, CpuStep, DataFingerprint, DistillSpec, EvalSet, Event,
    FineTuneText, Job, JobData, NewRun, Provenance, Start, StepBackend, StoryTeller, Teacher, TrainSpec,
};
use itera_core::{format, Architecture, Family, Itera, Transformer};
use serde_json::json;

use crate::models::{self, AnyModel};
use crate::run::read_text;

/// The run's settings, each an option: one not given takes the default (`TrainSpec::DEFAULT`;
/// with --init, the page's fine-tune `TrainSpec::FINE_TUNE`), on --resume the checkpoint's.
/// `cargo xtask train --help` lists both sets of defaults.
macro_rules! spec_args {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        #[derive(Args)]
        pub struct SpecArgs {
            $($(#[$doc])* #[arg(long)] $field: Option<$ty>,)*
        }

        impl SpecArgs {
            /// `base` with every given setting in its place.
            fn over(&self, mut base: TrainSpec) -> TrainSpec {
                $(if let Some(v) = self.$field {
                    base.$field = v;
                })*
                base
            }

            /// The given settings that differ from `run`'s, as `--name value (the run has x)`.
            fn differences(&self, run: &TrainSpec) -> Vec<String> {
                let mut out = Vec::new();
                $(if let Some(v) = self.$field {
                    if v != run.$field {
                        out.push(format!("--{} {v} (the run has {})", stringify!($field).replace('_', "-"), run.$field));
                    }
                })*
                out
            }
        }
    };
}

spec_args! {
    /// Optimisation steps in the whole run (the schedule's length).
    steps: usize,
    /// Sequences per step.
    batch: usize,
    /// Tokens per sequence.
    seq_len: usize,
    /// Peak learning rate (after the warm-up; cosine decay to --min-lr).
    lr: f64,
    min_lr: f64,
    warmup: usize,
    /// AdamW's decoupled weight decay (matrices only).
    weight_decay: f64,
    /// Global gradient-norm clip.
    clip: f64,
    /// Weight α of the load-balancing loss.
    alpha: f64,
    eval_every: usize,
    checkpoint_every: usize,
    /// Stop once this many evaluations in a row have not lowered the best held-out BPB (of the
    /// first held-out set); 0 runs every step. The best weights are `best.safetensors` either way.
    patience: usize,
    /// Seeds the batches (and a fresh model's weights).
    seed: u64,
    /// Parts the batch is cut into, each one's gradient computed apart and averaged in order
    /// (default: the thread count). The result depends on this, not on --threads.
    shards: usize,
}

/// The defaults of every setting, for `--help`: the command line's and the fine-tune's.
pub fn defaults_help() -> String {
    let (d, f) = (
        serde_json::json!(TrainSpec::DEFAULT),
        serde_json::json!(TrainSpec::FINE_TUNE),
    );
    let mut out = String::from("Defaults (without --init | with --init, as the page's Fine-tune tab):\n");
    for (k, v) in d.as_object().into_iter().flatten() {
        if k != "distill" && k != "shards" {
            out += &format!("  --{:<18} {v} | {}\n", k.replace('_', "-"), f[k]);
        }
    }
    out + "  --shards             the thread count\n"
}

#[derive(Args)]
pub struct TrainArgs {
    /// Text corpus, documents separated by <|endoftext|> (the stream trains as it is).
    #[arg(long, required_unless_present = "text", conflicts_with = "text")]
    corpus: Option<PathBuf>,
    /// Texts as the page's Fine-tune tab takes them: stories separated by <|endoftext|> or
    /// blank lines, the last tenth held back and scored as `text_heldout_bpb`. The same texts
    /// make the same token stream as in the page, so a checkpoint moves between the two.
    #[arg(long, num_args = 1..)]
    text: Vec<PathBuf>,
    /// Where tokenizer.json, checkpoint.safetensors, model.safetensors and log.jsonl go.
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
    /// The model family of a new run: `itera` (SSM + MoE) or `transformer` (the llama2.c
    /// architecture; its presets have the itera presets' parameter counts). A fine-tune or a
    /// resumed run keeps the family of its model or checkpoint.
    #[arg(long, alias = "student-family", default_value_t = Family::Itera)]
    family: Family,
    /// Fine-tune this model (any precision; a quantized file is dequantized to f32) instead
    /// of starting from random weights; its tokenizer is used unless --tokenizer is given,
    /// and the settings default to the page's fine-tune.
    #[arg(long, conflicts_with = "config")]
    init: Option<PathBuf>,
    #[command(flatten)]
    spec: SpecArgs,
    /// Held-out texts for BPB (default: ../shared/data/heldout/*.txt when present).
    #[arg(long)]
    heldout: Vec<PathBuf>,
    /// Texts drawn like the corpus but not in it (e.g. `xtask corpus` with another seed),
    /// scored with the held-out texts and logged as `valid_bpb`: the gap between the training
    /// loss and this shows when the run starts memorising its corpus.
    #[arg(long)]
    valid: Vec<PathBuf>,
    /// Threads computing the shards (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Continue the run in --out-dir from its checkpoint (settings not given: the run's own).
    #[arg(long)]
    resume: bool,
    /// Continue the run of this checkpoint file (one downloaded from the page, say) in
    /// --out-dir; with --text, the same texts it trained on.
    #[arg(long, conflicts_with = "resume")]
    resume_from: Option<PathBuf>,
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

#[derive(Args)]
pub struct DistillArgs {
    /// The teacher: an itera model file of any precision (logit distillation; the student
    /// uses its tokenizer), or a llama2.c checkpoint (sequence-level: the student learns the
    /// stories it writes into --corpus, with --tokenizer, by default weights/tokenizer.json).
    #[arg(long)]
    teacher: PathBuf,
    /// A llama2.c teacher's tokenizer.bin (default: tok<vocab>.bin or tokenizer.bin next to it).
    #[arg(long)]
    teacher_tokenizer: Option<PathBuf>,
    /// With a llama2.c teacher: when --corpus does not exist yet, the teacher writes this many
    /// tokens into it first (as `cargo xtask corpus` does).
    #[arg(long, default_value_t = CorpusSettings::DEFAULT.tokens)]
    corpus_tokens: usize,
    #[arg(long, default_value_t = CorpusSettings::DEFAULT.seed)]
    corpus_seed: u64,
    /// Weight β of the distillation term β·T²·KL (CE gets 1 − β).
    #[arg(long, default_value_t = DistillSpec::DEFAULT.beta)]
    beta: f64,
    /// Softmax temperature T of the distillation term.
    #[arg(long, default_value_t = DistillSpec::DEFAULT.temperature)]
    temperature: f64,
    #[command(flatten)]
    train: TrainArgs,
}

/// The model a student learns from (the core's `Teacher`), the file it came from, and how its
/// logits are distilled (none: only the corpus it wrote, a llama2.c teacher's case).
struct TeacherRun {
    path: PathBuf,
    teacher: Teacher,
    spec: Option<DistillSpec>,
}

impl TeacherRun {
    /// The weights whose logits the step matches, when logits are distilled.
    fn logits(&self) -> Option<&AnyWeights> {
        self.spec.and(self.teacher.logits())
    }
}

/// Logit distillation: the student is trained with a teacher loaded from `a.teacher`.
pub fn distill(mut a: DistillArgs) -> Result<()> {
    let spec = DistillSpec {
        beta: a.beta,
        temperature: a.temperature,
    };
    // Settings are checked before any file is read.
    spec_of(&a.train, Some(spec)).validate()?;
    let (tokenizer_name, weights) = match models::load(&a.teacher, a.teacher_tokenizer.as_deref())? {
        AnyModel::Itera { weights, .. } => (weights.config.tokenizer.clone(), AnyWeights::from(weights)),
        AnyModel::Transformer { weights, .. } => (weights.config.tokenizer.clone(), AnyWeights::from(weights)),
        AnyModel::Llama2 { model, tokenizer } => return distill_stories(a, Teacher::Llama2(model, tokenizer)),
    };
    if a.train.tokenizer.is_none() {
        let dir = a.teacher.parent().unwrap_or(Path::new("."));
        a.train.tokenizer = Some(models::find_itera_tokenizer(dir, tokenizer_name.as_deref())?);
    }
    // A fresh student is micro by default; a resumed one is the run's own.
    if a.train.init.is_none() && !a.train.resuming() {
        a.train.config.get_or_insert_with(|| "micro".into());
    }
    let teacher = TeacherRun {
        path: a.teacher,
        teacher: Teacher::Model(weights),
        spec: Some(spec),
    };
    run_with(a.train, Some(teacher))
}

/// Sequence-level distillation from a llama2.c teacher (another tokenizer): the teacher writes
/// the corpus (unless --corpus exists already), the student learns it with cross-entropy.
fn distill_stories(mut a: DistillArgs, teacher: Teacher) -> Result<()> {
    let Teacher::Llama2(model, tok) = &teacher else {
        bail!("sequence-level distillation is a llama2.c teacher's");
    };
    let Some(corpus) = a.train.corpus.clone() else {
        bail!("a llama2.c teacher writes its stories into --corpus FILE (give one)");
    };
    if !corpus.exists() {
        let settings = CorpusSettings {
            tokens: a.corpus_tokens,
            seed: a.corpus_seed,
            ..CorpusSettings::DEFAULT
        };
        settings.validate()?;
        eprintln!(
            "the teacher writes {} tokens of stories into {}",
            settings.tokens,
            corpus.display()
        );
        let written = crate::corpus::write(&StoryTeller::Llama2(model, tok), &settings, threads(&a.train))?;
        write_atomic(&corpus, written.text().as_bytes())?;
    }
    a.train
        .tokenizer
        .get_or_insert_with(|| crate::project_root().join("weights/tokenizer.json"));
    // A fresh student is micro by default; a resumed one is the run's own.
    if a.train.init.is_none() && !a.train.resuming() {
        a.train.config.get_or_insert_with(|| "micro".into());
    }
    eprintln!(
        "sequence-level distillation: the student learns the stories of {}",
        a.teacher.display()
    );
    let teacher = TeacherRun {
        path: a.teacher,
        teacher,
        spec: None,
    };
    run_with(a.train, Some(teacher))
}

impl TrainArgs {
    fn resuming(&self) -> bool {
        self.resume || self.resume_from.is_some()
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    spec_of(&a, None).validate()?;
    run_with(a, None)
}

/// Writes through a temporary file, fsync and a rename, so a crash never leaves half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Threads computing the shards: `--threads`, or every core.
fn threads(a: &TrainArgs) -> usize {
    a.threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A new run's settings: the given ones over the defaults (the fine-tune's with --init),
/// `shards` the thread count unless given.
fn spec_of(a: &TrainArgs, distill: Option<DistillSpec>) -> TrainSpec {
    let base = if a.init.is_some() {
        TrainSpec::FINE_TUNE
    } else {
        TrainSpec::DEFAULT
    };
    let mut spec = a.spec.over(TrainSpec { distill, ..base });
    if a.spec.shards.is_none() {
        spec.shards = threads(a).clamp(1, spec.batch.max(1));
    }
    spec
}

/// The training text and what it is judged on: `--corpus` as it is, or `--text` cut as the
/// page cuts it (its held-out part becomes the `text_heldout` evaluation set).
fn training_text(a: &TrainArgs) -> Result<(String, Vec<EvalSet>, String)> {
    if let Some(corpus) = &a.corpus {
        return Ok((read_text(corpus)?, Vec::new(), corpus.display().to_string()));
    }
    let texts = a.text.iter().map(|p| read_text(p)).collect::<Result<Vec<_>>>()?;
    let t = FineTuneText::new(&texts.iter().map(String::as_str).collect::<Vec<_>>())?;
    eprintln!(
        "texts: {} documents to train on, {} held out",
        t.documents, t.heldout_documents
    );
    let held = (!t.heldout.is_empty()).then(|| EvalSet {
        name: "text_heldout".into(),
        texts: vec![t.heldout.clone()],
    });
    let names: Vec<String> = a.text.iter().map(|p| p.display().to_string()).collect();
    Ok((t.corpus, held.into_iter().collect(), names.join(", ")))
}

/// The tokenizer of a run: given, the fine-tuned model's, the run's own on --resume, or
/// trained on the corpus.
fn tokenizer_for(a: &TrainArgs, corpus: &str, tok_path: &Path) -> Result<Tokenizer> {
    if a.resume && tok_path.exists() {
        let own = Tokenizer::from_file(tok_path)?;
        if let Some(p) = &a.tokenizer {
            let given = Tokenizer::from_file(p)?;
            if DataFingerprint::of_tokenizer(&given) != DataFingerprint::of_tokenizer(&own) {
                bail!(
                    "--tokenizer {} is not this run's tokenizer ({}): a resumed run keeps its own",
                    p.display(),
                    tok_path.display()
                );
            }
        }
        return Ok(own);
    }
    if let Some(p) = &a.tokenizer {
        return Ok(Tokenizer::from_file(p)?);
    }
    if let Some(init) = &a.init {
        return match models::load(init, None)? {
            AnyModel::Itera { tokenizer, .. } | AnyModel::Transformer { tokenizer, .. } => Ok(tokenizer),
            AnyModel::Llama2 { .. } => bail!(
                "--init {}: a llama2.c checkpoint has its own tokenizer; fine-tune a model of this project",
                init.display()
            ),
        };
    }
    if a.resume_from.is_some() {
        bail!("--resume-from: pass the run's --tokenizer (the page's runs use weights/tokenizer.json)");
    }
    eprintln!("training a {}-id byte-level BPE tokenizer on the corpus", a.vocab_size);
    let docs = corpus.split(END_OF_TEXT).map(|d| format!("{d}{END_OF_TEXT}"));
    Ok(Tokenizer::train(docs.collect::<Vec<_>>().into_iter(), a.vocab_size)?)
}

/// Writes the run's tokenizer.json, or checks the one there: a run's tokenizer is never
/// replaced (its checkpoint's token ids mean nothing with another).
fn keep_run_tokenizer(path: &Path, tokenizer: &Tokenizer) -> Result<()> {
    if !path.exists() {
        return write_atomic(path, tokenizer.to_json()?.as_bytes());
    }
    let there = Tokenizer::from_file(path).with_context(|| format!("the run's tokenizer {}", path.display()))?;
    if DataFingerprint::of_tokenizer(&there) != DataFingerprint::of_tokenizer(tokenizer) {
        bail!(
            "{} is another tokenizer than this run's, and a run's tokenizer is never replaced: give another --out-dir",
            path.display()
        );
    }
    Ok(())
}

/// A resumed run continues its own model: `--init` is refused, and `--config` must name its
/// shape.
fn check_same_model<A: Architecture>(a: &TrainArgs, run: &A::Config, vocab_size: usize) -> Result<()> {
    if let Some(init) = &a.init {
        bail!(
            "--init {} starts a new run; a resumed run continues its own weights",
            init.display()
        );
    }
    if let Some(name) = &a.config {
        let given = A::with_tokenizer(&crate::run::load_family_config::<A>(name)?, vocab_size, None);
        if A::architecture(&given) != A::architecture(run) {
            bail!("--config {name} is not this run's model shape; a resumed run keeps its own (leave --config out)");
        }
    }
    Ok(())
}

/// The family a run trains: the checkpoint's on a resume, the model's on a fine-tune, else
/// `--family`.
fn run_family(a: &TrainArgs) -> Result<Family> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    if let Some(from) = resume_path(a).filter(|p| p.exists()) {
        return Ok(itera_core::train::checkpoint_family(&read(&from)?)?);
    }
    if let Some(init) = &a.init {
        return Ok(format::read_family(&read(init)?).unwrap_or(Family::Itera));
    }
    Ok(a.family)
}

/// The checkpoint a run continues from, if it does.
fn resume_path(a: &TrainArgs) -> Option<PathBuf> {
    let own = a.out_dir.join("checkpoint.safetensors");
    a.resume_from.clone().or(a.resume.then_some(own))
}

fn run_with(a: TrainArgs, teacher: Option<TeacherRun>) -> Result<()> {
    let threads = threads(&a);
    match run_family(&a)? {
        Family::Itera => {
            let (mut job, files) = prepare::<Itera>(&a, teacher)?;
            match a.backend {
                TrainBackend::Cpu => {
                    let mut cpu = CpuStep::new(&job.state().weights, job.spec().step_config(), threads);
                    drive(&mut job, &mut cpu, files)
                }
                TrainBackend::Gpu => {
                    let gpu = Rc::new(Gpu::new_blocking().context("--backend gpu")?);
                    let cfg = job.spec().step_config();
                    let mut on_gpu =
                        GpuStep::new(gpu, job.state(), cfg, job.data().teacher.as_ref()).context("--backend gpu")?;
                    eprintln!(
                        "GPU: {}, {} dispatches per step",
                        on_gpu.describe(),
                        on_gpu.trainer.dispatches_per_step()
                    );
                    drive(&mut job, &mut on_gpu, files)
                }
            }
        }
        Family::Transformer => {
            if a.backend == TrainBackend::Gpu {
                bail!("--backend gpu trains the itera family only for now; train a Transformer with --backend cpu");
            }
            let (mut job, files) = prepare::<Transformer>(&a, teacher)?;
            let mut cpu = CpuStep::new(&job.state().weights, job.spec().step_config(), threads);
            drive(&mut job, &mut cpu, files)
        }
    }
}

/// Everything a run needs before its first step: the text and tokenizer, the job (new or
/// resumed) and its files.
fn prepare<A: Architecture>(a: &TrainArgs, teacher: Option<TeacherRun>) -> Result<(Job<A>, RunFiles)> {
    std::fs::create_dir_all(&a.out_dir).with_context(|| format!("creating {}", a.out_dir.display()))?;
    let (corpus, mut eval_sets, corpus_name) = training_text(a)?;
    let tok_path = a.out_dir.join("tokenizer.json");
    let checkpoint_path = a.out_dir.join("checkpoint.safetensors");
    let model_path = a.out_dir.join("model.safetensors");
    let resume_from = resume_path(a);
    if resume_from.as_ref() != Some(&checkpoint_path) && checkpoint_path.exists() {
        bail!(
            "{} holds a run already ({}): continue it with --resume, or give another --out-dir",
            a.out_dir.display(),
            checkpoint_path.display()
        );
    }
    let tokenizer = tokenizer_for(a, &corpus, &tok_path)?;
    keep_run_tokenizer(&tok_path, &tokenizer)?;
    let stream = encode_corpus(&tokenizer, &corpus).with_context(|| format!("corpus {corpus_name}"))?;
    eprintln!(
        "corpus: {} bytes → {} tokens ({:.2} bytes/token)",
        corpus.len(),
        stream.len(),
        corpus.len() as f64 / stream.len() as f64
    );
    let texts = |files: &[PathBuf]| files.iter().map(|p| read_text(p)).collect::<Result<Vec<_>>>();
    for (name, files) in [
        ("heldout", crate::heldout_or_default(&a.heldout)),
        ("valid", a.valid.clone()),
    ] {
        if !files.is_empty() {
            eval_sets.push(EvalSet {
                name: name.into(),
                texts: texts(&files)?,
            });
        }
    }
    let data = JobData {
        tokenizer,
        stream,
        eval_sets,
        teacher: teacher.as_ref().and_then(|t| t.logits().cloned()),
    };
    let start = Instant::now();
    let clock = Box::new(move || start.elapsed().as_secs_f64());
    let init_bytes;
    let base = if let Some(from) = resume_from {
        let bytes = std::fs::read(&from).with_context(|| format!("resuming: no checkpoint at {}", from.display()))?;
        let checkpoint = Checkpoint::<A>::from_bytes(&bytes).with_context(|| format!("resuming {}", from.display()))?;
        check_same_model::<A>(a, &checkpoint.state.weights.config, data.tokenizer.vocab_size())?;
        let differ = a.spec.differences(&checkpoint.spec);
        if !differ.is_empty() {
            bail!(
                "a resumed run keeps its own settings, and these differ: {}",
                differ.join(", ")
            );
        }
        if teacher.as_ref().and_then(|t| t.spec) != checkpoint.spec.distill {
            bail!("a resumed run keeps its own distillation settings (β, T, or none)");
        }
        Base::Resume(checkpoint)
    } else {
        let run = NewRun {
            spec: spec_of(a, teacher.as_ref().and_then(|t| t.spec)),
            provenance: Provenance {
                corpus: Some(corpus_name),
                teacher: teacher.as_ref().map(|t| t.path.display().to_string()),
                base: a.init.as_ref().map(|p| p.display().to_string()),
            },
        };
        match &a.init {
            // A fine-tune: the model file (dequantized for training).
            Some(init) => {
                init_bytes = std::fs::read(init).with_context(|| format!("cannot read --init {}", init.display()))?;
                Base::New(Start::File(&init_bytes), run)
            }
            None => Base::New(
                Start::Fresh(crate::run::load_family_config::<A>(
                    a.config.as_deref().unwrap_or("tiny"),
                )?),
                run,
            ),
        }
    };
    let resuming = matches!(base, Base::Resume(_));
    let mut job = Job::begin(base, data, clock).with_context(|| match &a.init {
        Some(init) if !resuming => format!("--init {}", init.display()),
        _ => "starting the run".into(),
    })?;
    if resuming {
        eprintln!("resumed at step {}", job.completed());
    } else {
        // The starting weights' figures begin the curves (as in the page), so that the best
        // weights and the patience count from them.
        job.evaluate_start()?;
        let line: String = job
            .history()
            .evals
            .iter()
            .map(|e| format!("  {} {:.4}", set_label(&e.name), e.bits_per_byte))
            .collect();
        if !line.is_empty() {
            eprintln!("step      0:{line} bits/byte");
        }
    }
    if let Some(s) = a.stop_at {
        job.stop_at(s);
    }
    if let Some((w, spec)) = teacher.as_ref().and_then(|t| t.logits().zip(t.spec)) {
        eprintln!(
            "distilling the logits of {} ({} parameters), β = {}, T = {}",
            teacher.as_ref().map_or(String::new(), |t| t.path.display().to_string()),
            w.total_params(),
            spec.beta,
            spec.temperature
        );
    }
    eprintln!(
        "evaluating every {} steps on the first {} tokens (at most) of each held-out set",
        job.spec().eval_every,
        job.eval_tokens()
    );
    let w = &job.state().weights;
    eprintln!(
        "model: {} ({}), {} parameters ({} active per token); batch {} × {} tokens in {} shard(s)",
        A::FAMILY,
        A::FAMILY.description(),
        w.total_params(),
        A::active_params(&w.config),
        job.spec().batch,
        job.spec().seq_len,
        job.spec().shards,
    );
    let files = RunFiles {
        log: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.out_dir.join("log.jsonl"))?,
        checkpoint: checkpoint_path,
        model: model_path,
        best: a.out_dir.join("best.safetensors"),
    };
    Ok((job, files))
}

/// An evaluation set's name as the output says it ("heldout" is the corpus's held-out part).
fn set_label(name: &str) -> &str {
    if name == "heldout" {
        "held-out"
    } else {
        name
    }
}

struct RunFiles {
    log: std::fs::File,
    checkpoint: PathBuf,
    /// The last weights (at the last checkpoint).
    model: PathBuf,
    /// The weights of the lowest held-out BPB so far.
    best: PathBuf,
}

/// Advances the job one step at a time: a log line per step (with its evaluations), the
/// checkpoint and model files at each checkpoint, the progress bar throughout.
fn drive<A: Architecture, B: StepBackend<A>>(job: &mut Job<A>, backend: &mut B, mut files: RunFiles) -> Result<()> {
    eprintln!("training on {}", backend.describe());
    let bar = ProgressBar::new(job.spec().steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(job.completed() as u64);
    let first_step = job.completed();
    let mut saved_step = first_step;
    let start = Instant::now();
    // A step's log line, with the evaluation after it when there is one (the next slice).
    let mut record = serde_json::Value::Null;
    let mut stopped_early = None;
    while !job.is_done() {
        let mut checkpoint = None;
        let mut best = None;
        let mut finished = Vec::new();
        let mut on_event = |e: Event| -> itera_core::Result<()> {
            match e {
                Event::Step {
                    step,
                    loss,
                    ce,
                    aux,
                    kl,
                    lr,
                    grad_norm,
                    tokens_per_s,
                    elapsed_s,
                    expert_load,
                    aux_layers,
                } => {
                    if !record.is_null() {
                        finished.push(std::mem::take(&mut record));
                    }
                    record = json!({
                        "step": step, "loss": loss, "ce": ce, "aux": aux, "kl": kl, "lr": lr,
                        "grad_norm": grad_norm, "tokens_per_s": tokens_per_s, "elapsed_s": elapsed_s,
                        "expert_load": expert_load, "aux_layers": aux_layers,
                    });
                    bar.set_message(format!("loss {loss:.4}  {tokens_per_s:.0} tok/s"));
                    bar.inc(1);
                }
                Event::Evaluating { sets, tokens, .. } => {
                    bar.set_message(format!("evaluating held-out BPB ({sets} × at most {tokens} tokens)…"));
                }
                Event::Eval { step, results } => {
                    let mut line = format!(
                        "step {step:>6}: loss {:.4}",
                        record["loss"].as_f64().unwrap_or(f64::NAN)
                    );
                    for r in results {
                        record[format!("{}_bpb", r.name)] = json!(r.bits_per_byte);
                        line += &format!("  {} {:.4}", set_label(&r.name), r.bits_per_byte);
                    }
                    // Printed whether or not the bar is drawn (a log file, CI).
                    bar.suspend(|| eprintln!("{line} bits/byte"));
                }
                Event::Best { bytes, .. } => best = Some(bytes),
                Event::Checkpoint { step, bytes } => checkpoint = Some((step, bytes)),
                Event::Done { stopped_early: s, .. } => stopped_early = s,
            }
            Ok(())
        };
        let advanced = pollster::block_on(job.advance(backend, Budget::steps(1), &mut on_event));
        if let Err(e) = advanced {
            bar.abandon();
            bail!(
                "{e}. The last good checkpoint is {} (step {saved_step}); lower --lr or --clip and --resume.",
                files.checkpoint.display()
            );
        }
        for line in finished {
            writeln!(files.log, "{line}")?;
        }
        if let Some(bytes) = best {
            write_atomic(&files.best, &bytes)?;
        }
        if let Some((step, bytes)) = checkpoint {
            // One step per slice, so the job's state is the checkpoint's.
            write_atomic(&files.model, &format::save(&job.model())?)?;
            write_atomic(&files.checkpoint, &bytes)?;
            saved_step = step;
        }
    }
    if !record.is_null() {
        writeln!(files.log, "{record}")?;
    }
    bar.finish();
    let secs = start.elapsed().as_secs_f64();
    let done = job.completed() - first_step;
    eprintln!(
        "trained {done} steps in {secs:.1} s ({:.0} tokens/s); checkpoint {} at step {} of {}",
        (done * job.spec().tokens_per_step()) as f64 / secs,
        files.checkpoint.display(),
        job.completed(),
        job.spec().steps
    );
    if let Some(stop) = stopped_early {
        eprintln!(
            "stopped early at step {}: {} evaluations in a row did not lower the {} BPB below {:.4} (step {})",
            job.completed(),
            stop.patience,
            set_label(&stop.set),
            stop.best.bits_per_byte,
            stop.best.step
        );
    }
    match job.best() {
        Some(b) if b.step > 0 => eprintln!(
            "best: {} BPB {:.4} at step {} → {}; last: step {} → {}",
            set_label(job.judged_set().unwrap_or_default()),
            b.bits_per_byte,
            b.step,
            files.best.display(),
            job.completed(),
            files.model.display()
        ),
        Some(b) => eprintln!(
            "best: the starting weights ({} BPB {:.4} at step 0) — no step improved on them; last: {}",
            set_label(job.judged_set().unwrap_or_default()),
            b.bits_per_byte,
            files.model.display()
        ),
        None => {}
    }
    Ok(())
}
