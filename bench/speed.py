"""Speed, measured side by side in one run on this machine's CPU.

1. Training steps/s of GPTModel 124M (context 256, batch 2 x 256, drop_rate 0.1, AdamW) with the book's
   attention (`fast_attention=False`) versus the utils fast path (`scaled_dot_product_attention`),
   after checking both give the same logits (eval mode, same weights).
2. Generation tokens/s, 200 new tokens, greedy, with and without the KV cache (same tokens asserted).
3. Achieved training FLOP/s (6 x params x tokens/s) as a fraction of measured fp32 matmul throughput.

Measurements alternate (A, B, A, B, ...) after warm-up, so load from other processes hits both sides;
medians and ratios are printed. On a shared machine the absolute numbers are noisy; the ratios less so.

    python bench/speed.py            # about 3-5 minutes on a busy 2-core CPU
    python bench/speed.py --quick    # about 1.5 minutes: 2 steps, 50 new tokens
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# OpenMP threads that spin while waiting steal the CPU from the thread doing the work when other processes share
# the cores: generation (many small ops) ran about 8x slower on a busy 2-core machine. Passive waiting avoids that;
# it must be set before torch loads OpenMP. `OMP_WAIT_POLICY=ACTIVE python bench/speed.py` for the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import utils`

from utils import GPT_CONFIG_124M, GPTModel, MultiHeadAttention, calc_loss_batch, count_parameters, generate  # noqa: E402
from utils.speed import time_alternating  # noqa: E402

BENCH_CONFIG = {**GPT_CONFIG_124M, "context_length": 256}  # the book's chapter-5 training setting
PROMPT_IDS = [6109, 3626, 6100, 345]  # "Every effort moves you" in GPT-2's BPE (no tokenizer download needed)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def matmul_flops(n: int = 2048, reps: int = 3) -> list[float]:
    """FLOP/s of `reps` fp32 `(n, n) @ (n, n)` products (2 n^3 FLOP each), after one warm-up product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - start))
    return rates


def set_fast_attention(model: torch.nn.Module, fast: bool) -> None:
    """Switch every MultiHeadAttention in `model` between the book's path and the SDPA fast path."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.fast = fast


def flop_params(model: GPTModel) -> int:
    """Parameters that take part in matrix multiplies: all but the two embedding tables (lookups, no FLOPs)."""
    return count_parameters(model) - model.tok_emb.weight.numel() - model.pos_emb.weight.numel()


def check_same_outputs(model: GPTModel, inputs: torch.Tensor, atol: float = 1e-4, rtol: float = 1e-4) -> float:
    """Logits of the book's and the fast path agree (eval mode, same weights); returns the max abs difference."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        set_fast_attention(model, False)
        book = model(inputs)  # (batch, num_tokens, vocab_size)
        set_fast_attention(model, True)
        fast = model(inputs)
    model.train(was_training)
    diff = (book - fast).abs().max().item()
    if not torch.allclose(book, fast, atol=atol, rtol=rtol):
        raise AssertionError(f"fast path logits differ from the book's by up to {diff:.3g} (atol {atol}, rtol {rtol})")
    return diff


