//! Every WGSL file in shaders/ and shaders/train/ parses and validates with naga (the
//! compiler inside wgpu), in plain `cargo test` with no GPU. The test fails when it finds no
//! shaders at all.
//!
//! A file whose first line is `// Prelude: A or B` is compiled behind one of those files (as
//! gpu/kernels.rs assembles it) and is validated behind each; the preludes (functions and
//! bindings only, using the file's declarations) are validated that way and not alone.
//!
//! With the `gpu` feature it also reflects every uniform struct through naga and checks the
//! `#[repr(C)]` Rust struct that mirrors it field for field (names, offsets, sizes), and the
//! pointwise op codes on both sides.

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

/// A shader as the kernels compile it: behind its (first) prelude when it names one.
#[cfg(feature = "gpu")]
fn composed(relative: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let source = std::fs::read_to_string(dir.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    match preludes(&source).first() {
        Some(p) => std::fs::read_to_string(dir.join(p)).unwrap() + &source,
        None => source,
    }
}

#[cfg(feature = "gpu")]
fn parse(relative: &str) -> naga::Module {
    let source = composed(relative);
    naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{relative}: {}", e.emit_to_string(&source)))
}

/// A struct's layout: its size and (field, byte offset, byte size) in order.
#[cfg(feature = "gpu")]
type StructLayout = (usize, Vec<(String, usize, usize)>);

/// Every WGSL struct bound as a uniform, as naga lays it out: (shader, struct name) → layout.
#[cfg(feature = "gpu")]
fn reflected_uniforms(shaders: &[&str]) -> Vec<((String, String), StructLayout)> {
    let mut out = Vec::new();
    for &shader in shaders {
        let module = parse(shader);
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        for (_, var) in module.global_variables.iter() {
            if var.space != naga::AddressSpace::Uniform {
                continue;
            }
            let ty = &module.types[var.ty];
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{shader}: a uniform that is not a struct");
            };
            let fields = members
                .iter()
                .map(|m| {
                    let name = m.name.clone().unwrap_or_default();
                    (name, m.offset as usize, layouter[m.ty].size as usize)
                })
                .collect();
            let name = ty.name.clone().unwrap_or_default();
            out.push(((shader.to_string(), name), (*span as usize, fields)));
        }
    }
    out
}

/// Every `#[repr(C)]` uniform struct in gpu::args and gpu::train::args has the layout of the
/// WGSL struct it mirrors — the same field names in the same order, at the same offsets, of
/// the same sizes, and the same total size — and every uniform of every shader has its Rust
/// struct.
#[cfg(feature = "gpu")]
#[test]
fn uniform_structs_match_the_wgsl_structs_naga_reflects() {
    use itera_core::gpu::{args, train};
    let layouts: Vec<args::Layout> = args::LAYOUTS.iter().chain(&train::args::LAYOUTS).copied().collect();
    let mut shaders: Vec<&str> = layouts.iter().map(|l| l.shader).collect();
    shaders.sort();
    shaders.dedup();
    let wgsl = reflected_uniforms(&shaders);
    let mut problems = Vec::new();
    for l in &layouts {
        let key = (l.shader.to_string(), l.wgsl_struct.to_string());
        let Some((_, (size, fields))) = wgsl.iter().find(|(k, _)| *k == key) else {
            problems.push(format!(
                "{}: no uniform struct {} in {}",
                l.rust_struct, l.wgsl_struct, l.shader
            ));
            continue;
        };
        let rust: Vec<(String, usize, usize)> = l.fields.iter().map(|&(n, o, s)| (n.to_string(), o, s)).collect();
        for (i, (r, w)) in rust.iter().zip(fields).enumerate() {
            if r != w {
                problems.push(format!(
                    "{} field {i}: Rust {} at byte {} ({} bytes), {} `{}`: {} at byte {} ({} bytes)",
                    l.rust_struct, r.0, r.1, r.2, l.shader, l.wgsl_struct, w.0, w.1, w.2
                ));
            }
        }
        if rust.len() != fields.len() || l.size != *size {
            problems.push(format!(
                "{}: {} fields, {} bytes in Rust; {} fields, {size} bytes in {} `{}`",
                l.rust_struct,
                rust.len(),
                l.size,
                fields.len(),
                l.shader,
                l.wgsl_struct
            ));
        }
    }
    // Every uniform the shaders declare, in every file: each has one Rust struct.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    for sub in ["", "train/"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
            let name = format!("{sub}{}", e.file_name().to_string_lossy());
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if name.ends_with(".wgsl") && text.contains("var<uniform>") {
                let declared = layouts.iter().filter(|l| l.shader == name).count();
                if declared != 1 {
                    problems.push(format!("{name}: {declared} Rust uniform structs (want 1)"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "uniform layouts differ:\n{}", problems.join("\n"));
    eprintln!(
        "{} uniform structs match their WGSL structs field for field",
        layouts.len()
    );
}

/// pointwise.wgsl's `OP_…` constants are gpu::train::args::Op's discriminants, both ways.
#[cfg(feature = "gpu")]
#[test]
fn pointwise_op_codes_agree_between_rust_and_wgsl() {
    use itera_core::gpu::train::args::Op;
    let module = parse("train/pointwise.wgsl");
    let mut wgsl = std::collections::BTreeMap::new();
    for (_, c) in module.constants.iter() {
        let Some(name) = c.name.as_deref().filter(|n| n.starts_with("OP_")) else {
            continue;
        };
        let value = match module.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => v,
            ref other => panic!("{name} = {other:?}: expected a u32 literal"),
        };
        wgsl.insert(name.to_string(), value);
    }
    let rust: std::collections::BTreeMap<String, u32> = Op::ALL
        .iter()
        .map(|&op| (op.wgsl_name().to_string(), op as u32))
        .collect();
    assert_eq!(rust, wgsl, "Op (Rust) and the OP_ constants of pointwise.wgsl");
}
