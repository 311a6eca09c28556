//! `cargo xtask build-web` and `cargo xtask serve`: build the playground's wasm (installing
//! the wasm target, wasm-bindgen-cli and the npm packages when missing) and serve it on
//! 127.0.0.1 only, with correct MIME types, a Content-Security-Policy, gzip, ETags and no way
//! out of the served folders.
//!
//! URL layout: `/` and everything else → `web/`; `/pkg/` → the wasm-bindgen output;
//! `/vendor/` → the chart library; `/weights/` → the shipped models.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use clap::Args;

use crate::http::{self, Response};
use crate::mounts::{Mounts, Refusal};
use crate::tools::{ensure_npm_packages, ensure_wasm_bindgen, ensure_wasm_target, sh};

#[derive(Args)]
pub struct BuildWebArgs {
    /// Also write a self-contained static site (relative URLs, gzip twins) into DIR, for any
    /// static host; see the README's "Publish the playground".
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Serve what is already built instead of building first.
    #[arg(long)]
    no_build: bool,
    /// Append one line per request (time, method, path, status, bytes, milliseconds) to FILE.
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,
}

/// `cargo xtask serve --no-build` on a free port in a child process, for the page's
/// end-to-end test and the in-tab benchmarks; killed when dropped, however the caller ends.
pub struct Server {
    child: std::process::Child,
    pub url: String,
}

