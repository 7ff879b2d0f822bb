"""bench/llama_generation.py runs end to end on a tiny Qwen3-shaped model (no timing assertions)."""

import importlib.util
from pathlib import Path

import torch

from utils import QWEN3_06B

SPEC = importlib.util.spec_from_file_location(
    "llama_generation", Path(__file__).resolve().parents[1] / "bench" / "llama_generation.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

TINY = {**QWEN3_06B, "vocab_size": 64, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_kv_heads": 2,
        "head_dim": 8, "n_layers": 2, "hidden_dim": 48}


def test_run_and_report_tiny(capsys):
    res = bench.run(TINY, new_tokens=4, rounds=2, prompt_len=5, log=lambda *a: None)
    for name in ("float32", "bfloat16"):
        assert len(res["times"][name]["cache"]) == 4 and len(res["times"][name]["no_cache"]) == 2  # 2 rounds
    assert all(rate > 0 for rate in res["rates"].values())
    bench.report(res)
    assert "bfloat16 / float32" in capsys.readouterr().out


def test_build_makes_the_dtype_directly():
    model = bench.build(TINY, torch.bfloat16)
    assert model.tok_emb.weight.dtype == torch.bfloat16 and torch.get_default_dtype() == torch.float32
