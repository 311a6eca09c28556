//! `cargo xtask compare-arch`: the SSM + MoE model against the Transformer of the same size,
//! trained the same way (weights/README.md), in one interleaved run on this machine: held-out
//! bits per byte, decode tokens/s as the context grows (one thread), prefill and training
//! tokens/s, and from the config the FLOPs and decoding state per token. Prints a table,
//! writes JSON and an SVG chart of tokens/s and state bytes against the context length.
//!
//! Interleaving: every measurement alternates between the two models of a pair (and decode
//! speed is measured position by position for both before moving on), so a slow drift in the
//! load of a shared machine moves both alike and their ratios hold; each speed is the best of
//! `--rounds`. With `--gpu` decode speed is measured on the GPU backend too (both families
//! decode there: the prompt as batched prefill or forced steps, then 16 tokens per submission).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use itera_core::eval::{eval_model, EvalReport};
use itera_core::family::Architecture;
use itera_core::gpu::model::GpuModel;
use itera_core::gpu::transformer::MAX_GPU_CONTEXT;
use itera_core::gpu::Gpu;
use itera_core::rng::Pcg32;
use itera_core::sampling::argmax;
use itera_core::tokenizer::Tokenizer;
use itera_core::train::{sample_batch, CpuStep, TrainSpec, TrainState};
use itera_core::{format, Itera, Precision, Transformer, Weights};
use serde::Serialize;

use crate::run::read_text;

#[derive(Args)]
pub struct CompareArchArgs {
    /// Sizes to compare: each pairs itera-SIZE with transformer-SIZE from --dir.
    #[arg(long, value_delimiter = ',', default_value = "tiny,micro")]
    sizes: Vec<String>,
    #[arg(long, default_value = "weights")]
    dir: PathBuf,
    /// The precision of the files compared.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Context lengths at which decode speed is measured.
    #[arg(long, value_delimiter = ',', default_value = "64,512,2048,8192")]
    contexts: Vec<usize>,
    /// Tokens decoded per measurement.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Rounds of every speed measurement (decode from the same saved state each round); the
    /// best is kept, as a shared machine only ever slows a round down.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Training steps timed per model (batch 8 × 256 tokens, one thread), after one untimed.
    #[arg(long, default_value_t = 3)]
    train_steps: usize,
    /// Held-out texts (default: ../shared/data/heldout/*.txt).
    #[arg(long)]
    heldout: Vec<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw tokens/s and state bytes against the context here (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Also measure decode speed on the GPU backend (the first adapter wgpu finds; a software
    /// one such as lavapipe measures nothing about GPUs).
    #[arg(long)]
    gpu: bool,
}

/// Tokens per submission of the GPU decode measurement.
const GPU_TOKENS_PER_SUBMISSION: usize = 16;

/// One model's figures.
#[derive(Clone, Serialize)]
struct ModelResult {
    name: String,
    family: &'static str,
    params: usize,
    active_params: usize,
    heldout_bpb: Option<f64>,
    /// Prompt tokens/s of a 512-token prefill from the empty context.
    prefill_tokens_per_s: f64,
    /// Training tokens/s: forward, backward and AdamW, batch 8 × 256, one thread.
    train_tokens_per_s: f64,
    contexts: Vec<AtContext>,
}

#[derive(Clone, Serialize)]
struct AtContext {
    context: usize,
    decode_tokens_per_s: f64,
    /// With --gpu: decode tokens/s on the GPU backend from this context (each round goes on
    /// from where the previous one ended, up to rounds × tokens further).
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_decode_tokens_per_s: Option<f64>,
    flops_per_token: u64,
    state_bytes: u64,
}

#[derive(Serialize)]
struct PairResult {
    size: String,
    precision: String,
    models: [ModelResult; 2],
    /// Where the Transformer's decode speed falls below the SSM's (interpolated in log
    /// context between the measured lengths), or why there is no such point here.
    crossover: String,
}

/// A model of either family being measured: its weights, decode state and a generic driver.
trait Subject {
    fn name(&self) -> &str;
    fn bpb(&self, tok: &Tokenizer, texts: &[String]) -> Result<f64>;
    fn prefill_speed(&mut self, tokens: &[u32]) -> Result<f64>;
    fn train_speed(&self, stream: &[u32], steps: usize) -> Result<f64>;
    /// Prefills up to `context` tokens, then decodes `n` from that state in each of `rounds`
    /// and returns the best tokens/s.
    fn decode_speed_at(&mut self, context: usize, n: usize, rounds: usize, filler: &[u32]) -> Result<f64>;
    /// On the GPU: runs `context` tokens of `filler` as the prompt, then decodes `n` tokens in
    /// each of `rounds` (the state goes on), and records the best tokens/s at `context`.
    fn gpu_decode_speed_at(
        &mut self,
        gpu: &Gpu,
        context: usize,
        n: usize,
        rounds: usize,
        filler: &[u32],
    ) -> Result<f64>;
    /// The figures gathered so far.
    fn result(&mut self) -> &mut ModelResult;
}

/// A family's model on the GPU backend.
trait OnGpu: Architecture {
    fn upload(gpu: &Gpu, w: &Weights<Self>) -> itera_core::Result<GpuModel>;
}

impl OnGpu for Itera {
    fn upload(gpu: &Gpu, w: &Weights) -> itera_core::Result<GpuModel> {
        GpuModel::new(gpu, w)
    }
}

impl OnGpu for Transformer {
    fn upload(gpu: &Gpu, w: &Weights<Transformer>) -> itera_core::Result<GpuModel> {
        GpuModel::transformer(gpu, w)
    }
}

struct Measured<A: Architecture> {
    name: String,
    weights: Weights<A>,
    state: A::State,
    cache: A::Cache,
    result: ModelResult,
}

impl<A: Architecture> Measured<A> {
    fn load(dir: &Path, name: String, precision: Precision) -> Result<Measured<A>> {
        let path = dir.join(format!("{name}-{precision}.safetensors"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {}: train and export {name} first (the commands are in weights/README.md)",
                path.display()
            )
        })?;
        let weights = format::load_as::<A>(&bytes).with_context(|| format!("loading {}", path.display()))?;
        let result = ModelResult {
            name: name.clone(),
            family: A::FAMILY.as_str(),
            params: weights.total_params(),
            active_params: A::active_params(&weights.config),
            heldout_bpb: None,
            prefill_tokens_per_s: 0.0,
            train_tokens_per_s: 0.0,
            contexts: Vec::new(),
        };
        Ok(Measured {
            state: A::new_state(&weights),
            cache: A::Cache::default(),
            name,
            weights,
            result,
        })
    }
}

impl<A: OnGpu> Subject for Measured<A> {
    fn name(&self) -> &str {
        &self.name
    }

