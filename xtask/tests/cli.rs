//! End-to-end checks of the command line through the real binary: tokenizer → init →
//! generate → eval → inspect → convert → bench, plus the llama2.c teacher through the same
//! commands when the shared reference data is present.

use std::path::{Path, PathBuf};
use std::process::Command;

fn xtask(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = xtask(args);
    assert!(success, "xtask {args:?} failed:\n{stderr}");
    stdout
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const STORY: &str = "Once upon a time, there was a little girl named Lily. She loved to play in the park with her dog.\nOne day, Tom saw a big red ball. \"Can I play?\" he asked. Lily smiled and said yes.\n";

#[test]
fn itera_pipeline_from_tokenizer_to_inspect() {
    let dir = temp_dir("cli-itera");
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, STORY.repeat(30).replace('\n', "<|endoftext|>")).unwrap();
    let tok = dir.join("tokenizer.json");
    ok(&[
        "tokenizer",
        "--corpus",
        s(&corpus),
        "--vocab-size",
        "300",
        "--out",
        s(&tok),
    ]);
    let model = dir.join("model.safetensors");
    ok(&[
        "init",
        "--config",
        "micro",
        "--seed",
        "1",
        "--out",
        s(&model),
        "--tokenizer",
        s(&tok),
    ]);

    let greedy = [
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "Once",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
        "--json",
    ];
    let out = ok(&greedy);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["tokens"].as_array().unwrap().len(),
        12,
        "a random model never emits end-of-text greedily here"
    );
    assert_eq!(json["routing"].as_array().unwrap().len(), 12);
    // Greedy is deterministic, and quantized files generate through the same code.
    let again: serde_json::Value = serde_json::from_str(&ok(&greedy)).unwrap();
    assert_eq!((&json["tokens"], &json["text"]), (&again["tokens"], &again["text"]));
    for p in ["f16", "q8", "q4"] {
        let conv = dir.join(format!("model-{p}.safetensors"));
        ok(&["convert", "--model", s(&model), "--precision", p, "--out", s(&conv)]);
        ok(&[
            "generate",
            "--model",
            s(&conv),
            "--tokenizer",
            s(&tok),
            "--max-tokens",
            "5",
            "--seed",
            "3",
        ]);
    }

    // A mixed file: q4 with the embedding in q8 and one projection in f16; it generates too.
    let map = dir.join("map.json");
    std::fs::write(&map, r#"{"embed": "q8", "layers.0.in_proj": "f16"}"#).unwrap();
    let mixed = dir.join("model-mixed.safetensors");
    ok(&[
        "convert",
        "--model",
        s(&model),
        "--precision",
        "q4",
        "--precision-map",
        s(&map),
        "--out",
        s(&mixed),
    ]);
    let w = itera_core::format::load_file(&mixed).unwrap();
    assert_eq!(w.precision_map().len(), 2);
    ok(&[
        "generate",
        "--model",
        s(&mixed),
        "--tokenizer",
        s(&tok),
        "--max-tokens",
        "5",
    ]);

    let text = dir.join("heldout.txt");
    std::fs::write(&text, STORY).unwrap();
    // `eval --json` of the model on the text, with `extra` options.
    let eval_json = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["eval", "--model", s(&model), "--text", s(&text), "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let eval = eval_json(&[]);
    assert_eq!(eval["documents"], 2);
    assert_eq!(
        eval["bytes"].as_u64().unwrap() as usize,
        STORY.lines().map(str::len).sum::<usize>()
    );
    // A random model is close to uniform over its 300 ids: CE ≈ ln 300.
    let ce = eval["mean_ce"].as_f64().unwrap();
    assert!((ce - 300f64.ln()).abs() < 0.5, "mean CE {ce}");
    assert_eq!(eval["truncated"], false);
    // A token budget cuts the text and says so; threads give the same figures.
    let cut = eval_json(&["--max-tokens", "7"]);
    assert_eq!(
        (
            cut["tokens"].as_u64(),
            cut["truncated"].as_bool(),
            cut["documents"].as_u64()
        ),
        (Some(7), Some(true), Some(1))
    );
    let threaded = eval_json(&["--threads", "2"]);
    assert_eq!(
        (threaded["tokens"].clone(), threaded["bytes"].clone()),
        (eval["tokens"].clone(), eval["bytes"].clone())
    );
    assert!((threaded["mean_ce"].as_f64().unwrap() - ce).abs() < 1e-9 * ce);

    let dump = dir.join("dump.safetensors");
    ok(&[
        "inspect",
        "--model",
        s(&model),
        "--text",
        "Lily saw a dog.",
        "--out",
        s(&dump),
        "--alpha",
        "0.5",
    ]);
    let bytes = std::fs::read(&dump).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let scalar = |n: &str| f32::from_le_bytes(st.tensor(n).unwrap().data().try_into().unwrap());
    assert!((scalar("loss") - (scalar("ce") + 0.5 * scalar("aux"))).abs() < 1e-5);
    let t = st.tensor("tokens").unwrap().shape()[0];
    assert_eq!(st.tensor("logits").unwrap().shape(), &[t, 300]);
    assert_eq!(st.tensor("grad.embed").unwrap().shape(), &[300, 32]); // micro: D = 32
    assert!(st.tensor("grad.layers.1.experts.3.w2").is_ok());

    let bench = dir.join("bench.json");
    ok(&["bench", "--quick", "--json", s(&bench)]);
    let records: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bench).unwrap()).unwrap();
    let records = records.as_array().unwrap();
    assert!(records.len() >= 8);
    for key in ["config", "precision", "backend", "threads", "position", "tokens_per_s"] {
        assert!(records.iter().all(|r| r.get(key).is_some()), "bench JSON lacks `{key}`");
    }
}

