"""The selective scan of the Mamba-1 block (SPEC "SSM block"), in two forms that compute the
same recurrence

    h_t = exp(dt_t ⊙ A) ⊙ h_{t−1} + (dt_t ⊙ u_t) ⊗ B_t,   y_t = h_t · C_t

over (batch, time, Di, N) without materialising anything larger than the states themselves:

- `scan_sequential`: one step per position, the plain reference (and what the Rust CPU runs);
- `scan_chunked`: the positions cut into chunks of about √T. Each chunk is scanned from a zero
  state — all chunks at once, so the loop runs over the chunk's length, not T — then the chunk
  ends are chained in a second short loop, and every position adds its chunk's incoming state
  times the decay accumulated since the chunk began. 2·√T sequential steps of parallel work
  instead of T, and numerically safe: every decay factor is the exponential of a sum of
  non-positive terms (dt ≥ 0, A < 0), so nothing overflows, unlike the cumulative-sum
  formulations that divide by a running product. Autograd differentiates it as written.

The model takes the chunked form on GPUs and the sequential one on CPUs (`itera.scan_for`).
"""

from __future__ import annotations

import math

import torch


def scan_sequential(u, dt, a, b, c):
    """u, dt (B, T, Di); a (Di, N); b, c (B, T, N) → y (B, T, Di) (without the D skip)."""
    batch, t_len, di = u.shape
    h = u.new_zeros(batch, di, a.shape[1])
    ys = []
    for t in range(t_len):
        decay = torch.exp(dt[:, t, :, None] * a)
        h = decay * h + (dt[:, t] * u[:, t])[:, :, None] * b[:, t, None, :]
        ys.append(torch.einsum("bdn,bn->bd", h, c[:, t]))
    return torch.stack(ys, dim=1)


def chunk_length(t_len: int) -> int:
    """About √T: the two loops of `scan_chunked` then take about the same number of steps."""
    return max(1, math.isqrt(max(t_len - 1, 0)) + 1)


def scan_chunked(u, dt, a, b, c, chunk: int | None = None):
    """`scan_sequential` with 2·√T sequential steps (see the module's header)."""
    batch, t_len, di = u.shape
    n = a.shape[1]
    size = chunk or chunk_length(t_len)
    chunks = -(-t_len // size)
    pad = chunks * size - t_len
    if pad:
        # Padded positions come last and decay nothing into the real ones.
        u, dt = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (u, dt))
        b, c = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (b, c))
    # (batch, chunks, size, ...)
    log_decay = dt.view(batch, chunks, size, di)[..., None] * a  # ≤ 0
    inject = (dt * u).view(batch, chunks, size, di)[..., None] * b.view(batch, chunks, size, 1, n)
    # 1. every chunk from a zero state, all chunks at once.
    h = u.new_zeros(batch, chunks, di, n)
    local = []
    for s in range(size):
        h = torch.exp(log_decay[:, :, s]) * h + inject[:, :, s]
        local.append(h)
    local = torch.stack(local, dim=2)  # (batch, chunks, size, di, n)
    # Decay from each chunk's start to each of its positions (inclusive): exp of a sum of ≤ 0.
    since_start = torch.exp(torch.cumsum(log_decay, dim=2))
    # 2. the state entering each chunk, chunk after chunk.
    carry = u.new_zeros(batch, di, n)
    incoming = []
    for k in range(chunks):
        incoming.append(carry)
        carry = local[:, k, -1] + since_start[:, k, -1] * carry
    incoming = torch.stack(incoming, dim=1)  # (batch, chunks, di, n)
    # 3. every position: its chunk's own part plus the decayed incoming state.
    states = local + since_start * incoming[:, :, None]
    y = torch.einsum("bksdn,bksn->bksd", states, c.view(batch, chunks, size, n))
    return y.reshape(batch, chunks * size, di)[:, :t_len]
