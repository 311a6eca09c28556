"""PyTorch twin of the Itera-Lite model families (SPEC "The PyTorch twin").

The Rust crate `itera-core` is the reference: these modules are written from SPEC and checked
against `cargo xtask inspect` dumps (logits, losses, every gradient). They read and write the
project's safetensors files, so what `torchrun -m itera_torch.train` trains loads in the CLI and
the page, and every file the CLI exports loads here.
"""

from .config import IteraConfig, TransformerConfig, preset
from .files import load_model, save_model
from .models import build_model, init_weights, loss_terms

__all__ = [
    "IteraConfig",
    "TransformerConfig",
    "preset",
    "load_model",
    "save_model",
    "build_model",
    "init_weights",
    "loss_terms",
]
