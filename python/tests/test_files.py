"""Weight files both ways: every file the CLI ships loads here with the values the core decodes
(a quantized file equals its `xtask convert --precision f32`, exactly), and a file written here
loads in the CLI (`eval`, `generate`, `convert`, `export`) with the same BPB as here."""

from __future__ import annotations

import json
import unittest

import torch
from safetensors.numpy import load_file, save_file

from itera_torch import init_weights, load_model, preset, save_model
from itera_torch.data import bits_per_byte, documents, evaluate, load_tokenizer
from itera_torch.files import config_of, load_state, read_metadata
from itera_torch.models import build_model

from .common import HELDOUT, TOKENIZER, WEIGHTS, scratch, xtask


def cli_bpb(path, text) -> float:
    return json.loads(xtask("eval", "--model", path, "--text", text, "--json"))["bits_per_byte"]


class ShippedFiles(unittest.TestCase):
    def test_every_shipped_file_loads(self):
        files = sorted(WEIGHTS.glob("*.safetensors"))
        self.assertGreater(len(files), 30)
        for path in files:
            model = load_model(path)
            self.assertEqual(config_of(path).family, model.config.family, path.name)

    def test_every_precision_dequantizes_to_the_cores_values(self):
        work = scratch("files")
        for model in ("itera-micro", "transformer-micro"):
            for variant in ("f16", "q8", "q4", "q3", "q2", "auto5"):
                src = WEIGHTS / f"{model}-{variant}.safetensors"
                ref = work / f"{model}-{variant}-as-f32.safetensors"
                xtask("convert", "--model", src, "--precision", "f32", "--out", ref)
                mine = load_model(src)
                theirs = load_file(str(ref))
                for name, p in mine.state_dict().items():
                    self.assertTrue(torch.equal(p, torch.from_numpy(theirs[name])), f"{name} of {src.name}")

    def test_a_missing_or_misshapen_tensor_is_refused_by_name(self):
        work = scratch("files")
        tensors = load_file(str(WEIGHTS / "itera-micro-f32.safetensors"))
        meta = read_metadata(WEIGHTS / "itera-micro-f32.safetensors")
        del tensors["layers.1.router"]
        save_file(tensors, str(work / "missing.safetensors"), metadata=meta)
        with self.assertRaisesRegex(ValueError, "layers.1.router"):
            load_model(work / "missing.safetensors")
        tensors = load_file(str(WEIGHTS / "itera-micro-f32.safetensors"))
        tensors["final_norm"] = tensors["final_norm"][:5]
        save_file(tensors, str(work / "misshapen.safetensors"), metadata=meta)
        with self.assertRaisesRegex(ValueError, "final_norm"):
            load_model(work / "misshapen.safetensors")


class WrittenHere(unittest.TestCase):
    def test_a_file_written_here_runs_in_the_cli(self):
        work = scratch("files")
        tok = load_tokenizer(TOKENIZER)
        docs = documents(HELDOUT.read_text(encoding="utf-8"))
        for family in ("itera", "transformer"):
            config = preset("test", family)
            config.vocab_size = tok.get_vocab_size(with_added_tokens=True)
            config.extra["tokenizer"] = "tokenizer.json"
            if family == "transformer":
                config.max_seq_len = 512  # the export's decode timing runs 128 positions
            model = init_weights(build_model(config), seed=7)
            for dtype in ("f32", "f16"):
                path = work / f"{family}-{dtype}.safetensors"
                save_model(model, path, dtype=dtype)
                (work / "tokenizer.json").write_bytes(TOKENIZER.read_bytes())
                here = bits_per_byte(evaluate(load_model(path).double(), tok, docs))
                self.assertAlmostEqual(cli_bpb(path, HELDOUT), here, delta=1e-4, msg=f"{family} {dtype}")
                # the file round-trips: what loads here is what was written
                again = load_state(path, model)
                for name, p in model.state_dict().items():
                    cast = p if dtype == "f32" else p.half().float()
                    self.assertTrue(torch.equal(again[name], cast), name)
            out = xtask("generate", "--model", work / f"{family}-f32.safetensors", "--prompt", "Once upon a time",
                        "--max-tokens", 8, "--temperature", 0, "--seed", 1, "--json")
            self.assertIn("text", json.loads(out))
            q4 = work / f"{family}-q4.safetensors"
            xtask("convert", "--model", work / f"{family}-f32.safetensors", "--precision", "q4", "--out", q4)
            self.assertEqual(read_metadata(q4)["precision"], "q4")
            xtask("export", "--checkpoint", work / f"{family}-f32.safetensors", "--name", f"twin-{family}",
                  "--out-dir", work / "export", "--precision", "f32,q8", "--auto", 5, "--samples", 1,
                  "--bench-tokens", 8, "--heldout", HELDOUT, "--calibration", HELDOUT, "--compare", work / f"{family}-f32.safetensors")
            exported = work / "export" / f"twin-{family}-q8.safetensors"
            self.assertEqual((read_metadata(exported)["family"], read_metadata(exported)["precision"]), (family, "q8"))
            self.assertTrue((work / "export" / f"twin-{family}.md").exists())


if __name__ == "__main__":
    unittest.main()