#[test]
fn bad_input_gives_specific_errors() {
    let dir = temp_dir("cli-bad");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let (success, _, err) = xtask(&["generate", "--model", s(&junk)]);
    assert!(
        !success && err.contains("is not a model file: not a valid safetensors file: the header length says"),
        "{err}"
    );
    assert!(
        !err.contains("llama2.c"),
        "bytes that cannot be a llama2.c header are not read as one: {err}"
    );
    // Broken safetensors framing, each with its own reason: a header length of 2^63, a header
    // longer than the file, JSON nested 100,000 deep.
    let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let framed = |n: u64, body: &[u8]| [&n.to_le_bytes()[..], body].concat();
    for (name, bytes, want) in [
        (
            "huge-header.safetensors",
            framed(1 << 63, b"{}"),
            "header length says 9223372036854775808 bytes but only 2",
        ),
        (
            "long-header.safetensors",
            framed(100, b"{\"a\":1}"),
            "header length says 100 bytes but only 7",
        ),
        (
            "deep.safetensors",
            framed(deep.len() as u64, deep.as_bytes()),
            "recursion limit",
        ),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, bytes).unwrap();
        let (success, _, err) = xtask(&["generate", "--model", s(&file)]);
        assert!(
            !success && err.contains(want) && !err.contains("llama2.c"),
            "{name}: {err}"
        );
    }
    // Bytes that begin like a llama2.c checkpoint are said to be neither, with both reasons.
    let l2 = dir.join("short.bin");
    let header: Vec<u8> = [64i32, 128, 2, 4, 4, 32, 16]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&l2, [header, vec![0; 100]].concat()).unwrap();
    let (success, _, err) = xtask(&["generate", "--model", s(&l2)]);
    assert!(
        !success && err.contains("is not a safetensors file (") && err.contains("read as a llama2.c checkpoint"),
        "{err}"
    );
    let (success, _, err) = xtask(&[
        "init",
        "--config",
        "tiny",
        "--precision",
        "q5",
        "--out",
        s(&dir.join("x")),
    ]);
    assert!(!success && err.contains("unknown precision `q5`"), "{err}");
    let (success, _, err) = xtask(&["init", "--config", "huge", "--out", s(&dir.join("x"))]);
    assert!(!success && err.contains("unknown config preset"), "{err}");
    let model = dir.join("m.safetensors");
    ok(&["init", "--config", "test", "--out", s(&model)]);
    let (success, _, err) = xtask(&["generate", "--model", s(&model)]);
    assert!(!success && err.contains("pass --tokenizer"), "{err}");
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, STORY).unwrap();
    let out = dir.join("d");
    let distill = |teacher: &Path, beta: &str| {
        #[rustfmt::skip]
        let args = ["distill", "--teacher", s(teacher), "--beta", beta, "--corpus", s(&corpus), "--out-dir", s(&out)];
        xtask(&args)
    };
    let (success, _, err) = distill(&model, "1.5");
    assert!(!success && err.contains("invalid setting beta = 1.5"), "{err}");
    let (success, _, err) = distill(&model, "0.5");
    assert!(!success && err.contains("no tokenizer found"), "{err}");
    let (success, _, err) = xtask(&["export", "--checkpoint", s(&junk), "--name", "x"]);
    assert!(!success && err.contains("is not a model file"), "{err}");
}

