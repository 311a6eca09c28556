//! The page's fine-tune, natively: the losses and batches of a short fine-tune of itera-micro
//! q8 on the built-in sample stories equal the committed fixture (which the browser suite,
//! tests/browser_train.rs, follows within a stated tolerance), the visitor's texts are cut and
//! checked as the page shows them, and exports load as models. `ITERA_UPDATE_GOLDEN=1`
//! rewrites the fixture.
#![cfg(not(target_arch = "wasm32"))]

mod fine_tune_fixture;

use fine_tune_fixture::{fnv, same, spec};
use std::path::PathBuf;

use itera_core::tokenizer::Tokenizer;
use itera_core::train::{ready, Budget, CpuStep, Event, TrainSpec};
use itera_core::{format, Architecture, Precision, Transformer};
use itera_web::page_job::{PageJob, PreparedText, Source, BUILTIN_STORIES, MAX_PAGE_TEXT_BYTES, YOUR_TEXT};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fine_tune(spec: TrainSpec) -> PageJob {
    fine_tune_of("itera-micro-q8", spec)
}

/// The page's fine-tune of the shipped model `name` (of family `A`) on the sample stories.
fn fine_tune_of<A: Architecture>(name: &str, spec: TrainSpec) -> PageJob<A> {
    let base = std::fs::read(root().join(format!("weights/{name}.safetensors"))).unwrap();
    let tok = std::fs::read(root().join("weights/tokenizer.json")).unwrap();
    let text = std::fs::read(root().join("web/finetune-stories.txt")).unwrap();
    let sources = [Source {
        name: "finetune-stories.txt",
        bytes: &text,
    }];
    PageJob::fine_tune(&base, prepare(&tok, &sources).unwrap(), spec, name, Box::new(|| 0.0)).unwrap()
}

/// The texts as the page prepares them (cut, held out, tokenized).
fn prepare(tokenizer_json: &[u8], sources: &[Source]) -> itera_core::Result<PreparedText> {
    PreparedText::new(Tokenizer::from_json(tokenizer_json)?, sources, &mut |_, _| {})
}

#[test]
fn a_fine_tune_matches_the_golden_curve() {
    golden_curve(fine_tune(spec()), "fine-tune-curve.json");
}

/// The Transformer fine-tunes in the page as the SSM + MoE model does, its curve recorded for
/// the browser suite to follow.
#[test]
fn a_transformer_fine_tune_matches_its_golden_curve() {
    let t = fine_tune_of::<Transformer>("transformer-micro-q8", spec());
    assert_eq!(t.info().params, 263_456);
    let exported = golden_curve(t, "fine-tune-curve-transformer.json");
    let w = format::load_as::<Transformer>(&exported).unwrap();
    let summary = w.config.training.unwrap();
    assert_eq!(summary.fine_tuned_from.as_deref(), Some("transformer-micro-q8"));
    assert!(
        format::load(&exported).is_err(),
        "a Transformer file is not read as SSM + MoE"
    );
}

/// Six steps of `t` on the CPU against `tests/golden/{file}` (rewritten with
/// `ITERA_UPDATE_GOLDEN=1`); the loss falls. Returns the run's f32 export.
fn golden_curve<A: Architecture>(mut t: PageJob<A>, file: &str) -> Vec<u8> {
    let batches: Vec<String> = (0..6).map(|s| fnv(&t.job.batch(s).unwrap())).collect();
    let mut cpu = CpuStep::new(&t.job.state().weights, t.job.spec().step_config(), 1);
    let mut steps = Vec::new();
    let mut evals = Vec::new();
    ready(t.job.advance(&mut cpu, Budget::steps(6), &mut |e| {
        match e {
            Event::Step { loss, ce, aux, .. } => steps.push(json!({"loss": loss, "ce": ce, "aux": aux})),
            Event::Eval { step, results } => evals.push(json!({"step": step, "results": results})),
            _ => {}
        }
        Ok(())
    }))
    .unwrap();
    let fresh = json!({
        "about": format!("6 steps of the page's fine-tune (crates/itera-web/tests/native_train.rs::spec) of {} on web/finetune-stories.txt, natively; tests/browser_train.rs follows it in Chromium", t.base_name),
        "batches_fnv1a": batches,
        "steps": steps,
        "evals": evals,
    });
    let path = root().join("tests/golden").join(file);
    if std::env::var_os("ITERA_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&fresh).unwrap() + "\n").unwrap();
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        same(&golden, &fresh),
        "run with ITERA_UPDATE_GOLDEN=1 after changing the training maths:\n{golden}\n{fresh}"
    );
    let first = steps[0]["loss"].as_f64().unwrap();
    let last = steps[5]["loss"].as_f64().unwrap();
    assert!(last < first, "the loss falls: {first} → {last}");
    t.export(Precision::F32).unwrap()
}