impl Server {
    pub fn start(access_log: Option<&Path>) -> Result<Server> {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["serve", "--no-build", "--port", "0"]);
        if let Some(log) = access_log {
            cmd.arg("--access-log").arg(log);
        }
        let mut child = cmd
            .current_dir(crate::project_root())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting `xtask serve`")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(String::from);
        let mut server = Server {
            child,
            url: url.unwrap_or_default(),
        };
        read?;
        if server.url.is_empty() {
            let _ = server.child.kill();
            return Err(anyhow!("`xtask serve` did not print its URL (printed {line:?})"));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the page's build output goes (under the ignored target folder).
pub fn build_dir() -> PathBuf {
    crate::project_root().join("target/web")
}

/// Files copied from node_modules to `/vendor/`.
const VENDOR_FILES: [&str; 2] = ["uplot/dist/uPlot.esm.js", "uplot/dist/uPlot.min.css"];

/// Builds `itera-web` for the browser (profile `web`) and runs wasm-bindgen on it for a
/// `target` (`web` for the page, `nodejs` for the wasm benchmark) into `out_dir`.
pub fn build_wasm(target: &str, out_dir: &Path) -> Result<()> {
    ensure_wasm_target()?;
    ensure_wasm_bindgen()?;
    sh(
        "cargo",
        &[
            "build",
            "-p",
            "itera-web",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "web",
        ],
    )?;
    let wasm = crate::project_root().join("target/wasm32-unknown-unknown/web/itera_web.wasm");
    sh(
        "wasm-bindgen",
        &[
            "--target",
            target,
            "--no-typescript",
            "--remove-name-section",
            "--out-dir",
            path_str(out_dir)?,
            path_str(&wasm)?,
        ],
    )
}

pub fn build() -> Result<()> {
    ensure_npm_packages()?;
    let out = build_dir();
    let pkg = out.join("pkg");
    build_wasm("web", &pkg)?;
    let vendor = out.join("vendor");
    std::fs::create_dir_all(&vendor)?;
    for file in VENDOR_FILES {
        let from = crate::project_root().join("node_modules").join(file);
        let name = from.file_name().context("vendor file name")?;
        std::fs::copy(&from, vendor.join(name)).with_context(|| format!("copying {}", from.display()))?;
    }
    let size = std::fs::metadata(pkg.join("itera_web_bg.wasm"))?.len();
    eprintln!("built {} ({:.0} KB of wasm)", out.display(), size as f64 / 1e3);
    Ok(())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
}

pub fn serve(a: ServeArgs) -> Result<()> {
    if !a.no_build {
        build()?;
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", a.port))
        .map_err(|e| anyhow!("cannot listen on 127.0.0.1:{}: {e}", a.port))?;
    let addr = listener.local_addr().context("server address")?;
    println!("Itera-Lite Playground: http://{addr}/");
    std::io::stdout().flush()?;
    let mounts = Arc::new(Mounts::new(&crate::project_root()));
    let gzip_cache = Arc::new(GzipCache::default());
    // Compress the first visit's big files now, not while a visitor waits for them.
    {
        let (mounts, gzip_cache) = (mounts.clone(), gzip_cache.clone());
        let default_model = crate::manifest::shipped().and_then(|m| crate::manifest::default_key(&m));
        std::thread::spawn(move || {
            let default_model = default_model.map(|k| format!("/weights/{k}.safetensors"));
            let urls = ["/pkg/itera_web_bg.wasm", "/weights/tokenizer.json"];
            for url in urls.iter().copied().chain(default_model.as_deref().ok()) {
                if let Ok(path) = mounts.resolve(url) {
                    let tag = std::fs::File::open(&path).ok().and_then(|f| entity_tag(&f));
                    if let Some(tag) = tag {
                        gzipped(&gzip_cache, &path, &format!("{tag}-gz"));
                    }
                }
            }
        });
    }
    let access_log = match &a.access_log {
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the access log {}", path.display()))?,
        )),
        None => None,
    };
    let started = std::time::Instant::now();
    let log = move |method: &str, target: &str, status: u16, bytes: u64, took: std::time::Duration| {
        if let Some(Ok(mut f)) = access_log.as_ref().map(|l| l.lock()) {
            let _ = writeln!(
                f,
                "{:9.3} s  {} {} → {status} {bytes} B {:.0} ms",
                (started.elapsed() - took).as_secs_f64(),
                method,
                target,
                took.as_secs_f64() * 1e3
            );
        }
    };
    http::serve(listener, move |request| respond(&mounts, &gzip_cache, request), log)?;
    Ok(())
}

pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Scripts and workers only from this origin (plus compiling our own wasm), no inline code.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
worker-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Compressed bodies by (file, ETag) with their decoded length: each file is gzipped once.
type GzipCache = Mutex<HashMap<(PathBuf, String), (Bytes, usize)>>;

fn accepts_gzip(request: &http::Request) -> bool {
    request.header("Accept-Encoding").is_some_and(|v| v.contains("gzip"))
}

/// Everything but already-compressed images (the wasm shrinks 2.9×, the tokenizer 6×).
pub fn compressible(path: &Path) -> bool {
    !matches!(path.extension().and_then(|e| e.to_str()), Some("png" | "ico"))
}

fn gzipped(cache: &GzipCache, path: &Path, tag: &str) -> Option<(Bytes, usize)> {
    let key = (path.to_path_buf(), tag.to_string());
    if let Some(hit) = cache.lock().ok()?.get(&key) {
        return Some(hit.clone());
    }
    let bytes = std::fs::read(path).ok()?;
    let packed = crate::site::gzip(&bytes, flate2::Compression::default()).ok()?;
    let entry = (Bytes::from(packed), bytes.len());
    cache.lock().ok()?.insert(key, entry.clone());
    Some(entry)
}

/// A validator from the file's size and modification time.
fn entity_tag(file: &std::fs::File) -> Option<String> {
    let meta = file.metadata().ok()?;
    let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(format!("\"{:x}-{:x}\"", meta.len(), modified.as_nanos()))
}

/// Answers one request with a file from the served folders, or a refusal.
fn respond(mounts: &Mounts, gzip_cache: &GzipCache, request: &http::Request) -> Response {
    let outcome = if matches!(request.method.as_str(), "GET" | "HEAD") {
        mounts.resolve(&request.target)
    } else {
        Err(Refusal::MethodNotAllowed)
    };
    let mut r = match outcome.map(|p| (std::fs::File::open(&p), p)) {
        Ok((Ok(file), path)) => {
            // Revalidation by ETag lets the browser reuse its HTTP cache, and with it V8's
            // compiled-wasm cache, on a warm start while edits are still seen at once.
            let gzip = accepts_gzip(request) && compressible(&path);
            let tag = entity_tag(&file).map(|t| if gzip { format!("{t}-gz") } else { t });
            let unchanged = tag.is_some() && request.header("If-None-Match") == tag.as_deref();
            let body = match (unchanged, gzip, &tag) {
                (false, true, Some(tag)) => gzipped(gzip_cache, &path, tag),
                _ => None,
            };
            let mut r = if unchanged {
                Response::new(304, Bytes::new())
            } else if let Some((gz, decoded_len)) = body {
                let mut r = Response::new(200, gz);
                r.header("Content-Encoding", "gzip");
                // The page's download progress counts decoded bytes.
                r.header("X-Decoded-Length", decoded_len.to_string());
                r
            } else {
                let mut bytes = Vec::new();
                match (&file).read_to_end(&mut bytes) {
                    Ok(_) => Response::new(200, Bytes::from(bytes)),
                    Err(_) => return http::plain(404, "not found"),
                }
            };
            r.header("Vary", "Accept-Encoding");
            r.header("Content-Type", content_type(&path));
            if let Some(tag) = tag {
                r.header("ETag", tag);
            }
            r
        }
        Err(Refusal::BadRequest) => http::plain(400, "bad request"),
        Err(Refusal::Forbidden) => http::plain(403, "forbidden"),
        Err(Refusal::NotFound) | Ok((Err(_), _)) => http::plain(404, "not found"),
        Err(Refusal::MethodNotAllowed) => {
            let mut r = http::plain(405, "only GET and HEAD are served");
            r.header("Allow", "GET, HEAD");
            r
        }
    };
    r.header("Content-Security-Policy", CONTENT_SECURITY_POLICY);
    r.header("X-Content-Type-Options", "nosniff");
    r.header("Cache-Control", "no-cache");
    // Cross-origin isolation: SharedArrayBuffer for the worker's stop flag.
    r.header("Cross-Origin-Opener-Policy", "same-origin");
    r.header("Cross-Origin-Embedder-Policy", "require-corp");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_their_folders_only() {
        let root = crate::project_root();
        let m = Mounts::new(&root);
        let index = m.resolve("/").unwrap();
        assert!(index.ends_with("web/index.html"), "{}", index.display());
        assert!(m
            .resolve("/weights/tokenizer.json?v=1")
            .unwrap()
            .ends_with("weights/tokenizer.json"));
        for bad in [
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "/%2E%2E%2FCargo.toml",
            "/weights/..%2f..%2fCargo.toml",
            "/weights/%2e%2e/Cargo.toml",
            "/.git/config",
        ] {
            assert_eq!(m.resolve(bad), Err(Refusal::Forbidden), "{bad}");
        }
        for bad in ["/..%5cCargo.toml", "/%00", "/%ff%fe", "Cargo.toml"] {
            assert_eq!(m.resolve(bad), Err(Refusal::BadRequest), "{bad}");
        }
        assert_eq!(m.resolve("/Cargo.toml"), Err(Refusal::NotFound));
        assert_eq!(m.resolve("/weights"), Err(Refusal::NotFound));
    }

    #[test]
    fn wasm_is_served_as_application_wasm() {
        assert_eq!(content_type(Path::new("a/itera_web_bg.wasm")), "application/wasm");
        assert_eq!(content_type(Path::new("main.js")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Path::new("x.safetensors")), "application/octet-stream");
    }
}
