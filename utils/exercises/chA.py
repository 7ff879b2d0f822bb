"""Appendix A's exercises, numbered as the book numbers them: A.1 and A.2 are about installing Python and the
libraries (the opening cells of every notebook do that), A.3 counts parameters, A.4 times a matrix product."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .core import Wrong, count_params, exercise, items, number, whole_number

MATMUL_FLOPS = 2 * 1000**3  # one 1000 x 1000 by 1000 x 1000 product: a multiply and an add per term


@exercise("A.3")
def small_network_parameters(answer):
    n = whole_number(answer, "the answer")
    with torch.device("meta"):
        mlp = nn.Sequential(nn.Linear(2, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 2))
    expected = count_params(mlp)
    if n == expected:
        return "three Linear layers: (inputs x outputs) weights plus one bias per output each"
    if n == sum(m.weight.numel() for m in mlp if isinstance(m, nn.Linear)):
        raise Wrong("that leaves out the biases: every Linear layer has one bias per output")
    raise Wrong("the count is off. Hint: each Linear layer holds inputs x outputs weights and one bias per output; "
                "add up the three layers")


def seconds(value, what: str, fastest: float, slowest: float, why_fast: str = "") -> float:
    """`value` as seconds for one product, within what a real device can do (else Wrong, saying why)."""
    t = number(value, what)
    if not math.isfinite(t) or t <= 0:
        raise Wrong(f"{what} should be a positive number of seconds, got {t}")
    if t > slowest:
        raise Wrong(f"{what} of {t} s would be {MATMUL_FLOPS / t / 1e9:.2f} GFLOP/s, slower than any such device: "
                    "is it in seconds? (%timeit prints ms or µs; 1 ms = 0.001 s)")
    if t < fastest:
        raise Wrong(f"{what} of {t} s would be {MATMUL_FLOPS / t / 1e12:,.0f} TFLOP/s, faster than any such device. "
                    f"Hint: is it in seconds?{why_fast}")
    return t


@exercise("A.4")
def matmul_timing(answer):
    cpu, gpu = items(answer, "(CPU seconds, GPU seconds or None without a GPU)")
    cpu = seconds(cpu, "the CPU time", fastest=MATMUL_FLOPS / 20e12, slowest=MATMUL_FLOPS / 0.5e9)
    line = f"your CPU did {MATMUL_FLOPS / cpu / 1e9:,.0f} GFLOP/s"
    if gpu is None:
        return line + "; with a GPU (e.g. a free Colab runtime), time it there too and compare"
    gpu = seconds(gpu, "the GPU time", fastest=MATMUL_FLOPS / 2e15, slowest=MATMUL_FLOPS / 1e9,
                  why_fast=" A GPU runs the product asynchronously: the clock must wait until it has finished")
    return f"{line}, your GPU {MATMUL_FLOPS / gpu / 1e9:,.0f}: {cpu / gpu:.1f}x the CPU on this product"
