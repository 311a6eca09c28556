//! `cargo xtask corpus`: a training corpus sampled from the llama2.c teacher (sequence-level
//! distillation), stories separated by `<|endoftext|>`.
//!
//! The stories and their order come from itera-core's `train::corpus` (story i from its own
//! generator seeded by (seed, i), kept in index order up to N teacher tokens), so the corpus
//! depends only on its settings — not on the number of threads, and it equals the one the
//! page's Distill tab writes from the same teacher.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use itera_core::llama2c::{Llama2, Llama2Tokenizer};
use itera_core::train::{CorpusBuilder, CorpusSettings, StoryTeller};

#[derive(Args)]
pub struct CorpusArgs {
    /// llama2.c checkpoint (e.g. ../shared/data/teacher/stories260K.bin).
    #[arg(long)]
    teacher: PathBuf,
    /// Its tokenizer.bin.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Teacher tokens to sample in total.
    #[arg(long)]
    tokens: usize,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = CorpusSettings::DEFAULT.seed)]
    seed: u64,
    #[arg(long, default_value_t = CorpusSettings::DEFAULT.temperature)]
    temperature: f64,
    #[arg(long, default_value_t = CorpusSettings::DEFAULT.top_p)]
    top_p: f64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// The corpus `settings` describe, its stories written by `threads` threads: a thread takes
/// the next story index until the stories finished so far in index order (up to the first
/// gap) hold enough tokens.
pub fn write(teller: &StoryTeller, settings: &CorpusSettings, threads: usize) -> Result<CorpusBuilder> {
    let bar = ProgressBar::new(settings.tokens as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} teacher tokens  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let done = Mutex::new(CorpusBuilder::new(settings.tokens));
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let lock = || done.lock().map_err(|_| anyhow::anyhow!("a sampling thread panicked"));
                    while !lock()?.is_complete() {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let story = teller.story(settings, i)?;
                        bar.inc(story.tokens as u64);
                        lock()?.insert(i, story);
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a sampling thread panicked"))??;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    done.into_inner()
        .map_err(|_| anyhow::anyhow!("a sampling thread panicked"))
}

pub fn run(a: CorpusArgs) -> Result<()> {
    let model = Llama2::from_file(&a.teacher)?;
    let tok = Llama2Tokenizer::from_file(&a.tokenizer, model.config.vocab_size)?;
    let settings = CorpusSettings {
        tokens: a.tokens,
        seed: a.seed,
        temperature: a.temperature,
        top_p: a.top_p,
    };
    settings.validate()?;
    let teller = StoryTeller::Llama2(&model, &tok);
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);

    let start = Instant::now();
    let corpus = write(&teller, &settings, threads)?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?,
    );
    out.write_all(corpus.text().as_bytes())?;
    let (stories, tokens) = (corpus.stories().count(), corpus.tokens());
    let bytes: usize = corpus.stories().map(|s| s.text.len()).sum();
    out.flush()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {}: {stories} stories, {tokens} teacher tokens, {bytes} bytes of text in {secs:.1} s ({:.0} tokens/s on {threads} threads)",
        a.out.display(),
        tokens as f64 / secs
    );
    Ok(())
}