#[test]
fn teacher_runs_through_generate_and_eval() {
    let Some(data) = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")).filter(|d| d.is_dir())
    else {
        println!("SKIPPED: ../shared/data is absent");
        return;
    };
    let model = data.join("teacher/stories260K.bin");
    let out = ok(&[
        "generate",
        "--model",
        s(&model),
        "--temperature",
        "0",
        "--max-tokens",
        "256",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want = std::fs::read_to_string(data.join("teacher/greedy-from-bos.txt")).unwrap();
    assert_eq!(format!("{}\n", json["text"].as_str().unwrap()), want);
    let eval: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--model",
        s(&model),
        "--text",
        s(&data.join("heldout/tinystories-sample-b.txt")),
        "--json",
    ]))
    .unwrap();
    assert_eq!(eval["documents"], 5);
    let bpb = eval["bits_per_byte"].as_f64().unwrap();
    assert!(
        bpb > 0.5 && bpb < 2.5,
        "teacher BPB {bpb} is implausible for TinyStories"
    );

    // The sampled corpus depends on the seed only, not on the number of threads.
    let dir = temp_dir("cli-corpus");
    let tok = data.join("teacher/tok512.bin");
    let corpus = |threads: &str, seed: &str| {
        let out = dir.join(format!("corpus-{threads}-{seed}.txt"));
        ok(&[
            "corpus",
            "--teacher",
            s(&model),
            "--tokenizer",
            s(&tok),
            "--tokens",
            "1500",
            "--seed",
            seed,
            "--threads",
            threads,
            "--out",
            s(&out),
        ]);
        std::fs::read_to_string(out).unwrap()
    };
    let one = corpus("1", "5");
    assert_eq!(one, corpus("2", "5"));
    assert_ne!(one, corpus("2", "6"));
    assert!(one.matches("<|endoftext|>").count() >= 2 && one.starts_with(|c: char| c.is_alphabetic()));
}

