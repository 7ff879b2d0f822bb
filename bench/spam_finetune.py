"""Chapter 6 finetuning, the book's way versus the frozen blocks run once, side by side in one run.

Two copies of a classifier GPTModel 124M (context 256 as chapter 5's checkpoint, drop_rate 0, the new 2-class
head, last block + final norm trainable) start from the same weights and take the same AdamW steps
(lr 5e-5, wd 0.1) on the same batches of 8 x 120 token ids:
  A. the book's way: the whole model on token ids in every step;
  B. utils.spam: the 11 frozen blocks once per message (`compute_frozen_hidden`), then `TrainableTop` steps.
Steps alternate A, B, A, B, ... so load from other processes hits both. Prints the median seconds per step,
the projected time of the notebook's 5 epochs x 130 steps, and the largest weight difference at the end
(same training up to rounding; W_key.bias is left out: its true gradient is 0, AdamW moves it by rounding noise).

    python bench/spam_finetune.py            # about 1-3 minutes on a busy 2-core CPU
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/speed.py: idle OpenMP threads must not spin

import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import utils`

from utils import GPTModel, gpt2_config  # noqa: E402
from utils.spam import TrainableTop, calc_classifier_loss_batch, compute_frozen_hidden, prepare_classifier  # noqa: E402

STEPS = 6  # timed steps per side (after one warm-up step each)
BATCH, NUM_TOKENS = 8, 120  # the notebook's batches: 8 messages padded to 120 tokens
NOTEBOOK_STEPS, NOTEBOOK_MESSAGES = 5 * 130, 1045 + 149 + 300


def main():
    torch.manual_seed(123)
    book = prepare_classifier(GPTModel(gpt2_config("124M", context_length=256, qkv_bias=False, drop_rate=0.0)))
    fast = copy.deepcopy(book)
    x = torch.randint(0, 50257, ((STEPS + 1) * BATCH, NUM_TOKENS))
    y = torch.randint(0, 2, ((STEPS + 1) * BATCH,))

    start = time.perf_counter()
    hidden = compute_frozen_hidden(fast, TensorDataset(x, y), progress=False).tensors[0]  # (messages, 120, 768)
    frozen_s_per_message = (time.perf_counter() - start) / len(x)
    top = TrainableTop(fast)

    opt_book = torch.optim.AdamW(book.parameters(), lr=5e-5, weight_decay=0.1)
    opt_fast = torch.optim.AdamW(fast.parameters(), lr=5e-5, weight_decay=0.1)
    book.train()
    top.train()
    times = {"book": [], "fast": []}
    for step in range(STEPS + 1):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        for name, model, opt, inputs in (("book", book, opt_book, x), ("fast", top, opt_fast, hidden)):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = calc_classifier_loss_batch(inputs[batch], y[batch], model, "cpu")
            loss.backward()
            opt.step()
            if step > 0:  # step 0 is the warm-up
                times[name].append(time.perf_counter() - t0)

    book_step, fast_step = statistics.median(times["book"]), statistics.median(times["fast"])
    diff = max(
        (a - b).abs().max().item()
        for (name, a), b in zip(book.state_dict().items(), fast.state_dict().values())
        if not name.endswith("W_key.bias")
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {STEPS} steps per side")
    print(f"A. book's way:           {book_step:.3f} s per step")
    print(f"B. frozen blocks once:   {frozen_s_per_message * BATCH:.3f} s per 8 messages (once), {fast_step:.3f} s per step")
    book_total = NOTEBOOK_STEPS * book_step
    fast_total = NOTEBOOK_MESSAGES * frozen_s_per_message + NOTEBOOK_STEPS * fast_step
    print(f"notebook's 650 steps (training only, without evaluations): A {book_total / 60:.1f} min, "
          f"B {fast_total / 60:.1f} min ({book_total / fast_total:.1f}x)")
    print(f"per step: B is {book_step / fast_step:.0f}x faster; largest weight difference after {STEPS + 1} steps: {diff:.1e}")


if __name__ == "__main__":
    main()
