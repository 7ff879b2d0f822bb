"""Appendix D's exercises: clipping by the global norm of all gradients, and the step the printed book's loop
first clips."""

from __future__ import annotations

import torch

from .core import Wrong, answer_tensor, exercise, items, whole_number

# exercise D.1: the gradients of a model with two parameters
GRADIENTS = (torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0, 12.0]))
# exercise D.2: the notebook's run
TOTAL_STEPS, WARMUP_STEPS = 135, 27


def clipped(max_norm: float = 1.0, per_parameter: bool = False) -> torch.Tensor:
    """The first parameter's gradient after clipping GRADIENTS (all together, or each on its own)."""
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in GRADIENTS]
    for p, g in zip(params, GRADIENTS):
        p.grad = g.clone()
    for group in ([p] for p in params) if per_parameter else [params]:
        torch.nn.utils.clip_grad_norm_(group, max_norm)
    return params[0].grad


@exercise("D.1")
def global_norm_clipping(answer):
    got = answer_tensor(answer, "the first gradient after clipping").float()
    if got.shape != GRADIENTS[0].shape:
        raise Wrong(f"the answer should be the first parameter's gradient, shape {tuple(GRADIENTS[0].shape)}")
    if torch.allclose(got, GRADIENTS[0]):
        raise Wrong("that is the gradient before clipping. Hint: is the norm of all gradients above max_norm?")
    if torch.allclose(got, clipped(per_parameter=True), atol=1e-4):
        raise Wrong("that clips each parameter's gradient on its own. Hint: the norm is taken over all "
                    "gradients together, and every gradient is scaled by the same factor")
    if not torch.allclose(got, clipped(), atol=1e-4):
        raise Wrong("not the clipped gradient. Hint: the L2 norm of every number of both gradients, then one "
                    "factor max_norm / norm for all of them")
    return "one factor for all gradients: their direction is kept, only the joint length is capped"


@exercise("D.2")
def first_clipped_step(answer):
    peak, book = items(answer, "(the first step at the peak learning rate, the first step the printed book clips)")
    peak, book = whole_number(peak, "the first step at the peak"), whole_number(book, "the first clipped step")
    if (peak, book) == (WARMUP_STEPS + 1, WARMUP_STEPS):
        raise Wrong("the two are swapped: the peak first, then the first clipped step")
    if peak != WARMUP_STEPS:
        raise Wrong("not the first step at the peak. Hint: steps count from 0, and the warmup covers the steps "
                    "with global_step < warmup_steps")
    if book != WARMUP_STEPS + 1:
        raise Wrong("not the printed book's first clipped step. Hint: read the loop's condition for clipping "
                    "and try it on the steps around the end of the warmup")
    return ("the step at the peak learning rate, where the gradient norm jumps, is the one the printed book leaves "
            "unclipped; utils clips from warmup_steps on (clip_from_step)")
