"""Training across processes and GPUs:

    torchrun --nproc_per_node N -m itera_torch.train --text FILE… --config tiny|15m|FILE.json \
        --out-dir DIR [--family itera|transformer] [--steps …]

The run follows the core's training job (`train::Job`, SPEC "Training"): AdamW (β 0.9 / 0.95,
ε 1e-8, decay on matrices only), linear warm-up then cosine decay to `--min-lr`, clipping by the
global gradient norm, loss = CE + α·aux, held-out BPB every `--eval-every` steps, checkpoints
that resume, and a final `model.safetensors` (f32) that `cargo xtask export` turns into every
precision and a model card.

Data parallelism: each step draws `--batch` windows from (seed, step), cuts them into
`--shards` contiguous parts (default: the number of processes) whose gradients are averaged —
the load-balancing loss taken per part, as the core's shards — and each process computes
shards / world-size of them, DistributedDataParallel averaging across processes (NCCL on CUDA,
gloo on CPUs). So a step's result depends on `--shards`, not on how many processes share it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from . import data
from .config import FAMILIES, from_dict, load_config, to_dict
from .files import config_of, load_model, save_model
from .models import build_model, init_weights, is_matrix, loss_terms

# AdamW's moment decay rates and ε (the core's `optim::BETA1`, `BETA2`, `EPS`).
BETAS = (0.9, 0.95)
EPS = 1e-8


@dataclass
class Spec:
    """The run's settings; defaults are `cargo xtask train`'s (`TrainSpec::DEFAULT`)."""

    steps: int = 1000
    batch: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.1
    clip: float = 1.0
    alpha: float = 0.01
    eval_every: int = 200
    checkpoint_every: int = 500
    seed: int = 0
    shards: int = 0  # 0: the number of processes


def lr_at(spec: Spec, step: int) -> float:
    """The core's `LrSchedule::at`."""
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    span = max(spec.steps - spec.warmup, 1)
    progress = min((step - spec.warmup) / span, 1.0)
    return spec.min_lr + 0.5 * (spec.lr - spec.min_lr) * (1.0 + math.cos(math.pi * progress))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="itera_torch.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", nargs="+", required=True, help="corpus files, documents separated by <|endoftext|> (read one after the other)")
    p.add_argument("--out-dir", required=True, type=Path, help="checkpoint.pt, log.jsonl, model.safetensors and tokenizer.json go here")
    p.add_argument("--config", default="tiny", help="a preset (test, micro, tiny, 15m) or a config JSON file of the family's keys")
    p.add_argument("--family", default="itera", choices=FAMILIES)
    p.add_argument("--init", type=Path, help="start from this model file (any precision) instead of random weights")
    p.add_argument("--tokenizer", type=Path, default=Path("weights/tokenizer.json"))
    p.add_argument("--heldout", nargs="*", default=None, help="held-out texts for BPB (default: ../shared/data/heldout/*.txt when present)")
    for f in Spec.__dataclass_fields__.values():
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its checkpoint")
    p.add_argument("--stop-at", type=int, default=None, help="stop (with a checkpoint) after this step, keeping the schedule of --steps")
    p.add_argument("--scan", default="auto", choices=("auto", "chunked", "sequential"), help="the selective scan (auto: chunked on GPUs, sequential on CPUs)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast, for GPUs (the weights, the optimizer, the scan and the loss stay f32)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: the cores over the processes)")
    return p.parse_args(argv)


class Distributed:
    """This process's place in the run (one process without torchrun)."""

    def __init__(self, device_choice):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() if device_choice is None else device_choice == "cuda"
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1:
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))

    @property
    def writer(self) -> bool:
        """Writes the log, the checkpoints and the model (global rank 0)."""
        return self.rank == 0

    @property
    def node_writer(self) -> bool:
        """Prepares what every process of its machine reads: the out-dir, the corpus's tokens."""
        return self.local_rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def heldout_files(given):
    if given is not None:
        return given
    d = Path("../shared/data/heldout")
    return [str(d / n) for n in ("tinystories-valid-a.txt", "tinystories-sample-b.txt") if (d / n).exists()]


