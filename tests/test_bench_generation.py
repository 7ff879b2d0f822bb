"""bench/generation.py end to end on tiny GPT-2 and Qwen3 shapes against transformers (no timing assertions)."""

import importlib.util
from pathlib import Path

import pytest
import torch

from utils import GPT_CONFIG_124M, QWEN3_06B

pytest.importorskip("transformers", reason="transformers (tests only) is not installed")
SPEC = importlib.util.spec_from_file_location("generation", Path(__file__).resolve().parents[1] / "bench" / "generation.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

TINY_GPT = {**GPT_CONFIG_124M, "vocab_size": 300, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 2}
TINY_QWEN3 = {**QWEN3_06B, "vocab_size": 300, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_kv_heads": 2,
              "head_dim": 8, "n_layers": 2, "hidden_dim": 48}


@pytest.mark.parametrize("pair, cfg", [("gpt2_pair", TINY_GPT), ("qwen3_pair", TINY_QWEN3)])
def test_same_tokens_as_transformers_and_a_report(pair, cfg, capsys):
    ours, hf = getattr(bench, pair)(cfg, torch.float32)
    prompt = torch.tensor([[5, 17, 200, 3, 9]])
    res = bench.time_model(ours, hf, prompt, new_tokens=6, rounds=2, log=lambda *a: None)
    assert set(res) == {"ours", "transformers"} and all(len(r["decode"]) == 2 for r in res.values())
    bench.report("tiny", torch.float32, res, floor_tokens=100.0)
    out = capsys.readouterr().out
    assert "ours / transformers: decode" in out and "of its floor" in out


def test_bytes_per_token_counts_a_tied_head_once_and_skips_embeddings():
    ours, _ = bench.qwen3_pair(TINY_QWEN3, torch.float32)  # tied: the embedding is the head, read every token
    total = sum(p.numel() for p in ours.parameters()) * 4
    assert bench.bytes_per_token(ours) == total
    gpt, _ = bench.gpt2_pair(TINY_GPT, torch.float32)  # untied: its two embedding tables are read one row a token
    skipped = (gpt.tok_emb.weight.numel() + gpt.pos_emb.weight.numel()) * 4
    assert bench.bytes_per_token(gpt) == sum(p.numel() for p in gpt.parameters()) * 4 - skipped


def test_read_bandwidth_is_positive():
    median, samples = bench.read_bandwidth(buffer_bytes=4 * 2**20, reps=3)
    assert median > 0 and len(samples) == 3
