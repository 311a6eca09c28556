//! Model commands: init, tokenizer, convert, generate, eval.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use itera_core::eval::{EvalOptions, EvalProgress, EvalReport};
use itera_core::generate::{generate as generate_itera, GenerateOptions};
use itera_core::gpu::generate::generate as gpu_generate;
use itera_core::gpu::model::GpuModel;
use itera_core::gpu::Gpu;
use itera_core::lm::AnyWeights;
use itera_core::sampling::{Sampler, SamplingSettings};
use itera_core::tokenizer::{Tokenizer, END_OF_TEXT};
use itera_core::{format, llama2c, Architecture, Family, Precision, PrecisionMap};
use serde_json::json;

use crate::models::{self, AnyModel};

#[derive(Args)]
pub struct InitArgs {
    /// A preset (test, micro, tiny, 15m) or a config JSON file (of --family's keys).
    #[arg(long)]
    config: String,
    /// `itera` (SSM + MoE) or `transformer` (the llama2.c architecture).
    #[arg(long, default_value_t = Family::Itera)]
    family: Family,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "f32")]
    precision: String,
    #[arg(long)]
    out: PathBuf,
    /// Tokenizer the model will use: sets vocab_size and is recorded (and copied next to --out).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

/// A text file that must be UTF-8 (corpora, evaluation texts).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}

/// A config of family `A`: a preset name or a JSON file.
pub fn load_family_config<A: itera_core::Architecture>(spec: &str) -> Result<A::Config> {
    if spec.ends_with(".json") {
        let text = std::fs::read_to_string(spec).with_context(|| format!("cannot read config {spec}"))?;
        return Ok(A::config_from_json(&text)?);
    }
    Ok(A::preset(spec)?)
}

pub fn init(a: InitArgs) -> Result<()> {
    match a.family {
        Family::Itera => init_family::<itera_core::Itera>(&a),
        Family::Transformer => init_family::<itera_core::Transformer>(&a),
    }
}

fn init_family<A: Architecture>(a: &InitArgs) -> Result<()> {
    let mut config = load_family_config::<A>(&a.config)?;
    let precision: Precision = a.precision.parse()?;
    if let Some(tp) = &a.tokenizer {
        let tok = Tokenizer::from_file(tp)?;
        let name = tp.file_name().context("tokenizer path has no file name")?;
        let dest = a.out.parent().unwrap_or(std::path::Path::new(".")).join(name);
        if !dest.exists() {
            std::fs::copy(tp, &dest).with_context(|| format!("copying tokenizer to {}", dest.display()))?;
        }
        config = A::with_tokenizer(&config, tok.vocab_size(), Some(name.to_string_lossy().into_owned()));
    }
    let w = A::init_random(&config, a.seed)?.to_precision(precision);
    format::save_file(&w, &a.out)?;
    eprintln!(
        "wrote {} ({}, {} parameters, {} active per token, {precision}, {} bytes)",
        a.out.display(),
        A::FAMILY.description(),
        w.total_params(),
        A::active_params(&w.config),
        std::fs::metadata(&a.out)?.len()
    );
    Ok(())
}

#[derive(Args)]
pub struct TokenizerArgs {
    /// Text corpus; documents separated by <|endoftext|>.
    #[arg(long)]
    corpus: PathBuf,
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    #[arg(long)]
    out: PathBuf,
}

pub fn tokenizer(a: TokenizerArgs) -> Result<()> {
    let text = read_text(&a.corpus)?;
    if text.trim().is_empty() {
        bail!("corpus {} is empty", a.corpus.display());
    }
    let docs = text
        .split(END_OF_TEXT)
        .map(|d| format!("{d}{END_OF_TEXT}"))
        .collect::<Vec<_>>();
    let tok = Tokenizer::train(docs.into_iter(), a.vocab_size)?;
    std::fs::write(&a.out, tok.to_json()?).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("wrote {} ({} ids)", a.out.display(), tok.vocab_size());
    Ok(())
}

