"""Where the notebooks compute, and what that device does fast: one helper for every chapter.

`get_device()` picks cuda > mps > cpu (or `$LLM_DEVICE`); `bf16_support(device)` says whether bfloat16 runs
on fast hardware there, and why, so a fast setting (05c), the Llama/Qwen loader (08) and the chat (09) choose alike.
"""

from __future__ import annotations

import os

import torch

_DEVICE_TYPES = "cpu, cuda, cuda:0 (a GPU index), mps or meta"


def _device_from(name, what: str) -> torch.device:
    """`torch.device(name)`, or a ValueError naming `what` (an argument or an environment variable)."""
    if isinstance(name, torch.device):
        return name
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what}={name!r} is not a device: use {_DEVICE_TYPES}")
    try:
        device = torch.device(name.strip())
    except (RuntimeError, ValueError):
        raise ValueError(f"{what}={name!r} is not a device torch knows: use {_DEVICE_TYPES}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{what}={name!r} but this machine has no CUDA GPU torch can use: use 'cpu' (or unset it)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{what}={name!r} but there are only {count} GPU(s) (cuda:0 to cuda:{count - 1})")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError(f"{what}={name!r} but MPS (Apple's GPU) is not available here: use 'cpu' (or unset it)")
    return device


def get_device(preferred: str | None = None) -> torch.device:
    """`preferred` or `$LLM_DEVICE` if set, else cuda > mps > cpu."""
    if preferred is not None:
        return _device_from(preferred, "preferred")
    name = os.environ.get("LLM_DEVICE")
    if name is not None and name.strip():
        return _device_from(name, "the environment variable LLM_DEVICE")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bf16_support(device) -> tuple[bool, str]:
    """(True, why) when bfloat16 matrix products run on fast hardware on `device`, else (False, why not)."""
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        return ok, f"{name} {'has' if ok else 'has no'} bfloat16 tensor cores"
    if device.type == "mps":
        return True, "Apple's GPU (MPS) computes in bfloat16"
    if device.type == "cpu":
        if torch.cpu._is_amx_tile_supported():
            return True, "this CPU has AMX matrix units with bfloat16"
        if torch.cpu._is_avx512_bf16_supported():
            return True, "this CPU has AVX-512 BF16 instructions"
        return False, "this CPU has no bfloat16 units (no AMX or AVX-512 BF16): bfloat16 would be slower than float32"
    return False, f"no bfloat16 check for device type {device.type!r}"
