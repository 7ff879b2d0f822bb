"""Chapter 3's exercises: nn.Linear vs nn.Parameter weights, a two-head wrapper, GPT-2's attention, scaling."""

from __future__ import annotations

import math

import torch

from .core import Wrong, call_eval, count_params, exercise, items, module, number

# The book's toy data: six 3-dimensional word vectors ("Your journey starts with one step", chapter 3)
BOOK_INPUTS = [
    [0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
    [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55],
]


def book_inputs() -> torch.Tensor:
    """The book's six word vectors: (6, 3)."""
    return torch.tensor(BOOK_INPUTS)


@exercise("3.1")
def same_weights(answer):
    v1, v2 = items(answer, "(sa_v1, sa_v2)")
    v1, v2 = module(v1, "sa_v1"), module(v2, "sa_v2")
    if v1 is v2:
        raise Wrong("both are the same module: pass the SelfAttention_v1 instance and the SelfAttention_v2 instance")
    x = book_inputs()
    out1, out2 = call_eval(v1, x), call_eval(v2, x)
    if tuple(out1.shape) != tuple(out2.shape):
        raise Wrong(f"the outputs differ in shape {tuple(out1.shape)} vs {tuple(out2.shape)}. Hint: build both "
                    "with the same d_in and d_out")
    if not torch.allclose(out1, out2, atol=1e-6):
        raise Wrong("the two modules still give different outputs. Hint: nn.Linear stores its weight as "
                    "(d_out, d_in) and computes x @ weight.T, while SelfAttention_v1 computes x @ W: what shape "
                    "must W have?")
    return "same weights, same outputs: nn.Linear is a matrix multiplication with a transposed weight"


@exercise("3.2")
def two_heads_of_width_one(answer):
    model = module(answer, "the answer")
    x = torch.stack((book_inputs(), book_inputs()))  # (2, 6, 3)
    shortest = min((b.shape[-1] for name, b in model.named_buffers() if name.endswith("mask")), default=6)
    if shortest < 6:
        raise Wrong(f"the causal mask covers {shortest} tokens, but the batch holds 6. Hint: context_length is the "
                    "longest input a module can read; it must be at least the number of tokens")
    out = call_eval(model, x)
    heads = len(model.heads) if hasattr(model, "heads") else getattr(model, "num_heads", None)
    if heads is not None and heads != 2:
        raise Wrong(f"the module has {heads} head(s). Hint: num_heads=2")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 6, 2):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise Wrong(f"on a (2, 6, 3) batch it returns {shape}, not (2, 6, 2). Hint: each head's d_out is "
                    "concatenated, so the output width is num_heads * d_out")
    return "two heads of width 1 concatenate to a 2-dimensional context vector"


@exercise("3.3")
def gpt2_attention(answer):
    from ..attention import MultiHeadAttention

    model = module(answer, "the answer")
    with torch.device("meta"):
        reference = MultiHeadAttention(768, 768, context_length=1024, dropout=0.0, num_heads=12)
    heads = getattr(model, "num_heads", None)
    if heads is not None and heads != 12:
        raise Wrong(f"{heads} heads; GPT-2 small has 12. Hint: num_heads=12")
    mask = getattr(model, "mask", None)
    if isinstance(mask, torch.Tensor) and mask.shape[-1] != 1024:
        raise Wrong(f"the causal mask covers {mask.shape[-1]} tokens; GPT-2 small's context is longer. "
                    "Hint: context_length=1024")
    n = count_params(model)
    if n != count_params(reference):
        hint = ("GPT_CONFIG_124M has qkv_bias=False" if n > count_params(reference) else "d_in = d_out = 768")
        raise Wrong(f"{n:,} parameters is not the size of GPT-2 small's attention. Hint: {hint}")
    out = call_eval(model, torch.zeros(1, 4, 768))
    if tuple(out.shape) != (1, 4, 768):
        raise Wrong(f"a (1, 4, 768) input gives {tuple(out.shape)}. Hint: d_out=768")
    return f"{n:,} parameters: four 768 x 768 projections (and the output projection's bias)"


@exercise("3.4")
def scaled_softmax(answer):
    raw, scaled = items(answer, "(largest weight without scaling, largest weight with scaling)")
    raw, scaled = number(raw, "the first weight"), number(scaled, "the second weight")
    g = torch.Generator().manual_seed(123)
    query, keys = torch.randn(64, generator=g), torch.randn(6, 64, generator=g)
    scores = keys @ query  # (6,)
    exp_raw = torch.softmax(scores, dim=-1).max().item()
    exp_scaled = torch.softmax(scores / 64**0.5, dim=-1).max().item()
    if math.isclose(raw, exp_raw, abs_tol=1e-4) and math.isclose(scaled, exp_scaled, abs_tol=1e-4):
        return "unscaled dot products of 64-dim vectors are large, so softmax is nearly one-hot; / sqrt(d_k) softens it"
    if math.isclose(raw, exp_scaled, abs_tol=1e-4) and math.isclose(scaled, exp_raw, abs_tol=1e-4):
        raise Wrong("the two weights are swapped: the unscaled softmax is the sharper one")
    if math.isclose(scaled, torch.softmax(scores / 64, dim=-1).max().item(), abs_tol=1e-4):
        raise Wrong("the scaled weight is off. Hint: divide by the square root of d_k, not by d_k")
    raise Wrong("the weights are off. Hint: draw from one generator seeded with 123, the query first, then the "
                "keys; softmax over the six scores, and take the largest weight")
