//! `cargo xtask train --backend gpu` and `distill --backend gpu` through the real binary
//! (lavapipe in CI): they follow the CPU trainer's loss step for step, and checkpoints resume
//! on either backend; `generate --backend gpu` writes the CPU's story for either family. Without an
//! adapter it prints SKIPPED and why, unless ITERA_REQUIRE_GPU is set (as `cargo xtask test`
//! does), where it must run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn train(dir: &Path, corpus: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    run(&["train"], dir, corpus, extra)
}

/// `xtask` with `command` (its first words) and the small run's options; returns log.jsonl.
fn run(command: &[&str], dir: &Path, corpus: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let args = [
        "--corpus",
        corpus.to_str().unwrap(),
        "--out-dir",
        dir.to_str().unwrap(),
        "--config",
        "micro",
        "--vocab-size",
        "300",
        "--steps",
        "6",
        "--batch",
        "2",
        "--seq-len",
        "32",
        "--warmup",
        "2",
        "--eval-every",
        "3",
        "--checkpoint-every",
        "3",
        "--threads",
        "1",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(command)
        .args(args)
        .args(extra)
        .output()
        .expect("xtask runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{command:?} {extra:?} failed:\n{stderr}");
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    log.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Whether an adapter is there; without one the test prints SKIPPED and why, unless
/// ITERA_REQUIRE_GPU is set (then it fails).
fn gpu_present() -> bool {
    let Err(e) = itera_core::gpu::Gpu::new_blocking() else {
        return true;
    };
    assert!(
        std::env::var_os("ITERA_REQUIRE_GPU").is_none(),
        "ITERA_REQUIRE_GPU is set but {e}"
    );
    eprintln!("SKIPPED: {e} (install mesa-vulkan-drivers for lavapipe)");
    false
}

fn fresh(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn gpu_training_follows_the_cpu_and_resumes_on_either_backend() {
    if !gpu_present() {
        return;
    }
    let root = fresh("train-gpu");
    let corpus = root.join("corpus.txt");
    let story = "Once upon a time, a little fox found a red ball in the park. She played with it all day.";
    let text: Vec<String> = (0..40).map(|i| format!("{story} Day {i}.")).collect();
    std::fs::write(&corpus, text.join("<|endoftext|>")).unwrap();

    let cpu_dir = fresh("train-cpu-run");
    let cpu = train(&cpu_dir, &corpus, &["--backend", "cpu"]);
    let gpu_dir = fresh("train-gpu-run");
    let gpu = train(&gpu_dir, &corpus, &["--backend", "gpu"]);
    assert_eq!((cpu.len(), gpu.len()), (6, 6));
    for (c, g) in cpu.iter().zip(&gpu) {
        let (a, b) = (c["ce"].as_f64().unwrap(), g["ce"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-3 * a, "step {}: CPU CE {a} vs GPU {b}", c["step"]);
    }
    let (a, b) = (cpu[5]["heldout_bpb"].as_f64(), gpu[5]["heldout_bpb"].as_f64());
    if let (Some(a), Some(b)) = (a, b) {
        assert!((a - b).abs() < 1e-3 * a, "held-out BPB: CPU {a} vs GPU {b}");
    }

    // Half on the GPU, the rest on the CPU from its checkpoint, and the other way round.
    for (first, second) in [("gpu", "cpu"), ("cpu", "gpu")] {
        let dir = fresh(&format!("train-{first}-then-{second}"));
        train(&dir, &corpus, &["--backend", first, "--stop-at", "3"]);
        let log = train(&dir, &corpus, &["--backend", second, "--resume"]);
        assert_eq!(log.len(), 6, "{first} then {second}");
        let (a, b) = (cpu[5]["ce"].as_f64().unwrap(), log[5]["ce"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-3 * a, "{first} then {second}: CE {b} vs {a}");
    }

    // Distillation from the model just trained: the GPU runs the teacher too.
    let teacher = cpu_dir.join("model.safetensors");
    let distill = |backend: &str| {
        let dir = fresh(&format!("distill-{backend}"));
        let command = ["distill", "--teacher", teacher.to_str().unwrap()];
        run(&command, &dir, &corpus, &["--backend", backend])
    };
    let (cpu, gpu) = (distill("cpu"), distill("gpu"));
    for (c, g) in cpu.iter().zip(&gpu) {
        for term in ["ce", "kl"] {
            let (a, b) = (c[term].as_f64().unwrap(), g[term].as_f64().unwrap());
            assert!(
                a > 0.0 && (a - b).abs() < 2e-3 * a,
                "distill step {}: CPU {term} {a} vs GPU {b}",
                c["step"]
            );
        }
    }
}

/// `cargo xtask generate --backend gpu` for either family writes the CPU's greedy story.
#[test]
fn generate_on_the_gpu_writes_the_cpu_story_for_either_family() {
    if !gpu_present() {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in ["itera-micro-q8", "transformer-micro-q8"] {
        let story = |backend: &str| {
            let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
                .current_dir(&root)
                .args([
                    "generate",
                    "--model",
                    &format!("weights/{name}.safetensors"),
                    "--prompt",
                    "Once upon a time",
                ])
                .args([
                    "--max-tokens",
                    "40",
                    "--temperature",
                    "0",
                    "--json",
                    "--backend",
                    backend,
                ])
                .output()
                .expect("xtask runs");
            assert!(
                out.status.success(),
                "{name} on {backend}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v["text"].as_str().unwrap().to_string()
        };
        let cpu = story("cpu");
        assert!(cpu.len() > 40, "{name}: {cpu:?}");
        assert_eq!(story("gpu"), cpu, "{name}: the GPU's greedy story");
    }
}
