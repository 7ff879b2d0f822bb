"""Notebook 05c's exercises: gradient accumulation gives the big batch's gradient; bfloat16's precision."""

from __future__ import annotations

import torch

from .core import Wrong, exercise, number

ACCUMULATION_CONFIG = {"vocab_size": 64, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
                       "drop_rate": 0.0, "qkv_bias": False}


@exercise("5c.1")
def accumulated_gradient(answer):
    if not callable(answer):
        raise Wrong("the answer should be your function accumulate(model, inputs, targets, micro_batches)")
    from ..model import GPTModel
    from ..train import calc_loss_batch

    torch.manual_seed(0)
    model = GPTModel(ACCUMULATION_CONFIG)
    data = torch.randint(0, 64, (8, 9))  # (batch 8, num_tokens + 1)
    inputs, targets = data[:, :-1], data[:, 1:]
    calc_loss_batch(inputs, targets, model, "cpu").backward()
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    answer(model, inputs, targets, 4)
    if any(p.grad is None for p in model.parameters()):
        raise Wrong("after your function some weights have no gradient: call loss.backward() for every micro-batch")
    ratio = (model.out_head.weight.grad.norm() / whole[-1].norm()).item()
    if abs(ratio - 4) < 0.05:
        raise Wrong("the gradient is 4 times the big batch's: divide each micro-batch's loss by the number of them")
    if not all(torch.allclose(p.grad, g, atol=1e-6, rtol=1e-4) for p, g in zip(model.parameters(), whole)):
        raise Wrong("the gradients differ from one batch of 8's. Hint: split inputs and targets into equal parts "
                    "(tensor.chunk), backward each part's loss / parts, and do not zero the gradients in between")
    return "four small passes, one optimizer step: the big batch's update in the small batch's memory"


@exercise("5c.2")
def bfloat16_epsilon(answer):
    eps = number(answer, "the gap between 1 and the next bfloat16 number")
    gap = torch.finfo(torch.bfloat16).eps
    if eps == torch.finfo(torch.float32).eps:
        raise Wrong("that is float32's; compute in bfloat16: torch.tensor(1.0, dtype=torch.bfloat16) + x")
    if gap / 4 < eps < gap:
        raise Wrong("1 + x rounds up to the next bfloat16 number already for x a little over half the gap; the "
                    "exercise asks for the gap itself. Hint: try only powers of two")
    if abs(eps - gap) > 1e-9:
        raise Wrong("not quite: try x = 2 ** -k for k = 1, 2, ... and keep the last x for which 1 + x != 1 in bfloat16")
    return "2 ** -7: bfloat16 keeps 8 bits of mantissa, about 2-3 significant decimal digits"