    fn bpb(&self, tok: &Tokenizer, texts: &[String]) -> Result<f64> {
        let mut total = EvalReport::default();
        for t in texts {
            total.merge(&eval_model(&self.weights, tok, t)?);
        }
        Ok(total.bits_per_byte())
    }

    fn prefill_speed(&mut self, tokens: &[u32]) -> Result<f64> {
        A::reset(&mut self.state);
        let start = Instant::now();
        A::prefill_chunked(&self.weights, tokens, &mut self.state, &mut self.cache, &mut |_, _| {
            Ok(())
        })?;
        Ok(tokens.len() as f64 / start.elapsed().as_secs_f64())
    }

    fn train_speed(&self, stream: &[u32], steps: usize) -> Result<f64> {
        let spec = TrainSpec {
            batch: 8,
            seq_len: 256,
            shards: 1,
            ..TrainSpec::DEFAULT
        };
        let mut state = TrainState::new(&self.weights, spec.weight_decay as f32);
        let mut step = CpuStep::new(&state.weights, spec.step_config(), 1);
        let mut rng = Pcg32::new(1);
        let mut seconds = 0.0;
        for s in 0..=steps {
            let batch = sample_batch(stream, spec.batch, spec.seq_len, &mut rng)?;
            let start = Instant::now();
            step.step_now(&mut state, &batch, 1e-4, None)?;
            if s > 0 {
                seconds += start.elapsed().as_secs_f64();
            }
        }
        Ok((steps * spec.tokens_per_step()) as f64 / seconds)
    }

