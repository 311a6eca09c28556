"""What the twin's tests share: the repository, the `xtask` binary they check against
(`ITERA_XTASK`, default target/release/xtask, which `cargo xtask test` is), and a scratch folder
under target/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "weights"
TOKENIZER = WEIGHTS / "tokenizer.json"
XTASK = Path(os.environ.get("ITERA_XTASK", ROOT / "target/release/xtask"))
WORK = ROOT / "target/twin"
# Stories the repository carries (the page's fine-tune sample and its evaluation stories).
CORPUS = ROOT / "web/finetune-stories.txt"
HELDOUT = ROOT / "web/eval-stories.txt"
TEXT = "Once upon a time, a little fox found a shiny red ball. She was happy and ran to show her mom."


def xtask(*args) -> str:
    """Runs the CLI; its standard output (a failure raises with everything it printed)."""
    r = subprocess.run([str(XTASK), *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise AssertionError(f"xtask {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def python_module(module: str, *args, nproc: int = 0) -> str:
    """`python -m module args`, or under torchrun with `nproc` processes on this machine."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else [sys.executable]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), OMP_NUM_THREADS="1")
    r = subprocess.run([*launcher, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env)
    if r.returncode:
        raise AssertionError(f"{module} {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def scratch(name: str) -> Path:
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    return d
