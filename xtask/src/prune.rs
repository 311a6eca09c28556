//! `cargo xtask prune`: every MoE layer of an SSM + MoE model keeps its `--keep` experts of most
//! router weight on calibration text (`itera_core::prune`), optionally healed by a short
//! fine-tune through the training job; parameters, bytes and BPB before, after pruning and
//! after healing. `xtask export --prune` ships such variants through `prune_and_heal`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use itera_core::prune::{expert_scores, kept_experts, prune};
use itera_core::sensitivity::{bits_per_byte, Probe};
use itera_core::tokenizer::Tokenizer;
use itera_core::train::{encode_corpus, Budget, CpuStep, DistillSpec, Job, JobData, Provenance, TrainSpec};
use itera_core::Weights;

use crate::run::read_text;
use crate::sensitivity::{calibration_probe, shipped_tokenizer};

#[derive(Args)]
pub struct PruneArgs {
    /// An SSM + MoE model (any precision; the pruned file keeps it).
    #[arg(long)]
    model: PathBuf,
    /// Experts each MoE layer keeps (top_k becomes at most this).
    #[arg(long)]
    keep: usize,
    /// Calibration text: the experts are scored and the BPB measured on it (default: as
    /// `xtask sensitivity`).
    #[arg(long)]
    text: Vec<PathBuf>,
    /// Calibration tokens (whole windows of 128).
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    /// Steps of a healing fine-tune after pruning: the training job distilling from the
    /// unpruned model (batch 8 × 128 tokens, peak learning rate 2e-4); 0 heals nothing.
    #[arg(long, default_value_t = 0)]
    heal_steps: usize,
    /// What the healing fine-tune trains on: training text, not the calibration text the BPB
    /// is measured on (stories separated by <|endoftext|>, e.g. the model's corpus).
    #[arg(long)]
    heal_text: Vec<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

/// A healing fine-tune: `steps` steps on `texts`.
pub struct Heal<'a> {
    pub steps: usize,
    pub texts: &'a [PathBuf],
}

/// What pruning (and healing) gave.
pub struct Pruned {
    pub kept: Vec<(usize, Vec<usize>)>,
    /// Per MoE layer, each expert's share of the router weight on the calibration text.
    pub scores: Vec<(usize, Vec<f64>)>,
    pub pruned: Weights,
    pub healed: Option<Weights>,
}

/// Prunes `w` to `keep` experts per MoE layer by their router weight on `probe`'s tokens, and
/// with `heal` fine-tunes the pruned model (in f32, then back to `w`'s precisions).
pub fn prune_and_heal(
    w: &Weights,
    tokenizer: &Tokenizer,
    probe: &Probe,
    keep: usize,
    heal: Option<Heal>,
) -> Result<Pruned> {
    if keep == 0 || keep >= w.config.n_experts {
        bail!(
            "--keep {keep}: keep between 1 and {} of the {} experts",
            w.config.n_experts.saturating_sub(1),
            w.config.n_experts
        );
    }
    // The experts are scored on the calibration tokens the BPB is measured on.
    let scores = expert_scores(w, probe.tokens())?;
    let kept = kept_experts(&scores, keep);
    let pruned = prune(w, &kept)?;
    let healed = match heal {
        Some(h) if h.steps > 0 => Some(heal_model(w, &pruned, tokenizer, h)?),
        _ => None,
    };
    Ok(Pruned {
        kept,
        scores,
        pruned,
        healed,
    })
}

