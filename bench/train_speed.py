"""The training-speed ladder on chapter 5's model and data, measured side by side in one run on this machine.

Each rung (utils.speed.ladder: fused AdamW, fused attention, TF32, bfloat16 autocast, vocabulary padded to 50,304,
a bigger batch, gradient accumulation, torch.compile) trains a fresh GPTModel 124M (context 256, the book's AdamW,
seed 123) over the same steps of "The Verdict", its steps alternating with a fresh model of the rung it changes, so
the ratio in each row is that one change, measured side by side. Rungs that do not apply to the device say why and
are skipped. Each row also gives the memory a step holds (weights, gradients, AdamW's moments, saved activations).
torch.compile starts from an empty compile cache (cold), then compiles a second fresh model (warm).

Then the headline: the fast setting (`fast_setting(True)`) against the notebooks' default (`FAST = False`), in pairs
of one step each, until the pairs' ratios agree (interquartile range within 10% of the median, at least 4 pairs), at
most 20 pairs or 10 minutes; if they never agree it prints "no headline" and the spread.

    python bench/train_speed.py                  # 3 timed steps a rung (about 15-25 minutes on a busy 2-core CPU)
    python bench/train_speed.py --quick          # 1 timed step a rung
    python bench/train_speed.py --settings-only  # only the headline
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/speed.py

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import utils` and tools.offline

import utils.speed as speed  # noqa: E402
from utils import GPT_CONFIG_124M, bf16_support, fast_setting, fetch, get_device, gpt2_tokenizer  # noqa: E402

BENCH_CONFIG = {**GPT_CONFIG_124M, "context_length": 256}  # chapter 5's model at the book's settings
MIN_PAIRS, MAX_PAIRS, MAX_SECONDS, AGREE = 4, 20, 600, 0.10  # the headline's stopping rule


def chapter5_windows(num_tokens: int, tokenizer=None):
    """The Verdict split 90/10 as in chapter 5: (train, val) windows `(n, num_tokens + 1)`."""
    from tools.offline import use_shared_data

    use_shared_data()  # offline tiktoken cache and asset mirror when ../shared is there
    text = fetch("the-verdict").read_text(encoding="utf-8")
    split = int(0.9 * len(text))
    tokenizer = tokenizer or gpt2_tokenizer()
    return speed.text_windows(text[:split], tokenizer, num_tokens), speed.text_windows(text[split:], tokenizer, num_tokens)


def settings(device) -> list[speed.Rung]:
    """The notebooks' default (`FAST = False`: fused attention, float32, plain AdamW) and the fast setting."""
    fast = fast_setting(True, device)
    return [speed.Rung("notebooks' default (FAST = False)", fused_attention=True),
            speed.Rung("fast setting (FAST = True)", fused_adamw=fast.fused_adamw, fused_attention=True, bf16=fast.bf16)]


def run(cfg: dict, windows, val, steps: int, device, rungs=None, log=print) -> dict:
    """Each rung side by side with the rung it changes (`Rung.after`); torch.compile cold, then warm."""
    rungs = rungs or speed.ladder(device)
    by_name = {rung.name: rung for rung in rungs}
    rows, chained = [], {}  # chained: each rung's speed over the book's, the product of the ratios up to it
    for rung in rungs:
        ok, why = speed.applies(rung, device)
        if not ok:
            rows.append({"rung": rung, "skipped": why})
            log(f"  {rung.name}: {why}")
            continue
        if rung.after is None:  # the book's setting: measured beside the first change
            continue
        if rung.compile:
            speed.use_empty_compile_cache()  # a cold compile: nothing compiled before in this cache
        start = time.perf_counter()
        base, this = speed.measure([by_name[rung.after], rung], cfg, windows, val, steps, device)
        this["ratio"] = this["tokens_per_s"] / base["tokens_per_s"]
        if not chained:
            rows.insert(0, base)
        this["vs_book"] = chained[rung.name] = chained.get(rung.after, 1.0) * this["ratio"]
        if rung.compile:  # a second fresh model compiled with the cache filled
            this["warm_warmup_s"] = speed.measure([rung], cfg, windows, val, 1, device)[0]["warmup_s"]
        rows.append(this)
        log(f"  {rung.name}: {this['ratio']:.2f}x {rung.after!r} side by side ({time.perf_counter() - start:.0f}s)")
    return {"rows": rows, "steps": steps, "num_tokens": windows.shape[1] - 1}


