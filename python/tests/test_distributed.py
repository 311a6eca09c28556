"""Training with torchrun: two gloo processes take the same steps as one process computing both
shards (the core's rule: a step depends on the shards, not on who computes them); a run stopped
and resumed ends where an uninterrupted one does; and a model trained with torchrun evaluates in
`cargo xtask eval` to the BPB PyTorch computes for it. The last run's model is what the page's
end-to-end test opens (target/twin/page/model.safetensors)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unittest

import numpy as np
from safetensors.numpy import load_file

from .common import CORPUS, HELDOUT, ROOT, TOKENIZER, WORK, python_module, scratch, xtask

RUN = ["--text", CORPUS, "--heldout", HELDOUT, "--tokenizer", TOKENIZER, "--config", "test", "--batch", 4,
       "--seq-len", 32, "--warmup", 1, "--eval-every", 2, "--seed", 5, "--threads", 1]
PAGE_MODEL = WORK / "page" / "model.safetensors"


def train(out, *extra, nproc=0):
    if out.exists() and "--resume" not in map(str, extra):
        shutil.rmtree(out)
    return python_module("itera_torch.train", *RUN, "--out-dir", out, *extra, nproc=nproc)


def max_difference(a, b) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)


class Torchrun(unittest.TestCase):
    def test_two_processes_equal_one_with_the_same_shards(self):
        work = scratch("ddp")
        for family in ("itera", "transformer"):
            one = work / f"{family}-one"
            two = work / f"{family}-two"
            train(one, "--family", family, "--steps", 3, "--shards", 2)
            log = train(two, "--family", family, "--steps", 3, nproc=2)
            self.assertIn("2 process(es) on cpu, 2 shard(s) of 2 × 32", log)
            self.assertLess(max_difference(one, two), 1e-6, family)

    def test_a_resumed_run_ends_where_an_uninterrupted_one_does(self):
        work = scratch("resume")
        train(work / "whole", "--steps", 4)
        out = train(work / "parts", "--steps", 4, "--stop-at", 2)
        self.assertIn("stopped after step 2 of 4", out)
        self.assertFalse((work / "parts" / "model.safetensors").exists())
        train(work / "parts", "--resume")
        self.assertEqual(max_difference(work / "whole", work / "parts"), 0.0)

    def test_a_torchrun_model_evaluates_the_same_in_the_cli(self):
        out = PAGE_MODEL.parent
        log = train(out, "--config", "micro", "--steps", 20, "--seq-len", 64, "--eval-every", 10, nproc=2)
        last_eval = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if "eval-stories_bpb" in l][-1]
        cli = json.loads(xtask("eval", "--model", PAGE_MODEL, "--text", HELDOUT, "--json"))["bits_per_byte"]
        torch_eval = json.loads(python_module("itera_torch.evaluate", "--model", PAGE_MODEL, "--text", HELDOUT, "--json"))
        self.assertAlmostEqual(cli, torch_eval["bits_per_byte"], delta=1e-4)
        self.assertAlmostEqual(cli, last_eval["eval-stories_bpb"], delta=1e-4)
        self.assertIn("wrote", log)


    def test_bf16_autocast_trains_both_families(self):
        # On the CPU here; the flag is meant for GPUs, where the same code runs under CUDA autocast.
        for family in ("itera", "transformer"):
            out = scratch("bf16") / family
            train(out, "--family", family, "--steps", 2, "--bf16")
            steps = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"loss"' in l]
            self.assertEqual(len(steps), 2)
            self.assertTrue(all(np.isfinite(s["loss"]) and s["loss"] > 0 for s in steps), steps)

    def test_bad_settings_stop_with_the_reason(self):
        work = scratch("refusals")
        cases = [
            (["--resume"], "checkpoint.pt does not exist"),
            (["--seq-len", 100000], "longer than the corpus"),
            (["--batch", 3, "--shards", 2], "must be a multiple of the 1 processes and divide --batch 3"),
        ]
        for extra, reason in cases:
            shutil.rmtree(work / "run", ignore_errors=True)
            r = subprocess.run([sys.executable, "-m", "itera_torch.train", *map(str, RUN), "--out-dir", str(work / "run"), *map(str, extra)],
                               capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT / "python")))
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(reason, r.stderr)
            self.assertNotIn("Traceback", r.stderr)


if __name__ == "__main__":
    unittest.main()