/// `pruned` after `heal.steps` steps of the training job on `heal.texts`, distilling from the
/// unpruned model `original` (its logits at T = 2, β = 0.7, as `xtask distill`): the model
/// learns back what the removed experts did rather than drifting to the text alone, which
/// made itera-tiny worse (+1.73 % → +3.12 % after 600 plain steps). Peak learning rate 2e-4
/// over sequences of 128: a trained model is perturbed, not retrained. The result in the
/// pruned model's own precisions.
fn heal_model(original: &Weights, pruned: &Weights, tokenizer: &Tokenizer, heal: Heal) -> Result<Weights> {
    if heal.texts.is_empty() {
        bail!("--heal-steps needs --heal-text: training text, apart from the calibration text the BPB is measured on");
    }
    let texts = heal.texts.iter().map(|p| read_text(p)).collect::<Result<Vec<_>>>()?;
    let stream = encode_corpus(tokenizer, &texts.join("\n<|endoftext|>\n")).context("--heal-text")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = TrainSpec {
        steps: heal.steps,
        seq_len: 128,
        lr: 2e-4,
        min_lr: 2e-5,
        eval_every: heal.steps,
        checkpoint_every: heal.steps,
        shards: threads.min(TrainSpec::FINE_TUNE.batch),
        distill: Some(DistillSpec::DEFAULT),
        ..TrainSpec::FINE_TUNE
    };
    let data = JobData {
        tokenizer: tokenizer.clone(),
        stream,
        eval_sets: Vec::new(),
        teacher: Some(original.to_precision(itera_core::Precision::F32).into()),
    };
    let provenance = Provenance {
        corpus: Some(
            heal.texts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        teacher: Some("the unpruned model".into()),
        ..Provenance::default()
    };
    let start = Instant::now();
    let clock = Box::new(move || start.elapsed().as_secs_f64());
    let mut job = Job::new(spec, pruned, data, provenance, clock)?;
    let mut cpu = CpuStep::new(&job.state().weights, job.spec().step_config(), threads);
    while !job.is_done() {
        pollster::block_on(job.advance(&mut cpu, Budget::steps(heal.steps), &mut |_| Ok(())))?;
    }
    eprintln!(
        "healed: {} steps on {} tokens of training text in {:.1} s",
        heal.steps,
        job.data().stream.len(),
        job.seconds()
    );
    Ok(job
        .model()
        .to_precision_map(pruned.precision, &pruned.precision_map())?)
}

/// `cargo xtask prune`.
pub fn run(a: PruneArgs) -> Result<()> {
    let bytes = std::fs::read(&a.model).with_context(|| a.model.display().to_string())?;
    let w = itera_core::format::load(&bytes).context("pruning works on SSM + MoE models")?;
    let tokenizer = shipped_tokenizer()?;
    let probe = calibration_probe(&tokenizer, &a.text, a.max_tokens)?;
    let heal = Heal {
        steps: a.heal_steps,
        texts: &a.heal_text,
    };
    let p = prune_and_heal(&w, &tokenizer, &probe, a.keep, Some(heal))?;
    for ((l, s), (_, k)) in p.scores.iter().zip(&p.kept) {
        let total: f64 = s.iter().sum();
        let shares: Vec<String> = s
            .iter()
            .map(|x| format!("{:.1}%", 100.0 * x / total.max(1e-12)))
            .collect();
        eprintln!("layer {l}: router weight per expert {} → keeps {k:?}", shares.join(" "));
    }
    let kept = p.healed.as_ref().unwrap_or(&p.pruned);
    let out = itera_core::format::save(kept)?;
    std::fs::write(&a.out, &out)?;
    let bpb = |m: &Weights| bits_per_byte(&m.clone().into(), &probe);
    let before = bpb(&w)?;
    let change = |after: f64| format!("{after:.4} ({:+.2} %)", 100.0 * (after - before) / before);
    let healed = match &p.healed {
        Some(h) => format!(", healed {}", change(bpb(h)?)),
        None => String::new(),
    };
    eprintln!(
        "wrote {}: {} → {} experts per MoE layer (top-{}), {} → {} parameters, {} → {} bytes; BPB {before:.4} → pruned {}{healed} on {} positions",
        a.out.display(),
        w.config.n_experts,
        p.pruned.config.n_experts,
        p.pruned.config.top_k,
        w.total_params(),
        p.pruned.total_params(),
        bytes.len(),
        out.len(),
        change(bpb(&p.pruned)?),
        probe.positions()
    );
    Ok(())
}
