"""Pieces both families use, with the core's exact conventions (SPEC "Model"):
rmsnorm(x) = x / sqrt(mean(x²) + 1e-5) ⊙ weight, silu(x) = x·sigmoid(x), and the SwiGLU FFN
`W2 (silu(W1 x) ⊙ W3 x)` with matrices stored (out, in)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import NORM_EPS


def rmsnorm(x, weight, eps: float = NORM_EPS):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def linear(x, w):
    """x (…, in) times a stored (out, in) matrix."""
    return x @ w.t()


class SwiGLU(nn.Module):
    """A SwiGLU FFN whose parameters are named w1, w2, w3 (the itera files' leaf names)."""

    def __init__(self, d: int, f: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(f, d))
        self.w2 = nn.Parameter(torch.empty(d, f))
        self.w3 = nn.Parameter(torch.empty(f, d))

    def forward(self, x):
        return linear(F.silu(linear(x, self.w1)) * linear(x, self.w3), self.w2)
