//! `cargo xtask …`: the project's command line — training, export, inspection, benchmarks,
//! the playground's build and server, and the test suite. Every subcommand is a thin layer over `itera-core`.

mod bench;
mod bench_gpu;
mod bench_train;
mod bench_wasm;
mod compare_arch;
mod corpus;
mod export;
mod fuzz;
mod http;
mod inspect;
mod manifest;
mod models;
mod mounts;
mod prune;
mod run;
mod sensitivity;
mod site;
mod test;
mod tools;
mod train;
mod twin;
mod variants;
mod web;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Itera-Lite Playground tasks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole test suite (installs what it needs when missing).
    Test(test::TestArgs),
    /// Write a randomly initialised model.
    Init(run::InitArgs),
    /// Sample a training corpus from a llama2.c teacher.
    Corpus(corpus::CorpusArgs),
    /// Train a model (and its tokenizer) on a text corpus, or fine-tune one (--init).
    #[command(after_help = train::defaults_help())]
    Train(train::TrainArgs),
    /// Distil an itera teacher into a smaller student (β·T²·KL + (1−β)·CE).
    #[command(after_help = train::defaults_help())]
    Distill(train::DistillArgs),
    /// Export a checkpoint in every precision with a model card (markdown + JSON).
    Export(export::ExportArgs),
    /// Rebuild weights/manifest.json from the model cards (export does it too); --default
    /// picks the model the page opens with.
    Manifest(manifest::ManifestArgs),
    /// Train a byte-level BPE tokenizer on a text file.
    Tokenizer(run::TokenizerArgs),
    /// Convert a model to another precision, or each matrix to its own (--precision-map).
    Convert(run::ConvertArgs),
    /// How much each group of matrices suffers from a lower precision: ΔBPB and KL to f32,
    /// one group quantized at a time (JSON, a table and an SVG chart).
    Sensitivity(sensitivity::SensitivityArgs),
    /// Remove the experts the router uses least (per MoE layer, on calibration text).
    Prune(prune::PruneArgs),
    /// Generate text with an itera model or a llama2.c checkpoint.
    Generate(run::GenerateArgs),
    /// Cross-entropy, perplexity and bits per byte on a text file.
    Eval(run::EvalArgs),
    /// Dump tokens, logits, losses and every parameter's gradient for a text.
    Inspect(inspect::InspectArgs),
    /// Decode-speed benchmarks (JSON + table).
    Bench(bench::BenchArgs),
    /// The SSM + MoE models against the Transformers of the same size: held-out BPB, decode
    /// speed against the context, prefill and training speed, FLOPs and state per token.
    CompareArch(compare_arch::CompareArchArgs),
    /// Fuzz the loaders, the generation settings and the server's paths (nightly; off CI).
    Fuzz(fuzz::FuzzArgs),
    /// Build the playground (wasm, JS glue, chart library) into target/web; with --out DIR,
    /// also a self-contained static site for any static host.
    BuildWeb(web::BuildWebArgs),
    /// Build and serve the playground on 127.0.0.1 (prints the URL).
    Serve(web::ServeArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(a) => test::run(a),
        Command::Init(a) => run::init(a),
        Command::Corpus(a) => corpus::run(a),
        Command::Train(a) => train::run(a),
        Command::Distill(a) => train::distill(a),
        Command::Export(a) => export::run(a),
        Command::Manifest(a) => manifest::run(a),
        Command::Tokenizer(a) => run::tokenizer(a),
        Command::Convert(a) => run::convert(a),
        Command::Sensitivity(a) => sensitivity::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Generate(a) => run::generate(a),
        Command::Eval(a) => run::eval(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
        Command::CompareArch(a) => compare_arch::run(a),
        Command::Fuzz(a) => fuzz::run(a),
        Command::BuildWeb(a) => match a.out {
            Some(out) => site::build(&out),
            None => web::build(),
        },
        Command::Serve(a) => web::serve(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The repository root (xtask lives one level below it).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `../shared/data` next to the repository, when present.
pub fn shared_data() -> Option<PathBuf> {
    let dir = project_root().join("../shared/data");
    dir.is_dir().then_some(dir)
}

/// The held-out files to judge a model on: `given` when any, else the real TinyStories
/// held-out files in `../shared/data` when it exists (else none).
pub fn heldout_or_default(given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    shared_data()
        .map(|d| {
            ["tinystories-valid-a.txt", "tinystories-sample-b.txt"]
                .iter()
                .map(|n| d.join("heldout").join(n))
                .collect()
        })
        .unwrap_or_default()
}
