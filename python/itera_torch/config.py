"""Hyper-parameters of the two model families under the keys the weight files use (SPEC
"Model", "Model families"), and the named presets.

The presets are the Rust core's (`Config::preset`, `TransformerConfig::preset`); the test suite
writes each with `cargo xtask init` and holds these equal to what the file records.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Union

FAMILIES = ("itera", "transformer")
NORM_EPS = 1e-5


@dataclass
class IteraConfig:
    """The SSM + MoE model: D = d_model, Di = expand·D, N = d_state, K = d_conv, R = dt_rank,
    E = n_experts, k = top_k, F = d_ff. Layer l is MoE when moe_every > 0 and (l+1) % moe_every == 0."""

    vocab_size: int
    d_model: int
    n_layers: int
    expand: int = 2
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int = 0
    n_experts: int = 4
    top_k: int = 2
    d_ff: int = 128
    moe_every: int = 2
    # Annotations the files carry beside the shape (the tokenizer's file name, the training
    # summary); kept so that a file read and written again says the same.
    extra: dict = field(default_factory=dict)

    family = "itera"

    def __post_init__(self):
        if self.dt_rank == 0:
            self.dt_rank = math.ceil(self.d_model / 16)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def is_moe(self, layer: int) -> bool:
        return self.moe_every > 0 and (layer + 1) % self.moe_every == 0

    @property
    def n_moe_layers(self) -> int:
        return sum(self.is_moe(l) for l in range(self.n_layers))


@dataclass
class TransformerConfig:
    """The llama2.c architecture under `model.py`'s `ModelArgs` names."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    hidden_dim: int
    norm_eps: float = NORM_EPS
    max_seq_len: int = 32768
    shared_classifier: bool = True
    extra: dict = field(default_factory=dict)

    family = "transformer"

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


Config = Union[IteraConfig, TransformerConfig]

_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "itera": {
        "test": dict(vocab_size=37, d_model=12, n_layers=2, d_state=11, dt_rank=3, n_experts=3, top_k=2, d_ff=10, moe_every=2),
        "micro": dict(vocab_size=4096, d_model=32, n_layers=4, n_experts=4, top_k=2, d_ff=96, moe_every=2),
        "tiny": dict(vocab_size=4096, d_model=128, n_layers=4, n_experts=4, top_k=2, d_ff=128, moe_every=2),
        "15m": dict(vocab_size=4096, d_model=288, n_layers=6, n_experts=4, top_k=2, d_ff=512, moe_every=1),
    },
    "transformer": {
        "test": dict(vocab_size=37, dim=24, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=10, max_seq_len=64),
        "micro": dict(vocab_size=4096, dim=32, n_layers=4, n_heads=4, n_kv_heads=2, hidden_dim=312),
        "tiny": dict(vocab_size=4096, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, hidden_dim=496),
        "15m": dict(vocab_size=4096, dim=288, n_layers=6, n_heads=6, n_kv_heads=6, hidden_dim=768),
    },
}

PRESET_NAMES = tuple(_PRESETS["itera"])


def preset(name: str, family: str = "itera") -> Config:
    """A named preset (test, micro, tiny, 15m) of `family`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family `{family}` (one of {', '.join(FAMILIES)})")
    if name not in _PRESETS[family]:
        raise ValueError(f"unknown preset `{name}` (one of {', '.join(PRESET_NAMES)})")
    return from_dict(family, dict(_PRESETS[family][name]))


def from_dict(family: str, values: dict[str, Any]) -> Config:
    """A config from a file's JSON object: the shape keys become fields, the rest is kept."""
    cls = IteraConfig if family == "itera" else TransformerConfig
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    shape = {k: v for k, v in values.items() if k in names}
    extra = {k: v for k, v in values.items() if k not in names}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in shape and f.default is dataclasses.MISSING and f.name != "extra"]
    if missing:
        raise ValueError(f"{family} config lacks {', '.join(missing)}")
    return cls(**shape, extra=extra)


def to_dict(config: Config) -> dict[str, Any]:
    """The JSON object a weight file's `config` holds (the Rust core's serialisation)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "extra"}
    if isinstance(config, TransformerConfig) and config.shared_classifier:
        del values["shared_classifier"]  # absent = tied, as the core writes it
    values.update(config.extra)
    return values


def load_config(spec: str, family: str) -> Config:
    """`--config`: a preset name or a JSON file of the family's keys."""
    if spec in PRESET_NAMES:
        return preset(spec, family)
    with open(spec, encoding="utf-8") as f:
        return from_dict(family, json.load(f))