/// Training lowers the loss, and stopping at step 4 then `--resume` to step 8 gives exactly the
/// weights of an uninterrupted 8-step run (batches depend on (seed, step) only; the schedule on
/// --steps).
#[test]
fn train_resumes_exactly_where_it_stopped() {
    let dir = temp_dir("cli-train");
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, STORY.repeat(40).replace('\n', "<|endoftext|>")).unwrap();
    let heldout = dir.join("heldout.txt");
    std::fs::write(&heldout, STORY).unwrap();
    let train = |out: &Path, stop_at: &str, resume: bool| {
        #[rustfmt::skip]
        let mut args = vec![
            "train", "--corpus", s(&corpus), "--out-dir", s(out), "--vocab-size", "300", "--config", "test",
            "--steps", "8", "--stop-at", stop_at, "--batch", "4", "--seq-len", "24", "--lr", "1e-2", "--warmup", "2",
            "--threads", "2", "--eval-every", "4", "--checkpoint-every", "4", "--heldout", s(&heldout), "--seed", "9",
            "--valid", s(&heldout),
        ];
        if resume {
            args.push("--resume");
        }
        ok(&args);
    };
    let (straight, split) = (dir.join("straight"), dir.join("split"));
    train(&straight, "8", false);
    train(&split, "4", false);
    train(&split, "8", true);
    let (a, b) = (model_tensors(&straight), model_tensors(&split));
    let differ: Vec<&str> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.0.as_str())
        .collect();
    assert!(
        a.len() == b.len() && differ.is_empty(),
        "resumed run differs in {differ:?}"
    );
    let log: Vec<serde_json::Value> = std::fs::read_to_string(straight.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 8);
    assert!(log[7]["loss"].as_f64().unwrap() < log[0]["loss"].as_f64().unwrap());
    assert!(log[3]["heldout_bpb"].as_f64().is_some() && log[7]["heldout_bpb"].as_f64().is_some());
    // --valid is scored like --heldout (here the same file, so the same figure).
    assert_eq!(log[7]["valid_bpb"], log[7]["heldout_bpb"]);
    assert!(log[0].get("valid_bpb").is_none());
    // The trained model loads and generates through the ordinary commands.
    ok(&[
        "generate",
        "--model",
        s(&straight.join("model.safetensors")),
        "--max-tokens",
        "8",
        "--seed",
        "1",
    ]);
}

