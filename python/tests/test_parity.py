"""The twin against the Rust reference: tokens, logits, losses and the gradient of every
parameter equal `cargo xtask inspect` dumps, for both families on the odd `test` config and on
the shipped micro models, with the module in float64 (both scans) and float32.

Tolerances (the dump is the core's f32 arithmetic, which uses a fast exp and its own summation
order): logits within 5e-5, CE and aux within 5e-6, and each gradient tensor within 5e-5 of its
own largest magnitude. Measured: logits ≤ 7e-6, CE ≤ 8e-7, gradients ≤ 8e-6 relative."""

from __future__ import annotations

import json
import unittest

import numpy as np
import torch
from safetensors.numpy import load_file

from itera_torch import load_model, loss_terms, preset
from itera_torch.config import FAMILIES, PRESET_NAMES, to_dict
from itera_torch.data import encode, load_tokenizer
from itera_torch.files import config_of
from itera_torch.scan import scan_chunked, scan_sequential

from .common import TEXT, TOKENIZER, WEIGHTS, scratch, xtask

LOGITS_TOL, LOSS_TOL, GRAD_TOL = 5e-5, 5e-6, 5e-5
ALPHA = 0.01


def models():
    """(name, weight file) of every model checked: random `test` models of both families
    (written by `xtask init`) and the shipped micro models."""
    work = scratch("parity")
    out = []
    for family in FAMILIES:
        path = work / f"{family}-test.safetensors"
        if not path.exists():
            xtask("init", "--config", "test", "--family", family, "--tokenizer", TOKENIZER, "--seed", 3, "--out", path)
        out.append((f"{family}-test", path))
    out += [(n, WEIGHTS / f"{n}.safetensors") for n in ("itera-micro-f32", "transformer-micro-f32")]
    return out


class InspectParity(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dumps = {}
        for name, path in models():
            dump = scratch("parity") / f"{name}.dump.safetensors"
            xtask("inspect", "--model", path, "--text", TEXT, "--out", dump, "--alpha", ALPHA)
            cls.dumps[name] = (path, load_file(str(dump)))
        cls.tok = load_tokenizer(TOKENIZER)

    def check(self, name, dtype, scan):
        path, d = self.dumps[name]
        ids = encode(self.tok, TEXT)
        self.assertEqual(ids, d["tokens"].tolist(), "the tokenizers disagree")
        model = load_model(path, scan=scan).to(dtype)
        tokens = torch.tensor([ids])
        logits, aux = model(tokens)
        total, ce, aux = loss_terms(logits, tokens, aux, ALPHA)
        total.backward()
        where = f"{name} ({dtype}, {scan} scan)"
        self.assertLess(np.abs(logits[0].detach().numpy() - d["logits"]).max(), LOGITS_TOL, where)
        for key, value in (("loss", total), ("ce", ce), ("aux", aux)):
            self.assertLess(abs(float(value.detach()) - float(d[key])), LOSS_TOL, f"{key} of {where}")
        names = {n for n, _ in model.named_parameters()}
        self.assertEqual(names, {k[len("grad."):] for k in d if k.startswith("grad.")}, where)
        for n, p in model.named_parameters():
            g = d[f"grad.{n}"]
            err = np.abs(p.grad.numpy() - g).max() / max(np.abs(g).max(), 1e-12)
            self.assertLess(err, GRAD_TOL, f"gradient of {n} in {where}")

    def test_float64_sequential_scan(self):
        for name in self.dumps:
            self.check(name, torch.float64, "sequential")

    def test_float64_chunked_scan(self):
        for name in self.dumps:
            self.check(name, torch.float64, "chunked")

    def test_float32_chunked_scan(self):
        for name in self.dumps:
            self.check(name, torch.float32, "chunked")


class Scan(unittest.TestCase):
    def test_chunked_equals_sequential_with_its_gradients(self):
        g = torch.Generator().manual_seed(0)
        for t_len, chunk in ((1, None), (7, None), (37, None), (37, 1), (37, 5), (37, 37), (37, 50)):
            u, dt = torch.randn(2, t_len, 6, generator=g, dtype=torch.float64), torch.rand(2, t_len, 6, generator=g, dtype=torch.float64) * 2
            a = -torch.rand(6, 5, generator=g, dtype=torch.float64) * 8
            b, c = torch.randn(2, t_len, 5, generator=g, dtype=torch.float64), torch.randn(2, t_len, 5, generator=g, dtype=torch.float64)
            inputs = [x.requires_grad_() for x in (u, dt, a, b, c)]
            ys = scan_sequential(*inputs)
            grads = torch.autograd.grad(ys.square().sum(), inputs)
            yc = scan_chunked(*inputs, chunk=chunk)
            grads_c = torch.autograd.grad(yc.square().sum(), inputs)
            torch.testing.assert_close(yc, ys, rtol=1e-10, atol=1e-10)
            for x, y in zip(grads_c, grads):
                torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


class Presets(unittest.TestCase):
    def test_every_preset_is_the_cores(self):
        work = scratch("presets")
        for family in FAMILIES:
            for name in PRESET_NAMES:
                path = work / f"{family}-{name}.safetensors"
                xtask("init", "--config", name, "--family", family, "--out", path)
                written = {k: v for k, v in json.loads(json.dumps(to_dict(config_of(path)))).items()}
                self.assertEqual(written, to_dict(preset(name, family)), f"{family} preset {name}")
                path.unlink()


if __name__ == "__main__":
    unittest.main()
