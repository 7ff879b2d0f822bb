"""Where the notebooks compute, and what that device does fast: one helper for every chapter.

`get_device()` picks cuda > mps > cpu (or `$LLM_DEVICE`); `bf16_support(device)` says whether bfloat16 runs on
bfloat16 hardware there, and why: 05c's ladder runs its bfloat16 rung wherever it says yes (AVX-512 BF16 CPUs too).
`fast_setting(FAST, device)` is the FAST line of the training chapters (05, 05b, 06, 07, 09, D, E), printed in one
line: bfloat16 autocast only on CUDA with bfloat16, MPS and CPUs with AMX. `inference_dtype(device)` is the dtype
`load_pretrained` loads in by default (chapter 8): bfloat16 on those same devices, else float32.
Chapter 9 loads in float32 (it trains the model) and follows its FAST line.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

_DEVICE_TYPES = "cpu, cuda, cuda:0 (a GPU index), mps or meta"
FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps")  # where torch.optim.AdamW(fused=True) has a kernel (torch >= 2.5)


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


@dataclass(frozen=True)
class FastSetting:
    """What speeds training on `device`: bfloat16 autocast, fused AdamW, fused attention, length-grouped batches."""

    enabled: bool
    device: torch.device
    bf16: bool  # bfloat16 autocast around the forward and backward pass
    fused_adamw: bool  # for `torch.optim.AdamW(..., fused=fast.fused_adamw)`
    fused_attention: bool  # scaled_dot_product_attention in every MultiHeadAttention
    length_grouped: bool  # chapter 7: batches of similar lengths (`length_grouped_batches` in utils.instruct)
    message: str

    def autocast(self):
        """bfloat16 autocast on the device when chosen, else a context that changes nothing."""
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def model_config(self, cfg: dict) -> dict:
        """`cfg` with the fused attention path switched on when chosen (utils' GPTModel has it on already)."""
        return {**cfg, "fast_attention": True} if self.fused_attention else dict(cfg)


def inference_dtype(device) -> torch.dtype:
    """bfloat16 on a GPU that has it (CUDA, MPS), else float32. Not on CPUs, AMX ones included: generating one token
    at a time there measured 0.8x float32's speed in bfloat16 (SmolLM2-135M, Intel Xeon with AMX, 2026-12-08)."""
    device = _device_from(device, "device")
    return torch.bfloat16 if device.type != "cpu" and bf16_support(device)[0] else torch.float32


def fast_setting(enabled: bool, device=None, *, bf16: bool | None = None) -> FastSetting:
    """The fast setting on `device` (None: `get_device()`), printed in one line; `bf16` overrides the hardware check."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False (the FAST line of the settings cell), got {enabled!r}")
    device = get_device() if device is None else _device_from(device, "device")
    has_bf16, why = bf16_support(device)
    if has_bf16 and device.type == "cpu" and not torch.cpu._is_amx_tile_supported():
        has_bf16, why = False, f"{why} but no AMX units: bfloat16 autocast measured slower than float32, see 05c"
    use_bf16 = enabled and (has_bf16 if bf16 is None else bf16)
    fused = enabled and device.type in FUSED_ADAMW_DEVICES
    if not enabled:
        message = (f"FAST = False on {device.type}: float32 and plain AdamW, as the book trains (attention: utils' "
                   f"fused path either way, same results); FAST = True would use "
                   f"{'bfloat16 autocast' if has_bf16 else 'float32'} ({why}), fused AdamW, and in chapter 7 "
                   "length-grouped batches")
    else:
        precision = "bfloat16 autocast" if use_bf16 else "float32"
        why = "forced" if bf16 is not None else why
        message = (f"FAST = True on {device.type}: {precision} ({why}), {'fused' if fused else 'plain'} AdamW, "
                   "in chapter 7 length-grouped batches (attention: utils' fused path, as with FAST = False)")
    print(message)
    return FastSetting(enabled, device, use_bf16, fused, enabled, enabled, message)
