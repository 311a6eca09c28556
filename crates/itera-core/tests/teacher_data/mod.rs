//! Shared by the test files that read the llama2.c teacher: where it is, or a printed reason to
//! skip (the reference data is not part of the repository).

use std::path::PathBuf;

/// `../shared/data/teacher` when it holds stories260K.bin.
pub fn teacher_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/teacher");
    if dir.join("stories260K.bin").exists() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: {} is absent (reference data is not part of the repository)",
            dir.display()
        );
        None
    }
}
