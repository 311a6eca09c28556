//! `cargo xtask fuzz`: runs the cargo-fuzz targets in fuzz/ (the entries of crates/itera-fuzz)
//! for a set time each on the pinned nightly, seeded from the shipped files, and reports the
//! executions per target. An input that crashes a target is copied into
//! crates/itera-fuzz/crashes/<target>/, where `cargo test` replays it on stable from then on.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::tools::{ensure_cargo_fuzz, ensure_fuzz_nightly, FUZZ_NIGHTLY};

/// Largest input the fuzzers make: above the shipped micro model (168 KB).
const MAX_LEN: usize = 256 * 1024;

#[derive(Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only this target (default: all of them).
    #[arg(long, value_parser = target_names())]
    target: Option<String>,
}

impl FuzzArgs {
    /// The suite's smoke run: every target, a few seconds each.
    pub fn smoke() -> FuzzArgs {
        FuzzArgs {
            seconds: 5,
            target: None,
        }
    }
}

fn target_names() -> Vec<&'static str> {
    itera_fuzz::TARGETS.iter().map(|(name, _)| *name).collect()
}

/// One target's run.
struct Outcome {
    name: &'static str,
    executions: u64,
    per_second: u64,
    crashes: Vec<String>,
}

pub fn run(a: FuzzArgs) -> Result<()> {
    ensure_fuzz_nightly()?;
    ensure_cargo_fuzz()?;
    let root = crate::project_root();
    let mut outcomes = Vec::new();
    for name in target_names() {
        if a.target.as_deref().is_some_and(|t| t != name) {
            continue;
        }
        outcomes.push(run_target(&root, name, a.seconds)?);
    }
    eprintln!("\n{:<22} {:>12} {:>10}  crashes", "target", "executions", "exec/s");
    for o in &outcomes {
        eprintln!(
            "{:<22} {:>12} {:>10}  {}",
            o.name,
            o.executions,
            o.per_second,
            o.crashes.len()
        );
    }
    let found: Vec<&String> = outcomes.iter().flat_map(|o| &o.crashes).collect();
    if !found.is_empty() {
        bail!(
            "the fuzzers found {} crashing input(s), kept for the replay test: {}",
            found.len(),
            found.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

fn run_target(root: &Path, name: &'static str, seconds: u64) -> Result<Outcome> {
    let fuzz = root.join("fuzz");
    let corpus = fuzz.join("corpus").join(name);
    std::fs::create_dir_all(&corpus)?;
    // Seeds above MAX_LEN (the 1 MB stories260K checkpoint) are left to the stable replay:
    // inputs that large make every execution slow.
    for (i, seed) in itera_fuzz::seeds(name)
        .iter()
        .enumerate()
        .filter(|(_, s)| s.len() <= MAX_LEN)
    {
        std::fs::write(corpus.join(format!("seed-{i}")), seed)?;
    }
    let artifacts = fuzz.join("artifacts").join(name);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts)?;
    eprintln!("fuzzing {name} for {seconds} s");
    let out = Command::new("cargo")
        .arg(format!("+{FUZZ_NIGHTLY}"))
        // No AddressSanitizer: the code under test is safe Rust (bounds are checked anyway),
        // and ASan's allocator cuts the executions per second several times over.
        .args(["fuzz", "run", "--release", "--sanitizer", "none", name])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // A weight file is large; libFuzzer's default cap (the largest seed) would do too.
        .args([
            "-max_len=2000000",
            "-rss_limit_mb=4096",
            "-timeout=30",
            "-print_final_stats=1",
        ])
        .current_dir(&fuzz)
        .output()
        .context("running cargo fuzz")?;
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |key: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_start_matches(':').trim().parse().ok())
            .unwrap_or(0)
    };
    let mut crashes = Vec::new();
    let kept = root.join("crates/itera-fuzz/crashes").join(name);
    for file in std::fs::read_dir(&artifacts)?.flatten() {
        std::fs::create_dir_all(&kept)?;
        let to = kept.join(file.file_name());
        std::fs::copy(file.path(), &to)?;
        crashes.push(to.display().to_string());
    }
    if !out.status.success() && crashes.is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        bail!(
            "cargo fuzz run {name} failed without an artifact:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Outcome {
        name,
        executions: stat("stat::number_of_executed_units"),
        per_second: stat("stat::average_exec_per_sec"),
        crashes,
    })
}
