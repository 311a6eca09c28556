//! `cargo xtask corpus`: a training corpus sampled from the llama2.c teacher (sequence-level
//! distillation), stories separated by `<|endoftext|>`.
//!
//! Story i is sampled with its own generator seeded by (seed, i), and stories are kept in
//! index order until N teacher tokens are reached, so the corpus depends only on the seed —
//! not on the number of threads or their timing.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use itera_core::llama2c::{Llama2, Llama2State, Llama2Tokenizer, BOS};
use itera_core::sampling::{Sampler, SamplingSettings};
use itera_core::tokenizer::END_OF_TEXT;

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
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// One story from BOS until the teacher samples BOS again (its story delimiter) or its context
/// is full. Returns the text and the number of tokens sampled.
fn sample_story(model: &Llama2, tok: &Llama2Tokenizer, settings: SamplingSettings) -> Result<(String, usize)> {
    let mut sampler = Sampler::new(settings)?;
    let mut st = Llama2State::new(&model.config);
    let (mut token, mut bytes, mut count) = (BOS, Vec::new(), 0);
    while st.pos < model.config.seq_len {
        let next = sampler.sample(model.forward(&mut st, token)?);
        count += 1;
        if next == BOS {
            break;
        }
        bytes.extend_from_slice(tok.decode_piece(token, next));
        token = next;
    }
    Ok((String::from_utf8_lossy(&bytes).trim().to_string(), count))
}

/// Stories by index, and how far from index 0 they are complete without a gap.
#[derive(Default)]
struct Finished {
    stories: Vec<Option<(String, usize)>>,
    prefix_len: usize,
    prefix_tokens: usize,
}

impl Finished {
    fn insert(&mut self, i: usize, story: (String, usize)) {
        if self.stories.len() <= i {
            self.stories.resize(i + 1, None);
        }
        self.stories[i] = Some(story);
        while let Some(Some((_, n))) = self.stories.get(self.prefix_len) {
            self.prefix_tokens += n;
            self.prefix_len += 1;
        }
    }
}

pub fn run(a: CorpusArgs) -> Result<()> {
    if a.tokens == 0 {
        bail!("--tokens must be at least 1");
    }
    let model = Llama2::from_file(&a.teacher)?;
    let tok = Llama2Tokenizer::from_file(&a.tokenizer, model.config.vocab_size)?;
    let base = SamplingSettings {
        temperature: a.temperature,
        top_k: 0,
        top_p: a.top_p,
        seed: 0,
    };
    base.validate()?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);

    let bar = ProgressBar::new(a.tokens as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} teacher tokens  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    // Stories are handed out by index; a worker stops once the stories finished so far in
    // index order (up to the first gap) already hold enough tokens.
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Finished::default());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let lock = || done.lock().map_err(|_| anyhow::anyhow!("a sampling thread panicked"));
                    while lock()?.prefix_tokens < a.tokens {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let seed = a.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64);
                        let story = sample_story(&model, &tok, SamplingSettings { seed, ..base })?;
                        bar.inc(story.1 as u64);
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

    let done = done
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a sampling thread panicked"))?
        .stories;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?,
    );
    let (mut stories, mut tokens, mut bytes) = (0, 0, 0);
    for (text, n) in done.into_iter().flatten() {
        if tokens >= a.tokens {
            break;
        }
        writeln!(out, "{text}{END_OF_TEXT}")?;
        (stories, tokens, bytes) = (stories + 1, tokens + n, bytes + text.len());
    }
    out.flush()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {}: {stories} stories, {tokens} teacher tokens, {bytes} bytes of text in {secs:.1} s ({:.0} tokens/s on {threads} threads)",
        a.out.display(),
        tokens as f64 / secs
    );
    Ok(())
}