/// The Transformer family through the same commands: `train --family transformer` (resumed
/// bit for bit without naming the family again), `eval`, `generate`, `init`, a logit
/// distillation into an itera student, and the refusals that name the family.
#[test]
fn transformer_family_trains_resumes_evaluates_and_generates() {
    let dir = temp_dir("cli-transformer");
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, STORY.repeat(40).replace('\n', "<|endoftext|>")).unwrap();
    let heldout = dir.join("heldout.txt");
    std::fs::write(&heldout, STORY).unwrap();
    let train = |out: &Path, stop_at: &str, resume: bool| {
        #[rustfmt::skip]
        let mut args = vec![
            "train", "--corpus", s(&corpus), "--out-dir", s(out), "--vocab-size", "300", "--config", "test",
            "--steps", "8", "--stop-at", stop_at, "--batch", "4", "--seq-len", "24", "--lr", "1e-2", "--warmup", "2",
            "--threads", "2", "--eval-every", "4", "--checkpoint-every", "4", "--heldout", s(&heldout), "--seed", "9",
        ];
        if resume {
            args.push("--resume");
        } else {
            args.extend(["--family", "transformer"]);
        }
        let (success, _, stderr) = xtask(&args);
        assert!(success, "xtask {args:?} failed:\n{stderr}");
        stderr
    };
    let (straight, split) = (dir.join("straight"), dir.join("split"));
    let said = train(&straight, "8", false);
    assert!(said.contains("model: transformer (Transformer)"), "{said}");
    train(&split, "4", false);
    train(&split, "8", true);
    let (a, b) = (model_tensors(&straight), model_tensors(&split));
    assert!(a == b, "the resumed Transformer run differs from the straight one");
    assert!(a.iter().any(|(name, _)| name == "layers.1.attention.wq.weight"));
    let model = straight.join("model.safetensors");
    let log: Vec<serde_json::Value> = std::fs::read_to_string(straight.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 8);
    assert!(log[7]["loss"].as_f64().unwrap() < log[0]["loss"].as_f64().unwrap());
    assert!(log[7]["heldout_bpb"].as_f64().is_some());

    let eval: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--model", s(&model), "--text", s(&heldout), "--json"])).unwrap();
    let bpb = eval["bits_per_byte"].as_f64().unwrap();
    assert!(bpb.is_finite() && bpb > 0.0, "{eval}");
    // The job's last held-out figure is the same evaluation.
    assert!(
        (bpb - log[7]["heldout_bpb"].as_f64().unwrap()).abs() < 1e-9,
        "{bpb} vs {}",
        log[7]
    );
    #[rustfmt::skip]
    let out = ok(&["generate", "--model", s(&model), "--prompt", "Once", "--max-tokens", "10", "--temperature", "0", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(!json["tokens"].as_array().unwrap().is_empty(), "{json}");

    // inspect dumps the gradient of every tensor under model.py's names.
    let dump = dir.join("dump.safetensors");
    ok(&[
        "inspect",
        "--model",
        s(&model),
        "--text",
        "Once upon a time, Lily saw a dog.",
        "--out",
        s(&dump),
    ]);
    let bytes = std::fs::read(&dump).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensor("grad.layers.0.attention.wk.weight").is_ok());
    assert!(st.tensor("logits").is_ok() && st.tensor("ce").is_ok());
    // The cost of decoding its last token, from the config: the KV cache of every position.
    let meta = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1;
    let meta = meta.metadata().as_ref().unwrap();
    let tokens = st.tensor("tokens").unwrap().shape()[0];
    let kv = 2 * 4 * 6 * 2; // keys and values, f32, kv_dim 2 heads × 6, the test config's
    assert_eq!(meta["state_bytes"], (2 * kv * tokens).to_string(), "two layers");
    assert!(meta["flops_per_token"].parse::<u64>().unwrap() > 0);

    // An itera student learns the Transformer's logits (the same tokenizer).
    #[rustfmt::skip]
    let distilled = ok_stderr(&[
        "distill", "--teacher", s(&model), "--corpus", s(&corpus), "--out-dir", s(&dir.join("student")),
        "--student-config", "test", "--steps", "3", "--batch", "2", "--seq-len", "16", "--warmup", "1",
        "--eval-every", "3", "--checkpoint-every", "3", "--heldout", s(&heldout),
    ]);
    assert!(distilled.contains("model: itera (SSM + MoE)"), "{distilled}");

    // init writes either family.
    let fresh = dir.join("fresh.safetensors");
    let tok = straight.join("tokenizer.json");
    #[rustfmt::skip]
    ok(&["init", "--family", "transformer", "--config", "micro", "--out", s(&fresh), "--tokenizer", s(&tok), "--precision", "q8"]);
    let bytes = std::fs::read(&fresh).unwrap();
    let meta = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1;
    assert_eq!(meta.metadata().as_ref().unwrap()["family"], "transformer");

    // Refusals that name what is wrong.
    #[rustfmt::skip]
    let (success, _, stderr) = xtask(&[
        "train", "--family", "transformer", "--corpus", s(&corpus), "--out-dir", s(&dir.join("gpu")), "--vocab-size",
        "300", "--config", "test", "--steps", "2", "--warmup", "1", "--backend", "gpu",
    ]);
    assert!(!success && stderr.contains("--backend cpu"), "{stderr}");
    #[rustfmt::skip]
    let (success, _, stderr) = xtask(&[
        "train", "--family", "transformer", "--corpus", s(&corpus), "--out-dir", s(&dir.join("long")), "--vocab-size",
        "300", "--config", "test", "--steps", "2", "--warmup", "1", "--seq-len", "65",
    ]);
    assert!(!success && stderr.contains("max_seq_len"), "{stderr}");
    let (success, _, stderr) = xtask(&[
        "train",
        "--family",
        "mamba",
        "--corpus",
        s(&corpus),
        "--out-dir",
        s(&dir),
    ]);
    assert!(!success && stderr.contains("itera or transformer"), "{stderr}");
}

