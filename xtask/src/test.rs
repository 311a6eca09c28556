//! `cargo xtask test`: the whole suite. Installs what it needs when missing (the wasm32
//! target, wasm-bindgen-cli, Chromium + chromedriver, lavapipe, the npm packages), then runs
//! every native test, the GPU kernels against their CPU twins on lavapipe, the
//! wasm-bindgen-test suites in headless Chromium, the page's end-to-end test against a
//! real `cargo xtask serve` and against the static site under a sub-path of a plain static
//! server, the PyTorch twin against the CLI (parity, files, torchrun training; the model it
//! trains opened in the page), and every fuzz target for a few seconds.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::tools::{
    ensure_chromium, ensure_lavapipe, ensure_npm_packages, ensure_wasm_bindgen, ensure_wasm_target, sh, sh_env,
};

#[derive(Args)]
pub struct TestArgs {
    /// Only the native tests (for a quick local loop).
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
    if !a.fast {
        step(
            "tools: wasm32 target, wasm-bindgen-cli, Chromium, npm packages, lavapipe",
            &|| {
                ensure_wasm_target()?;
                ensure_wasm_bindgen()?;
                ensure_chromium()?;
                ensure_npm_packages()?;
                ensure_lavapipe()
            },
        )?;
    }
    // The GPU kernels and the GPU model run against their CPU twins on lavapipe (Vulkan on the
    // CPU); in the full suite a missing adapter fails them instead of skipping.
    let require_gpu: &[(&str, &str)] = if a.fast { &[] } else { &[("ITERA_REQUIRE_GPU", "1")] };
    step(
        "native unit, parity, gradient, GPU (lavapipe), server and CLI tests",
        &|| sh_env("cargo", &["test", "--workspace"], require_gpu),
    )?;
    if !a.fast {
        step(
            "PyTorch twin: parity with xtask inspect, files both ways, torchrun training (CPU, gloo)",
            &crate::twin::run_tests,
        )?;
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
        step("wasm-bindgen-test in headless Chromium", &|| {
            sh_env(
                "cargo",
                &["test", "-p", "itera-web", "--target", "wasm32-unknown-unknown"],
                &[
                    ("CHROMEDRIVER", "/usr/bin/chromedriver"),
                    ("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", "wasm-bindgen-test-runner"),
                    // The WebGPU suite runs on SwiftShader (the CPU): minutes, not the default 20 s.
                    ("WASM_BINDGEN_TEST_TIMEOUT", "600"),
                ],
            )
        })?;
        step("playground build", &crate::web::build)?;
        step("playground end-to-end (Playwright + Chromium)", &page_end_to_end)?;
        step(
            "static site (build-web --out) under a sub-path of a plain static server, end-to-end",
            &static_site_end_to_end,
        )?;
        // The long runs (a million executions a target) are `cargo xtask fuzz`'s, off CI; this
        // proves every target builds and runs from its seeds.
        step("fuzz smoke: every target for 5 s (nightly, cargo-fuzz)", &|| {
            crate::fuzz::run(crate::fuzz::FuzzArgs::smoke())
        })?;
    }
    eprintln!("\nall steps passed:");
    for (name, secs) in steps {
        eprintln!("  {secs:7.1} s  {name}");
    }
    Ok(())
}

/// Starts this binary's `serve` on a free port and runs tests/e2e/playground.mjs,
/// fine-tune.mjs, distill.mjs and large-text.mjs (which load their downloaded models with this
/// binary) and torch-model.mjs (the model the PyTorch twin's step trained) against it.
/// The server's access log goes to target/e2e/server.log; its tail is printed when the test
/// fails, to tell a page that never asked from a server that never answered.
fn page_end_to_end() -> Result<()> {
    let out = crate::project_root().join("target/e2e");
    std::fs::create_dir_all(&out)?;
    let access_log = out.join("server.log");
    let _ = std::fs::remove_file(&access_log);
    let server = crate::web::Server::start(Some(&access_log))?;
    let out_str = out.to_str().context("UTF-8 path")?;
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("UTF-8 path")?;
    let result = sh("node", &["tests/e2e/playground.mjs", &server.url, out_str])
        .and_then(|()| sh("node", &["tests/e2e/fine-tune.mjs", &server.url, out_str, exe]))
        .and_then(|()| sh("node", &["tests/e2e/distill.mjs", &server.url, out_str, exe]))
        .and_then(|()| sh("node", &["tests/e2e/large-text.mjs", &server.url, out_str, exe]))
        .and_then(|()| {
            let model = crate::project_root().join(crate::twin::PAGE_MODEL);
            anyhow::ensure!(
                model.exists(),
                "{} is missing: the PyTorch twin's step trains it",
                model.display()
            );
            let model = model.to_str().context("UTF-8 path")?;
            sh("node", &["tests/e2e/torch-model.mjs", &server.url, out_str, exe, model])
        });
    drop(server);
    if result.is_err() {
        let log = std::fs::read_to_string(&access_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "the server's last requests ({} in all, {}):",
            lines.len(),
            access_log.display()
        );
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("  {l}");
        }
    }
    result
}

/// `cargo xtask build-web --out` into target/e2e-site/itera/, served by Python's plain static
/// file server (no COOP/COEP, no gzip, no rewriting) from target/e2e-site, so the page lives
/// under the sub-path /itera/; then tests/e2e/playground.mjs runs against it.
fn static_site_end_to_end() -> Result<()> {
    let root = crate::project_root();
    let served = root.join("target/e2e-site");
    if served.exists() {
        std::fs::remove_dir_all(&served)?;
    }
    crate::site::build(&served.join("itera"))?;
    // A free port: bound here, released, then given to the server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(&served)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting `python3 -m http.server` (the plain static server the site is tested on)")?;
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let out = root.join("target/e2e/static-site");
    let result = if up {
        let url = format!("http://127.0.0.1:{port}/itera/");
        let site = served.join("itera");
        let (out, site) = (
            out.to_str().context("UTF-8 path")?,
            site.to_str().context("UTF-8 path")?,
        );
        sh("node", &["tests/e2e/playground.mjs", &url, out, "static-site", site])
    } else {
        Err(anyhow::anyhow!("the static server did not start on port {port}"))
    };
    let _ = server.kill();
    let _ = server.wait();
    result
}
