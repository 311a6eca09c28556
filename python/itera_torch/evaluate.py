"""`python -m itera_torch.evaluate --model FILE --text FILE… [--json]`: tokens, mean CE and bits per
byte of each text, computed as `cargo xtask eval` computes them (every document scored from
`<|endoftext|>`)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from . import data
from .files import load_model


def main(argv=None):
    p = argparse.ArgumentParser(prog="itera_torch.evaluate", description=__doc__)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--text", required=True, nargs="+", type=Path)
    p.add_argument("--tokenizer", type=Path, help="default: tokenizer.json next to the model")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    tok = data.load_tokenizer(a.tokenizer or a.model.with_name("tokenizer.json"))
    model = load_model(a.model).double().eval()
    for path in a.text:
        r = data.evaluate(model, tok, data.documents(path.read_text(encoding="utf-8")))
        result = {"text": str(path), "tokens": r["tokens"], "bytes": r["bytes"],
                  "mean_ce": r["total_ce"] / max(r["tokens"], 1), "bits_per_byte": data.bits_per_byte(r)}
        result["perplexity"] = math.exp(result["mean_ce"])
        print(json.dumps(result) if a.json else f"{path}: {r['tokens']} tokens, CE {result['mean_ce']:.4f}, BPB {result['bits_per_byte']:.4f}")


if __name__ == "__main__":
    main()
