//! `cargo xtask build-web --out DIR`: the playground as a self-contained static site for any
//! static host — the page (web/), the wasm and its glue (pkg/), the chart library (vendor/)
//! and the shipped models with their manifest (weights/), laid out as the dev server serves
//! them. Every URL in the page is relative, so the folder works at a host's root or under any
//! sub-path; each compressible file gets a gzip twin (`NAME.gz`) for hosts that serve
//! pre-compressed files. Without COOP/COEP headers the page still works: Stop then reaches a
//! generation as a message instead of a shared flag.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

/// Files of web/ that are about the page, not part of it.
const NOT_PUBLISHED: [&str; 2] = ["README.md", "screenshot.png"];

/// Builds the playground and writes the site into `out` (which must be empty or absent).
pub fn build(out: &Path) -> Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} is not empty: give a new folder (the site replaces nothing)",
            out.display()
        );
    }
    crate::web::build()?;
    let root = crate::project_root();
    let build = crate::web::build_dir();
    let mut files = 0usize;
    let mut copy_dir = |from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool| -> Result<()> {
        std::fs::create_dir_all(to)?;
        let mut entries: Vec<_> = std::fs::read_dir(from)
            .with_context(|| format!("reading {}", from.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_file() && !name.starts_with('.') && keep(&name) {
                std::fs::copy(e.path(), to.join(&name)).with_context(|| format!("copying {name}"))?;
                files += 1;
            }
        }
        Ok(())
    };
    copy_dir(&root.join("web"), out, &|n| !NOT_PUBLISHED.contains(&n))?;
    copy_dir(&build.join("pkg"), &out.join("pkg"), &|n| {
        n.ends_with(".js") || n.ends_with(".wasm")
    })?;
    copy_dir(&build.join("vendor"), &out.join("vendor"), &|_| true)?;
    // The models the page runs (the manifest's `models` and the Transformer `baselines` it
    // compares them with), their cards, the tokenizer and the manifest.
    let manifest = crate::manifest::shipped()?;
    let mut published: Vec<String> = vec![crate::manifest::FILE.into(), "tokenizer.json".into()];
    let lists = ["models", "baselines"].map(|list| manifest[list].as_array().into_iter().flatten());
    for m in lists.into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        published.extend([format!("{name}.md"), format!("{name}.json")]);
        let files = m["precisions"].as_array().into_iter().flatten();
        published.extend(files.filter_map(|p| p["file"].as_str().map(String::from)));
    }
    copy_dir(&root.join("weights"), &out.join("weights"), &|n| {
        published.iter().any(|p| p == n)
    })?;
    let (gz, bytes, gz_bytes) = compress_all(out)?;
    eprintln!(
        "wrote the static site to {}: {files} files ({:.1} MB), {gz} gzip twins ({:.1} MB)",
        out.display(),
        bytes as f64 / 1e6,
        gz_bytes as f64 / 1e6
    );
    eprintln!(
        "serve the folder as it is (e.g. `python3 -m http.server --directory {}`)",
        out.display()
    );
    Ok(())
}

/// Writes `NAME.gz` beside every compressible file under `dir`; returns (twins, bytes of the
/// originals, bytes of the twins).
fn compress_all(dir: &Path) -> Result<(usize, u64, u64)> {
    let (mut twins, mut bytes, mut gz_bytes) = (0, 0, 0);
    let entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            let (t, b, g) = compress_all(&path)?;
            (twins, bytes, gz_bytes) = (twins + t, bytes + b, gz_bytes + g);
            continue;
        }
        let data = std::fs::read(&path)?;
        bytes += data.len() as u64;
        if crate::web::compressible(&path) {
            let packed = gzip(&data, Compression::best())?;
            gz_bytes += packed.len() as u64;
            let mut name = path.file_name().context("file name")?.to_os_string();
            name.push(".gz");
            std::fs::write(path.with_file_name(name), packed)?;
            twins += 1;
        }
    }
    Ok((twins, bytes, gz_bytes))
}

/// `data` gzipped (the site at the best level, once per publish; the dev server faster).
pub fn gzip(data: &[u8], level: Compression) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), level);
    encoder.write_all(data)?;
    encoder.finish()
}
