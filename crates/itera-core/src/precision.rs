//! Weight precisions (SPEC "Weight files"): f32, f16, q8 (Q8_0-style), q4 (Q4_0-style), q3
//! and q2 (`lowbit`), and the per-matrix precision map of a mixed file.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// The matrices stored in another precision than their file's (`Weights::precision`, which the
/// vectors and every other matrix have), by tensor name: a mixed file's `precision_map`.
pub type PrecisionMap = BTreeMap<String, Precision>;

/// The first name in `map` that is not one of the matrices among `specs` (a vector, or no
/// tensor at all), if any.
pub fn not_a_matrix<'m>(map: &'m PrecisionMap, specs: &[crate::params::ParamSpec]) -> Option<&'m str> {
    map.keys()
        .find(|n| {
            !specs
                .iter()
                .any(|s| &s.name == *n && s.kind == crate::params::ParamKind::Matrix)
        })
        .map(String::as_str)
}

/// Symmetric quantization block size along the input dimension (same as GGUF Q8_0/Q4_0).
pub const GROUP: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F16,
    Q8,
    Q4,
    Q3,
    Q2,
}

impl Precision {
    /// Every precision, widest first: the list the CLI, the exporter, the manifest and the page
    /// read (a new precision touches this type, `matrix`, `format`, the kernels and linear.wgsl).
    pub const ALL: [Precision; 6] = [
        Precision::F32,
        Precision::F16,
        Precision::Q8,
        Precision::Q4,
        Precision::Q3,
        Precision::Q2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Q8 => "q8",
            Precision::Q4 => "q4",
            Precision::Q3 => "q3",
            Precision::Q2 => "q2",
        }
    }

    /// The f16 (rows, groups) tensors stored beside a matrix `NAME` in this precision, by
    /// suffix: `NAME.scale` for the quantized formats and `NAME.min` for q2.
    pub fn group_tensors(self) -> &'static [&'static str] {
        match self {
            Precision::F32 | Precision::F16 => &[],
            Precision::Q8 | Precision::Q4 | Precision::Q3 => &["scale"],
            Precision::Q2 => &["scale", "min"],
        }
    }

    /// The index of this precision in `ALL` (linear.wgsl's PRECISION constant, kernel tables).
    pub fn index(self) -> usize {
        Precision::ALL
            .iter()
            .position(|&p| p == self)
            .expect("every precision is in ALL")
    }

    /// Whether vectors (norms, biases, A_log, D, conv) are stored as f16 rather than f32.
    ///
    /// Deviation from SPEC "Weight files", which keeps vectors f32 in q8/q4 files: in the ~1M
    /// model the vectors are 2% of the parameters but, at 4 bytes each, 7% of a q8 file,
    /// which put q8 at 0.283× the f32 file against the 0.27× target. f16 vectors halve that;
    /// their rounding (≤ 2⁻¹¹ relative) is far below the matrices' 8- or 4-bit rounding.
    pub fn vectors_in_f16(self) -> bool {
        self != Precision::F32
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Precision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "f16" | "fp16" => Ok(Precision::F16),
            "q8" | "int8" => Ok(Precision::Q8),
            "q4" | "int4" => Ok(Precision::Q4),
            "q3" | "int3" => Ok(Precision::Q3),
            "q2" | "int2" => Ok(Precision::Q2),
            _ => Err(Error::UnknownPrecision(s.to_string())),
        }
    }
}

/// Number of scale groups in a row of `cols` values. Input widths that are not a multiple of
/// 32 (e.g. `dt_proj`, whose input is the small dt_rank) get a last, shorter group; for widths
/// that are multiples of 32 this is exactly SPEC's `in/32`.
pub fn groups_per_row(cols: usize) -> usize {
    cols.div_ceil(GROUP)
}

/// Bytes per row of a q4 matrix: two values per byte, low nibble first; an odd last value
/// leaves the high nibble at 8 (= 0.0).
pub fn q4_bytes_per_row(cols: usize) -> usize {
    cols.div_ceil(2)
}

/// Bytes per row of the packed codes of a matrix in `p`, for the formats stored as bytes
/// (q4, q3, q2; `lowbit` describes the q3 / q2 layouts), or `None`.
pub fn packed_bytes_per_row(p: Precision, cols: usize) -> Option<usize> {
    match p {
        Precision::Q4 => Some(q4_bytes_per_row(cols)),
        Precision::Q3 | Precision::Q2 => Some(crate::lowbit::packed_bytes(p, cols)),
        Precision::F32 | Precision::F16 | Precision::Q8 => None,
    }
}
