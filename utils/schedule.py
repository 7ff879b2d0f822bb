"""Appendix D: learning-rate warmup + cosine decay as a function of the step, and gradient clipping."""

from __future__ import annotations

import math
import numbers

import torch

from .checks import check_int


def check_number(name, value, *, low=0.0, low_inclusive=True):
    """Raise TypeError unless `value` is a finite number, ValueError unless it is >= `low` (> when exclusive)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < low or (value == low and not low_inclusive):
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {bound} {low}, got {value!r}")


def lr_at_step(
    step: int,
    total_steps: int,
    peak_lr: float,
    warmup_steps: int = 0,
    initial_lr: float = 1e-5,
    min_lr: float = 1e-5,
) -> float:
    """Learning rate of optimizer step `step` (0-based) out of `total_steps`, as appendix D computes it.

    Steps 0 .. warmup_steps-1 rise linearly: `initial_lr + step * ((peak_lr - initial_lr) / warmup_steps)`.
    From step `warmup_steps` on, a half cosine falls from `peak_lr` towards `min_lr`:
    `min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps)))`.
    As in the book, the cosine reaches `min_lr` at `step == total_steps` (one past the last optimizer step,
    accepted so a plot can show the floor); the last step `total_steps - 1` is a little above it.
    Works with any optimizer: set `param_group["lr"]` to it before `optimizer.step()`.
    """
    check_int(total_steps, "total_steps")
    check_int(warmup_steps, "warmup_steps", minimum=0, hint="the book warms up over 20% of the steps")
    check_int(step, "step", minimum=0)
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) is larger than total_steps ({total_steps}): "
            "use fewer warmup steps (the book uses 20% of the steps)"
        )
    if step > total_steps:
        raise ValueError(f"step ({step}) is past total_steps ({total_steps}): steps run from 0 to total_steps - 1")
    check_number("peak_lr", peak_lr, low=0.0, low_inclusive=False)
    check_number("initial_lr", initial_lr)
    check_number("min_lr", min_lr)
    if min_lr > peak_lr:
        raise ValueError(f"min_lr ({min_lr}) is larger than peak_lr ({peak_lr}): the cosine decays from peak to min")
    if step < warmup_steps:
        return initial_lr + step * ((peak_lr - initial_lr) / warmup_steps)  # the book's rounding: increment first
    if total_steps == warmup_steps:  # only step == total_steps gets here: the end of the schedule
        return float(min_lr)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def clip_gradients(parameters, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most `max_norm`; return the norm before.

    `parameters`: an iterable of tensors (e.g. `model.parameters()`); those without `.grad` are skipped.
    Same result as `torch.nn.utils.clip_grad_norm_(parameters, max_norm)`, which the book calls.
    """
    check_number("max_norm", max_norm, low=0.0, low_inclusive=False)
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    try:
        parameters = list(parameters)
    except TypeError:
        raise TypeError(
            f"parameters must be an iterable of tensors such as model.parameters(), got {type(parameters).__name__}"
        ) from None
    for p in parameters:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameters must hold tensors, found a {type(p).__name__}")
    if not any(p.grad is not None for p in parameters):
        return 0.0
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