    fn decode_speed_at(&mut self, context: usize, n: usize, rounds: usize, filler: &[u32]) -> Result<f64> {
        let at = A::position(&self.state);
        if context > at {
            let fill = &filler[at..context];
            A::prefill_chunked(
                &self.weights,
                fill,
                &mut self.state,
                &mut self.cache,
                &mut |_, _| Ok(()),
            )?;
        }
        let saved = self.state.clone();
        let mut speed = 0.0f64;
        for _ in 0..rounds.max(1) {
            let mut st = saved.clone();
            let mut token = argmax(A::state_logits(&st));
            let start = Instant::now();
            for _ in 0..n {
                token = argmax(A::decode_step(&self.weights, &mut st, token)?);
            }
            speed = speed.max(n as f64 / start.elapsed().as_secs_f64());
        }
        let cost = A::token_cost(&self.weights.config, context);
        self.result.contexts.push(AtContext {
            context,
            decode_tokens_per_s: speed,
            gpu_decode_tokens_per_s: None,
            flops_per_token: cost.flops,
            state_bytes: cost.state_bytes,
        });
        Ok(speed)
    }

    fn gpu_decode_speed_at(
        &mut self,
        gpu: &Gpu,
        context: usize,
        n: usize,
        rounds: usize,
        filler: &[u32],
    ) -> Result<f64> {
        let mut m = A::upload(gpu, &self.weights)?;
        let mut last = *pollster::block_on(m.prefill(gpu, &filler[..context], false))?
            .tokens
            .last()
            .context("the prefill sampled no token")?;
        let mut decode = |tokens: usize| -> Result<f64> {
            let start = Instant::now();
            let mut done = 0;
            while done < tokens {
                let k = GPU_TOKENS_PER_SUBMISSION.min(tokens - done);
                let out = pollster::block_on(m.generate(gpu, last, k, false))?;
                last = *out.tokens.last().context("no token")?;
                done += k;
            }
            Ok(tokens as f64 / start.elapsed().as_secs_f64())
        };
        decode(GPU_TOKENS_PER_SUBMISSION)?; // warm-up: the first submissions build caches
        let mut speed = 0.0f64;
        for _ in 0..rounds.max(1) {
            speed = speed.max(decode(n)?);
        }
        if let Some(at) = self.result.contexts.iter_mut().find(|c| c.context == context) {
            at.gpu_decode_tokens_per_s = Some(speed);
        }
        Ok(speed)
    }

