"""Chapter 7 finetuning, every weight (the book's way) versus LoRA (appendix E), side by side in one run.

For each model size (GPT-2 124M and 355M layouts, random weights, drop_rate 0 as chapter 7 finetunes) two
worker processes start at the same time, one per way, and take the same AdamW steps (lr 5e-5, wd 0.1) on the
same batches: chapter 7's training batches of 8 instruction entries (the book's data, padded per batch by
`custom_collate_fn`, seed 123). Running both at once, with the same number of threads each, means load from
other processes hits both alike. Each worker is its own process, so its peak RSS is its own.
  full: every parameter trainable;
  lora: every original weight frozen, `replace_linear_with_lora(model, rank=16, alpha=16)`.
Prints the median seconds per optimizer step (split into forward, backward and optimizer), the training state
(parameters + gradients + AdamW moments) and the peak RSS of each, and the ratios.

    python bench/lora.py                      # 124M and 355M, 1 warm-up + 3 timed steps each (~25 min, busy 2-core CPU)
    python bench/lora.py --sizes 124M --steps 5
    python bench/lora.py --one-at-a-time      # when memory is short (355M full finetuning alone peaks near 7 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/speed.py: idle OpenMP threads must not spin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, for `import utils` and tools.offline

RANK, ALPHA = 16, 16
BATCH_SIZE = 8  # chapter 7's
TARGET_SPEEDUP, TARGET_STATE_SAVING = 1.4, 0.60
TINY = {"emb_dim": 32, "n_heads": 2, "n_layers": 2}  # `--sizes tiny`: a check that the script runs (tests)


def chapter7_batches(n):
    """The first `n` training batches of chapter 7 (book's data and split, batch 8, shuffled with seed 123)."""
    import torch
    from torch.utils.data import DataLoader

    from tools.offline import use_shared_data
    from utils import InstructionDataset, custom_collate_fn, fetch, gpt2_tokenizer, load_instruction_data, split_data

    use_shared_data()  # offline tiktoken cache and asset mirror when ../shared is there
    train_data, _, _ = split_data(load_instruction_data(fetch("instruction-data")))
    dataset = InstructionDataset(train_data, gpt2_tokenizer())
    torch.manual_seed(123)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
                        collate_fn=lambda batch: custom_collate_fn(batch, allowed_max_length=1024))
    batches = []
    for inputs, targets in loader:
        batches.append((inputs, targets))
        if len(batches) == n:
            break
    return batches


def worker(size, mode, steps, threads, meta=False):
    """One way of finetuning one size: time `steps` steps after a warm-up step; print one JSON line.

    `meta`: build and step the model on PyTorch's meta device (shapes only): exact byte counts of the training
    state without allocating it; no time and no RSS worth reporting.
    """
    import torch

    from utils import GPTModel, calc_loss_batch, gpt2_config, replace_linear_with_lora

    torch.set_num_threads(threads)
    batches = chapter7_batches(steps + 1)
    torch.manual_seed(123)
    with torch.device("meta" if meta else "cpu"):
        model = GPTModel(gpt2_config("124M", drop_rate=0.0, **TINY) if size == "tiny" else gpt2_config(size, drop_rate=0.0))
    if mode == "lora":
        for p in model.parameters():
            p.requires_grad = False
        torch.manual_seed(123)
        replace_linear_with_lora(model, rank=RANK, alpha=ALPHA)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    model.train()
    cpu = torch.device("meta" if meta else "cpu")
    parts = {"forward": [], "backward": [], "optimizer": [], "step": []}
    for i, (inputs, targets) in enumerate(batches):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        loss = calc_loss_batch(inputs, targets, model, cpu)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i > 0:  # step 0 warms up (allocations, AdamW state)
            for name, seconds in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2), ("step", t3 - t0)):
                parts[name].append(seconds)

    def nbytes(tensors):
        return sum(t.numel() * t.element_size() for t in tensors)

    params = list(model.parameters())
    moments = [v for state in optimizer.state.values() for k, v in state.items() if k in ("exp_avg", "exp_avg_sq")]
    print(json.dumps({
        "size": size, "mode": mode, "threads": threads, "meta": meta,
        "tokens": [int(x.numel()) for x, _ in batches[1:]],
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "seconds": {k: statistics.median(v) for k, v in parts.items()},
        "param_bytes": nbytes(params),
        "grad_bytes": nbytes([p.grad for p in params if p.grad is not None]),
        "moment_bytes": nbytes(moments),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
    }), flush=True)