def optimizer_for(model, spec: Spec):
    params = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in params if is_matrix(n, p)], "weight_decay": spec.weight_decay},
        {"params": [p for n, p in params if not is_matrix(n, p)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=BETAS, eps=EPS)


def step_once(model, ddp, opt, batch, spec: Spec, shards: int, run: Distributed, autocast):
    """One optimisation step: this rank's shards, averaged gradients, the finite check,
    clipping and AdamW. Returns (loss, ce, aux, grad_norm) averaged over every shard."""
    per_rank = shards // run.world
    parts = batch.to(run.device).chunk(shards)[run.rank * per_rank : (run.rank + 1) * per_rank]
    sums = [0.0, 0.0, 0.0]
    for i, part in enumerate(parts):
        sync = contextlib.nullcontext() if i == per_rank - 1 or ddp is model else ddp.no_sync()
        with sync, autocast():
            logits, aux = ddp(part)
            total, ce, aux = loss_terms(logits.float(), part, aux.float(), spec.alpha)
            (total / per_rank).backward()
        sums = [s + float(v.detach()) / shards for s, v in zip(sums, (total, ce, aux))]
    loss, ce, aux = run.sum(sums)
    grads = [p.grad for p in model.parameters()]
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in grads])))
    if not (math.isfinite(loss) and math.isfinite(norm)):
        raise FloatingPointError(f"the loss or the gradient is not finite (loss {loss}, gradient norm {norm})")
    if norm > spec.clip:
        for g in grads:
            g.mul_(spec.clip / norm)
    opt.step()
    opt.zero_grad(set_to_none=False)
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise FloatingPointError("an updated weight is not finite")
    return loss, ce, aux, norm


def evaluate_sets(model, tok, sets, run: Distributed) -> dict:
    """Held-out BPB of every set, the documents dealt out over the ranks."""
    model.eval()
    out = {}
    for name, docs in sets.items():
        r = data.evaluate(model, tok, docs[run.rank :: run.world], run.device)
        total_ce, tokens, n_bytes = run.sum([r["total_ce"], r["tokens"], r["bytes"]])
        out[name] = data.bits_per_byte({"total_ce": total_ce, "bytes": n_bytes})
    model.train()
    return out