    fn result(&mut self) -> &mut ModelResult {
        &mut self.result
    }
}

pub fn run(a: CompareArchArgs) -> Result<()> {
    let tok_path = a.dir.join("tokenizer.json");
    let tok = Tokenizer::from_file(&tok_path).with_context(|| format!("loading {}", tok_path.display()))?;
    let heldout = crate::heldout_or_default(&a.heldout);
    let texts = heldout.iter().map(|p| read_text(p)).collect::<Result<Vec<_>>>()?;
    let mut contexts = a.contexts.clone();
    contexts.sort_unstable();
    let longest = contexts.last().copied().unwrap_or(0);
    if contexts.is_empty() || contexts[0] == 0 {
        bail!("--contexts: give lengths of at least 1");
    }
    // Filler text for the contexts: the held-out stories (or the sample set) tokenized, repeated.
    let story_text = if texts.is_empty() {
        include_str!("../../web/finetune-stories.txt").to_string()
    } else {
        texts.join("\n")
    };
    let story = tok.encode(&story_text)?;
    let filler: Vec<u32> = story.iter().copied().cycle().take(longest + 1024).collect();

    let gpu = if a.gpu {
        let gpu = Gpu::new_blocking().context("--gpu: no GPU adapter")?;
        eprintln!("GPU: {}", gpu.describe());
        Some(gpu)
    } else {
        None
    };
    let mut pairs = Vec::new();
    for size in &a.sizes {
        let mut ssm = Measured::<Itera>::load(&a.dir, format!("itera-{size}"), a.precision)?;
        let mut tf = Measured::<Transformer>::load(&a.dir, format!("transformer-{size}"), a.precision)?;
        let max = tf.weights.config.max_seq_len;
        let gpu_room = (1 + a.rounds.max(1)) * a.tokens.max(GPU_TOKENS_PER_SUBMISSION);
        if a.gpu && longest + gpu_room > max.min(MAX_GPU_CONTEXT) {
            bail!(
                "--gpu: --contexts up to {longest} plus {gpu_room} decoded tokens exceed the {} positions transformer-{size} holds on the GPU",
                max.min(MAX_GPU_CONTEXT)
            );
        }
        if longest + a.tokens > max {
            bail!(
                "--contexts up to {longest} plus --tokens {} exceed transformer-{size}'s max_seq_len {max}",
                a.tokens
            );
        }
        let mut both: [&mut dyn Subject; 2] = [&mut ssm, &mut tf];
        eprintln!("== {size}: {} vs {}", both[0].name(), both[1].name());
        if !texts.is_empty() {
            for s in both.iter_mut() {
                let bpb = s.bpb(&tok, &texts)?;
                eprintln!("  {}: held-out {bpb:.4} bits/byte", s.name());
                s.result().heldout_bpb = Some(bpb);
            }
        }
        for _ in 0..a.rounds.max(1) {
            for s in both.iter_mut() {
                let speed = s.prefill_speed(&filler[..512])?;
                let best = &mut s.result().prefill_tokens_per_s;
                *best = best.max(speed);
            }
        }
        for s in both.iter_mut() {
            let speed = s.train_speed(&filler, a.train_steps)?;
            eprintln!("  {}: training {speed:.0} tokens/s", s.name());
            s.result().train_tokens_per_s = speed;
        }
        for s in both.iter_mut() {
            s.prefill_speed(&filler[..1])?; // back to a one-token context
        }
        for &c in &contexts {
            for s in both.iter_mut() {
                let speed = s.decode_speed_at(c, a.tokens, a.rounds, &filler)?;
                eprintln!("  {}: context {c}: {speed:.0} tokens/s", s.name());
            }
            if let Some(gpu) = &gpu {
                for s in both.iter_mut() {
                    let speed = s.gpu_decode_speed_at(gpu, c, a.tokens, a.rounds, &filler)?;
                    eprintln!("  {}: context {c}: {speed:.0} tokens/s on the GPU", s.name());
                }
            }
        }
        let models = [both[0].result().clone(), both[1].result().clone()];
        pairs.push(PairResult {
            size: size.clone(),
            precision: a.precision.to_string(),
            crossover: crossover(&models),
            models,
        });
    }
    print_table(&pairs);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&pairs)? + "\n")?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &a.svg {
        std::fs::write(path, chart(&pairs))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The context at which the Transformer's decode speed drops below the SSM's.
fn crossover([ssm, tf]: &[ModelResult; 2]) -> String {
    let points: Vec<(f64, f64)> = ssm
        .contexts
        .iter()
        .zip(&tf.contexts)
        .map(|(s, t)| ((s.context as f64).ln(), t.decode_tokens_per_s / s.decode_tokens_per_s))
        .collect();
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => return "no contexts measured".into(),
    };
    if first.1 < 1.0 {
        return format!(
            "none: {} decodes faster at every measured context (from {})",
            ssm.name,
            first.0.exp().round()
        );
    }
    for w in points.windows(2) {
        let ((x0, r0), (x1, r1)) = (w[0], w[1]);
        if r0 >= 1.0 && r1 < 1.0 {
            let x = x0 + (r0 - 1.0) / (r0 - r1) * (x1 - x0);
            return format!("about {:.0} tokens of context", x.exp());
        }
    }
    format!(
        "none up to {}: {} decodes faster throughout ({:.2}× at the longest)",
        last.0.exp().round(),
        tf.name,
        last.1
    )
}

fn print_table(pairs: &[PairResult]) {
    for p in pairs {
        println!("\n{} ({} files)", p.size, p.precision);
        let [s, t] = &p.models;
        let row = |label: &str, f: &dyn Fn(&ModelResult) -> String| {
            println!("| {label:<34} | {:>16} | {:>16} |", f(s), f(t));
        };
        println!("| {:<34} | {:>16} | {:>16} |", "", s.name, t.name);
        println!("|{}|{}|{}|", "-".repeat(36), "-".repeat(18), "-".repeat(18));
        row("parameters (active per token)", &|m| {
            format!("{} ({})", m.params, m.active_params)
        });
        row("held-out bits/byte", &|m| {
            m.heldout_bpb.map_or("–".into(), |b| format!("{b:.4}"))
        });
        row("prefill tokens/s (512 tokens)", &|m| {
            format!("{:.0}", m.prefill_tokens_per_s)
        });
        row("training tokens/s (1 thread)", &|m| {
            format!("{:.0}", m.train_tokens_per_s)
        });
        for (i, c) in s.contexts.iter().enumerate() {
            row(&format!("decode tokens/s at {}", c.context), &|m| {
                format!("{:.0}", m.contexts[i].decode_tokens_per_s)
            });
            if c.gpu_decode_tokens_per_s.is_some() {
                row(&format!("GPU decode tokens/s at {}", c.context), &|m| {
                    m.contexts[i]
                        .gpu_decode_tokens_per_s
                        .map_or("–".into(), |v| format!("{v:.0}"))
                });
            }
            row(&format!("MFLOPs/token at {}", c.context), &|m| {
                format!("{:.2}", m.contexts[i].flops_per_token as f64 / 1e6)
            });
            row(&format!("state KiB at {}", c.context), &|m| {
                format!("{:.1}", m.contexts[i].state_bytes as f64 / 1024.0)
            });
        }
        println!("crossover of decode speed: {}", p.crossover);
    }
}