#[test]
fn the_text_is_cut_and_scored_as_the_page_shows_it() {
    let t = fine_tune(spec());
    let info = &t.text;
    assert_eq!((info.documents, info.heldout_documents), (10, 2));
    assert!(info.tokens > 1000 && info.heldout_tokens > 100, "{info:?}");
    let names: Vec<String> = t.job.evaluate().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, [YOUR_TEXT, BUILTIN_STORIES]);
    // Exports load as ordinary models in every precision, with the run's summary.
    for p in Precision::ALL {
        let w = format::load(&t.export(p).unwrap()).unwrap();
        assert_eq!(w.precision, p);
        let summary = w.config.training.unwrap();
        assert_eq!(summary.fine_tuned_from.as_deref(), Some("itera-micro-q8"));
    }
}

#[test]
fn texts_that_cannot_train_are_refused_by_name() {
    let base = std::fs::read(root().join("weights/itera-micro-q8.safetensors")).unwrap();
    let tok = std::fs::read(root().join("weights/tokenizer.json")).unwrap();
    let refuse = |bytes: &[u8], spec: TrainSpec| {
        let sources = [Source {
            name: "story.txt",
            bytes,
        }];
        prepare(&tok, &sources)
            .and_then(|text| <PageJob>::fine_tune(&base, text, spec, "base", Box::new(|| 0.0)))
            .err()
            .expect("refused")
            .to_string()
    };
    let e = refuse(b"  \n\n ", spec());
    assert!(e.contains("no words"), "{e}");
    let e = refuse(b"Once upon a time \xff\xfe there", spec());
    assert!(e.contains("story.txt is not UTF-8") && e.contains("offset 17"), "{e}");
    let e = refuse(b"A tiny story.", spec());
    assert!(e.contains("seq_len"), "{e}");
    let e = refuse(b"A story.", TrainSpec { batch: 0, ..spec() });
    assert!(e.contains("batch"), "{e}");
}

/// The page's texts tokenize with progress up to the whole, and a text over the page's limit is
/// refused before any of it is read, saying the limit and what to do instead.
#[test]
fn preparing_a_text_reports_progress_and_refuses_one_over_the_limit() {
    let tok = std::fs::read(root().join("weights/tokenizer.json")).unwrap();
    let story = std::fs::read_to_string(root().join("web/finetune-stories.txt")).unwrap();
    // About 1.2 MB: many 64 KiB pieces.
    let big = story.repeat(250);
    let sources = [Source {
        name: "big.txt",
        bytes: big.as_bytes(),
    }];
    let mut seen = Vec::new();
    let text = PreparedText::new(Tokenizer::from_json(&tok).unwrap(), &sources, &mut |done, total| {
        seen.push((done, total))
    })
    .unwrap();
    assert!(seen.len() > 10, "{} progress calls", seen.len());
    assert!(seen.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 == w[0].1));
    let (done, total) = *seen.last().unwrap();
    assert_eq!(done, total);
    assert!(
        text.info.tokens > 300_000 && text.info.heldout_tokens > 0,
        "{:?}",
        text.info
    );

    let over = vec![b'a'; MAX_PAGE_TEXT_BYTES + 1];
    let sources = [Source {
        name: "huge.txt",
        bytes: &over,
    }];
    let mut calls = 0;
    let e = PreparedText::new(Tokenizer::from_json(&tok).unwrap(), &sources, &mut |_, _| calls += 1)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("huge.txt is 64.0 MiB") && e.contains("at most 64 MiB") && e.contains("xtask train"),
        "{e}"
    );
    assert_eq!(calls, 0, "refused before tokenizing");
}
