"""Generation tokens/s of the Qwen3 0.6B configuration (random weights) on this CPU: with and without the KV cache,
in float32 and in bfloat16, measured side by side in one run.

The timing is bench/speed.py's `time_generation` (warm-up, then cache / no cache alternating, same tokens asserted);
the two precisions alternate round by round, so load from other processes hits all four alike.

    python bench/llama_generation.py            # about 10 minutes on a busy 2-core CPU, 3.6 GB of memory
    python bench/llama_generation.py --quick    # about 3 minutes: 10 new tokens, one round
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import utils`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, for `import speed`

import speed  # noqa: E402

from utils import QWEN3_06B, LlamaModel, bf16_support, count_unique_parameters  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(cfg: dict, dtype: torch.dtype) -> LlamaModel:
    """`LlamaModel(cfg)` with random weights (seed 123) created directly in `dtype` (no float32 copy first)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(123)
        return LlamaModel(cfg).eval()
    finally:
        torch.set_default_dtype(default)


def run(cfg: dict, new_tokens: int, rounds: int, prompt_len: int = 16, log=print) -> dict:
    """Seconds per generation for each (dtype, cache / no cache); returns them with tokens/s medians."""
    models = {name: build(cfg, dtype) for name, dtype in DTYPES.items()}
    prompt = torch.arange(prompt_len).unsqueeze(0) % cfg["vocab_size"]  # (1, prompt_len)
    times = {name: {"cache": [], "no_cache": []} for name in models}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            log(f"round {r + 1}/{rounds}: {name} ...")
            t = speed.time_generation(models[name], prompt, new_tokens=new_tokens, reps=1)
            times[name]["cache"] += t["cache"]
            times[name]["no_cache"] += t["no_cache"]
    rates = {(name, kind): new_tokens / statistics.median(ts) for name, by in times.items() for kind, ts in by.items()}
    return {"times": times, "rates": rates, "params": count_unique_parameters(models["float32"])[1],
            "new_tokens": new_tokens, "prompt_len": prompt_len}


def report(res: dict, log=print) -> None:
    """One line per precision: tokens/s with and without the cache, and the ratios."""
    r = res["rates"]
    log(f"\nQwen3 0.6B configuration, {res['params']:,} parameters, random weights; prompt {res['prompt_len']} tokens, "
        f"{res['new_tokens']} new tokens, greedy, batch 1 (same tokens with and without the cache, asserted)")
    for name in DTYPES:
        log(f"  {name:<9}: with KV cache {r[name, 'cache']:6.2f} tokens/s, without {r[name, 'no_cache']:6.2f} tokens/s"
            f"  -> cache speed-up {r[name, 'cache'] / r[name, 'no_cache']:.1f}x")
    log(f"  bfloat16 / float32: {r['bfloat16', 'cache'] / r['float32', 'cache']:.2f}x with the cache, "
        f"{r['bfloat16', 'no_cache'] / r['float32', 'no_cache']:.2f}x without")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 30; quick 10)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both precisions (default 2; quick 1)")
    parser.add_argument("--quick", action="store_true", help="10 new tokens, one round")
    args = parser.parse_args(argv)
    new_tokens = args.new_tokens or (10 if args.quick else 30)
    rounds = args.rounds or (1 if args.quick else 2)
    if torch.get_num_threads() > speed.usable_cpus():
        torch.set_num_threads(speed.usable_cpus())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {speed.cpu_model()}; "
          f"bfloat16: {bf16_support('cpu')[1]}; load average {os.getloadavg()[0]:.1f} at start")
    start = time.perf_counter()
    res = run(QWEN3_06B, new_tokens=new_tokens, rounds=rounds)
    report(res)
    print(f"total {time.perf_counter() - start:.0f}s; load average {os.getloadavg()[0]:.1f} at the end")
    return res


if __name__ == "__main__":
    main()
