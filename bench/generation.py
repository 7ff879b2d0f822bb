"""Generation speed at batch 1 on this machine: prefill tokens/s, first-token latency and decode tokens/s of our
`utils.generate` (KV cache) beside Hugging Face transformers' `generate` on the same weights, with the memory floor.

Decoding one token reads every weight once, so on a CPU it is bound by memory bandwidth: the floor is the measured
read bandwidth (a sum over a buffer at least 4x the last-level cache, torch's threads, median of 5) divided by the
bytes of the weights a token reads (every linear layer and norm; one row of each embedding). Models: chapter 5's
GPTModel (GPT-2 124M shape, random weights), SmolLM2-135M-Instruct (the real file) and a Qwen3-0.6B-shaped model
(random weights). Runs alternate ours / transformers' round by round; the same greedy tokens are asserted in float32
(in bfloat16 the two round differently: the line says how many new tokens agree).

    python bench/generation.py                      # all three models, float32 (+ bfloat16 where the CPU has it)
    python bench/generation.py --models smollm2-135m --new-tokens 100 --rounds 5
    python bench/generation.py --quick              # SmolLM2 only, 30 new tokens, 2 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `import utils`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, for `import speed`

import utils  # noqa: E402, F401  (first: it sets OpenMP's waiting before torch loads, as for a reader; utils/__init__.py)

OPENMP = ", ".join(f"{k}={os.environ.get(k, '-')}" for k in ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"])  # as torch read them

import speed  # noqa: E402
import torch  # noqa: E402

from utils import GPT_CONFIG_124M, QWEN3_06B, GPTModel, bf16_support, fetch, generate, load_pretrained  # noqa: E402
from utils.gpt2 import load_weights_into_gpt  # noqa: E402
from utils.llama import llama_config_from_hf, load_hf_weights  # noqa: E402

PROMPT = "Write a long story about a dragon who learns to read, with many details about the library it finds."


def read_bandwidth(buffer_bytes: int | None = None, reps: int = 5) -> tuple[float, list[float]]:
    """(median, all) bytes/s of `buffer.sum()` over a float32 buffer of at least 4x the last-level cache (and 256 MB)."""
    if buffer_bytes is None:
        llc = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
        buffer_bytes = max(4 * int(llc.read_text().strip().rstrip("K")) * 1024 if llc.is_file() else 0, 256 * 2**20)
    buffer = torch.ones(buffer_bytes // 4)
    buffer.sum()  # touch it once
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        buffer.sum()
        rates.append(buffer.numel() * 4 / (time.perf_counter() - start))
    return statistics.median(rates), rates


def bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of the weights one decoded token reads: all parameters but the embedding tables (one row each), a tied
    head (the embedding used as output layer) counted once, as it is read once."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    heads = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in embeddings or id(p) in heads)


def gpt2_pair(cfg: dict, dtype: torch.dtype):
    """(ours, transformers') GPT-2-shaped models with the same random weights (seed 123)."""
    import transformers

    torch.manual_seed(123)
    hf_cfg = transformers.GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"],
                                     n_embd=cfg["emb_dim"], n_layer=cfg["n_layers"], n_head=cfg["n_heads"])
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = GPTModel({**cfg, "qkv_bias": True, "drop_rate": 0.0}).eval()
    load_weights_into_gpt(ours, {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()})
    return ours.to(dtype), hf.to(dtype)


def qwen3_pair(cfg: dict, dtype: torch.dtype):
    """(ours, transformers') Qwen3-shaped models with the same random weights, through a safetensors folder."""
    import transformers

    torch.manual_seed(123)
    hf_cfg = transformers.Qwen3Config(vocab_size=cfg["vocab_size"], hidden_size=cfg["emb_dim"],
                                      intermediate_size=cfg["hidden_dim"], num_hidden_layers=cfg["n_layers"],
                                      num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
                                      head_dim=cfg["head_dim"], max_position_embeddings=cfg["context_length"],
                                      rope_theta=cfg["rope_base"], tie_word_embeddings=cfg["tie_embeddings"])
    hf = transformers.Qwen3ForCausalLM(hf_cfg).to(dtype).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = load_hf_weights(llama_config_from_hf(hf.config.to_dict()), sorted(Path(folder).glob("*.safetensors")),
                               dtype=dtype)
    return ours, hf


def smollm2_pair(dtype: torch.dtype):
    """(ours, transformers') SmolLM2-135M-Instruct from the same GGUF file (transformers dequantizes it itself)."""
    import transformers

    path = fetch("smollm2-135m")
    ours, template = load_pretrained(path, device="cpu", dtype=dtype)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype).eval()
    return ours, hf, torch.tensor([template.encode([{"role": "user", "content": PROMPT}])])


