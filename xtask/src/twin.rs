//! The PyTorch twin's part of `cargo xtask test`: a virtual environment under target/ with
//! CPU-capable PyTorch from the package registry and the twin installed editable from python/
//! (made once; a warm run only checks that it imports), then python/tests — parity with
//! `xtask inspect`, files both ways, and torchrun training — against this very binary.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::tools::sh_env;

/// The environment's folder, relative to the project root.
const VENV: &str = "target/torch-venv";
/// Where python/tests leaves the torchrun-trained model the page's end-to-end test opens.
pub const PAGE_MODEL: &str = "target/twin/page/model.safetensors";

fn python() -> PathBuf {
    crate::project_root().join(VENV).join("bin/python")
}

/// Creates target/torch-venv with the twin (python/pyproject.toml: torch, safetensors, numpy,
/// tokenizers) when it is missing or does not import. The registry's torch wheel brings its
/// CUDA libraries (about 5 GB, a minute or two to fetch) and runs on the CPU without them.
pub fn ensure_venv() -> Result<()> {
    let py = python();
    let imports = || {
        std::process::Command::new(&py)
            .args(["-c", "import torch, safetensors, tokenizers, numpy, itera_torch"])
            .current_dir(crate::project_root())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if imports() {
        return Ok(());
    }
    eprintln!("installing the PyTorch twin's environment into {VENV} (PyTorch from the registry: a few minutes)");
    sh_env("python3", &["-m", "venv", VENV], &[])?;
    let py = py.to_str().context("UTF-8 path")?;
    sh_env(py, &["-m", "pip", "install", "--quiet", "--editable", "python"], &[])?;
    anyhow::ensure!(
        imports(),
        "{VENV} was installed but does not import torch and itera_torch"
    );
    Ok(())
}

/// python/tests with this binary as the reference (`ITERA_XTASK`).
pub fn run_tests() -> Result<()> {
    ensure_venv()?;
    let exe = std::env::current_exe()?;
    let py = python();
    sh_env(
        py.to_str().context("UTF-8 path")?,
        &[
            "-m",
            "unittest",
            "discover",
            "--start-directory",
            "python/tests",
            "--top-level-directory",
            "python",
            "-v",
        ],
        &[("ITERA_XTASK", exe.to_str().context("UTF-8 path")?)],
    )
}
