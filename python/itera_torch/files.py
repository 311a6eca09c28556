"""The project's weight files (SPEC "Weight files"): safetensors whose `__metadata__` holds
`format = "itera"`, `format_version`, `family`, `precision` and the config as JSON, tensors under
the family's parameter names.

Reading takes every precision the core writes — f32, f16, q8, q4, q3, q2 and mixed files
(`precision_map`) — and dequantizes to the exact f32 values the core decodes (`lowbit.rs`,
`matrix.rs`): q8 = code·scale, q4 = (nibble − 8)·scale low nibble first, q3 = (code − 4)·scale,
q2 = code·scale + min, one f16 scale (and minimum) per 32 values of a row; q3 / q2 codes in
Q2_K / Q3_K's arrangement. Writing gives f32 or f16 files the CLI and the page load.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import Config, from_dict, to_dict
from .models import build_model

FORMAT = "itera"
FORMAT_VERSION = "1"
GROUP = 32


def read_metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata() or {})


def config_of(path) -> Config:
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an itera weight file (format {meta.get('format')!r})")
    return from_dict(meta.get("family", "itera"), json.loads(meta["config"]))


def _lowbit_codes(packed: np.ndarray, precision: str, cols: int) -> np.ndarray:
    """Codes (rows, cols) of q3 / q2 rows: per block of n values, S = ⌈n/4⌉ code bytes where
    byte i holds values i, i+S, i+2S, i+3S at bits 0, 2, 4, 6; q3 then H = ⌈n/8⌉ mask bytes,
    byte i holding the third bit of values i, i+H, …"""
    rows = packed.shape[0]
    codes = np.zeros((rows, cols), dtype=np.uint8)
    offset = 0
    for start in range(0, cols, GROUP):
        n = min(GROUP, cols - start)
        s = math.ceil(n / 4)
        h = math.ceil(n / 8) if precision == "q3" else 0
        j = np.arange(n)
        code = (packed[:, offset + j % s] >> (2 * (j // s))) & 3
        if h:
            code |= ((packed[:, offset + s + j % h] >> (j // h)) & 1) << 2
        codes[:, start : start + n] = code
        offset += s + h
    return codes


def _dequantize(f, name: str, precision: str, shape) -> np.ndarray:
    rows, cols = shape
    q = f.get_tensor(name)
    scale = np.repeat(f.get_tensor(f"{name}.scale").astype(np.float32), GROUP, axis=1)[:, :cols]
    if precision == "q8":
        return q.astype(np.float32) * scale
    if precision == "q4":
        nibbles = np.stack((q & 0x0F, q >> 4), axis=-1).reshape(rows, -1)[:, :cols]
        return (nibbles.astype(np.float32) - 8.0) * scale
    codes = _lowbit_codes(q, precision, cols).astype(np.float32)
    if precision == "q3":
        return (codes - 4.0) * scale
    minimum = np.repeat(f.get_tensor(f"{name}.min").astype(np.float32), GROUP, axis=1)[:, :cols]
    return codes * scale + minimum


def load_state(path, model) -> dict[str, torch.Tensor]:
    """Every parameter of `model` from the file at `path`, as f32 tensors."""
    meta = read_metadata(path)
    file_precision = meta.get("precision", "f32")
    per_tensor = json.loads(meta.get("precision_map", "{}"))
    state = {}
    with safe_open(str(path), framework="np") as f:
        names = set(f.keys())
        for name, p in model.state_dict().items():
            if name not in names:
                raise ValueError(f"{path}: tensor `{name}` is missing")
            precision = per_tensor.get(name, file_precision)
            if f"{name}.scale" in names:
                values = _dequantize(f, name, precision, tuple(p.shape))
            else:
                values = f.get_tensor(name).astype(np.float32)
            if tuple(values.shape) != tuple(p.shape):
                raise ValueError(f"{path}: `{name}` is {tuple(values.shape)}, expected {tuple(p.shape)}")
            state[name] = torch.from_numpy(np.ascontiguousarray(values))
    return state


def load_model(path, scan: str = "auto"):
    """A model of the file's family with its weights (dequantized to f32)."""
    model = build_model(config_of(path), scan=scan)
    model.load_state_dict(load_state(path, model))
    return model


def save_model(model, path, dtype: str = "f32", config: Config | None = None):
    """Writes `model` as the core writes an f32 or f16 file (`format_version` 1)."""
    if dtype not in ("f32", "f16"):
        raise ValueError(f"PyTorch writes f32 or f16 files (got {dtype}); `cargo xtask convert` or `export` makes the rest")
    torch_dtype = torch.float32 if dtype == "f32" else torch.float16
    config = config or model.config
    tensors = {}
    for name, p in model.state_dict().items():
        if name == "output.weight" and config.family == "transformer" and config.shared_classifier:
            continue
        tensors[name] = p.detach().to("cpu", torch_dtype).contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": config.family,
        "precision": dtype,
        "config": json.dumps(to_dict(config)),
    }
    save_file(tensors, str(path), metadata=metadata)
