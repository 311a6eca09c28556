//! Every WGSL file in shaders/ and shaders/train/ parses and validates with naga (the compiler inside wgpu), in
//! plain `cargo test` with no GPU. The test fails when it finds no shaders at all.

use std::path::PathBuf;

/// What every WebGPU implementation (and Vulkan) grants: the defaults plus the f16 ⇄ f32
/// packing builtins (`unpack2x16float`), which is how the kernels read f16 data without the
/// optional shader-f16 feature that SwiftShader lacks.
fn capabilities() -> naga::valid::Capabilities {
    naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
}

#[test]
fn every_shader_parses_and_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let train = dir.join("train");
    let mut files: Vec<PathBuf> = [&dir, &train]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap_or_else(|e| panic!("{}: {e}", d.display())))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .wgsl files found in {}", dir.display());
    let mut failures = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).unwrap();
        let name = path.strip_prefix(&dir).unwrap().display();
        match naga::front::wgsl::parse_str(&source) {
            Err(e) => failures.push(format!("{name}: {}", e.emit_to_string(&source))),
            Ok(module) => {
                let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities());
                if let Err(e) = validator.validate(&module) {
                    failures.push(format!("{name}: {}", e.emit_to_string(&source)));
                } else if module.entry_points.is_empty() {
                    failures.push(format!("{name}: no entry point"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "invalid shaders:\n{}", failures.join("\n"));
    eprintln!("{} shaders valid", files.len());
}
