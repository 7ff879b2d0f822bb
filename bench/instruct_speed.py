"""Chapter 7's training, the notebook's default vs its fast setting, side by side in one run on this machine.

Default: the book's loader (shuffled batches of 8, padded to the longest entry), plain AdamW, float32. Fast:
`fast_setting(True)`: length-grouped batches (utils.instruct.length_grouped_loader), fused AdamW, bfloat16 autocast
where the device has it. Both train a fresh GPT-2 model (random weights: speed does not depend on them) with the
book's AdamW (lr 5e-5, weight decay 0.1), steps alternating. Prints the padding fraction of one epoch of each loader,
tokens/s (every position, and real tokens only), and the epoch-time ratio (same number of batches an epoch).

    python bench/instruct_speed.py --size 124M --steps 20
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/speed.py

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import utils`

from utils import (  # noqa: E402
    GPTModel,
    InstructionDataset,
    calc_loss_batch,
    custom_collate_fn,
    fast_setting,
    fetch,
    get_device,
    gpt2_config,
    gpt2_tokenizer,
    length_grouped_loader,
    load_instruction_data,
    padding_fraction,
    split_data,
)
from utils.speed import time_alternating  # noqa: E402


def loaders(entries, tokenizer, batch_size: int = 8):
    """The book's shuffled training loader and its length-grouped twin (seed 123 before each)."""
    collate = partial(custom_collate_fn, allowed_max_length=1024)
    torch.manual_seed(123)
    book = DataLoader(InstructionDataset(entries, tokenizer), batch_size=batch_size, shuffle=True, drop_last=True,
                      collate_fn=collate)
    return book, length_grouped_loader(book)


def stepper(cfg, loader, fast, device):
    """A fresh model in setting `fast` and a function that trains it on the next batch of `loader`: returns
    (step function, list of (positions, real tokens) per step)."""
    torch.manual_seed(123)
    model = GPTModel(fast.model_config(cfg)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1, fused=fast.fused_adamw)
    batches, counts = itertools.cycle(loader), []

    def step():
        inputs, targets = next(batches)  # (batch, num_tokens) each
        with fast.autocast():
            optimizer.zero_grad()
            calc_loss_batch(inputs, targets, model, device).backward()
            optimizer.step()
        counts.append((targets.numel(), int((targets != -100).sum())))
    return step, counts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="124M", help="GPT-2 size (the book's 355M; 124M needs a third of the memory)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting after one warm-up")
    args = parser.parse_args(argv)
    device = get_device()
    from tools.offline import use_shared_data

    use_shared_data()  # offline tiktoken cache and asset mirror when ../shared is there, as the other benches
    train_data, _, _ = split_data(load_instruction_data(fetch("instruction-data")))
    book_loader, grouped = loaders(train_data, gpt2_tokenizer())
    torch.manual_seed(123)
    pad_book = padding_fraction(book_loader)
    torch.manual_seed(123)
    pad_grouped = padding_fraction(grouped)
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads; {len(train_data)} training entries, "
          f"{len(book_loader)} batches of 8 an epoch")
    print(f"padding: {pad_book:.1%} of the positions with the book's loader, {pad_grouped:.1%} length-grouped")
    cfg = {**gpt2_config(args.size), "drop_rate": 0.0}
    default, fast = fast_setting(False, device), fast_setting(True, device)
    fns, counts = {}, {}
    for name, setting, loader in (("default", default, book_loader), ("fast", fast, grouped)):
        fns[name], counts[name] = stepper(cfg, loader, setting, device)
    times = time_alternating(fns, args.steps, warmup=1)
    res = {}
    for name in fns:
        timed = counts[name][1:]  # the first step was the warm-up
        res[name] = {"step_s": statistics.mean(times[name]), "tokens_per_s": sum(c[0] for c in timed) / sum(times[name]),
                     "real_per_s": sum(c[1] for c in timed) / sum(times[name])}
        print(f"{name:8s}: {res[name]['step_s']:.2f} s/step, {res[name]['tokens_per_s']:.0f} tokens/s, "
              f"{res[name]['real_per_s']:.0f} real (non-padding) tokens/s over {args.steps} steps")
    ratio = res["default"]["step_s"] / res["fast"]["step_s"]
    print(f"chapter 7 ({args.size}): an epoch in the fast setting takes 1/{ratio:.2f} of the default's time "
          f"({ratio:.2f}x as fast; real tokens/s {res['fast']['real_per_s'] / res['default']['real_per_s']:.2f}x)")
    return res


if __name__ == "__main__":
    main()