def time_model(ours, hf, prompt, new_tokens: int, rounds: int, log=print) -> dict:
    """Seconds for 1 and for `new_tokens` new tokens, ours and transformers' alternating; same tokens asserted in float32."""
    context = ours.cfg["context_length"] if hasattr(ours, "cfg") else ours.pos_emb.num_embeddings

    def ours_run(n):
        return generate(ours, prompt, max_new_tokens=n, context_size=context)

    def hf_run(n):
        with torch.no_grad():
            return hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    runs = {"ours": ours_run, "transformers": hf_run} if hf is not None else {"ours": ours_run}
    expected = ours_run(new_tokens)
    times = {(name, n): [] for name in runs for n in (1, new_tokens)}
    agreed = {}  # in bfloat16: the new tokens equal to ours before the first that differs
    for r in range(rounds):
        log(f"  round {r + 1}/{rounds}")
        for name in runs if r % 2 == 0 else reversed(list(runs)):
            for n in (1, new_tokens):
                start = time.perf_counter()
                out = runs[name](n)
                times[name, n].append(time.perf_counter() - start)
                agree = same_prefix(out, expected) - prompt.shape[1]
                if agree < out.shape[1] - prompt.shape[1]:
                    if next(ours.parameters()).dtype == torch.float32:
                        raise AssertionError(f"{name} generated other greedy tokens than ours (float32)")
                    agreed[name] = min(agreed.get(name, new_tokens), agree)  # bfloat16 rounds differently
    results = {name: rates(times[name, 1], times[name, new_tokens], prompt.shape[1], new_tokens) for name in runs}
    for name, agree in agreed.items():
        results[name]["same_tokens"] = agree
    return results


def same_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens of `a` and `b` `(1, n)` are equal."""
    n = min(a.shape[1], b.shape[1])
    differ = (a[0, :n] != b[0, :n]).nonzero()
    return int(differ[0]) if len(differ) else n


def rates(first: list[float], whole: list[float], prompt_len: int, new_tokens: int) -> dict:
    """Medians and spreads: prefill tokens/s, first-token latency (s), decode tokens/s after the first token."""
    decode = [(new_tokens - 1) / max(w - f, 1e-9) for f, w in zip(first, whole)]
    return {"prefill": [prompt_len / f for f in first], "latency": first, "decode": decode}


def report(name: str, dtype: torch.dtype, res: dict, floor_tokens: float, log=print) -> None:
    """One line per implementation: median (min-max) of each figure, and decode as a share of the floor."""
    def fmt(values, unit=""):
        return f"{statistics.median(values):.1f}{unit} ({min(values):.1f}-{max(values):.1f})"

    for impl, r in res.items():
        share = statistics.median(r["decode"]) / floor_tokens
        log(f"{name:<14} {str(dtype).removeprefix('torch.'):<9} {impl:<13} prefill {fmt(r['prefill'])} tokens/s, "
            f"first token {fmt([1000 * t for t in r['latency']], ' ms')}, decode {fmt(r['decode'])} tokens/s "
            f"= {share:.0%} of its floor ({floor_tokens:.1f})"
            + (f"; the first {r['same_tokens']} new tokens equal ours (bfloat16 rounds differently)"
               if "same_tokens" in r else ""))
    if "transformers" in res:
        ratio = statistics.median(res["ours"]["decode"]) / statistics.median(res["transformers"]["decode"])
        log(f"{'':<14} {'':<9} ours / transformers: decode {ratio:.2f}x, prefill "
            f"{statistics.median(res['ours']['prefill']) / statistics.median(res['transformers']['prefill']):.2f}x")


def build(name: str, dtype: torch.dtype, prompt_len: int):
    """(ours, transformers' or None, prompt) for a model name of this bench."""
    if name == "smollm2-135m":
        return smollm2_pair(dtype)
    cfg = {"gpt2-124m": GPT_CONFIG_124M, "qwen3-0.6b-shape": QWEN3_06B}[name]
    ours, hf = (gpt2_pair if name == "gpt2-124m" else qwen3_pair)(cfg, dtype)
    return ours, hf, torch.arange(prompt_len).unsqueeze(0) % 1000 + 100


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["gpt2-124m", "smollm2-135m", "qwen3-0.6b-shape"])
    parser.add_argument("--new-tokens", type=int, default=None, help="default 60 (quick: 30)")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (quick: 2)")
    parser.add_argument("--dtypes", nargs="+", default=None, help="float32 bfloat16 (default: bfloat16 where supported)")
    parser.add_argument("--quick", action="store_true", help="SmolLM2 only, 30 new tokens, 2 rounds, float32")
    args = parser.parse_args(argv)
    models = ["smollm2-135m"] if args.quick else args.models
    new_tokens, rounds = args.new_tokens or (30 if args.quick else 60), args.rounds or (2 if args.quick else 3)
    dtypes = args.dtypes or (["float32"] + (["bfloat16"] if bf16_support("cpu")[0] and not args.quick else []))
    if torch.get_num_threads() > speed.usable_cpus():
        torch.set_num_threads(speed.usable_cpus())
    bandwidth, samples = read_bandwidth()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads ({OPENMP}), CPU: {speed.cpu_model()}; load average "
          f"{os.getloadavg()[0]:.1f}; read bandwidth {bandwidth / 1e9:.1f} GB/s "
          f"({min(samples) / 1e9:.1f}-{max(samples) / 1e9:.1f}); batch 1, greedy, {new_tokens} new tokens")
    results = []
    for name in models:
        for dtype in (getattr(torch, d) for d in dtypes):
            ours, hf, prompt = build(name, dtype, 32)
            floor = bandwidth / bytes_per_token(ours)
            res = time_model(ours, hf, prompt, new_tokens, rounds, log=lambda *a: None)
            report(name, dtype, res, floor)
            results.append({"model": name, "dtype": str(dtype), "floor": floor, **res})
            del ours, hf
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return results


if __name__ == "__main__":
    main()
