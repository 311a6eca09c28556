//! The outside tools the build and the test suite need, installed when missing: the wasm32
//! target, wasm-bindgen-cli (pinned to the crate's version), the npm packages, the system
//! packages for the browser and GPU tests (Chromium, chromedriver, lavapipe), and the
//! fuzzers' pinned nightly and cargo-fuzz.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The `wasm-bindgen` crate version in crates/itera-web/Cargo.toml; the CLI must match it.
pub const WASM_BINDGEN_VERSION: &str = "0.2.130";

/// Runs a command in the project root, echoing it, and fails with its exit status.
pub fn sh(program: &str, args: &[&str]) -> Result<()> {
    sh_env(program, args, &[])
}

/// `sh` with extra environment variables.
pub fn sh_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(crate::project_root())
        .status()
        .with_context(|| format!("cannot start `{program}` — is it installed?"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Standard output of a command, or None when it cannot run or fails.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The nightly the fuzzers build with (cargo-fuzz needs -Zsanitizer); the product builds on
/// stable.
pub const FUZZ_NIGHTLY: &str = "nightly-2026-05-20";

pub fn ensure_fuzz_nightly() -> Result<()> {
    let installed =
        output("rustup", &["toolchain", "list"]).context("rustup is required to install the fuzzers' nightly")?;
    if installed.lines().any(|l| l.starts_with(FUZZ_NIGHTLY)) {
        return Ok(());
    }
    sh(
        "rustup",
        &["toolchain", "install", FUZZ_NIGHTLY, "--profile", "minimal"],
    )
}

pub fn ensure_cargo_fuzz() -> Result<()> {
    if output("cargo", &["fuzz", "--version"]).is_some() {
        return Ok(());
    }
    eprintln!("installing cargo-fuzz (about 2 minutes on 2 cores)");
    sh("cargo", &["install", "cargo-fuzz"])
}

pub fn ensure_wasm_target() -> Result<()> {
    let installed =
        output("rustup", &["target", "list", "--installed"]).context("rustup is required to add the wasm32 target")?;
    if installed.lines().any(|l| l.trim() == "wasm32-unknown-unknown") {
        return Ok(());
    }
    sh("rustup", &["target", "add", "wasm32-unknown-unknown"])
}

/// wasm-bindgen-cli at exactly the crate's version (`cargo install` without `--locked`: the
/// CLI's lockfile pins a webpki-roots release the registry here does not serve).
pub fn ensure_wasm_bindgen() -> Result<()> {
    let have = output("wasm-bindgen", &["--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(WASM_BINDGEN_VERSION) {
        return Ok(());
    }
    eprintln!("installing wasm-bindgen-cli {WASM_BINDGEN_VERSION} (about 5 minutes on 2 cores)");
    sh(
        "cargo",
        &[
            "install",
            "wasm-bindgen-cli",
            "--version",
            &format!("={WASM_BINDGEN_VERSION}"),
        ],
    )
}

/// `npm ci` when node_modules is missing or older than package-lock.json.
pub fn ensure_npm_packages() -> Result<()> {
    let root = crate::project_root();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock = modified(&root.join("package-lock.json"));
    let installed = modified(&root.join("node_modules/.package-lock.json"));
    if installed.is_some() && installed >= lock {
        return Ok(());
    }
    if output("npm", &["--version"]).is_none() {
        apt_install(&["nodejs", "npm"])?;
    }
    sh("npm", &["ci", "--no-audit", "--no-fund"])
}

/// Installs Debian packages whose files are missing (needs root, as on CI).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| output("dpkg-query", &["-W", "-f=${Status}", p]).is_none_or(|s| !s.contains("ok installed")))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let hint = || format!("installing {} needs root (or install them yourself)", missing.join(" "));
    sh("apt-get", &["update"]).with_context(hint)?;
    eprintln!("$ apt-get install -y {}", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(hint)?;
    if !status.success() {
        bail!("{} ({status})", hint());
    }
    Ok(())
}

/// Chromium and chromedriver for the browser tests.
pub fn ensure_chromium() -> Result<()> {
    apt_install(&["chromium", "chromium-driver"])
}

/// lavapipe: Vulkan on the CPU, so the GPU kernels run (and are tested) without a GPU.
pub fn ensure_lavapipe() -> Result<()> {
    apt_install(&["mesa-vulkan-drivers", "libvulkan1"])
}