def headline(cfg: dict, windows, device, log=print) -> dict:
    """The fast setting against the notebooks' default, one step each per pair (order alternating), until the pairs'
    ratios agree or the limits are reached; returns the ratios and whether they agreed."""
    default, fast = settings(device)
    fns = {}
    for rung in (default, fast):
        model, optimizer = speed.build(rung, cfg, device)
        steps = iter(range(10**9))
        fns[rung.name] = lambda r=rung, m=model, o=optimizer, s=steps: speed.train_step(r, m, o, windows, next(s), device)
    speed.time_alternating(fns, 0, warmup=1)  # the first step of each, untimed
    ratios, start = [], time.perf_counter()
    while len(ratios) < MAX_PAIRS and time.perf_counter() - start < MAX_SECONDS:
        order = dict(reversed(fns.items())) if len(ratios) % 2 else fns
        times = speed.time_alternating(order, 1, warmup=0)
        ratios.append(times[default.name][0] / times[fast.name][0])  # same tokens a step: time ratio = speed ratio
        if agreed(ratios):
            break
    log(f"  headline: {len(ratios)} pairs in {time.perf_counter() - start:.0f}s")
    return {"ratios": ratios, "agreed": agreed(ratios), "fast": fast}


def agreed(ratios: list[float]) -> bool:
    """At least MIN_PAIRS ratios whose interquartile range is within AGREE of their median."""
    return len(ratios) >= MIN_PAIRS and spread(ratios) <= AGREE * statistics.median(ratios)


def spread(ratios: list[float]) -> float:
    """The interquartile range of `ratios` (0 for fewer than 2)."""
    if len(ratios) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q3 - q1


def report(res: dict, log=print) -> None:
    """One table: each change's ratio to the rung it changes, chained ratio to the book's, memory, warm-up, loss;
    then the headline."""
    steps = res.get("steps")
    if res.get("rows"):
        log(f"\n| rung | x the rung before (side by side) | x book (chained) | tokens/s | memory GB (state + "
            f"activations) | first step s | val loss after {steps + 1} steps |")
        log("|---|---:|---:|---:|---:|---:|---:|")
    for row in res.get("rows", []):
        rung = row["rung"]
        if "skipped" in row:
            log(f"| {rung.name} | skipped: {row['skipped']} | | | | | |")
            continue
        memory = f"{(row['state_bytes'] + row['activation_bytes']) / 1e9:.2f} ({row['state_bytes'] / 1e9:.2f} + " \
                 f"{row['activation_bytes'] / 1e9:.2f})"
        first = f"{row['warmup_s']:.1f}" + (f" cold, {row['warm_warmup_s']:.1f} warm" if "warm_warmup_s" in row else "")
        log(f"| {rung.name} | {row.get('ratio', 1.0):.2f} | {row.get('vs_book', 1.0):.2f} | {row['tokens_per_s']:.0f} "
            f"| {memory} | {first} | {row['loss']:.3f} |")
    head = res.get("headline")
    if head:
        ratios = head["ratios"]
        median, iqr = statistics.median(ratios), spread(ratios)
        summary = f"median {median:.2f}x, interquartile range {iqr:.2f} over {len(ratios)} pairs"
        if head["agreed"]:
            log(f"headline: the fast setting trains {median:.2f}x as fast as FAST = False ({summary})")
        else:
            log(f"no headline: the pairs did not agree within {AGREE:.0%} of the median ({summary}; "
                f"min {min(ratios):.2f}, max {max(ratios):.2f})")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per rung after one warm-up (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 timed step per rung")
    parser.add_argument("--settings-only", action="store_true", help="only the headline: the fast setting against "
                        "FAST = False, in pairs (no ladder)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rung (its cold compile "
                        "takes minutes on a busy CPU)")
    args = parser.parse_args(argv)
    steps = args.steps or (1 if args.quick else 3)
    device = get_device()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads, load average {load:.1f}; "
          f"bfloat16: {bf16_support(device)[1]}")
    print(f"GPTModel 124M, context 256, chapter 5's data; 1 warm-up + {steps} timed steps a rung")
    windows, val = chapter5_windows(BENCH_CONFIG["context_length"])
    res = {}
    if not args.settings_only:
        rungs = [r for r in speed.ladder(device) if not (args.no_compile and r.compile)]
        res = run(BENCH_CONFIG, windows, val, steps, device, rungs=rungs)
    res["headline"] = headline(BENCH_CONFIG, windows, device)
    report(res)
    return res


if __name__ == "__main__":
    main()
