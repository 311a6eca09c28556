//! Where a request path leads: the dev server's folders and the rules that keep every request
//! inside them (`/` → web/, `/pkg/` and `/vendor/` → the build, `/weights/` → the shipped
//! models). Plain std + percent-encoding, so the path fuzzer (fuzz/) compiles this file as is.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// The served folders.
pub struct Mounts {
    web: PathBuf,
    pkg: PathBuf,
    vendor: PathBuf,
    weights: PathBuf,
}

/// Why a request gets no file.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Malformed path (bad escapes, backslashes, NUL): 400.
    BadRequest,
    /// A `..` or hidden segment, or a path that resolves outside its folder: 403.
    Forbidden,
    NotFound,
    /// Any method but GET and HEAD: 405.
    MethodNotAllowed,
}

impl Mounts {
    pub fn new(root: &Path) -> Mounts {
        let build = root.join("target/web");
        Mounts {
            web: root.join("web"),
            pkg: build.join("pkg"),
            vendor: build.join("vendor"),
            weights: root.join("weights"),
        }
    }

    /// Maps a request target (path and optional query) to a file inside one of the folders.
    pub fn resolve(&self, target: &str) -> Result<PathBuf, Refusal> {
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let decoded = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| Refusal::BadRequest)?;
        if decoded.contains(['\\', '\0']) || !decoded.starts_with('/') {
            return Err(Refusal::BadRequest);
        }
        let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| s.starts_with('.')) {
            return Err(Refusal::Forbidden);
        }
        let (base, rest) = match segments.split_first() {
            None => (&self.web, &["index.html"][..]),
            Some((&"pkg", rest)) => (&self.pkg, rest),
            Some((&"vendor", rest)) => (&self.vendor, rest),
            Some((&"weights", rest)) => (&self.weights, rest),
            Some(_) => (&self.web, &segments[..]),
        };
        let file = rest.iter().fold(base.clone(), |p, s| p.join(s));
        // Symlinks must not lead out of the folder either.
        let (real, real_base) = (
            file.canonicalize().map_err(|_| Refusal::NotFound)?,
            base.canonicalize().map_err(|_| Refusal::NotFound)?,
        );
        if !real.starts_with(&real_base) {
            return Err(Refusal::Forbidden);
        }
        if !real.is_file() {
            return Err(Refusal::NotFound);
        }
        Ok(real)
    }
}
