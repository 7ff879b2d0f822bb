"""Chapter 8's exercises: the KV cache of SmolLM2, an untied output head, RMSNorm, Llama 3's RoPE scaling."""

from __future__ import annotations

import functools

import torch

from .core import Wrong, exercise, items, number, whole_number

SMOLLM2_KV = {"n_layers": 30, "n_heads": 9, "n_kv_heads": 3, "head_dim": 64}  # SmolLM2-135M's attention shape


@exercise("8.1")
def smollm2_kv_cache(answer):
    cfg = SMOLLM2_KV
    gqa, mha = items(answer, "(bytes per token with GQA, bytes per token with multi-head attention)")
    gqa, mha = whole_number(gqa, "the GQA bytes"), whole_number(mha, "the multi-head bytes")
    per_head = 2 * cfg["n_layers"] * cfg["head_dim"] * 4  # keys and values, every layer, 4 bytes a float32 number
    if gqa != per_head * cfg["n_kv_heads"]:
        raise Wrong(f"{gqa:,} bytes with GQA is off: count keys and values, in every layer, for each key/value head "
                    "(n_kv_heads), head_dim numbers each, in float32")
    if mha != per_head * cfg["n_heads"]:
        raise Wrong(f"{mha:,} bytes with multi-head attention is off: then there are as many key/value heads as "
                    "query heads (n_heads)")
    return f"GQA makes SmolLM2's cache 3x smaller: {gqa / 1024:.0f} KiB instead of {mha / 1024:.0f} KiB a token."


@functools.lru_cache(maxsize=None)
def untied_qwen3() -> tuple[int, int]:
    """(unique parameters, parameters of embedding + head) of Qwen3 0.6B with an untied head."""
    from ..llama import QWEN3_06B, LlamaModel, count_unique_parameters

    with torch.device("meta"):
        model = LlamaModel({**QWEN3_06B, "tie_embeddings": False})
    return count_unique_parameters(model)[1], model.tok_emb.weight.numel() + model.out_head.weight.numel()


@exercise("8.2")
def untied_head(answer):
    unique, share = items(answer, "(unique parameters, share of embedding + head)")
    unique, share = whole_number(unique, "the parameter count"), number(share, "the share")
    expected, embeddings = untied_qwen3()
    if unique != expected:
        raise Wrong(f"{unique:,} parameters is off: build LlamaModel({{**QWEN3_06B, 'tie_embeddings': False}}) under "
                    "torch.device('meta') and count with count_unique_parameters(model)[1]")
    if abs(share - embeddings / expected) > 0.005:
        raise Wrong(f"the share {share:.3f} is off: (vocab_size x emb_dim, twice) / the unique parameters")
    return f"untied, {embeddings / expected:.0%} of Qwen3 0.6B would be embedding and output head."


@exercise("8.3")
def rms_norm_function(answer):
    from ..llama import RMSNorm

    if not callable(answer):
        raise Wrong(f"the answer should be a function rms_norm(x, weight, eps), got {type(answer).__name__}")
    torch.manual_seed(123)
    x, weight = torch.randn(3, 5, 16) * 4 + 1, torch.rand(16) + 0.5  # (batch, num_tokens, emb_dim), (emb_dim,)
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(weight)
        expected = norm(x)
    try:
        got = answer(x, weight, 1e-6)
    except Exception as exc:  # noqa: BLE001  (the learner's code: report, never raise)
        raise Wrong(f"calling rms_norm(x, weight, eps) raised {type(exc).__name__}: {exc}") from None
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        raise Wrong(f"rms_norm should return a tensor of x's shape {tuple(x.shape)}")
    if not torch.allclose(got, expected, atol=1e-5):
        raise Wrong("the values differ from utils.RMSNorm: divide by sqrt(mean of x**2 over the last dim + eps), "
                    "no mean subtracted, then multiply by weight")
    return "no mean, no shift: one division and one scale per vector."


@functools.lru_cache(maxsize=None)
def llama3_pairs() -> tuple[int, int, int]:
    """(slowed by the full factor, kept, blended) RoPE pairs of a 128-wide head with Llama 3's base and scaling."""
    from ..llama import LLAMA32_1B as cfg
    from ..llama import rope_inv_freq

    ratio = rope_inv_freq(128, cfg["rope_base"], cfg["rope_scaling"]) / rope_inv_freq(128, cfg["rope_base"])
    slowed = int(torch.isclose(ratio, torch.tensor(1 / cfg["rope_scaling"]["factor"])).sum())
    kept = int((ratio == 1).sum())
    return slowed, kept, len(ratio) - slowed - kept


@exercise("8.4")
def llama3_scaling(answer):
    got = tuple(whole_number(v, "each count") for v in items(answer, "(slowed, kept, blended)", n=3))
    expected = llama3_pairs()
    if sum(got) != sum(expected):
        raise Wrong(f"the three counts add up to {sum(got)}: a head of 128 numbers has 64 pairs")
    if got != expected:
        raise Wrong("the counts are off: compare each pair's speed with the scaling to its speed without: "
                    "unchanged is kept, 1/factor is slowed, anything between is blended")
    return "the fast pairs (fine positions) keep their speed; only the slow ones are stretched for 128k tokens."
