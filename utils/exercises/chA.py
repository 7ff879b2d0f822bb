"""Appendix A's exercises (the book's A.1 and A.2 are about installing Python and the libraries)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .core import Wrong, count_params, exercise, number, whole_number


@exercise("A.1")
def small_network_parameters(answer):
    n = whole_number(answer, "the answer")
    with torch.device("meta"):
        mlp = nn.Sequential(nn.Linear(2, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 2))
    expected = count_params(mlp)
    if n == expected:
        return "three Linear layers: (inputs x outputs) weights plus one bias per output each"
    if n == sum(m.weight.numel() for m in mlp if isinstance(m, nn.Linear)):
        raise Wrong("that leaves out the biases: every Linear layer has one bias per output")
    raise Wrong("the count is off. Hint: sum(p.numel() for p in model.parameters() if p.requires_grad)")


@exercise("A.2")
def cpu_gpu_ratio(answer):
    ratio = number(answer, "the ratio")
    if not math.isfinite(ratio) or ratio <= 0:
        raise Wrong(f"{ratio} is not a measured ratio: divide the CPU time by the GPU time, both positive")
    return "a measured CPU time / GPU time: above 1 the GPU is faster (on small work the CPU can win)"