def run_pair(size, steps, threads, one_at_a_time=False, meta=False):
    """Run the full and the LoRA worker (at the same time, or one after the other); return their results."""
    def start(mode):
        return subprocess.Popen(
            [sys.executable, __file__, "--worker", size, mode, "--steps", str(steps), "--threads", str(threads)]
            + (["--meta"] if meta else []),
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )

    def finish(mode, proc):
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the {size} {mode} worker failed (exit {proc.returncode}; out of memory?)")
        return json.loads(out.strip().splitlines()[-1])

    if one_at_a_time:
        return {mode: finish(mode, start(mode)) for mode in ("full", "lora")}
    procs = {mode: start(mode) for mode in ("full", "lora")}
    return {mode: finish(mode, proc) for mode, proc in procs.items()}


def gb(n):
    return f"{n / 1e9:.2f} GB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["124M", "355M"], choices=["124M", "355M", "774M", "1558M", "tiny"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per way (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="torch threads per worker (the two workers run at the same time)")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="run the two workers one after the other (less memory at once; load may then differ)")
    parser.add_argument("--meta", action="store_true",
                        help="training-state bytes only, counted on the meta device (no memory, no time, no RSS)")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.worker:
        worker(*args.worker, args.steps, args.threads, args.meta)
        return

    print(f"chapter-7 batches of {BATCH_SIZE}, AdamW; LoRA rank {RANK}, alpha {ALPHA}; 1 warm-up + {args.steps} timed "
          f"steps per way; {'one way after the other' if args.one_at_a_time else 'both ways at once'}, "
          f"{args.threads} thread(s) each")
    for size in args.sizes:
        r = run_pair(size, args.steps, args.threads, args.one_at_a_time, args.meta)
        full, lora = r["full"], r["lora"]
        print(f"\nGPT-2 {size} layout, random weights; tokens per timed batch: {full['tokens']}")
        print(f"{'':10}{'trainable':>13}{'s/step':>8}{'fwd':>7}{'bwd':>7}{'optim':>7}"
              f"{'params':>10}{'grads':>10}{'moments':>10}{'state':>10}{'peak RSS':>10}")
        for name, x in (("full", full), ("LoRA", lora)):
            s = x["seconds"]
            state = x["param_bytes"] + x["grad_bytes"] + x["moment_bytes"]
            print(f"{name:10}{x['trainable']:>13,}{s['step']:8.2f}{s['forward']:7.2f}{s['backward']:7.2f}"
                  f"{s['optimizer']:7.2f}{gb(x['param_bytes']):>10}{gb(x['grad_bytes']):>10}"
                  f"{gb(x['moment_bytes']):>10}{gb(state):>10}{gb(x['peak_rss_bytes']):>10}")
        speedup = full["seconds"]["step"] / lora["seconds"]["step"]
        state_full = full["param_bytes"] + full["grad_bytes"] + full["moment_bytes"]
        state_lora = lora["param_bytes"] + lora["grad_bytes"] + lora["moment_bytes"]
        saving = 1 - state_lora / state_full
        rss_saving = 1 - lora["peak_rss_bytes"] / full["peak_rss_bytes"]
        if args.meta:
            print(f"LoRA vs full (meta device: sizes only): training state {saving:.0%} smaller "
                  f"(target >= {TARGET_STATE_SAVING:.0%})")
            continue
        print(f"LoRA vs full: {speedup:.2f}x faster per step (target >= {TARGET_SPEEDUP}x), "
              f"training state {saving:.0%} smaller (target >= {TARGET_STATE_SAVING:.0%}), peak RSS {rss_saving:.0%} smaller")


if __name__ == "__main__":
    main()
