//! The page's distillation, natively: itera-tiny q8 writes a small corpus and teaches its
//! logits to a fresh micro-sized student; the corpus and the first steps' losses equal the
//! committed fixture (tests/golden/distill-curve.json), which `xtask distill` reproduces
//! (xtask/tests/train_job.rs) and the browser follows (tests/browser_train.rs). With the
//! llama2.c teacher from ../shared/data (when present), sequence-level distillation lowers the
//! student's held-out bits per byte. `ITERA_UPDATE_GOLDEN=1` rewrites the fixture.
#![cfg(not(target_arch = "wasm32"))]

mod fine_tune_fixture;

use std::path::PathBuf;

use fine_tune_fixture::{distill_corpus, distill_spec, same};
use itera_core::tokenizer::Tokenizer;
use itera_core::train::{ready, Budget, CorpusBuilder, CpuStep, Event, TrainSpec};
use itera_core::train::{Start, Teacher};
use itera_core::Config;
use itera_web::page_job::{PageJob, BUILTIN_STORIES};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap()
}

/// The fixture's corpus, written by itera-tiny q8 story by story.
fn corpus(tokenizer: &Tokenizer) -> (String, Vec<String>) {
    let teacher = Teacher::model(&read("weights/itera-tiny-q8.safetensors")).unwrap();
    let settings = distill_corpus();
    let mut c = CorpusBuilder::new(settings.tokens);
    let mut i = 0;
    while !c.is_complete() {
        c.insert(i, teacher.teller(tokenizer).story(&settings, i).unwrap());
        i += 1;
    }
    (c.text(), c.stories().map(|s| s.text.clone()).collect())
}

fn micro() -> Config {
    Config::preset("micro").unwrap()
}

/// Runs `job` to its end on one CPU thread; returns the steps' loss parts.
fn run(job: &mut PageJob) -> Vec<Value> {
    let mut cpu = CpuStep::new(&job.job.state().weights, job.job.spec().step_config(), 1);
    let mut steps = Vec::new();
    ready(job.job.advance(&mut cpu, Budget::steps(1_000), &mut |e| {
        if let Event::Step { loss, ce, kl, aux, .. } = e {
            steps.push(json!({"loss": loss, "ce": ce, "kl": kl, "aux": aux}));
        }
        Ok(())
    }))
    .unwrap();
    steps
}

#[test]
fn a_logit_distillation_matches_the_golden_corpus_and_curve() {
    let tok_json = read("weights/tokenizer.json");
    let tokenizer = Tokenizer::from_json(&tok_json).unwrap();
    let (text, stories) = corpus(&tokenizer);
    let teacher = Teacher::model(&read("weights/itera-tiny-q8.safetensors")).unwrap();
    let spec = distill_spec();
    let mut job = PageJob::distill(
        Start::Fresh(micro()),
        "",
        teacher,
        "itera-tiny-q8",
        &text,
        &[],
        &tok_json,
        spec.clone(),
        Box::new(|| 0.0),
    )
    .unwrap();
    assert_eq!(job.info().mode, "logits");
    let teacher_bpb = job.teacher_bpb[0].bits_per_byte;
    let steps = run(&mut job);
    let fresh = json!({
        "about": "A distillation in the page (crates/itera-web/tests/native_distill.rs): itera-tiny q8 writes the corpus (fine_tune_fixture::distill_corpus) and teaches a fresh micro student (fine_tune_fixture::distill_spec), natively. xtask/tests/train_job.rs checks `xtask distill` gives the same steps; tests/browser_train.rs follows them in Chromium.",
        "spec": spec,
        "stories": stories,
        "corpus": text,
        "steps": steps,
    });
    let path = root().join("tests/golden/distill-curve.json");
    if std::env::var_os("ITERA_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&fresh).unwrap() + "\n").unwrap();
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        same(&golden, &fresh),
        "run with ITERA_UPDATE_GOLDEN=1 after changing the training maths or the sampler"
    );
    let kl: Vec<f64> = steps.iter().map(|s| s["kl"].as_f64().unwrap()).collect();
    assert!(kl[0] > 0.0 && kl[kl.len() - 1] < kl[0], "KL falls: {kl:?}");
    assert!(
        teacher_bpb > 0.5 && teacher_bpb < 2.0,
        "the teacher's BPB on the built-in stories: {teacher_bpb}"
    );
    assert_eq!(job.teacher_bpb[0].name, BUILTIN_STORIES);
}

#[test]
fn a_llama2c_teacher_distils_its_stories_and_the_students_bpb_falls() {
    let dir = root().join("../shared/data/teacher");
    if !dir.join("stories260K.bin").exists() {
        println!(
            "SKIPPED: {} is absent (reference data is not part of the repository)",
            dir.display()
        );
        return;
    }
    let tok_json = read("weights/tokenizer.json");
    let tokenizer = Tokenizer::from_json(&tok_json).unwrap();
    let teacher = Teacher::llama2(
        &std::fs::read(dir.join("stories260K.bin")).unwrap(),
        &std::fs::read(dir.join("tok512.bin")).unwrap(),
    )
    .unwrap();
    let settings = itera_core::train::CorpusSettings {
        tokens: 6_000,
        ..distill_corpus()
    };
    let mut c = CorpusBuilder::new(settings.tokens);
    let mut i = 0;
    while !c.is_complete() {
        c.insert(i, teacher.teller(&tokenizer).story(&settings, i).unwrap());
        i += 1;
    }
    // Logits cannot be distilled across tokenizers.
    let refused = <PageJob>::distill(
        Start::Fresh(micro()),
        "",
        Teacher::llama2(
            &std::fs::read(dir.join("stories260K.bin")).unwrap(),
            &std::fs::read(dir.join("tok512.bin")).unwrap(),
        )
        .unwrap(),
        "stories260K",
        &c.text(),
        &[],
        &tok_json,
        distill_spec(),
        Box::new(|| 0.0),
    );
    assert!(refused.err().unwrap().to_string().contains("sequence-level"));
    let spec = TrainSpec {
        distill: None,
        steps: 40,
        eval_every: 40,
        ..distill_spec()
    };
    let mut job = PageJob::distill(
        Start::Fresh(micro()),
        "",
        teacher,
        "stories260K",
        &c.text(),
        &[],
        &tok_json,
        spec,
        Box::new(|| 0.0),
    )
    .unwrap();
    assert_eq!(job.info().mode, "sequence");
    let before = job.job.evaluate().unwrap()[0].bits_per_byte;
    run(&mut job);
    let after = job.job.evaluate().unwrap()[0].bits_per_byte;
    eprintln!(
        "sequence-level: student BPB {before:.3} → {after:.3} (teacher {:.3})",
        job.teacher_bpb[0].bits_per_byte
    );
    assert!(after < before - 0.5, "{before} → {after}");
    let summary = job.job.summary().distilled_from.unwrap();
    assert_eq!(summary.mode, itera_core::train::DistillMode::Sequence);
}