/// Two panels side by side: decode tokens/s and state bytes against the context length (log
/// scales), one line per model.
fn chart(pairs: &[PairResult]) -> String {
    let models: Vec<&ModelResult> = pairs.iter().flat_map(|p| p.models.iter()).collect();
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
    let (w, h, pad) = (420.0, 300.0, 60.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w + 40.0,
        h + 70.0
    );
    type Value<'a> = &'a dyn Fn(&AtContext) -> f64;
    let panels: [(&str, Value); 2] = [
        ("decode tokens/s (1 thread)", &|c| c.decode_tokens_per_s),
        ("decoding state, bytes", &|c| c.state_bytes as f64),
    ];
    for (pi, (title, value)) in panels.iter().enumerate() {
        let x0 = pi as f64 * (w + 40.0);
        let points: Vec<(f64, f64)> = models
            .iter()
            .flat_map(|m| m.contexts.iter().map(|c| (c.context as f64, value(c))))
            .filter(|(_, y)| *y > 0.0)
            .collect();
        if points.is_empty() {
            continue;
        }
        let (lx0, lx1) = bounds(points.iter().map(|p| p.0.log10()));
        let (ly0, ly1) = bounds(points.iter().map(|p| p.1.log10()));
        let sx = |x: f64| x0 + pad + (x.log10() - lx0) / (lx1 - lx0).max(1e-9) * (w - pad - 10.0);
        let sy = |y: f64| 30.0 + (1.0 - (y.log10() - ly0) / (ly1 - ly0).max(1e-9)) * (h - 50.0);
        svg += &format!(
            "<text x=\"{}\" y=\"18\" font-weight=\"bold\">{title}</text>\n\
             <line x1=\"{a}\" y1=\"{b}\" x2=\"{c}\" y2=\"{b}\" stroke=\"#888\"/>\n\
             <line x1=\"{a}\" y1=\"30\" x2=\"{a}\" y2=\"{b}\" stroke=\"#888\"/>\n",
            x0 + pad,
            a = x0 + pad,
            b = h - 20.0,
            c = x0 + w - 10.0
        );
        for c in models.first().map(|m| m.contexts.as_slice()).unwrap_or(&[]) {
            svg += &format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                sx(c.context as f64),
                h - 5.0,
                c.context
            );
        }
        for y in [10f64.powf(ly0), 10f64.powf((ly0 + ly1) / 2.0), 10f64.powf(ly1)] {
            svg += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                x0 + pad - 4.0,
                sy(y) + 4.0,
                short(y)
            );
        }
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">context length (tokens)</text>\n",
            x0 + pad + (w - pad) / 2.0,
            h + 15.0
        );
        for (mi, m) in models.iter().enumerate() {
            let colour = colours[mi % colours.len()];
            let dash = if m.family == "transformer" {
                " stroke-dasharray=\"6 3\""
            } else {
                ""
            };
            let pts: Vec<String> = m
                .contexts
                .iter()
                .filter(|c| value(c) > 0.0)
                .map(|c| format!("{:.1},{:.1}", sx(c.context as f64), sy(value(c))))
                .collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
                pts.join(" ")
            );
        }
    }
    for (mi, m) in models.iter().enumerate() {
        let colour = colours[mi % colours.len()];
        let y = h + 40.0;
        let x = 20.0 + mi as f64 * 200.0;
        svg += &format!(
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2\"{}/>\
             <text x=\"{}\" y=\"{}\">{}</text>\n",
            x + 24.0,
            if m.family == "transformer" {
                " stroke-dasharray=\"6 3\""
            } else {
                ""
            },
            x + 30.0,
            y + 4.0,
            m.name
        );
    }
    svg + "</svg>\n"
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
}

fn short(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.0}M", v / 1e6),
        v if v >= 1e3 => format!("{:.0}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}
