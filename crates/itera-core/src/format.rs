//! Weight files: safetensors with `__metadata__` {format = "itera", format_version,
//! family, precision, config}, tensor names from the family's parameter table (SPEC "Weight
//! files", "Model families"). A file without `family` is an itera model (older files). A mixed
//! file (format_version 2) also holds `precision_map`, a JSON object of the matrices stored in
//! another precision than `precision`; a uniform file is written as version 1, as before, so
//! older builds still read it.
//!
//! Loading validates everything before a model exists: header, metadata, every expected
//! tensor's presence, dtype and shape, no unexpected tensors, finite values.

use std::collections::{HashMap, HashSet};

use half::f16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::family::{Architecture, Family, Specs};
use crate::matrix::{Matrix, MatrixData};
use crate::params::{ParamKind, ParamSpec};
use crate::precision::{groups_per_row, not_a_matrix, packed_bytes_per_row, Precision, PrecisionMap};
use crate::weights::{Tensor, Weights};

pub const FORMAT: &str = "itera";
/// The version of a uniform file (one precision for every matrix).
pub const FORMAT_VERSION: &str = "1";
/// The version of a mixed file (a `precision_map`).
pub const MIXED_FORMAT_VERSION: &str = "2";

/// A tensor to write: name, dtype, shape, little-endian bytes.
type Buffer = (String, Dtype, Vec<usize>, Vec<u8>);

/// Serialises weights of any family to safetensors bytes.
pub fn save<A: Architecture>(w: &Weights<A>) -> Result<Vec<u8>> {
    let mut buffers: Vec<Buffer> = Vec::new();
    for (spec, t) in w.specs().iter().zip(&w.tensors) {
        match t {
            Tensor::Vector(v) if w.precision.vectors_in_f16() => {
                let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                buffers.push((
                    spec.name.clone(),
                    Dtype::F16,
                    spec.shape.clone(),
                    bytemuck::cast_slice(&h).to_vec(),
                ));
            }
            Tensor::Vector(v) => buffers.push((
                spec.name.clone(),
                Dtype::F32,
                spec.shape.clone(),
                bytemuck::cast_slice(v).to_vec(),
            )),
            Tensor::Matrix(m) => {
                let (name, shape) = (spec.name.clone(), spec.shape.clone());
                let packed = |q: &[u8]| {
                    let bpr = packed_bytes_per_row(m.precision(), m.cols).expect("packed");
                    (name.clone(), Dtype::U8, vec![m.rows, bpr], q.to_vec())
                };
                let (codes, groups): (Buffer, Vec<&[f16]>) = match &m.data {
                    MatrixData::F32(v) => ((name, Dtype::F32, shape, bytemuck::cast_slice(v).to_vec()), vec![]),
                    MatrixData::F16(v) => ((name, Dtype::F16, shape, bytemuck::cast_slice(v).to_vec()), vec![]),
                    MatrixData::Q8 { q, scale } => {
                        ((name, Dtype::I8, shape, bytemuck::cast_slice(q).to_vec()), vec![scale])
                    }
                    MatrixData::Q4 { q, scale } | MatrixData::Q3 { q, scale } => (packed(q), vec![scale]),
                    MatrixData::Q2 { q, scale, min } => (packed(q), vec![scale, min]),
                };
                buffers.push(codes);
                for (suffix, values) in m.precision().group_tensors().iter().zip(groups) {
                    buffers.push((
                        format!("{}.{suffix}", spec.name),
                        Dtype::F16,
                        vec![m.rows, groups_per_row(m.cols)],
                        bytemuck::cast_slice(values).to_vec(),
                    ));
                }
            }
        }
    }
    let config = serde_json::to_string(&w.config).map_err(|e| Error::Metadata(e.to_string()))?;
    let map = w.precision_map();
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("family".to_string(), A::FAMILY.to_string()),
        ("precision".to_string(), w.precision.to_string()),
        ("config".to_string(), config),
    ]);
    if !map.is_empty() {
        let json = serde_json::to_string(&map).map_err(|e| Error::Metadata(e.to_string()))?;
        metadata.insert("format_version".into(), MIXED_FORMAT_VERSION.into());
        metadata.insert("precision_map".into(), json);
    }
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Safetensors(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Safetensors(e.to_string()))
}

/// The metadata of an itera weights file, read without touching tensor data.
#[derive(Clone, Debug)]
pub struct Header<A: Architecture = crate::itera::Itera> {
    pub precision: Precision,
    /// The matrices in another precision (empty in a uniform file).
    pub precision_map: PrecisionMap,
    pub config: A::Config,
}