#[derive(Args)]
pub struct ConvertArgs {
    #[arg(long)]
    model: PathBuf,
    /// The precision of every tensor (of the vectors and the matrices the map does not name),
    /// or `auto`: the smallest per-matrix choice within --max-delta-bpb or --max-bytes, from
    /// `xtask sensitivity`'s measurements on --text, checked by a real evaluation.
    #[arg(long)]
    precision: String,
    /// With --precision auto: the most held-out BPB the quantization may add, in percent of the
    /// f32 model's ("1%") or in bits per byte ("0.02").
    #[arg(long)]
    max_delta_bpb: Option<String>,
    /// With --precision auto: the most bytes the weights may take.
    #[arg(long)]
    max_bytes: Option<usize>,
    /// With --precision auto: the calibration text (default: as `xtask sensitivity`).
    #[arg(long)]
    text: Vec<PathBuf>,
    /// A JSON object of matrix name → precision ({"embed": "q8", "layers.0.in_proj": "f16"}):
    /// those matrices in their own precision, a mixed file (format version 2).
    #[arg(long)]
    precision_map: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

/// A model of either family in another precision, or in several (`--precision-map`).
pub fn convert(a: ConvertArgs) -> Result<()> {
    if a.precision == "auto" {
        return crate::sensitivity::convert_auto(&a.model, &a.text, a.max_delta_bpb.as_deref(), a.max_bytes, &a.out);
    }
    let precision: Precision = a.precision.parse()?;
    let map: PrecisionMap = match &a.precision_map {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("{}: a JSON object of matrix name → precision", path.display()))?,
        None => PrecisionMap::new(),
    };
    let w = AnyWeights::load(&std::fs::read(&a.model)?)?
        .to_precision_map(precision, &map)
        .with_context(|| {
            format!(
                "--precision-map {}",
                a.precision_map.as_deref().unwrap_or(Path::new("")).display()
            )
        })?;
    std::fs::write(&a.out, w.save()?)?;
    let mixed = if map.is_empty() {
        String::new()
    } else {
        format!(", {} matrices in their own precision", map.len())
    };
    eprintln!(
        "wrote {} ({precision}{mixed}, {} bytes)",
        a.out.display(),
        std::fs::metadata(&a.out)?.len()
    );
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Cpu,
    Gpu,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long, default_value = "")]
    prompt: String,
    #[arg(long, default_value_t = itera_core::generate::DEFAULT_NEW_TOKENS)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = SamplingSettings::default().temperature)]
    temperature: f32,
    /// 0 = no top-k limit.
    #[arg(long, default_value_t = SamplingSettings::default().top_k)]
    top_k: usize,
    #[arg(long, default_value_t = SamplingSettings::default().top_p)]
    top_p: f32,
    #[arg(long, default_value_t = SamplingSettings::default().seed)]
    seed: u64,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: Backend,
    /// GPU backend: tokens sampled per submission (1 = one read-back per token).
    #[arg(long, default_value_t = 16)]
    tokens_per_submission: usize,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    let sampling = SamplingSettings {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    let start = Instant::now();
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling,
        stop_at_end_of_text: true,
    };
    let model = models::load(&a.model, a.tokenizer.as_deref())?;
    let mut stdout = std::io::stdout();
    // A llama2.c generation returns the prompt with its story.
    if !a.json && !matches!(model, AnyModel::Llama2 { .. }) {
        print!("{}", a.prompt);
    }
    let mut first_token = None;
    let on_text = |piece: &str| {
        first_token.get_or_insert_with(|| start.elapsed());
        if !a.json {
            print!("{piece}");
            let _ = stdout.flush();
        }
        true
    };
    // On the GPU: the model uploaded (either family), its story `tokens_per_submission` at a time.
    let on_gpu = |upload: &dyn Fn(&Gpu) -> itera_core::Result<GpuModel>,
                  tokenizer: &itera_core::tokenizer::Tokenizer,
                  on_text: &mut dyn FnMut(&str) -> bool|
     -> Result<(itera_core::generate::Generated, String)> {
        let gpu = Gpu::new_blocking()?;
        let mut model = upload(&gpu)?;
        let g = pollster::block_on(gpu_generate(
            &gpu,
            &mut model,
            tokenizer,
            &a.prompt,
            opts,
            a.tokens_per_submission,
            on_text,
        ))?;
        Ok((g, gpu.describe()))
    };
    let (g, backend, precision) = match model {
        AnyModel::Itera { weights, tokenizer } => match a.backend {
            Backend::Cpu => (
                generate_itera(&weights, &tokenizer, &a.prompt, opts, on_text)?,
                "cpu".to_string(),
                weights.precision,
            ),
            Backend::Gpu => {
                let mut on_text = on_text;
                let (g, gpu) = on_gpu(&|gpu| GpuModel::new(gpu, &weights), &tokenizer, &mut on_text)?;
                (g, gpu, weights.precision)
            }
        },
        AnyModel::Transformer { weights, tokenizer } => match a.backend {
            Backend::Cpu => (
                generate_itera(&weights, &tokenizer, &a.prompt, opts, on_text)?,
                "cpu".to_string(),
                weights.precision,
            ),
            Backend::Gpu => {
                let mut on_text = on_text;
                let (g, gpu) = on_gpu(&|gpu| GpuModel::transformer(gpu, &weights), &tokenizer, &mut on_text)?;
                (g, gpu, weights.precision)
            }
        },
        AnyModel::Llama2 { model, tokenizer } => {
            if a.backend == Backend::Gpu {
                bail!("the llama2.c teacher runs on the CPU only (--backend cpu)");
            }
            let mut sampler = Sampler::new(sampling)?;
            // P prompt tokens (BOS included) then N new ones take P − 1 + N forward passes.
            let steps = tokenizer.encode(&a.prompt, true).len() - 1 + a.max_tokens;
            let text = llama2c::generate(&model, &tokenizer, &a.prompt, steps, &mut sampler)?;
            let secs = start.elapsed().as_secs_f64();
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"prompt": a.prompt, "text": text, "seconds": secs}))?
                );
            } else {
                println!("{text}");
                eprintln!("[{secs:.2} s, llama2.c]");
            }
            return Ok(());
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let tps = g.tokens.len() as f64 / secs;
    if a.json {
        let out = json!({
            "prompt": a.prompt, "text": g.text, "tokens": g.tokens, "prompt_tokens": g.prompt_tokens,
            "precision": precision.as_str(), "backend": backend, "seconds": secs, "tokens_per_s": tps,
            "time_to_first_token_s": first_token.map(|d| d.as_secs_f64()),
            "routing": g.routing.iter().map(|layers| layers.iter().map(|r| json!({"experts": r.experts, "weights": r.weights})).collect::<Vec<_>>()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!();
        eprintln!(
            "[{} tokens in {secs:.2} s, {tps:.1} tokens/s, {precision}, {backend}]",
            g.tokens.len(),
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// One or more texts; with several, each is scored on its own and the total is their sum.
    #[arg(long, num_args = 1.., required = true)]
    text: Vec<PathBuf>,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// Stop after scoring this many tokens (over all the files, in order); the output says the
    /// text was cut.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Threads over the documents (default: every core); one when --max-tokens is given.
    #[arg(long)]
    threads: Option<usize>,
}

fn eval_model_with(model: &AnyModel, text: &str, opts: EvalOptions) -> Result<EvalReport> {
    Ok(match model {
        AnyModel::Itera { weights, tokenizer } => itera_core::eval::eval_model_with(weights, tokenizer, text, opts)?,
        AnyModel::Transformer { weights, tokenizer } => {
            itera_core::eval::eval_model_with(weights, tokenizer, text, opts)?
        }
        AnyModel::Llama2 { model, tokenizer } => {
            itera_core::eval::eval_model_with(&model.weights, tokenizer, text, opts)?
        }
    })
}

/// Scores `model` on each file and on all of them together (the sum of their counts), on
/// `threads` threads, stopping after `max_tokens` in all; a bar on the terminal shows the
/// bytes scored, tokens/s and the time left.
pub fn eval_files(
    model: &AnyModel,
    files: &[PathBuf],
    max_tokens: Option<usize>,
    threads: usize,
) -> Result<(EvalReport, Vec<EvalReport>)> {
    let mut total = EvalReport::default();
    let mut each = Vec::new();
    for path in files {
        let text = read_text(path)?;
        let bar = ProgressBar::new(text.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes}  {msg}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let t0 = Instant::now();
        let progress = |p: EvalProgress| {
            bar.set_position(p.bytes_done as u64);
            bar.set_message(format!(
                "{} tokens, {:.0} tokens/s",
                p.tokens,
                p.tokens as f64 / t0.elapsed().as_secs_f64()
            ));
        };
        let opts = EvalOptions {
            max_tokens: max_tokens.map(|m| m.saturating_sub(total.tokens)),
            threads,
            progress: Some(&progress),
        };
        if opts.max_tokens == Some(0) {
            break;
        }
        let r = eval_model_with(model, &text, opts).with_context(|| format!("evaluating on {}", path.display()))?;
        bar.finish_and_clear();
        total.merge(&r);
        each.push(r);
    }
    Ok((total, each))
}

fn report_json(r: &EvalReport) -> serde_json::Value {
    json!({
        "documents": r.documents, "tokens": r.tokens, "bytes": r.bytes,
        "mean_ce": r.mean_ce(), "perplexity": r.perplexity(), "bits_per_byte": r.bits_per_byte(),
        "truncated": r.truncated,
    })
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let model = models::load(&a.model, a.tokenizer.as_deref())?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (total, each) = eval_files(&model, &a.text, a.max_tokens, threads)?;
    if a.json {
        let mut out = report_json(&total);
        out["model"] = json!(a.model);
        out["text"] = json!(a.text);
        if a.text.len() > 1 {
            out["files"] = a
                .text
                .iter()
                .zip(&each)
                .map(|(p, r)| {
                    let mut j = report_json(r);
                    j["text"] = json!(p);
                    j
                })
                .collect();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if a.text.len() > 1 {
        for (p, r) in a.text.iter().zip(&each) {
            println!(
                "{:<40} {:>8} bytes  {:.4} bits/byte",
                p.display(),
                r.bytes,
                r.bits_per_byte()
            );
        }
        println!("all {} files:", a.text.len());
    }
    println!("documents      {}", total.documents);
    println!("tokens         {}", total.tokens);
    println!("bytes          {}", total.bytes);
    println!("mean CE        {:.4} nats/token", total.mean_ce());
    println!("perplexity     {:.3}", total.perplexity());
    println!("bits per byte  {:.4}", total.bits_per_byte());
    if total.truncated {
        println!(
            "(cut at --max-tokens {}: the figures are those of the text scored)",
            total.tokens
        );
    }
    Ok(())
}