def save_checkpoint(path: Path, model, opt, spec: Spec, step: int, seconds: float):
    """Model, optimizer, settings and progress, replaced atomically: a run stopped at any
    moment resumes from the last whole checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "spec": asdict(spec), "step": step,
         "seconds": seconds, "family": model.config.family, "config": to_dict(model.config)},
        tmp,
    )
    os.replace(tmp, path)


def main(argv=None):
    a = parse_args(argv)
    run = Distributed(a.device)
    if run.device.type == "cpu":
        torch.set_num_threads(a.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    out = a.out_dir
    if run.node_writer:
        out.mkdir(parents=True, exist_ok=True)
    run.barrier()
    log = (out / "log.jsonl").open("a", encoding="utf-8") if run.writer else None

    def say(record: dict):
        if run.writer:
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()), flush=True)

    spec = Spec(**{k: getattr(a, k) for k in Spec.__dataclass_fields__})
    checkpoint_path = out / "checkpoint.pt"
    if a.resume and not checkpoint_path.exists():
        sys.exit(f"--resume: {checkpoint_path} does not exist (a run writes it every --checkpoint-every steps)")
    resumed = torch.load(checkpoint_path, map_location="cpu", weights_only=False) if a.resume else None
    if resumed:
        spec = Spec(**resumed["spec"])
    spec.shards = spec.shards or run.world
    if spec.shards % run.world or spec.batch % spec.shards:
        sys.exit(f"--shards {spec.shards} must be a multiple of the {run.world} processes and divide --batch {spec.batch}")

    tok = data.load_tokenizer(a.tokenizer)
    if resumed:
        model = build_model(from_dict(resumed["family"], resumed["config"]), scan=a.scan)
    elif a.init:
        model = load_model(a.init, scan=a.scan)
    else:
        config = load_config(a.config, a.family)
        config.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        model = init_weights(build_model(config, scan=a.scan), spec.seed)
    if model.config.vocab_size != tok.get_vocab_size(with_added_tokens=True):
        sys.exit(f"the tokenizer has {tok.get_vocab_size(with_added_tokens=True)} ids but the model's vocabulary is {model.config.vocab_size}")
    model.to(run.device)
    opt = optimizer_for(model, spec)
    start, seconds = 0, 0.0
    if resumed:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        start, seconds = resumed["step"], resumed["seconds"]
    ddp = DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda" else None) if run.world > 1 else model
    autocast = (lambda: torch.autocast(run.device.type, dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext

    stream = data.corpus_tokens(a.text, tok, out, a.tokenizer, run.node_writer, run.barrier)
    if len(stream) < spec.seq_len:
        sys.exit(f"--seq-len {spec.seq_len} is longer than the corpus ({len(stream)} tokens)")
    sets = {Path(f).stem: data.documents(Path(f).read_text(encoding="utf-8")) for f in heldout_files(a.heldout)}
    if run.writer:
        print(f"{model.config.family} model, {sum(p.numel() for p in model.parameters()):,} parameters; {len(stream):,} corpus tokens; "
              f"{run.world} process(es) on {run.device.type}, {spec.shards} shard(s) of {spec.batch // spec.shards} × {spec.seq_len}", flush=True)
    tokens_per_step = spec.batch * spec.seq_len
    end = min(a.stop_at or spec.steps, spec.steps)
    for step in range(start, end):
        lr = lr_at(spec, step)
        for g in opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        batch = data.sample_batch(stream, spec.batch, spec.seq_len, spec.seed, step)
        try:
            loss, ce, aux, norm = step_once(model, ddp, opt, batch, spec, spec.shards, run, autocast)
        except FloatingPointError as e:
            sys.exit(f"step {step + 1}: {e}; stopped — the last good weights are {checkpoint_path} (continue with --resume and a lower --lr)")
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        seconds += dt
        say({"step": step + 1, "loss": loss, "ce": ce, "aux": aux, "lr": lr, "grad_norm": norm, "tokens_per_s": tokens_per_step / dt})
        last = step + 1 == end
        if sets and ((step + 1) % spec.eval_every == 0 or last):
            say({"step": step + 1, **{f"{k}_bpb": v for k, v in evaluate_sets(model, tok, sets, run).items()}})
        if run.writer and ((step + 1) % spec.checkpoint_every == 0 or last):
            save_checkpoint(checkpoint_path, model, opt, spec, step + 1, seconds)
    if run.writer and end < spec.steps:
        print(f"stopped after step {end} of {spec.steps}: continue with --resume", flush=True)
    elif run.writer:
        model.config.extra.update(
            tokenizer="tokenizer.json",
            training={"steps": spec.steps, "batch": spec.batch, "seq_len": spec.seq_len, "corpus": " ".join(a.text),
                      "corpus_tokens": int(len(stream)), "seconds": seconds, "seed": spec.seed, "lr": spec.lr,
                      **({"fine_tuned_from": str(a.init)} if a.init else {})},
        )
        save_model(model, out / "model.safetensors")
        if Path(a.tokenizer).resolve() != (out / "tokenizer.json").resolve():
            shutil.copyfile(a.tokenizer, out / "tokenizer.json")
        print(f"wrote {out / 'model.safetensors'} ({config_of(out / 'model.safetensors').family}, {spec.steps} steps, {seconds:.1f} s stepping)", flush=True)
    run.barrier()
    if run.world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
