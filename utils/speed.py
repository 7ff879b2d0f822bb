"""Training speed, one change at a time: the ladder of notebook 05c and bench/train_speed.py.

Each `Rung` is the rung before plus one change (the book's bonus on training speed, adapted to the device found):
fused AdamW, fused attention, TF32 tensor cores (CUDA), bfloat16 autocast, a vocabulary padded to 50,304, a bigger
batch, gradient accumulation (the bigger batch's step in the small batch's memory), torch.compile. `Rung.after` names
the rung it changes, and each is timed side by side with that one. `memory_bytes` counts what a step holds.
`time_alternating` is the one timing loop of the bench scripts: calls alternate, so machine noise hits every side.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
import statistics
import tempfile
import time

import torch

from .device import bf16_support
from .model import GPTModel
from .train import calc_loss_batch

PADDED_VOCAB = 50304  # 50,257 rounded up to a multiple of 64 (= 393 x 128): matrix kernels like round sizes


@dataclasses.dataclass(frozen=True)
class Rung:
    """One training setting of the ladder; `batch_size` windows a micro-batch, `accumulation` micro-batches a step."""

    name: str
    fused_adamw: bool = False
    fused_attention: bool = False
    tf32: bool = False
    bf16: bool = False
    pad_vocab: bool = False
    compile: bool = False
    batch_size: int = 2
    accumulation: int = 1
    after: str | None = None  # the name of the rung this one changes (None: the book's setting)


def ladder(device, base_batch: int = 2, big_batch: int = 8) -> list[Rung]:
    """The rungs in order, each one change to the last rung that applies on `device` (named in `after`): then
    `big_batch` windows a step, the same step as `big_batch // base_batch` accumulated micro-batches, torch.compile."""
    rungs = [Rung("book: float32, book's attention, plain AdamW", batch_size=base_batch)]
    steps = [("+ fused AdamW", {"fused_adamw": True}), ("+ fused attention (SDPA)", {"fused_attention": True}),
             ("+ TF32 tensor cores", {"tf32": True}), ("+ bfloat16 autocast", {"bf16": True}),
             ("+ vocabulary padded to 50,304", {"pad_vocab": True}), (f"+ batch {big_batch}", {"batch_size": big_batch}),
             (f"batch {base_batch} x {big_batch // base_batch} accumulated",
              {"batch_size": base_batch, "accumulation": big_batch // base_batch}),
             ("+ torch.compile", {"compile": True})]
    last = rungs[0]
    for name, change in steps:
        rungs.append(dataclasses.replace(last, name=name, after=last.name, **change))
        last = rungs[-1] if applies(rungs[-1], device)[0] else last
    return rungs


def applies(rung: Rung, device) -> tuple[bool, str]:
    """(True, "") when `rung` can run on `device`, else (False, why not): a rung that does not apply is skipped."""
    device = torch.device(device)
    if rung.tf32 and device.type != "cuda":
        return False, f"TF32 tensor cores are an NVIDIA GPU feature; {device.type} has none (skipped, not faked)"
    if rung.bf16:
        ok, why = bf16_support(device)
        if not ok:
            return False, f"{why} (skipped)"
    return True, ""


def build(rung: Rung, cfg: dict, device, seed: int = 123):
    """A fresh `GPTModel` (seed `seed`) and its AdamW (the book's lr 4e-4, weight decay 0.1) for `rung`."""
    cfg = {**cfg, "fast_attention": rung.fused_attention}
    if rung.pad_vocab:
        cfg["vocab_size"] = max(cfg["vocab_size"], PADDED_VOCAB)
    torch.manual_seed(seed)
    model = GPTModel(cfg).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=rung.fused_adamw)
    return model, optimizer


def micro_batches(windows: torch.Tensor, rung: Rung, step: int):
    """The `(inputs, targets)` micro-batches of step `step`, cycling through `windows` `(n, num_tokens + 1)`."""
    per_step = rung.batch_size * rung.accumulation
    idx = torch.arange(step * per_step, (step + 1) * per_step) % windows.shape[0]
    for chunk in windows[idx].split(rung.batch_size):  # (batch_size, num_tokens + 1)
        yield chunk[:, :-1], chunk[:, 1:]


def precision(rung: Rung, device):
    """bfloat16 autocast on `device` for a bfloat16 rung, else a context that changes nothing."""
    if rung.bf16:
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(rung: Rung, model, optimizer, windows: torch.Tensor, step: int, device, seed: int = 123) -> float:
    """One optimizer step of `rung` (the same dropout masks for every rung at step `step`); returns its mean loss."""
    torch.manual_seed(seed + step)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = rung.tf32
    optimizer.zero_grad()
    total = 0.0
    with precision(rung, device):
        for inputs, targets in micro_batches(windows, rung, step):
            loss = calc_loss_batch(inputs, targets, model, device) / rung.accumulation
            loss.backward()
            total += loss.item()
    optimizer.step()
    torch.backends.cuda.matmul.allow_tf32 = tf32
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return total


