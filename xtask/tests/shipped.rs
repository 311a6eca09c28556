//! The shipped models in weights/ are what their cards and manifest.json say: every file loads
//! with the shared tokenizer, has the recorded size, generates, and (with the reference data
//! present) the manifest's default model scores its held-out bits per byte.

use std::path::PathBuf;
use std::process::Command;

fn weights_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../weights")
}

fn xtask(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs");
    assert!(
        out.status.success(),
        "xtask {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(weights_dir().join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn shipped_files_match_their_cards() {
    let manifest = manifest();
    let names: Vec<&str> = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "weights/manifest.json lists the two shipped models");
    // The Transformer baselines (compare-arch's) are checked the same way.
    let baselines = manifest["baselines"].as_array().unwrap();
    for b in baselines {
        assert_eq!(b["family"], "transformer", "{b}");
    }
    let names = names
        .into_iter()
        .chain(baselines.iter().map(|m| m["name"].as_str().unwrap()));
    for name in names {
        let card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(weights_dir().join(format!("{name}.json"))).unwrap())
                .unwrap();
        let variants = card["precisions"].as_array().unwrap();
        let names: Vec<&str> = variants.iter().map(|v| v["variant"].as_str().unwrap()).collect();
        let pruned = name.starts_with("itera").then_some("keep3-q4");
        let want: Vec<&str> = ["f32", "f16", "q8", "q4", "q3", "q2", "auto1", "auto5"]
            .into_iter()
            .chain(pruned)
            .collect();
        assert_eq!(
            names, want,
            "{name}: every precision, two mixed variants, a pruned one (SSM + MoE)"
        );
        for v in variants {
            let path = weights_dir().join(v["file"].as_str().unwrap());
            let bytes = std::fs::metadata(&path).unwrap().len();
            assert_eq!(bytes, v["bytes"].as_u64().unwrap(), "{}", path.display());
            assert!(bytes < 10_000_000, "{} is over 10 MB", path.display());
            let out = xtask(&[
                "generate",
                "--model",
                path.to_str().unwrap(),
                "--max-tokens",
                "12",
                "--seed",
                "1",
                "--json",
            ]);
            let json: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert!(!json["text"].as_str().unwrap().trim().is_empty(), "{}", path.display());
        }
    }
}

#[test]
fn default_model_scores_the_cards_heldout_bpb() {
    let heldout = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/heldout");
    if !heldout.is_dir() {
        println!("SKIPPED: ../shared/data is absent, so the held-out text is too");
        return;
    }
    // The page's default model, as the manifest names it, with the BPB the manifest shows.
    let manifest = manifest();
    let default = manifest["default"].as_str().unwrap();
    let entry = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["precisions"].as_array().unwrap())
        .find(|v| v["key"] == default)
        .unwrap();
    let model = weights_dir().join(entry["file"].as_str().unwrap());
    #[rustfmt::skip]
    let out = xtask(&[
        "eval", "--model", model.to_str().unwrap(), "--json", "--text",
        heldout.join("tinystories-valid-a.txt").to_str().unwrap(), heldout.join("tinystories-sample-b.txt").to_str().unwrap(),
    ]);
    let got = serde_json::from_str::<serde_json::Value>(&out).unwrap()["bits_per_byte"]
        .as_f64()
        .unwrap();
    let want = entry["bits_per_byte"].as_f64().unwrap();
    assert!(
        (got - want).abs() < 1e-6 * want,
        "the manifest says {want}, measured {got}"
    );
}
