//! Every WGSL file in shaders/ and shaders/train/ parses and validates with naga (the
//! compiler inside wgpu), in plain `cargo test` with no GPU. The test fails when it finds no
//! shaders at all.
//!
//! A file whose first line is `// Prelude: A or B` is compiled behind one of those files (as
//! gpu/kernels.rs assembles it) and is validated behind each; the preludes (functions and
//! bindings only, using the file's declarations) are validated that way and not alone.

use std::path::{Path, PathBuf};

/// What every WebGPU implementation (and Vulkan) grants: the defaults plus the f16 ⇄ f32
/// packing builtins (`unpack2x16float`), which is how the kernels read f16 data without the
/// optional shader-f16 feature that SwiftShader lacks.
fn capabilities() -> naga::valid::Capabilities {
    naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
}

/// `source` parsed and validated; `Ok(number of entry points)`.
fn validate(source: &str, shader_f16: bool) -> Result<usize, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let mut caps = capabilities();
    if shader_f16 {
        caps |= naga::valid::Capabilities::SHADER_FLOAT16;
    }
    let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
    validator.validate(&module).map_err(|e| e.emit_to_string(source))?;
    Ok(module.entry_points.len())
}

/// The preludes named on a file's first line.
fn preludes(source: &str) -> Vec<String> {
    let first = source.lines().next().unwrap_or_default();
    first
        .strip_prefix("// Prelude: ")
        .map(|names| names.split(" or ").map(str::to_string).collect())
        .unwrap_or_default()
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
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let all_preludes: Vec<String> = files.iter().flat_map(|p| preludes(&read(p))).collect();
    let mut failures = Vec::new();
    for path in &files {
        let source = read(path);
        let name = path.strip_prefix(&dir).unwrap().display().to_string();
        if all_preludes.contains(&name) {
            continue; // validated in front of the files that name it
        }
        let wanted = preludes(&source);
        let builds: Vec<(String, String)> = if wanted.is_empty() {
            vec![(name.clone(), source.clone())]
        } else {
            wanted
                .iter()
                .map(|p| (format!("{p} + {name}"), read(&dir.join(p)) + &source))
                .collect()
        };
        for (label, text) in builds {
            match validate(&text, text.contains("enable f16;")) {
                Err(e) => failures.push(format!("{label}: {e}")),
                Ok(0) => failures.push(format!("{label}: no entry point")),
                Ok(_) => {}
            }
        }
    }
    assert!(failures.is_empty(), "invalid shaders:\n{}", failures.join("\n"));
    eprintln!("{} shader files valid", files.len());
}