/// `compare-arch` on the shipped micro pair: both models measured at every context, the
/// Transformer's state growing with it and the SSM's not, a crossover stated, JSON and SVG.
#[test]
fn compare_arch_measures_the_shipped_micro_pair() {
    let dir = temp_dir("cli-compare-arch");
    let (json, svg) = (dir.join("out.json"), dir.join("out.svg"));
    let weights = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../weights");
    #[rustfmt::skip]
    let table = ok(&[
        "compare-arch", "--dir", s(&weights), "--sizes", "micro", "--contexts", "16,96", "--tokens", "4",
        "--train-steps", "1", "--rounds", "1", "--json", s(&json), "--svg", s(&svg),
    ]);
    assert!(
        table.contains("itera-micro") && table.contains("transformer-micro"),
        "{table}"
    );
    let pairs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let [ssm, tf] = [&pairs[0]["models"][0], &pairs[0]["models"][1]];
    assert_eq!(
        (ssm["family"].as_str(), tf["family"].as_str()),
        (Some("itera"), Some("transformer"))
    );
    assert_eq!(ssm["params"], tf["params"], "a same-size pair");
    let state = |m: &serde_json::Value, i: usize| m["contexts"][i]["state_bytes"].as_u64().unwrap();
    assert_eq!(state(ssm, 0), state(ssm, 1), "the SSM's state does not grow");
    assert_eq!(state(tf, 1), 6 * state(tf, 0), "the KV cache grows with the context");
    for m in [ssm, tf] {
        for c in m["contexts"].as_array().unwrap() {
            assert!(c["decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{c}");
        }
    }
    assert!(pairs[0]["crossover"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));
}

/// Every tensor of a run's model.safetensors, by name (the metadata holds the run's seconds,
/// which differ between runs that take the same steps).
fn model_tensors(run: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(run.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut t: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(n, v)| (n, v.data().to_vec())).collect();
    t.sort();
    t
}

fn ok_stderr(args: &[&str]) -> String {
    let (success, _, stderr) = xtask(args);
    assert!(success, "xtask {args:?} failed:\n{stderr}");
    stderr
}

/// A run's files are never mixed up: a resume keeps its model shape and tokenizer, a new run
/// does not land on an old one, and settings that are not finite are refused by name.
#[test]
fn a_run_refuses_what_would_corrupt_it() {
    let dir = temp_dir("cli-train-integrity");
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, STORY.repeat(40).replace('\n', "<|endoftext|>")).unwrap();
    let run = dir.join("run");
    #[rustfmt::skip]
    let base = ["train", "--corpus", s(&corpus), "--out-dir", s(&run), "--vocab-size", "300", "--steps", "4",
        "--batch", "2", "--seq-len", "16", "--warmup", "1", "--threads", "1", "--eval-every", "4"];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    ok(&with(&["--config", "test", "--stop-at", "2"]));
    let checkpoint = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let tokenizer = std::fs::read(run.join("tokenizer.json")).unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../weights/tokenizer.json");
    let elsewhere = dir.join("nan");
    let mut nan = with(&["--config", "test", "--min-lr", "NaN"]);
    nan[4] = s(&elsewhere);
    let refusals: [(Vec<&str>, &str); 5] = [
        (with(&["--config", "test"]), "holds a run already"),
        (with(&["--config", "micro", "--resume"]), "not this run's model shape"),
        (with(&["--resume", "--tokenizer", shipped]), "not this run's tokenizer"),
        (
            with(&["--resume", "--init", "weights/itera-micro-f32.safetensors"]),
            "starts a new run",
        ),
        (nan, "min_lr = NaN"),
    ];
    for (args, expected) in refusals {
        let (success, _, err) = xtask(&args);
        assert!(
            !success && err.contains(expected),
            "{args:?}: expected {expected:?}, got:\n{err}"
        );
        assert_eq!(
            std::fs::read(run.join("checkpoint.safetensors")).unwrap(),
            checkpoint,
            "{args:?}"
        );
        assert_eq!(
            std::fs::read(run.join("tokenizer.json")).unwrap(),
            tokenizer,
            "{args:?}"
        );
    }
    // With the run's own shape named, or none, the resume goes on.
    ok(&with(&["--config", "test", "--resume"]));
}