def time_alternating(fns: dict, rounds: int, warmup: int = 1, between=None) -> dict:
    """Seconds of each call of every `fns[name]()`, calls alternating (order reversed every other round); the first
    `warmup` rounds are timed apart, under "warmup:" + name. Returns {name: [s, ...], "warmup:" + name: [s, ...]}."""
    names = list(fns)
    times = {key: [] for name in names for key in (name, "warmup:" + name)}
    for i in range(warmup + rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name if i >= warmup else "warmup:" + name].append(time.perf_counter() - start)
        if between is not None:
            between()
    return times


def memory_bytes(rung: Rung, model, windows: torch.Tensor, device) -> tuple[int, int]:
    """(training state, saved activations) of one step of `rung`, in bytes: weights, gradients and AdamW's two moments
    (4 float32 copies), and every tensor autograd keeps for the backward pass of one micro-batch (eager, counted once)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:  # bfloat16 copies of the weights (autocast) count; the weights do not
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor.detach()  # keeps the storage (each counted once) without a cycle through the graph: no leak

    inputs, targets = next(micro_batches(windows, rung, 0))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor), precision(rung, device):
        calc_loss_batch(inputs, targets, model, device)  # forward only: the graph is dropped unused
    return 4 * sum(p.numel() * p.element_size() for p in model.parameters()), sum(saved.values())


def use_empty_compile_cache() -> str:
    """Point torch.compile's on-disk cache (TORCHINDUCTOR_CACHE_DIR) at a new empty folder, removed at exit, so the
    next compile in this process is cold; returns the folder."""
    folder = tempfile.mkdtemp(prefix="torchinductor-")
    atexit.register(shutil.rmtree, folder, True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return folder


def tokens_per_second(rung: Rung, num_tokens: int, seconds: list[float]) -> float:
    """Training tokens a second of `rung`, from the median of its step times."""
    return rung.batch_size * rung.accumulation * num_tokens / statistics.median(seconds)


def text_windows(text: str, tokenizer, num_tokens: int) -> torch.Tensor:
    """Consecutive windows of `num_tokens + 1` token ids (inputs and targets, stride `num_tokens`): `(n, num_tokens + 1)`."""
    ids = torch.tensor(tokenizer.encode(text))
    n = (len(ids) - 1) // num_tokens
    if n < 1:
        raise ValueError(f"the text has {len(ids)} tokens: fewer than one window of {num_tokens} + 1; use a longer text")
    return torch.stack([ids[i * num_tokens: i * num_tokens + num_tokens + 1] for i in range(n)])


def eval_loss(rung: Rung, model, val_windows: torch.Tensor, device) -> float:
    """Mean next-token loss on `val_windows` `(n, num_tokens + 1)`, eval mode, in the rung's precision."""
    model.eval()
    with torch.no_grad(), precision(rung, device):
        loss = calc_loss_batch(val_windows[:, :-1], val_windows[:, 1:], model, device).item()
    model.train()
    return loss


def measure(rungs, cfg: dict, windows: torch.Tensor, val_windows: torch.Tensor, steps: int, device,
            warmup: int = 1) -> list[dict]:
    """Train a fresh model per rung over the same `warmup + steps` steps, the rungs' steps alternating; per rung
    its tokens/s (timed steps), warm-up seconds (torch.compile compiles then), validation loss afterwards and
    `memory_bytes` (counted before training)."""
    models, fns, memory = {}, {}, {}
    for rung in rungs:
        model, optimizer = build(rung, cfg, device)
        memory[rung.name] = memory_bytes(rung, model, windows, device)
        if rung.compile:  # the model's input check (a .item()) is a graph break: expected, not worth a warning
            torch._logging.set_logs(dynamo=logging.ERROR)
        trained = torch.compile(model) if rung.compile else model
        count = itertools.count()
        models[rung.name] = model
        fns[rung.name] = (lambda r=rung, m=trained, o=optimizer, c=count:
                          train_step(r, m, o, windows, next(c), device))
    times = time_alternating(fns, steps, warmup)
    num_tokens = windows.shape[1] - 1
    return [{"rung": r, "tokens_per_s": tokens_per_second(r, num_tokens, times[r.name]), "seconds": times[r.name],
             "warmup_s": sum(times["warmup:" + r.name]), "loss": eval_loss(r, models[r.name], val_windows, device),
             "state_bytes": memory[r.name][0], "activation_bytes": memory[r.name][1]} for r in rungs]
