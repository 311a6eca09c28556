"""One entry point for both families: build a model from its config, initialise it, and the
training loss of SPEC "Model": CE (mean over the B·(T−1) positions that predict tokens[1:])
+ α · aux (the mean Switch loss over the MoE layers; 0 for the Transformer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import Config, IteraConfig
from .itera import IteraLM
from .transformer import TransformerLM

# The 2-D parameters that are not matrices in the core's table (`ParamKind::Vector`): no weight
# decay, and stored in f16 beside a quantized file's matrices.
VECTOR_LEAVES = ("conv_w", "A_log")


def build_model(config: Config, scan: str = "auto"):
    if isinstance(config, IteraConfig):
        return IteraLM(config, scan=scan)
    return TransformerLM(config)


def init_weights(model, seed: int):
    generator = torch.Generator().manual_seed(seed)
    model.init_weights(generator)
    return model


def is_matrix(name: str, p: torch.Tensor) -> bool:
    """Whether the core's table calls this parameter a matrix (weight decay, quantization)."""
    return p.dim() == 2 and name.rsplit(".", 1)[-1] not in VECTOR_LEAVES


def loss_terms(logits, tokens, aux, alpha: float):
    """(total, ce, aux) of one forward, as `cargo xtask inspect` reports them."""
    v = logits.shape[-1]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, v), tokens[:, 1:].reshape(-1))
    return ce + alpha * aux, ce, aux