/// The whole shipping pipeline on a toy scale: corpus (from the llama2.c teacher when the
/// shared data is present) → tokenizer + training → distillation → export in every precision
/// with a model card → the exported q4 file loads and generates.
#[test]
fn pipeline_from_corpus_to_exported_model_card() {
    let dir = temp_dir("cli-pipeline");
    let corpus = dir.join("corpus.txt");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if data.is_dir() {
        #[rustfmt::skip]
        ok(&[
            "corpus", "--teacher", s(&data.join("teacher/stories260K.bin")), "--tokenizer",
            s(&data.join("teacher/tok512.bin")), "--tokens", "4000", "--seed", "3", "--out", s(&corpus),
        ]);
    } else {
        println!("../shared/data is absent: the pipeline runs on a built-in corpus instead of teacher samples");
        std::fs::write(&corpus, STORY.repeat(40).replace('\n', "<|endoftext|>")).unwrap();
    }
    let heldout = dir.join("heldout.txt");
    std::fs::write(&heldout, STORY).unwrap();
    let common = |out: &Path| -> Vec<String> {
        #[rustfmt::skip]
        let args = [
            "--corpus", s(&corpus), "--out-dir", s(out), "--steps", "6", "--batch", "4", "--seq-len", "32",
            "--warmup", "2", "--eval-every", "6", "--heldout", s(&heldout), "--config", "test",
        ];
        args.iter().map(|a| a.to_string()).collect()
    };
    let (teacher, student) = (dir.join("teacher"), dir.join("student"));
    let mut train = vec!["train".to_string(), "--vocab-size".into(), "300".into()];
    train.extend(common(&teacher));
    ok(&train.iter().map(String::as_str).collect::<Vec<_>>());
    let teacher_model = teacher.join("model.safetensors");
    let mut distill = vec!["distill".to_string(), "--teacher".into(), s(&teacher_model).into()];
    distill.extend(common(&student));
    ok(&distill.iter().map(String::as_str).collect::<Vec<_>>());
    let log = std::fs::read_to_string(student.join("log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(
        first["kl"].as_f64().unwrap() > 0.0,
        "distillation reports its KL term: {first}"
    );

    let weights = dir.join("weights");
    #[rustfmt::skip]
    ok(&[
        "export", "--checkpoint", s(&student.join("model.safetensors")), "--name", "toy", "--out-dir", s(&weights),
        "--heldout", s(&heldout), "--samples", "1", "--bench-tokens", "8", "--calibration", s(&corpus),
    ]);
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(weights.join("toy.json")).unwrap()).unwrap();
    let precisions = card["precisions"].as_array().unwrap();
    let variants: Vec<&str> = precisions.iter().map(|p| p["variant"].as_str().unwrap()).collect();
    assert_eq!(variants, ["f32", "f16", "q8", "q4", "q3", "q2", "auto1", "auto5"]);
    // A mixed variant names its bound and its precisions, and is smaller than f32.
    let auto5 = &precisions[7];
    assert_eq!(auto5["bound_bpb_change_pct"], 5.0);
    assert!(auto5["bytes"].as_u64() < precisions[0]["bytes"].as_u64(), "{auto5}");
    assert!(
        card["auto_calibration"].as_str().unwrap().contains("corpus.txt"),
        "{}",
        card["auto_calibration"]
    );
    for p in precisions {
        let file = weights.join(p["file"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&file).unwrap().len(), p["bytes"].as_u64().unwrap());
        assert!(p["bits_per_byte"].as_f64().unwrap() > 0.0 && p["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    // The distillation teacher is compared on the same text; so is the llama2.c teacher.
    let refs: Vec<&str> = card["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert!(refs.contains(&"teacher/model.safetensors"), "{refs:?}");
    assert_eq!(refs.contains(&"teacher/stories260K.bin"), data.is_dir());
    assert_eq!(card["training"]["distilled_from"]["beta"], 0.7);
    assert_eq!(card["samples"].as_array().unwrap().len(), 1);
    let md = std::fs::read_to_string(weights.join("toy.md")).unwrap();
    assert!(
        md.contains("| q4 | q4 | `toy-q4.safetensors` |") && md.contains("distilled from `teacher/model.safetensors`")
    );
    ok(&[
        "generate",
        "--model",
        s(&weights.join("toy-q4.safetensors")),
        "--max-tokens",
        "8",
        "--seed",
        "2",
    ]);
}
