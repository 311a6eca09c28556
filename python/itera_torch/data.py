"""Text in, tokens out: the project's `tokenizer.json` through Hugging Face `tokenizers`, the
training corpus as one token stream (cached on disk, so the ranks of a run and a resumed run
share one tokenization), the batches of a step, and held-out bits per byte computed as
`cargo xtask eval` computes them (SPEC "Inspection commands")."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

END_OF_TEXT = "<|endoftext|>"


def load_tokenizer(path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    if tok.token_to_id(END_OF_TEXT) is None:
        raise ValueError(f"{path}: the tokenizer has no {END_OF_TEXT} token")
    return tok


def encode(tok: Tokenizer, text: str) -> list[int]:
    """The core's `Tokenizer::encode`: no special tokens added; `<|endoftext|>` in the text
    becomes its id."""
    return tok.encode(text, add_special_tokens=False).ids


def encode_corpus(tok: Tokenizer, text: str) -> np.ndarray:
    """A corpus's token stream. The text is cut after each `<|endoftext|>` (a special token,
    which the tokenizer never merges with its neighbours) and the pieces encoded in parallel,
    so the ids are the whole text's."""
    pieces = [p for p in re.split(f"({re.escape(END_OF_TEXT)})", text) if p]
    ids = [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(pieces, add_special_tokens=False)]
    return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)


def corpus_key(paths, tokenizer_path) -> str:
    """Names a corpus's cached stream: the files (path, size, modification time) and the
    tokenizer's bytes."""
    h = hashlib.sha256(Path(tokenizer_path).read_bytes())
    for p in paths:
        st = os.stat(p)
        h.update(json.dumps([str(Path(p).resolve()), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:16]


def corpus_tokens(paths, tok: Tokenizer, cache_dir: Path, tokenizer_path, is_writer: bool, barrier) -> np.ndarray:
    """The stream of `paths` (read one after the other), tokenized once per machine (by its
    local rank 0) into `cache_dir` and memory-mapped by every process."""
    cached = Path(cache_dir) / f"corpus-{corpus_key(paths, tokenizer_path)}.npy"
    if is_writer and not cached.exists():
        stream = np.concatenate([encode_corpus(tok, Path(p).read_text(encoding="utf-8")) for p in paths])
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, stream)
        os.replace(tmp, cached)
    barrier()
    return np.load(cached, mmap_mode="r")


def sample_batch(stream: np.ndarray, batch: int, seq_len: int, seed: int, step: int) -> torch.Tensor:
    """`batch` windows of `seq_len` tokens at offsets drawn from the stream (seed, step): the
    same on every rank and on a resumed run."""
    if len(stream) < seq_len:
        raise ValueError(f"--seq-len {seq_len} is longer than the corpus ({len(stream)} tokens)")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - seq_len + 1, size=batch)
    return torch.from_numpy(np.stack([np.asarray(stream[s : s + seq_len], dtype=np.int64) for s in starts]))


def documents(text: str) -> list[str]:
    """The core's evaluation documents: split on `<|endoftext|>` when the text holds one,
    otherwise on lines; trimmed, blank ones dropped."""
    parts = text.split(END_OF_TEXT) if END_OF_TEXT in text else text.splitlines()
    return [d.strip() for d in parts if d.strip()]


@torch.no_grad()
def evaluate(model, tok: Tokenizer, docs: list[str], device="cpu") -> dict:
    """Total CE (nats), scored tokens and UTF-8 bytes of `docs`, each scored from
    `<|endoftext|>` (a story's start) as `cargo xtask eval` scores it; a document longer than
    the model's context in windows that each restart from `<|endoftext|>`."""
    start = [tok.token_to_id(END_OF_TEXT)]
    context = getattr(model.config, "max_seq_len", None) or math.inf
    window = max(1, int(min(context, 1 << 62)) - len(start))
    total_ce, tokens, n_bytes = 0.0, 0, 0
    for doc in docs:
        ids = encode(tok, doc)
        for at in range(0, max(len(ids), 1), window):
            seq = torch.tensor([start + ids[at : at + window]], device=device)
            logits, _ = model(seq)
            ce = F.cross_entropy(logits[0, :-1].double(), seq[0, 1:], reduction="sum")
            total_ce += float(ce)
            tokens += seq.shape[1] - 1
        n_bytes += len(doc.encode("utf-8"))
    return {"total_ce": total_ce, "tokens": tokens, "bytes": n_bytes}


def bits_per_byte(report: dict) -> float:
    return report["total_ce"] / math.log(2) / max(report["bytes"], 1)
