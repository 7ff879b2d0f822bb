"""The training-speed ladder on chapter 5's model and data, measured side by side in one run on this machine.

Each rung (utils.speed.ladder: fused AdamW, fused attention, TF32, bfloat16 autocast, vocabulary padded to 50,304,
a bigger batch, gradient accumulation, torch.compile) trains a fresh GPTModel 124M (context 256, the book's AdamW,
seed 123) over the same steps of "The Verdict", its steps alternating with a fresh book-setting model's, so the ratio
in each row is measured side by side. Rungs that do not apply to the device say why and are skipped. Then the fast
setting (`fast_setting(True)`) alternates with the book's setting, then with the notebooks' default (fused attention);
the last line is the fast setting's speed-up over the book's setting.

    python bench/train_speed.py            # 3 timed steps a rung (about 15-25 minutes on a busy 2-core CPU)
    python bench/train_speed.py --quick    # 1 timed step a rung
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/speed.py

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import utils`

from utils import GPT_CONFIG_124M, bf16_support, fast_setting, fetch, get_device, gpt2_tokenizer  # noqa: E402
from utils.speed import Rung, applies, ladder, measure, text_windows  # noqa: E402

BENCH_CONFIG = {**GPT_CONFIG_124M, "context_length": 256}  # chapter 5's model at the book's settings


def chapter5_windows(num_tokens: int, tokenizer=None):
    """The Verdict split 90/10 as in chapter 5: (train, val) windows `(n, num_tokens + 1)`."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "the-verdict.txt"
    text = (shared if shared.exists() else fetch("the-verdict")).read_text(encoding="utf-8")
    split = int(0.9 * len(text))
    tokenizer = tokenizer or gpt2_tokenizer()
    return text_windows(text[:split], tokenizer, num_tokens), text_windows(text[split:], tokenizer, num_tokens)


def settings(device) -> list[Rung]:
    """The book's setting, the notebooks' default (fused attention) and the fast setting on `device`."""
    fast = fast_setting(True, device)
    return [Rung("book's setting"), Rung("notebooks' default", fused_attention=True),
            Rung("fast setting", fused_adamw=fast.fused_adamw, fused_attention=True, bf16=fast.bf16)]


def run(cfg: dict, windows, val, steps: int, device, rungs=None, log=print) -> dict:
    """Each rung against a fresh book-setting model, alternating; then the fast setting against the book's and the
    notebooks' default, in pairs."""
    rows = []
    book = None
    for rung in rungs or ladder(device):
        ok, why = applies(rung, device)
        if not ok:
            rows.append({"rung": rung, "skipped": why})
            log(f"  {rung.name}: {why}")
            continue
        if book is None:  # the first rung is the book's setting itself
            book = rung
            continue
        start = time.perf_counter()
        base, this = measure([book, rung], cfg, windows, val, steps, device)
        this["ratio"] = this["tokens_per_s"] / base["tokens_per_s"]
        if not any(row["rung"] is book for row in rows):
            rows.insert(0, base)
        rows.append(this)
        log(f"  {rung.name}: {this['ratio']:.2f}x the book's side by side ({time.perf_counter() - start:.0f}s)")
    book_setting, default, fast = settings(device)  # in pairs: two 124M models and their AdamW fit in less memory
    pairs = [measure([book_setting, fast], cfg, windows, val, steps, device),
             measure([default, fast], cfg, windows, val, steps, device)]
    return {"rows": rows, "settings": pairs, "steps": steps, "num_tokens": windows.shape[1] - 1}


def report(res: dict, log=print) -> None:
    """One table: tokens/s, ratio to the book's setting measured beside it, warm-up, loss; then the end-to-end lines."""
    n, steps = res["num_tokens"], res["steps"]
    log(f"\n| rung | tokens/step | tokens/s | x book (side by side) | first step s | tokens/s incl. first | "
        f"val loss after {steps + 1} steps |")
    log("|---|---:|---:|---:|---:|---:|---:|")
    for row in res["rows"]:
        rung = row["rung"]
        if "skipped" in row:
            log(f"| {rung.name} | - | - | - | - | - | skipped: {row['skipped']} |")
            continue
        tokens = rung.batch_size * rung.accumulation * n
        overall = tokens * (steps + 1) / (row["warmup_s"] + sum(row["seconds"]))
        log(f"| {rung.name} | {tokens} | {row['tokens_per_s']:.0f} | {row.get('ratio', 1.0):.2f} | "
            f"{row['warmup_s']:.1f} | {overall:.0f} | {row['loss']:.3f} |")
    (book, fast), (default, fast2) = res["settings"]
    log(f"fast setting vs notebooks' default (side by side): {fast2['tokens_per_s'] / default['tokens_per_s']:.2f}x "
        f"({fast2['tokens_per_s']:.0f} vs {default['tokens_per_s']:.0f} tokens/s)")
    log(f"end to end: the fast setting trains {fast['tokens_per_s'] / book['tokens_per_s']:.2f}x as fast as the "
        f"book's setting ({fast['tokens_per_s']:.0f} vs {book['tokens_per_s']:.0f} tokens/s, {steps} steps each)")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per rung after one warm-up (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 timed step per rung")
    parser.add_argument("--settings-only", action="store_true", help="only the book's setting, the default and the "
                        "fast setting, in pairs (no ladder)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rung (its compile "
                        "takes minutes on a busy CPU)")
    args = parser.parse_args(argv)
    steps = args.steps or (1 if args.quick else 3)
    device = get_device()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads, load average {load:.1f}; "
          f"bfloat16: {bf16_support(device)[1]}")
    print(f"GPTModel 124M, context 256, chapter 5's data; 1 warm-up + {steps} timed steps a rung")
    windows, val = chapter5_windows(BENCH_CONFIG["context_length"])
    rungs = [r for r in ladder(device) if not (args.no_compile and r.compile)][:1 if args.settings_only else None]
    res = run(BENCH_CONFIG, windows, val, steps, device, rungs=rungs)
    report(res)
    return res


if __name__ == "__main__":
    main()
