//! `cargo xtask sensitivity`: each group of a model's matrices quantized alone to each lower
//! precision and scored against the f32 model (`itera_core::sensitivity`, where the method and
//! its sources are stated): a table on the terminal, JSON and an SVG chart of ΔBPB per group.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use itera_core::lm::AnyWeights;
use itera_core::sensitivity::{apply, choose, sensitivity, Bound, Choice, Probe, Table};
use itera_core::tokenizer::Tokenizer;
use itera_core::{Precision, PrecisionMap};

#[derive(Args)]
pub struct SensitivityArgs {
    /// The model (either family, any precision: it is made f32 first).
    #[arg(long)]
    model: PathBuf,
    /// Calibration text (default: ../shared/data's held-out TinyStories, else
    /// web/eval-stories.txt).
    #[arg(long)]
    text: Vec<PathBuf>,
    #[arg(long, default_value = "weights/tokenizer.json")]
    tokenizer: PathBuf,
    /// Positions scored: the first ones of the text, in windows of --window tokens.
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    #[arg(long, default_value_t = 128)]
    window: usize,
    /// The precisions each group is tried in (default: every one below f32).
    #[arg(long, value_delimiter = ',')]
    precisions: Vec<String>,
    /// Where sensitivity.json and sensitivity.svg go (default: target/sensitivity/MODEL).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// The calibration texts: those given, else the shared held-out TinyStories, else the page's
/// built-in stories.
fn calibration(given: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut files = crate::heldout_or_default(given);
    if files.is_empty() {
        files.push("web/eval-stories.txt".into());
    }
    let texts = files
        .iter()
        .map(|f| std::fs::read_to_string(f).with_context(|| f.display().to_string()))
        .collect::<Result<Vec<_>>>()?;
    Ok((files, texts))
}

/// Each group's sensitivity for every precision below f32 on `probe`: what the search of
/// `--precision auto` (here and in `xtask export`) chooses from.
pub fn search_table(w: &AnyWeights, probe: &Probe) -> Result<Table> {
    let lower: Vec<Precision> = Precision::ALL.into_iter().filter(|&p| p != Precision::F32).collect();
    eprintln!("measuring each group's sensitivity on {} positions…", probe.positions());
    Ok(sensitivity(w, probe, &lower, &mut |_, _| {})?)
}

/// The smallest per-matrix precision choice within `bound` (`choose`, checked by scoring the
/// mixed model on the probe) as the weights a file holds (`apply`).
pub fn auto_variant(w: &AnyWeights, probe: &Probe, table: &Table, bound: Bound) -> Result<(AnyWeights, Choice)> {
    let choice = choose(w, probe, table, bound)?;
    Ok((apply(w, &choice.map)?, choice))
}

/// The calibration probe of `--precision auto` and `xtask prune`: the texts' first `max_tokens`
/// tokens in windows of 128.
pub fn calibration_probe(tokenizer: &Tokenizer, text: &[PathBuf], max_tokens: usize) -> Result<Probe> {
    let (_, texts) = calibration(text)?;
    Ok(Probe::new(tokenizer, &texts, max_tokens, 128)?)
}

/// The shipped models' tokenizer, which `convert --precision auto` and `prune` read text with.
pub fn shipped_tokenizer() -> Result<Tokenizer> {
    Ok(Tokenizer::from_file(Path::new("weights/tokenizer.json"))?)
}

/// `xtask convert --precision auto`: the sensitivity table on the calibration text, the
/// smallest map within the bound, checked by scoring the mixed model, written as a mixed file.
pub fn convert_auto(
    model: &Path,
    text: &[PathBuf],
    max_delta: Option<&str>,
    max_bytes: Option<usize>,
    out: &Path,
) -> Result<()> {
    let w = AnyWeights::load(&std::fs::read(model).with_context(|| model.display().to_string())?)?;
    let probe = calibration_probe(&shipped_tokenizer()?, text, 4096)?;
    let table = search_table(&w, &probe)?;
    let bound = match (max_delta, max_bytes) {
        (Some(d), None) => Bound::DeltaBitsPerByte(match d.strip_suffix('%') {
            Some(pct) => pct.trim().parse::<f64>().context("--max-delta-bpb")? / 100.0 * table.f32_bits_per_byte,
            None => d.parse().context("--max-delta-bpb")?,
        }),
        (None, Some(b)) => Bound::Bytes(b),
        _ => bail!("--precision auto takes one of --max-delta-bpb (\"1%\" or bits per byte) and --max-bytes"),
    };
    let (file, choice) = auto_variant(&w, &probe, &table, bound)?;
    std::fs::write(out, file.save()?)?;
    let q4 = w.to_precision(Precision::Q4).save()?.len();
    eprintln!(
        "wrote {} ({} bytes; the q4 file: {q4} bytes): {} of {} matrices below f32 ({}); ΔBPB predicted {:+.4}, measured {:+.4} ({:+.2} % of f32's {:.4}); bound {bound:?}",
        out.display(),
        std::fs::metadata(out)?.len(),
        choice.map.len(),
        w.specs().iter().filter(|s| s.kind == itera_core::params::ParamKind::Matrix).count(),
        map_summary(file.precision(), &file.precision_map()),
        choice.predicted_delta_bits_per_byte,
        choice.measured_delta_bits_per_byte,
        100.0 * choice.measured_delta_bits_per_byte / table.f32_bits_per_byte,
        table.f32_bits_per_byte
    );
    Ok(())
}

/// A mixed file's precisions in one line, the base first: "q3 · 14 q4 · 2 q8" (how many
/// matrices are in each other precision); the base alone for a uniform file.
pub fn map_summary(base: Precision, map: &PrecisionMap) -> String {
    let mut line = base.to_string();
    for p in Precision::ALL {
        let n = map.values().filter(|&&q| q == p).count();
        if n > 0 {
            let _ = write!(line, " · {n} {p}");
        }
    }
    line
}

pub fn run(a: SensitivityArgs) -> Result<()> {
    let w = AnyWeights::load(&std::fs::read(&a.model).with_context(|| a.model.display().to_string())?)?;
    if w.precision() != Precision::F32 {
        eprintln!(
            "note: {} is {}: its matrices hold {} values already, so that precision (and any above it) measures \
             no loss here; the f32 file gives the real figures",
            a.model.display(),
            w.precision(),
            w.precision()
        );
    }
    let tokenizer = Tokenizer::from_file(&a.tokenizer)?;
    let (files, texts) = calibration(&a.text)?;
    let precisions: Vec<Precision> = if a.precisions.is_empty() {
        Precision::ALL.into_iter().filter(|&p| p != Precision::F32).collect()
    } else {
        a.precisions.iter().map(|p| p.parse()).collect::<Result<_, _>>()?
    };
    let probe = Probe::new(&tokenizer, &texts, a.max_tokens, a.window)?;
    eprintln!(
        "{}: each group of matrices alone in {} against f32, on {} positions of {}",
        a.model.display(),
        precisions.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
        probe.positions(),
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} variants  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let table = sensitivity(&w, &probe, &precisions, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    print!("{}", text_table(&table, &precisions));

    let stem = a
        .model
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let dir = a
        .out_dir
        .unwrap_or_else(|| PathBuf::from("target/sensitivity").join(&stem));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("sensitivity.json"),
        serde_json::to_string_pretty(&table)? + "\n",
    )?;
    std::fs::write(dir.join("sensitivity.svg"), chart(&table, &precisions, &stem))?;
    eprintln!("wrote {0}/sensitivity.json and {0}/sensitivity.svg", dir.display());
    Ok(())
}

/// One line per group: its size, then ΔBPB (%) and KL for each precision.
fn text_table(t: &Table, precisions: &[Precision]) -> String {
    let mut s = format!(
        "f32: {:.4} bits/byte\n{:<28} {:>9}",
        t.f32_bits_per_byte, "group", "params"
    );
    for p in precisions {
        let _ = write!(s, " {:>9} {:>9}", format!("{p} ΔBPB"), format!("{p} KL"));
    }
    s.push('\n');
    for g in &t.groups {
        let _ = write!(s, "{:<28} {:>9}", g.name, g.params);
        for p in precisions {
            if let Some(r) = t.rows.iter().find(|r| r.group == g.name && r.precision == *p) {
                let pct = 100.0 * r.delta_bits_per_byte / t.f32_bits_per_byte;
                let _ = write!(s, " {:>8.3}% {:>9.2e}", pct, r.kl);
            }
        }
        s.push('\n');
    }
    s
}

/// Bars of ΔBPB (%) per group, one colour per precision.
fn chart(t: &Table, precisions: &[Precision], title: &str) -> String {
    const COLOURS: [&str; 6] = ["#3b6fd4", "#e08a1e", "#2f9e6e", "#b5477d", "#c9a227", "#5a5a8c"];
    let (label_w, bar_h, width) = (190.0, 7.0, 760.0);
    let group_h = bar_h * precisions.len() as f64 + 6.0;
    let height = 50.0 + group_h * t.groups.len() as f64;
    let pct = |d: f64| 100.0 * d / t.f32_bits_per_byte;
    let max = t
        .rows
        .iter()
        .map(|r| pct(r.delta_bits_per_byte).abs())
        .fold(1e-9, f64::max);
    let scale = (width - label_w - 20.0) / max;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">
<text x="4" y="16" font-size="13">{title}: held-out ΔBPB (% of f32's {:.4}) with one group quantized</text>
"#,
        t.f32_bits_per_byte
    );
    for (k, p) in precisions.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="24" width="10" height="10" fill="{}"/><text x="{}" y="33">{p}</text>"#,
            label_w + 60.0 * k as f64,
            COLOURS[k % COLOURS.len()],
            label_w + 14.0 + 60.0 * k as f64
        );
    }
    for (i, g) in t.groups.iter().enumerate() {
        let y = 44.0 + group_h * i as f64;
        let _ = writeln!(s, r#"<text x="4" y="{}">{}</text>"#, y + group_h / 2.0, g.name);
        for (k, p) in precisions.iter().enumerate() {
            if let Some(r) = t.rows.iter().find(|r| r.group == g.name && r.precision == *p) {
                let v = pct(r.delta_bits_per_byte);
                let _ = writeln!(
                    s,
                    r#"<rect x="{label_w}" y="{}" width="{:.1}" height="{bar_h}" fill="{}"><title>{} {p}: {v:+.3} %, KL {:.2e}</title></rect>"#,
                    y + bar_h * k as f64,
                    (v.max(0.0) * scale).max(0.5),
                    COLOURS[k % COLOURS.len()],
                    g.name,
                    r.kl
                );
            }
        }
    }
    s + "</svg>\n"
}
