"""Does fused AdamW keep chapter 5's printed numbers? The book's run, twice in lockstep on this CPU.

Chapter 5 at the book's settings (GPTModel 124M, context 256, batch 2, AdamW lr 4e-4, weight decay 0.1, seed 123):
model A with `torch.optim.AdamW(...)`, model B a copy with `fused=True`. Each step runs A then B on the same batch
with the same dropout masks (the random state is rewound before B), then compares every weight bit for bit. At the
book's evaluation steps (every 5 steps, 5 batches) A's losses are printed, and B's too once the weights differ.
Step times of both are recorded side by side, so the last line is fused AdamW's speed-up on this machine.

    python bench/fused_adamw_lockstep.py --epochs 10      # the book's ten epochs (hours on 1 busy core: ~1 min/step)
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import utils`

from utils import (  # noqa: E402
    GPT_CONFIG_124M,
    GPTModel,
    calc_loss_batch,
    create_dataloader_v1,
    evaluate_model,
    fetch,  # noqa: E402
)


def book_loaders(text: str, context_length: int):
    """Chapter 5's loaders: 90/10 split, batch 2, stride = context, seed 123 before building them."""
    split = int(0.9 * len(text))
    torch.manual_seed(123)
    train = create_dataloader_v1(text[:split], batch_size=2, max_length=context_length, stride=context_length,
                                 drop_last=True, shuffle=True, num_workers=0)
    val = create_dataloader_v1(text[split:], batch_size=2, max_length=context_length, stride=context_length,
                               drop_last=False, shuffle=False, num_workers=0)
    return train, val


def max_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest absolute difference between the two models' parameters (0.0: bit for bit the same)."""
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def lockstep(cfg: dict, epochs: int, text: str, eval_freq: int = 5, eval_iter: int = 5, log=print) -> dict:
    """Train A (plain AdamW) and B (fused AdamW) in lockstep; returns step times and the first differing step."""
    train_loader, val_loader = book_loaders(text, cfg["context_length"])
    torch.manual_seed(123)
    model_a = GPTModel(cfg)
    model_b = copy.deepcopy(model_a)
    opt_a = torch.optim.AdamW(model_a.parameters(), lr=0.0004, weight_decay=0.1)
    opt_b = torch.optim.AdamW(model_b.parameters(), lr=0.0004, weight_decay=0.1, fused=True)
    times = {"plain": [], "fused": []}
    step, first_diff = -1, None
    for epoch in range(epochs):
        model_a.train(), model_b.train()
        for inputs, targets in train_loader:
            state = torch.get_rng_state()
            for name, model, opt in (("plain", model_a, opt_a), ("fused", model_b, opt_b)):
                if name == "fused":
                    torch.set_rng_state(state)  # the same dropout masks as A
                start = time.perf_counter()
                opt.zero_grad()
                calc_loss_batch(inputs, targets, model, "cpu").backward()
                opt.step()
                times[name].append(time.perf_counter() - start)
            step += 1
            diff = max_weight_diff(model_a, model_b)
            if diff and first_diff is None:
                first_diff = step
            if step % eval_freq == 0:
                state = torch.get_rng_state()  # evaluation shuffles the train loader: B must see A's batches
                losses = evaluate_model(model_a, train_loader, val_loader, "cpu", eval_iter)
                line = f"Ep {epoch + 1} (Step {step:06d}): Train loss {losses[0]:.3f}, Val loss {losses[1]:.3f}"
                if diff:
                    after = torch.get_rng_state()
                    torch.set_rng_state(state)
                    lb = evaluate_model(model_b, train_loader, val_loader, "cpu", eval_iter)
                    line += f" | fused: {lb[0]:.3f}, {lb[1]:.3f}"
                    torch.set_rng_state(after)  # the book's random stream goes on as if B had not been evaluated
                log(f"{line} | max |weight diff| {diff:.2e}", flush=True)
    return {"times": times, "first_diff": first_diff, "steps": step + 1}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs (the book's 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "the-verdict.txt"
    text = (shared if shared.exists() else fetch("the-verdict")).read_text(encoding="utf-8")
    print(f"torch {torch.__version__}, {args.threads} thread(s); chapter 5 at the book's settings, {args.epochs} epochs")
    res = lockstep({**GPT_CONFIG_124M, "context_length": 256}, args.epochs, text)
    med = statistics.median
    same = "every weight bit for bit the same after every step" if res["first_diff"] is None else \
        f"weights first differ after step {res['first_diff']}"
    print(f"{res['steps']} steps: {same}")
    print(f"median step: plain {med(res['times']['plain']):.2f}s, fused {med(res['times']['fused']):.2f}s -> "
          f"fused AdamW {med(res['times']['plain']) / med(res['times']['fused']):.2f}x per step (side by side)")
    return res


if __name__ == "__main__":
    main()
