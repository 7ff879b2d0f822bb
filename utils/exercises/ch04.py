"""Chapter 4's exercises: parameter counts of a block and of the larger GPT-2s, dropout rates, FLOPs per token."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn

from .core import Wrong, count_params, exercise, items, meta_model, module, number, whole_number

DROPOUT_RATES_4_3 = {"embedding": 0.1, "attention": 0.2, "shortcut": 0.3}


@functools.lru_cache(maxsize=None)
def block_counts() -> tuple[int, int]:
    """(feed-forward, attention) parameters of one TransformerBlock(GPT_CONFIG_124M)."""
    from ..model import GPT_CONFIG_124M, TransformerBlock

    with torch.device("meta"):
        block = TransformerBlock(GPT_CONFIG_124M)
    return count_params(block.ff), count_params(block.att)


@exercise("4.1")
def block_parameters(answer):
    ff, att = items(answer, "(feed-forward parameters, attention parameters)")
    ff, att = whole_number(ff, "the feed-forward count"), whole_number(att, "the attention count")
    exp_ff, exp_att = block_counts()
    if (ff, att) == (exp_ff, exp_att):
        return f"the feed-forward module holds {ff / att:.1f}x the attention module's parameters"
    if (ff, att) == (exp_att, exp_ff):
        raise Wrong("the two counts are swapped: feed-forward first, then attention")
    if ff != exp_ff:
        raise Wrong("the feed-forward count is off. Hint: two Linear layers, 768 -> 3072 -> 768, each with a "
                    "weight and a bias")
    raise Wrong("the attention count is off. Hint: four projections (query, key, value, output); which of them "
                "have a bias in GPT_CONFIG_124M?")


@functools.lru_cache(maxsize=None)
def gpt2_sizes() -> dict[str, tuple[int, int, float]]:
    """{'gpt2-medium': (parameters, parameters with weight tying, MB in float32), 'gpt2-large': ..., 'gpt2-xl': ...}."""
    from ..model import GPT_CONFIG_124M, MODEL_SIZES

    names = {"355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
    sizes = {}
    for size, name in names.items():
        model = meta_model({**GPT_CONFIG_124M, **MODEL_SIZES[size]})
        total = count_params(model)
        sizes[name] = (total, total - model.out_head.weight.numel(), total * 4 / 1024**2)
    return sizes


@exercise("4.2")
def larger_gpt2_sizes(answer):
    if not isinstance(answer, dict):
        raise Wrong("the answer should be a dict {'gpt2-medium': (total, with weight tying, MB), 'gpt2-large': ..., "
                    "'gpt2-xl': ...}")
    expected = gpt2_sizes()
    got = {("gpt2-" + str(k)) if not str(k).startswith("gpt2-") else str(k): v for k, v in answer.items()}
    if set(got) != set(expected):
        raise Wrong(f"the keys should be {sorted(expected)}, got {sorted(answer)}")
    for name, (total, tied, mb) in expected.items():
        g_total, g_tied, g_mb = items(got[name], f"{name}: (total parameters, with weight tying, size in MB)", 3)
        g_total, g_tied, g_mb = whole_number(g_total, "total"), whole_number(g_tied, "tied"), number(g_mb, "MB")
        if g_total == tied:
            raise Wrong(f"{name}: the total already leaves out the output head; count it, then subtract it for tying")
        if g_total != total:
            raise Wrong(f"{name}: the total is off. Hint: only emb_dim, n_layers and n_heads change; everything "
                        "else stays as in GPT_CONFIG_124M")
        if g_tied != tied:
            raise Wrong(f"{name}: the count with weight tying is off. Hint: the output head shares its weight "
                        "matrix with the token embedding, so that matrix counts once")
        if abs(g_mb - mb) > 0.5:
            hint = "1 MB = 1024 * 1024 bytes" if abs(g_mb - total * 4 / 1e6) < 0.5 else "4 bytes per float32 parameter"
            raise Wrong(f"{name}: the size in MB is off. Hint: {hint}")
    return "the parameter count grows with emb_dim squared times the number of blocks"


def dropout_groups(model: nn.Module) -> dict[str, set[float]]:
    """The rates of the model's nn.Dropout modules, by where they sit: embedding, attention, shortcut."""
    groups: dict[str, set[float]] = {"embedding": set(), "attention": set(), "shortcut": set()}
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Dropout):
            parts = name.split(".")
            in_block = "trf_blocks" in parts
            in_att = in_block and any(p.startswith("att") for p in parts)
            groups["attention" if in_att else "shortcut" if in_block else "embedding"].add(layer.p)
    return groups


@exercise("4.3")
def three_dropout_rates(answer):
    model = module(answer, "the answer")
    if not hasattr(model, "trf_blocks"):
        raise Wrong("pass the GPT model (with .trf_blocks, like utils.GPTModel)")
    groups = dropout_groups(model)
    for group, rate in DROPOUT_RATES_4_3.items():
        if not groups[group]:
            raise Wrong(f"no nn.Dropout found for the {group}s")
        if groups[group] != {rate}:
            where = {"embedding": "drop_emb", "attention": "each block's att.dropout",
                     "shortcut": "each block's drop_shortcut"}[group]
            raise Wrong(f"the {group} dropout rate(s) {sorted(groups[group])} are not the ones asked for. "
                        f"Hint: {where} should use the {group} rate from the config")
    return "three dropout rates, each set from its own config key"


@functools.lru_cache(maxsize=None)
def flops_per_token_124m() -> int:
    """2 x the weights of every nn.Linear of GPT-2 124M: the FLOPs of one token's forward pass."""
    from ..model import GPT_CONFIG_124M

    model = meta_model(GPT_CONFIG_124M)
    return 2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


@exercise("4.4")
def flops_per_token(answer):
    flops = number(answer, "the answer")
    expected = flops_per_token_124m()
    if math.isclose(flops, expected, rel_tol=0.005):
        return "about 2 FLOPs per weight per token: a multiply and an add"
    if math.isclose(flops, expected / 2, rel_tol=0.005):
        raise Wrong("that counts multiply-adds; each is two floating-point operations")
    if flops > expected:
        raise Wrong("too many. Hint: embedding lookups are not multiplications; count only the weights of the "
                    "nn.Linear layers (output head included)")
    raise Wrong("too few. Hint: every nn.Linear weight, in all 12 blocks and the output head, times 2")
