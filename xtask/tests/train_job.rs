//! `cargo xtask train|distill` as thin callers of itera-core's training job: the loss curves
//! and final weights for one seed equal those recorded before the loop moved into the core
//! (tests/golden/train-curve.json), and `--init` fine-tunes a shipped model so that its
//! bits per byte fall on held-out text like its training text.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xtask(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("xtask runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "xtask {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fresh(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn log(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// FNV-1a 64 over a safetensors file's tensor bytes, tensors in name order.
fn tensors_fnv1a(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = st.names();
    names.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for n in names {
        for &b in st.tensor(n).unwrap().data() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Every logged quantity of every step equals the recording, and so do the final weights.
/// The figures are f32 values written as the shortest decimal that reads back to them, so
/// equality here is bit equality.
#[test]
fn the_cli_curves_for_a_seed_are_unchanged_by_the_move_into_the_job() {
    let golden: Value = serde_json::from_str(include_str!("../../tests/golden/train-curve.json")).unwrap();
    for command in ["train", "distill"] {
        let g = &golden[command];
        let dir = fresh(&format!("golden-{command}"));
        let mut args = vec![command.to_string()];
        args.extend(
            g["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        );
        args.extend(["--out-dir".into(), dir.display().to_string()]);
        xtask(&args);
        let got = log(&dir);
        let want = g["log"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{command}: steps");
        for (w, r) in want.iter().zip(&got) {
            for (key, value) in w.as_object().unwrap() {
                assert_eq!(&r[key], value, "{command} step {}: {key}", w["step"]);
            }
        }
        assert_eq!(
            tensors_fnv1a(&dir.join("model.safetensors")),
            g["weights_fnv1a"].as_str().unwrap(),
            "{command}: final weights"
        );
    }
}

#[test]
fn init_fine_tunes_a_shipped_model_and_lowers_its_held_out_bits_per_byte() {
    let dir = fresh("init-fine-tune");
    let stories: Vec<&str> = include_str!("../../web/finetune-stories.txt").split("\n\n").collect();
    let (train, held) = stories.split_at(stories.len() - 2);
    let corpus = dir.join("corpus.txt");
    let heldout = dir.join("heldout.txt");
    std::fs::write(&corpus, train.join("<|endoftext|>")).unwrap();
    std::fs::write(&heldout, held.join("<|endoftext|>")).unwrap();
    let base = root().join("weights/itera-micro-q8.safetensors");
    let eval = |model: &Path| -> f64 {
        let out = xtask(&[
            "eval".into(),
            "--model".into(),
            model.display().to_string(),
            "--tokenizer".into(),
            "weights/tokenizer.json".into(),
            "--text".into(),
            heldout.display().to_string(),
            "--json".into(),
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["bits_per_byte"].as_f64().unwrap()
    };
    let before = eval(&base);
    let run = dir.join("run");
    #[rustfmt::skip]
    let args = [
        "train", "--init", &base.display().to_string(), "--corpus", &corpus.display().to_string(),
        "--out-dir", &run.display().to_string(), "--heldout", &heldout.display().to_string(),
        "--steps", "40", "--batch", "4", "--seq-len", "64", "--lr", "2e-3", "--min-lr", "2e-4",
        "--warmup", "4", "--eval-every", "20", "--checkpoint-every", "20", "--threads", "2",
    ];
    xtask(&args.map(String::from));
    let after = eval(&run.join("model.safetensors"));
    let logged = log(&run)[39]["heldout_bpb"].as_f64().unwrap();
    eprintln!("held-out BPB: base {before:.4} → fine-tuned {after:.4} (logged {logged:.4})");
    assert!(after < before - 0.05, "BPB {before} → {after}");
    assert!((after - logged).abs() < 1e-9, "eval {after} vs the job's {logged}");
    // The tuned file says what it was made from, and keeps the base's shape.
    let bytes = std::fs::read(run.join("model.safetensors")).unwrap();
    let header = itera_core::format::read_header(&bytes).unwrap();
    let summary = header.config.training.clone().unwrap();
    assert!(summary.fine_tuned_from.unwrap().ends_with("itera-micro-q8.safetensors"));
    assert_eq!(summary.steps, 40);
    let base_header = itera_core::format::read_header(&std::fs::read(&base).unwrap()).unwrap();
    assert_eq!(header.config.architecture(), base_header.config.architecture());
}

/// The page's distillation (tests/golden/distill-curve.json, written by
/// crates/itera-web/tests/native_distill.rs) through `xtask distill`: the same corpus, teacher,
/// fresh student and settings give the same steps, bit for bit.
#[test]
fn xtask_distill_takes_the_pages_distillation_steps() {
    let golden: Value = serde_json::from_str(include_str!("../../tests/golden/distill-curve.json")).unwrap();
    let dir = fresh("distill-like-the-page");
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, golden["corpus"].as_str().unwrap()).unwrap();
    let spec = &golden["spec"];
    let mut args: Vec<String> = [
        "distill",
        "--teacher",
        "weights/itera-tiny-q8.safetensors",
        "--tokenizer",
        "weights/tokenizer.json",
        "--student-config",
        "micro",
        "--heldout",
        "web/eval-stories.txt",
        "--threads",
        "1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--corpus".into(), corpus.display().to_string()]);
    args.extend(["--out-dir".into(), dir.join("run").display().to_string()]);
    for key in [
        "steps",
        "batch",
        "seq_len",
        "lr",
        "min_lr",
        "warmup",
        "weight_decay",
        "clip",
        "alpha",
        "eval_every",
        "checkpoint_every",
        "seed",
        "shards",
    ] {
        args.extend([format!("--{}", key.replace('_', "-")), spec[key].to_string()]);
    }
    args.extend(["--beta".into(), spec["distill"]["beta"].to_string()]);
    args.extend(["--temperature".into(), spec["distill"]["temperature"].to_string()]);
    xtask(&args);
    let got = log(&dir.join("run"));
    let want = golden["steps"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for key in ["loss", "ce", "kl", "aux"] {
            assert_eq!(g[key].as_f64(), w[key].as_f64(), "step {}: {key}", i + 1);
        }
    }
}

/// `xtask distill` with a llama2.c teacher (from ../shared/data when present): the teacher
/// writes the corpus — the very corpus `xtask corpus` writes for the same settings — and the
/// student learns it through the same job (sequence-level: no KL); its summary says so.
#[test]
fn distill_from_a_llama2c_teacher_learns_its_stories() {
    let teacher = root().join("../shared/data/teacher/stories260K.bin");
    if !teacher.exists() {
        println!(
            "SKIPPED: {} is absent (reference data is not part of the repository)",
            teacher.display()
        );
        return;
    }
    let dir = fresh("distill-llama2c");
    let corpus = dir.join("corpus.txt");
    let t = teacher.display().to_string();
    #[rustfmt::skip]
    let args = [
        "distill", "--teacher", &t, "--corpus", &corpus.display().to_string(), "--corpus-tokens", "3000",
        "--corpus-seed", "4", "--out-dir", &dir.join("run").display().to_string(), "--steps", "30", "--batch", "4",
        "--seq-len", "32", "--warmup", "3", "--eval-every", "30", "--heldout", "web/eval-stories.txt", "--threads", "2",
    ];
    xtask(&args.map(String::from));
    let reference = dir.join("reference.txt");
    #[rustfmt::skip]
    let args = [
        "corpus", "--teacher", &t, "--tokenizer", &root().join("../shared/data/teacher/tok512.bin").display().to_string(),
        "--tokens", "3000", "--seed", "4", "--out", &reference.display().to_string(),
    ];
    xtask(&args.map(String::from));
    assert_eq!(
        std::fs::read(&corpus).unwrap(),
        std::fs::read(&reference).unwrap(),
        "the same corpus"
    );
    let steps = log(&dir.join("run"));
    assert_eq!(steps.len(), 30);
    assert!(steps.iter().all(|s| s["kl"] == 0.0), "no KL across tokenizers");
    let first = steps[0]["ce"].as_f64().unwrap();
    assert!(
        steps[29]["ce"].as_f64().unwrap() < first - 1.0,
        "the student learns the stories"
    );
    let bytes = std::fs::read(dir.join("run/model.safetensors")).unwrap();
    let summary = itera_core::format::read_header(&bytes)
        .unwrap()
        .config
        .training
        .unwrap();
    let from = summary.distilled_from.unwrap();
    assert_eq!(from.mode, itera_core::train::DistillMode::Sequence);
    assert!(from.teacher.ends_with("stories260K.bin"));
}
