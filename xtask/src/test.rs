//! `cargo xtask test`: the whole suite. Installs what it needs when missing (the wasm32
//! target), runs every native test, and checks that the core builds for the browser.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::tools::{ensure_wasm_target, sh};

#[derive(Args)]
pub struct TestArgs {
    /// Skip the wasm32 build check (for a quick local loop).
    #[arg(long)]
    fast: bool,
}

pub fn run(a: TestArgs) -> Result<()> {
    let mut steps: Vec<(&str, f64)> = Vec::new();
    let mut step = |name: &'static str, f: &dyn Fn() -> Result<()>| -> Result<()> {
        eprintln!("\n=== {name}");
        let t = Instant::now();
        f().with_context(|| format!("step `{name}` failed"))?;
        steps.push((name, t.elapsed().as_secs_f64()));
        Ok(())
    };
    step("native unit, parity, gradient and CLI tests", &|| {
        sh("cargo", &["test", "--workspace"])
    })?;
    if !a.fast {
        step("wasm32 target", &ensure_wasm_target)?;
        step("itera-core builds for wasm32", &|| {
            sh(
                "cargo",
                &[
                    "build",
                    "-p",
                    "itera-core",
                    "--target",
                    "wasm32-unknown-unknown",
                    "--profile",
                    "wasm-check",
                ],
            )
        })?;
    }
    eprintln!("\nall steps passed:");
    for (name, secs) in steps {
        eprintln!("  {secs:7.1} s  {name}");
    }
    Ok(())
}
