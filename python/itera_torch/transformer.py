"""The Transformer family (SPEC "Model families"): the llama2.c architecture with `model.py`'s
parameter names — causal grouped-query attention with RoPE on adjacent pairs (θ = 10000),
SwiGLU FFN, rmsnorm ε 1e-5, classifier tied to the embedding unless `output.weight` exists."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TransformerConfig
from .layers import rmsnorm

ROPE_THETA = 10000.0


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d))
        self.eps = eps

    def forward(self, x):
        return rmsnorm(x, self.weight, self.eps)


def rope(x, cos, sin):
    """Turns pair (2i, 2i+1) of every head by its angle; x (B, T, H, hs), cos/sin (T, hs/2)."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        hs, kv = c.head_size, c.n_kv_heads * c.head_size
        self.wq = nn.Linear(c.dim, c.dim, bias=False)
        self.wk = nn.Linear(c.dim, kv, bias=False)
        self.wv = nn.Linear(c.dim, kv, bias=False)
        self.wo = nn.Linear(c.dim, c.dim, bias=False)
        self.c = c

    def forward(self, x, cos, sin):
        c = self.c
        b, t, _ = x.shape
        q = rope(self.wq(x).view(b, t, c.n_heads, c.head_size), cos, sin)
        k = rope(self.wk(x).view(b, t, c.n_kv_heads, c.head_size), cos, sin)
        v = self.wv(x).view(b, t, c.n_kv_heads, c.head_size)
        group = c.n_heads // c.n_kv_heads
        # query head h reads kv head h // group
        k, v = (y.repeat_interleave(group, dim=2) for y in (k, v))
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, t, c.dim))


class FeedForward(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.w2 = nn.Linear(c.hidden_dim, c.dim, bias=False)
        self.w3 = nn.Linear(c.dim, c.hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.attention = Attention(c)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.feed_forward = FeedForward(c)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class TransformerLM(nn.Module):
    """`forward(tokens (B, T))` → (logits (B, T, V), aux = 0: no experts to balance)."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.config = c
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        if not c.shared_classifier:
            self.output = nn.Linear(c.dim, c.vocab_size, bias=False)

    def angles(self, t_len: int, like):
        hs = self.config.head_size
        freq = 1.0 / ROPE_THETA ** (torch.arange(0, hs, 2, dtype=like.dtype, device=like.device) / hs)
        angle = torch.arange(t_len, dtype=like.dtype, device=like.device)[:, None] * freq
        return torch.cos(angle), torch.sin(angle)

    def forward(self, tokens):
        t_len = tokens.shape[1]
        if t_len > self.config.max_seq_len:
            raise ValueError(f"{t_len} positions exceed max_seq_len {self.config.max_seq_len}")
        x = self.tok_embeddings(tokens)
        cos, sin = self.angles(t_len, x)
        for block in self.layers:
            x = block(x, cos, sin)
        x = self.norm(x)
        head = self.tok_embeddings.weight if self.config.shared_classifier else self.output.weight
        return x @ head.t(), x.new_zeros(())

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator):
        """model.py's initialisation: N(0, 0.02²), the residual outputs (w3, wo) scaled by
        1/√(2L), norms 1."""
        residual = 0.02 / (2.0 * self.config.n_layers) ** 0.5
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("w3.weight", "wo.weight")):
                p.normal_(0.0, residual, generator=generator)
            else:
                p.normal_(0.0, 0.02, generator=generator)
