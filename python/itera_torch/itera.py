"""The SSM + MoE model (SPEC "Model"): embedding → L × (x += SSM(rmsnorm x); x += FFN(rmsnorm
x)) → final rmsnorm → tied LM head. Parameters carry the weight files' names exactly
(`embed`, `layers.{l}.in_proj`, `layers.{l}.experts.{e}.w1`, …), so `state_dict()` is a file's
tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import IteraConfig
from .layers import SwiGLU, linear, rmsnorm
from .scan import scan_chunked, scan_sequential

SCANS = {"chunked": scan_chunked, "sequential": scan_sequential}


def scan_for(name: str, device: torch.device):
    """`auto`: the chunked scan on GPUs, where each sequential step costs a kernel launch; the
    sequential one on CPUs, where its step's state stays in cache while the chunked scan's
    passes over (B, T, Di, N) do not (itera-tiny, batch 16 × 128, one thread: 1,702 against 439
    tokens/s)."""
    if name == "auto":
        name = "chunked" if device.type == "cuda" else "sequential"
    return SCANS[name]


class IteraLayer(nn.Module):
    def __init__(self, c: IteraConfig, layer: int):
        super().__init__()
        d, di, n, r = c.d_model, c.d_inner, c.d_state, c.dt_rank
        p = lambda *shape: nn.Parameter(torch.empty(*shape))  # noqa: E731
        self.ssm_norm = p(d)
        self.in_proj = p(2 * di, d)
        self.conv_w = p(di, c.d_conv)
        self.conv_b = p(di)
        self.x_proj = p(r + 2 * n, di)
        self.dt_proj = p(di, r)
        self.dt_b = p(di)
        self.A_log = p(di, n)
        self.Dskip = p(di)
        self.out_proj = p(d, di)
        self.ffn_norm = p(d)
        self.moe = c.is_moe(layer)
        if self.moe:
            self.router = p(c.n_experts, d)
            self.experts = nn.ModuleList(SwiGLU(d, c.d_ff) for _ in range(c.n_experts))
        else:
            self.ffn = SwiGLU(d, c.d_ff)
        self.c = c

    def ssm(self, xn, scan):
        c = self.c
        di, n, r = c.d_inner, c.d_state, c.dt_rank
        u, z = linear(xn, self.in_proj).split(di, dim=-1)
        # Causal depthwise conv: K−1 zeros of left padding, the last tap on the current step.
        t_len = u.shape[1]
        conv = F.conv1d(u.transpose(1, 2), self.conv_w[:, None, :], padding=c.d_conv - 1, groups=di)
        u = F.silu(conv[..., :t_len].transpose(1, 2) + self.conv_b)
        dt_r, b, cc = linear(u, self.x_proj).split([r, n, n], dim=-1)
        dt = F.softplus(linear(dt_r, self.dt_proj) + self.dt_b, threshold=20.0)
        # The recurrence runs in f32 even under bf16 autocast: its state accumulates over T.
        wide = torch.promote_types(u.dtype, torch.float32)
        with torch.autocast(u.device.type, enabled=False):
            y = scan(*(x.to(wide) for x in (u, dt, -torch.exp(self.A_log), b, cc)))
        y = y.to(u.dtype) + self.Dskip * u
        return linear(y * F.silu(z), self.out_proj)

    def moe_ffn(self, xn):
        """Top-k routing (ties to the lower expert index) with renormalised weights; returns
        the output and this layer's Switch load-balancing loss E·Σ f_e·P_e."""
        c = self.c
        shape = xn.shape
        x = xn.reshape(-1, shape[-1])
        probs = torch.softmax(linear(x, self.router), dim=-1)
        # A stable descending sort keeps the lower index first among equal probabilities.
        top = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices[:, : c.top_k]
        chosen = probs.gather(1, top)
        weights = chosen / chosen.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            # An expert no token chose still runs (on no rows), so every parameter is in the
            # graph and DistributedDataParallel needs no search for unused ones.
            rows, slot = (top == e).nonzero(as_tuple=True)
            out = out.index_add(0, rows, (weights[rows, slot, None] * expert(x[rows])).to(out.dtype))
        counts = torch.bincount(top.flatten(), minlength=c.n_experts).to(probs.dtype)
        f = counts / (x.shape[0] * c.top_k)  # a count: no gradient
        aux = c.n_experts * (f * probs.mean(0)).sum()
        return out.reshape(shape), aux

    def forward(self, x, scan):
        x = x + self.ssm(rmsnorm(x, self.ssm_norm), scan)
        xn = rmsnorm(x, self.ffn_norm)
        if self.moe:
            out, aux = self.moe_ffn(xn)
            return x + out, aux
        return x + self.ffn(xn), None


class IteraLM(nn.Module):
    """`forward(tokens (B, T))` → (logits (B, T, V), mean aux loss over the MoE layers)."""

    def __init__(self, c: IteraConfig, scan: str = "auto"):
        super().__init__()
        self.config = c
        self.embed = nn.Parameter(torch.empty(c.vocab_size, c.d_model))
        self.layers = nn.ModuleList(IteraLayer(c, l) for l in range(c.n_layers))
        self.final_norm = nn.Parameter(torch.empty(c.d_model))
        self.scan = scan

    def forward(self, tokens):
        scan = scan_for(self.scan, tokens.device)
        x = self.embed[tokens]
        auxes = []
        for layer in self.layers:
            x, aux = layer(x, scan)
            if aux is not None:
                auxes.append(aux)
        logits = linear(rmsnorm(x, self.final_norm), self.embed)
        aux = torch.stack(auxes).mean() if auxes else logits.new_zeros(())
        return logits, aux

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator):
        """The core's initialisation (`Weights::init_random`), drawn from torch's generator."""
        c = self.config
        residual = 1.0 / (2.0 * c.n_layers) ** 0.5
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            fan_in = p.shape[-1]
            if leaf in ("embed", "router"):
                p.normal_(0.0, 0.02, generator=generator)
            elif leaf in ("ssm_norm", "ffn_norm", "final_norm", "Dskip"):
                p.fill_(1.0)
            elif leaf == "conv_b":
                p.zero_()
            elif leaf == "conv_w":
                p.uniform_(-(c.d_conv**-0.5), c.d_conv**-0.5, generator=generator)
            elif leaf == "dt_proj":
                p.uniform_(-(c.dt_rank**-0.5), c.dt_rank**-0.5, generator=generator)
            elif leaf == "dt_b":
                # softplus⁻¹ of dt drawn log-uniformly in [1e-3, 1e-1]
                lo, hi = torch.log(torch.tensor(1e-3)), torch.log(torch.tensor(1e-1))
                dt = torch.exp(lo + torch.rand(p.shape, generator=generator) * (hi - lo))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif leaf == "A_log":
                p.copy_(torch.log(torch.arange(1, c.d_state + 1, dtype=p.dtype)).expand_as(p))
            elif leaf in ("out_proj", "w2"):
                p.normal_(0.0, residual / fan_in**0.5, generator=generator)
            else:
                p.normal_(0.0, 1.0 / fan_in**0.5, generator=generator)