/// A safetensors file's `__metadata__` block, read without touching tensor data.
pub(crate) fn metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    check_header_length(bytes)?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
    meta.metadata()
        .clone()
        .ok_or_else(|| Error::Metadata("no __metadata__ block".into()))
}

/// The safetensors framing before the crate reads it: an 8-byte header length that the file
/// holds, then a JSON object — refused with the numbers (the crate says only "header too
/// large").
fn check_header_length(bytes: &[u8]) -> Result<()> {
    let Some(len) = bytes.get(..8) else {
        return Err(Error::Safetensors(format!(
            "a file of {} bytes is shorter than the 8-byte header length",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let rest = bytes.len() as u64 - 8;
    if n > rest {
        return Err(Error::Safetensors(format!(
            "the header length says {n} bytes but only {rest} follow it"
        )));
    }
    if bytes.get(8) != Some(&b'{') {
        return Err(Error::Safetensors(
            "the header is not a JSON object (it does not start with `{`)".into(),
        ));
    }
    Ok(())
}

/// Parses and checks the metadata block of an itera file.
pub fn read_header(bytes: &[u8]) -> Result<Header> {
    read_header_as::<crate::itera::Itera>(bytes)
}

/// The family a weights file holds (its format and version checked; absent = itera).
pub fn read_family(bytes: &[u8]) -> Result<Family> {
    let info = metadata(bytes)?;
    check_format(&info)?;
    family_of(&info)
}

fn family_of(info: &HashMap<String, String>) -> Result<Family> {
    info.get("family").map_or(Ok(Family::Itera), |f| {
        f.parse()
            .map_err(|_| Error::Metadata(format!("family `{f}` is not one this build knows (itera, transformer)")))
    })
}

fn check_format(info: &HashMap<String, String>) -> Result<()> {
    let get = |key: &str| {
        info.get(key)
            .ok_or_else(|| Error::Metadata(format!("missing key `{key}`")))
    };
    let format = get("format")?;
    if format != FORMAT {
        return Err(Error::Metadata(format!("format is `{format}`, expected `{FORMAT}`")));
    }
    let version = get("format_version")?;
    if version != FORMAT_VERSION && version != MIXED_FORMAT_VERSION {
        return Err(Error::Metadata(format!(
            "format_version {version} is not supported (this build reads {FORMAT_VERSION} and {MIXED_FORMAT_VERSION})"
        )));
    }
    Ok(())
}

/// Parses and checks the metadata block of a file of family `A` (another family's file is
/// refused, naming it).
pub fn read_header_as<A: Architecture>(bytes: &[u8]) -> Result<Header<A>> {
    let info = metadata(bytes)?;
    let get = |key: &str| {
        info.get(key)
            .ok_or_else(|| Error::Metadata(format!("missing key `{key}`")))
    };
    check_format(&info)?;
    let family = family_of(&info)?;
    if family != A::FAMILY {
        return Err(Error::Metadata(format!(
            "this file holds a model of the {family} family ({}) where one of the {} family ({}) was expected",
            family.description(),
            A::FAMILY,
            A::FAMILY.description()
        )));
    }
    let precision: Precision = get("precision")?.parse()?;
    let precision_map: PrecisionMap = match info.get("precision_map") {
        Some(json) => serde_json::from_str(json).map_err(|e| Error::Metadata(format!("precision_map: {e}")))?,
        None => PrecisionMap::new(),
    };
    let config = A::config_from_json(get("config")?)?;
    Ok(Header {
        precision,
        precision_map,
        config,
    })
}

/// Loads and fully validates an itera weights file.
pub fn load(bytes: &[u8]) -> Result<Weights> {
    load_as(bytes)
}

/// Loads and fully validates a weights file of family `A`.
pub fn load_as<A: Architecture>(bytes: &[u8]) -> Result<Weights<A>> {
    let header = read_header_as::<A>(bytes)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors(e.to_string()))?;
    let table = A::table(&header.config);
    let base = header.precision;
    let map = &header.precision_map;
    if let Some(name) = not_a_matrix(map, table.specs()) {
        return Err(Error::Metadata(format!(
            "precision_map names `{name}`, which is not one of this model's matrices"
        )));
    }
    let mut expected: HashSet<String> = HashSet::new();
    let mut tensors = Vec::with_capacity(table.specs().len());
    for spec in table.specs() {
        expected.insert(spec.name.clone());
        let p = map.get(&spec.name).copied().unwrap_or(base);
        if spec.kind == ParamKind::Matrix {
            for suffix in p.group_tensors() {
                expected.insert(format!("{}.{suffix}", spec.name));
            }
        }
        tensors.push(load_tensor(&st, spec, p, base.vectors_in_f16())?);
    }
    if let Some(extra) = st.names().into_iter().find(|n| !expected.contains(*n)) {
        return Err(Error::UnexpectedTensor {
            name: extra.to_string(),
        });
    }
    Ok(Weights {
        config: header.config,
        table,
        precision: base,
        tensors,
    })
}

fn view<'a>(st: &SafeTensors<'a>, name: &str, dtype: Dtype, shape: &[usize]) -> Result<TensorView<'a>> {
    let v = st
        .tensor(name)
        .map_err(|_| Error::MissingTensor { name: name.to_string() })?;
    if v.dtype() != dtype {
        return Err(Error::DType {
            name: name.to_string(),
            expected: format!("{dtype:?}"),
            found: format!("{:?}", v.dtype()),
        });
    }
    if v.shape() != shape {
        return Err(Error::Shape {
            name: name.to_string(),
            expected: shape.to_vec(),
            found: v.shape().to_vec(),
        });
    }
    Ok(v)
}

fn finite(name: &str, values: impl Iterator<Item = f32>) -> Result<()> {
    for (index, value) in values.enumerate() {
        if !value.is_finite() {
            return Err(Error::NonFinite {
                name: name.to_string(),
                index,
                value,
            });
        }
    }
    Ok(())
}

/// An F32 tensor of exactly `shape` with finite values (shared with `train::checkpoint`).
pub(crate) fn f32s(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let v: Vec<f32> = bytemuck::pod_collect_to_vec(view(st, name, Dtype::F32, shape)?.data());
    finite(name, v.iter().copied())?;
    Ok(v)
}

fn f16s(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f16>> {
    let v: Vec<f16> = bytemuck::pod_collect_to_vec(view(st, name, Dtype::F16, shape)?.data());
    finite(name, v.iter().map(|x| x.to_f32()))?;
    Ok(v)
}

/// One tensor: a matrix in `p`, a vector in f16 or f32 as `vectors_in_f16` says.
fn load_tensor(st: &SafeTensors, spec: &ParamSpec, p: Precision, vectors_in_f16: bool) -> Result<Tensor> {
    let name = spec.name.as_str();
    let shape = spec.shape.as_slice();
    if spec.kind == ParamKind::Vector {
        return Ok(Tensor::Vector(if vectors_in_f16 {
            f16s(st, name, shape)?.iter().map(|x| x.to_f32()).collect()
        } else {
            f32s(st, name, shape)?
        }));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let group = |suffix: &str| f16s(st, &format!("{name}.{suffix}"), &[rows, groups_per_row(cols)]);
    let packed = || -> Result<Vec<u8>> {
        let bpr = packed_bytes_per_row(p, cols).expect("packed");
        Ok(view(st, name, Dtype::U8, &[rows, bpr])?.data().to_vec())
    };
    let data = match p {
        Precision::F32 => MatrixData::F32(f32s(st, name, shape)?),
        Precision::F16 => MatrixData::F16(f16s(st, name, shape)?),
        Precision::Q8 => MatrixData::Q8 {
            q: bytemuck::pod_collect_to_vec(view(st, name, Dtype::I8, shape)?.data()),
            scale: group("scale")?,
        },
        Precision::Q4 => MatrixData::Q4 {
            q: packed()?,
            scale: group("scale")?,
        },
        Precision::Q3 => MatrixData::Q3 {
            q: packed()?,
            scale: group("scale")?,
        },
        Precision::Q2 => MatrixData::Q2 {
            q: packed()?,
            scale: group("scale")?,
            min: group("min")?,
        },
    };
    Ok(Tensor::Matrix(Matrix { rows, cols, data }))
}

/// Reads a weights file from disk.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_file(path: &std::path::Path) -> Result<Weights> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
    load(&bytes)
}

/// Writes a weights file to disk.
#[cfg(not(target_arch = "wasm32"))]
pub fn save_file<A: Architecture>(w: &Weights<A>, path: &std::path::Path) -> Result<()> {
    let bytes = save(w)?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// save → load reproduces every tensor bit for bit, the config and the precision, in
    /// every precision; the file carries the SPEC's metadata and tensor names.
    #[test]
    fn round_trip_every_precision() {
        let mut config = Config::preset("test").unwrap();
        config.tokenizer = Some("tokenizer.json".into());
        config.training = Some(crate::train::TrainingSummary {
            steps: 3,
            ..Default::default()
        });
        let base = Weights::init_random(&config, 5).unwrap();
        for p in Precision::ALL {
            let w = base.to_precision(p);
            let bytes = save(&w).unwrap();
            let back = load(&bytes).unwrap();
            assert_eq!(back.precision, p);
            assert_eq!(back.config, w.config);
            assert_eq!(back.tensors, w.tensors, "{p}");
            let header = read_header(&bytes).unwrap();
            assert_eq!((header.precision, header.config), (p, config.clone()));
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let (want, scale) = match p {
                Precision::F32 => (Dtype::F32, None),
                Precision::F16 => (Dtype::F16, None),
                Precision::Q8 => (Dtype::I8, Some(vec![24, 1])),
                Precision::Q4 | Precision::Q3 | Precision::Q2 => (Dtype::U8, Some(vec![24, 1])),
            };
            // layers.0.in_proj is (2Di, D) = (48, 12): q4 packs it to (48, 6), q3 to
            // (48, 3 + 2), q2 to (48, 3).
            let v = st.tensor("layers.0.in_proj").unwrap();
            assert_eq!(v.dtype(), want);
            let packed_cols = match p {
                Precision::Q4 => 6,
                Precision::Q3 => 5,
                Precision::Q2 => 3,
                _ => 12,
            };
            assert_eq!(v.shape(), &[48, packed_cols][..]);
            let min = st.tensor("layers.0.dt_proj.min").ok().map(|s| s.shape().to_vec());
            assert_eq!(min, (p == Precision::Q2).then(|| vec![24, 1]));
            // dt_proj (Di, R) = (24, 3): one partial group per row.
            assert_eq!(
                st.tensor("layers.0.dt_proj.scale").ok().map(|s| s.shape().to_vec()),
                scale
            );
            // Vectors are f16 in every file but f32 (`Precision::vectors_in_f16`).
            let norm = st.tensor("layers.1.ssm_norm").unwrap().dtype();
            assert_eq!(norm, if p == Precision::F32 { Dtype::F32 } else { Dtype::F16 });
        }
    }

    /// A mixed file: each named matrix in its own precision, the rest in the file's; saved as
    /// format version 2 with its map, loaded back bit for bit; a uniform file stays version 1.
    /// A map naming a vector or an unknown tensor is refused, converting and loading.
    #[test]
    fn a_mixed_file_keeps_each_matrix_in_its_own_precision() {
        let base = Weights::init_random(&Config::preset("test").unwrap(), 5).unwrap();
        let map = PrecisionMap::from([
            ("embed".to_string(), Precision::Q8),
            ("layers.0.in_proj".to_string(), Precision::F16),
            ("layers.1.out_proj".to_string(), Precision::F32),
        ]);
        let w = base.to_precision_map(Precision::Q4, &map).unwrap();
        assert_eq!(w.precision_map(), map);
        let bytes = save(&w).unwrap();
        let info = metadata(&bytes).unwrap();
        assert_eq!(info["format_version"], MIXED_FORMAT_VERSION);
        let back = load(&bytes).unwrap();
        assert_eq!((back.precision, back.precision_map()), (Precision::Q4, map.clone()));
        assert_eq!(back.tensors, w.tensors);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("embed").unwrap().dtype(), Dtype::I8);
        assert_eq!(st.tensor("layers.0.in_proj").unwrap().dtype(), Dtype::F16);
        assert!(st.tensor("layers.0.in_proj.scale").is_err());
        assert_eq!(st.tensor("layers.0.x_proj").unwrap().dtype(), Dtype::U8);
        assert_eq!(
            metadata(&save(&base.to_precision(Precision::Q4)).unwrap()).unwrap()["format_version"],
            FORMAT_VERSION
        );

        for bad in ["layers.1.ssm_norm", "no.such.tensor"] {
            let e = base
                .to_precision_map(Precision::Q4, &PrecisionMap::from([(bad.to_string(), Precision::Q8)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad), "{e}");
        }
        // A file whose map names a vector: refused at load, naming it.
        let mut st_meta = info.clone();
        st_meta.insert("precision_map".into(), r#"{"layers.1.ssm_norm":"q8"}"#.into());
        let views: Vec<(String, TensorView)> = st.tensors().into_iter().collect();
        let tampered = safetensors::serialize(views, Some(st_meta)).unwrap();
        let e = load(&tampered).unwrap_err().to_string();
        assert!(e.contains("precision_map names `layers.1.ssm_norm`"), "{e}");
    }
}