def time_training(model, inputs, targets, steps: int, warmup: int = 1, matmul_n: int = 2048) -> dict:
    """Seconds per training step (train mode, AdamW) for `fast` False/True, alternating; plus matmul FLOP/s
    samples taken between rounds. Returns {"book": [s, ...], "fast": [s, ...], "matmul": [flop/s, ...]}."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)  # the book's chapter-5 optimizer
    model.train()
    matmul = []

    def step(fast: bool):
        set_fast_attention(model, fast)
        optimizer.zero_grad()
        calc_loss_batch(inputs, targets, model, inputs.device).backward()
        optimizer.step()

    fns = {"book": lambda: step(False), "fast": lambda: step(True)}
    times = time_alternating(fns, steps, warmup, between=lambda: matmul.extend(matmul_flops(matmul_n, reps=2)) if matmul_n else None)
    set_fast_attention(model, True)
    return {"book": times["book"], "fast": times["fast"], "matmul": matmul}


def time_generation(model, prompt, new_tokens: int, reps: int = 1) -> dict:
    """Seconds to generate `new_tokens` greedily with and without the KV cache, alternating (cache first and last);
    asserts both give the same tokens. Returns {"cache": [s, ...], "no_cache": [s, ...], "tokens": ids}."""
    model.eval()
    context = model.cfg["context_length"] if hasattr(model, "cfg") else model.pos_emb.num_embeddings  # LlamaModel: cfg
    if prompt.shape[1] + new_tokens > context:
        raise ValueError(f"prompt ({prompt.shape[1]}) + {new_tokens} new tokens exceed the context length {context}")
    for use_cache in (True, False):  # warm-up
        generate(model, prompt, max_new_tokens=4, context_size=context, use_cache=use_cache)
    times = {"cache": [], "no_cache": [], "tokens": None}
    schedule = [True, False] * reps + [True]
    for use_cache in schedule:
        start = time.perf_counter()
        out = generate(model, prompt, max_new_tokens=new_tokens, context_size=context, use_cache=use_cache)
        times["cache" if use_cache else "no_cache"].append(time.perf_counter() - start)
        if times["tokens"] is None:
            times["tokens"] = out
        elif not torch.equal(out, times["tokens"]):
            raise AssertionError("generation with and without the KV cache gave different tokens")
    return times


def time_attention(cfg: dict, dropout: float, reps: int, num_tokens: int, batch_size: int = 2) -> dict:
    """Seconds of one attention layer's forward + backward (train mode) on `(batch_size, num_tokens, emb_dim)`,
    book vs fast, alternating. Returns {"book": [s, ...], "fast": [s, ...]}."""
    torch.manual_seed(123)
    d = cfg["emb_dim"]
    att = MultiHeadAttention(d, d, num_tokens, dropout, cfg["n_heads"]).train()
    x = torch.randn(batch_size, num_tokens, d, requires_grad=True)  # (batch, num_tokens, emb_dim)

    def step(fast: bool):
        att.fast = fast
        att.zero_grad()
        att(x).sum().backward()

    times = time_alternating({"book": lambda: step(False), "fast": lambda: step(True)}, reps)
    return {"book": times["book"], "fast": times["fast"]}


def sdpa_backend(dropout_p: float, num_tokens: int = 256, head_dim: int = 64) -> str:
    """Which kernel `scaled_dot_product_attention` picks on CPU for a causal call with this dropout."""
    try:
        q = torch.randn(1, 2, num_tokens, head_dim)
        choice = torch._fused_sdp_choice(q, q, q, dropout_p=dropout_p, is_causal=True)
        return torch.nn.attention.SDPBackend(choice).name.lower()
    except Exception:  # private API: only informative
        return "unknown"


def run(cfg: dict, steps: int, warmup: int, new_tokens: int, gen_reps: int, matmul_n: int = 2048,
        batch_size: int = 2, log=print) -> dict:
    """All three measurements on a fresh `GPTModel(cfg)` (seed 123); returns the raw times and derived figures."""
    torch.manual_seed(123)
    model = GPTModel({**cfg, "fast_attention": True})
    num_tokens = cfg["context_length"]
    inputs = torch.randint(0, cfg["vocab_size"], (batch_size, num_tokens))  # (batch, num_tokens)
    targets = torch.randint(0, cfg["vocab_size"], (batch_size, num_tokens))

    max_diff = check_same_outputs(model, inputs)
    log(f"same outputs: book vs fast logits (eval mode) max |diff| = {max_diff:.2e}  [allclose ok]")

    log(f"training: {warmup} warm-up + {steps} timed steps per path, alternating ...")
    train = time_training(model, inputs, targets, steps=steps, warmup=warmup, matmul_n=matmul_n)
    log("attention layer alone: book vs fast, alternating ...")
    ctx = cfg["context_length"]
    cases = [(ctx, cfg["drop_rate"], max(3, 2 * steps)), (ctx, 0.0, max(3, 2 * steps)), (4 * ctx, 0.0, 3)]
    attention = {(n, p): time_attention(cfg, p, reps=r, num_tokens=n, batch_size=batch_size) for n, p, r in cases}
    log("generation: KV cache vs none, alternating ...")
    prompt = torch.tensor([PROMPT_IDS]) % cfg["vocab_size"]  # (1, 4)
    gen = time_generation(model, prompt, new_tokens=new_tokens, reps=gen_reps)
    matmul = train["matmul"] + (matmul_flops(matmul_n, reps=3) if matmul_n else [])

    med = statistics.median
    tokens_per_step = batch_size * num_tokens
    n_flop = flop_params(model)
    res = {
        "max_diff": max_diff,
        "train": train,
        "gen": gen,
        "attention": {p: med(t["book"]) / med(t["fast"]) for p, t in attention.items()},
        "book_step_s": med(train["book"]),
        "fast_step_s": med(train["fast"]),
        "cache_s": med(gen["cache"]),
        "no_cache_s": med(gen["no_cache"]),
        "new_tokens": new_tokens,
        "tokens_per_step": tokens_per_step,
        "flop_params": n_flop,
        "all_params": count_parameters(model),
    }
    res["fast_speedup"] = res["book_step_s"] / res["fast_step_s"]
    res["cache_speedup"] = res["no_cache_s"] / res["cache_s"]
    best_step = min(train["fast"] + train["book"])
    res["train_flops"] = 6 * n_flop * tokens_per_step / res["fast_step_s"]
    res["train_flops_best"] = 6 * n_flop * tokens_per_step / best_step
    if matmul:
        res["matmul_median"], res["matmul_best"] = med(matmul), max(matmul)
        res["mfu"] = res["train_flops"] / res["matmul_median"]
        res["mfu_best"] = res["train_flops_best"] / res["matmul_best"]
    return res


def report(res: dict, log=print) -> None:
    """Print the figures of `run`."""
    tr, gen = res["train"], res["gen"]
    g = 1e9
    log("")
    log("(1) training, batch 2 x 256, drop_rate 0.1, AdamW; seconds/step per timed step:")
    log(f"    book  : {' '.join(f'{t:.2f}' for t in tr['book'])}")
    log(f"    fast  : {' '.join(f'{t:.2f}' for t in tr['fast'])}")
    log(f"    median: book {1 / res['book_step_s']:.3f} steps/s, fast {1 / res['fast_step_s']:.3f} steps/s"
        f"  ->  fast/book = {res['fast_speedup']:.2f}x   (target >= 1.3x)")
    log(f"    SDPA kernel on this CPU: {sdpa_backend(0.1)} with dropout 0.1 (training), "
        f"{sdpa_backend(0.0)} with dropout 0 (eval / drop_rate 0)")
    att = ", ".join(f"{r:.2f}x at {n} tokens, dropout {p:g}" for (n, p), r in res["attention"].items())
    log(f"    one attention layer alone (forward + backward, batch 2): fast/book = {att}")
    n = res["new_tokens"]
    log(f"(2) generation, {n} new tokens, greedy, batch 1, same tokens with and without the cache [asserted]:")
    log(f"    with cache   : {' '.join(f'{t:.2f}s' for t in gen['cache'])}  median {n / res['cache_s']:.1f} tokens/s")
    log(f"    without cache: {' '.join(f'{t:.2f}s' for t in gen['no_cache'])}  median {n / res['no_cache_s']:.1f} tokens/s")
    log(f"    -> KV cache speed-up = {res['cache_speedup']:.1f}x   (target >= 5x)")
    if "mfu" in res:
        log(f"(3) fp32 matmul (2048^3) throughput: median {res['matmul_median'] / g:.1f} GFLOP/s, "
            f"best {res['matmul_best'] / g:.1f} GFLOP/s ({len(tr['matmul']) + 3} samples, taken between training steps)")
        log(f"    training FLOP/s = 6 x N x tokens/s, N = {res['flop_params']:,} parameters that multiply "
            f"(all {res['all_params']:,} minus the tok_emb and pos_emb lookup tables; out_head counted; "
            f"attention's own T^2 matmuls not counted)")
        log(f"    fast path, median step: {res['train_flops'] / g:.1f} GFLOP/s = {res['mfu']:.0%} of median matmul"
            f"   (target >= 40%)")
        log(f"    best step vs best matmul: {res['train_flops_best'] / g:.1f} GFLOP/s = {res['mfu_best']:.0%}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per path (default 3; quick 2)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 200; quick 50)")
    parser.add_argument("--gen-reps", type=int, default=None, help="runs without the cache, each between two with it (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, "
                        "capped at the usable CPUs)")
    parser.add_argument("--quick", action="store_true", help="a fast run: 2 steps, 50 new tokens")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 3)
    new_tokens = args.new_tokens or (50 if args.quick else 200)
    gen_reps = args.gen_reps or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    elif torch.get_num_threads() > usable_cpus():  # oversubscribed threads spin against each other
        torch.set_num_threads(usable_cpus())

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {usable_cpus()} usable CPUs, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, CPU: {cpu_model()}, load average {load:.1f} at start")
    print("GPTModel 124M (GPT_CONFIG_124M, context_length 256), fp32, seed 123")
    start = time.perf_counter()
    res = run(BENCH_CONFIG, steps=steps, warmup=1, new_tokens=new_tokens, gen_reps=gen_reps)
    report(res)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"total {time.perf_counter() - start:.0f}s; load average {load_end:.1f} at the end "
          f"(above {usable_cpus()} means other processes shared the CPU: absolute numbers are noisy)")
    return res


if __name__ == "__main__":
    main()
