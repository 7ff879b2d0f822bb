"""One checkpoint format, read by one reader with its errors; the random state a resume needs.

One checkpoint format: `save_checkpoint` writes the model's (and optimizer's) state plus tensors, numbers,
strings, lists and dicts, atomically; `read_checkpoint` reads it with `torch.load(weights_only=True)` (loading
never runs code) and names what is wrong. A training loop's checkpoints and exact resume: utils/extras.py.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path

import torch

from .checks import atomic_write


class NonFiniteLossError(FloatingPointError):
    """The loss, the gradients or the weights became NaN or infinite; the message names the step."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely, is damaged, or does not fit: the message names the path."""


def first_nonfinite(named_tensors) -> str | None:
    """Name of the first floating-point tensor holding NaN or inf, else None (one sync per device, no RNG used)."""
    by_device: dict = {}
    for n, t in named_tensors:
        if t is not None and t.is_floating_point() and t.numel():
            by_device.setdefault(t.device, []).append((n, t.detach()))
    for group in by_device.values():
        maxima = torch.stack(torch._foreach_norm([t for _, t in group], float("inf")))  # max |x|; NaN stays NaN
        if not bool(torch.isfinite(maxima).all()):
            return next(n for (n, _), m in zip(group, maxima.tolist()) if not math.isfinite(m))
    return None


def trained_parameters(model, optimizer) -> list:
    """(name, parameter) of the parameters of `model` that `optimizer` updates."""
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


# --- one format: save, read, check, load ----------------------------------------------------------------------


def check_safe(value, where: str) -> None:
    """TypeError unless `value` is made only of what `torch.load(weights_only=True)` reads back."""
    if value is None or isinstance(value, torch.Tensor) or type(value) in (bool, int, float, str):
        return  # exact types: a numpy float is a float subclass that weights_only cannot read back
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_safe(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"save_checkpoint: {where} has a key {key!r} of type {type(key).__name__}: use str keys")
            check_safe(item, f"{where}[{key!r}]")
    else:
        raise TypeError(
            f"save_checkpoint: {where} is a {type(value).__module__}.{type(value).__name__}; a checkpoint holds only "
            "tensors, numbers, strings, lists and dicts (so it loads with torch.load(weights_only=True), which never "
            "runs code): pass str(...), float(...), int(...) or a list instead"
        )


def check_path(path) -> Path:
    """`Path(path)`, or TypeError when `path` is not a file path."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"path must be a file path (str or Path), got {path!r}")
    return Path(path)


def save_checkpoint(path, model, optimizer=None, *, weights=None, **state) -> Path:
    """Save model (+ optimizer) state and `state` (tensors, numbers, strings, lists, dicts) to `path` atomically.

    `weights`: the tensors to save instead of `model.state_dict()` (e.g. `lora_state_dict(model)`: LoRA's only).
    Loads with `torch.load(path, weights_only=True)`. Non-finite weights are refused (nothing is written).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"save_checkpoint needs the model (a torch.nn.Module) second, got {type(model).__name__}")
    path = check_path(path)
    reserved = {"model_state_dict", "optimizer_state_dict"} & state.keys()
    if reserved:
        raise ValueError(f"save_checkpoint: {', '.join(sorted(reserved))} is written by save_checkpoint itself: rename it")
    for key, value in state.items():
        check_safe(value, key)
    payload = {"model_state_dict": model.state_dict() if weights is None else weights, **state}
    if optimizer is not None:
        payload["optimizer_state_dict"] = optimizer.state_dict()
    bad = first_nonfinite(payload["model_state_dict"].items()) or (optimizer is not None and first_nonfinite(
        (f"optimizer state {k} of parameter {i}", v) for i, s in payload["optimizer_state_dict"]["state"].items()
        for k, v in s.items() if isinstance(v, torch.Tensor)))
    if bad:
        raise NonFiniteLossError(
            f"{bad} holds NaN or inf values: refusing to write {path} (a checkpoint to resume from must be finite). "
            "Lower the learning rate (or clip the gradients) and train again from the last good checkpoint."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def read_checkpoint(path, map_location="cpu") -> dict:
    """The payload of a `save_checkpoint` file, read with `torch.load(weights_only=True)` (never runs code).

    FileNotFoundError if there is none; CheckpointError naming the path if it is empty, damaged or unsafe.
    """
    path = check_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"there is no checkpoint at {path}: check the path (save one with save_checkpoint)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): a save was interrupted. Delete it, or re-save it with save_checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK", b"\x80")):  # torch.save writes a zip archive (a pickle in old files)
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it starts with {head!r}; save_checkpoint writes a "
                              "zip archive): give the .pth file that save_checkpoint wrote")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if "weights only" in str(exc).lower():
            raise CheckpointError(
                f"refused to load {path}: it holds Python objects" + (f" ({found.group(1)})" if found else "")
                + " besides tensors, numbers, strings, lists and dicts, and unpickling those can run any code. "
                "Nothing was loaded. Use only checkpoints written by save_checkpoint; if you wrote this file "
                "yourself, re-save it with save_checkpoint."
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt): re-save it with "
                              "save_checkpoint, or delete it") from None
    except Exception as exc:  # torch reports a damaged file as RuntimeError, KeyError, EOFError, ...
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt: {first}): "
                              "re-save it with save_checkpoint, or delete it") from None
    if not isinstance(payload, dict) or "model_state_dict" not in payload:
        raise CheckpointError(f"{path} is not a save_checkpoint file (it holds no 'model_state_dict'): "
                              "re-save the model with save_checkpoint(path, model, config=cfg)")
    return payload


def check_fits(path, payload: dict, model, optimizer=None, hint=None) -> None:
    """CheckpointError naming every tensor of the checkpoint that does not fit `model` (or `optimizer`); `hint`: what
    to do, instead of building the model from the saved config."""
    saved, own = payload["model_state_dict"], model.state_dict()
    problems = [f"missing {k} (the model has shape {tuple(v.shape)})" for k, v in own.items() if k not in saved]
    problems += [f"unexpected {k} of shape {tuple(getattr(v, 'shape', ()))}" for k, v in saved.items() if k not in own]
    problems += [f"{k}: the checkpoint has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}"
                 for k, v in saved.items() if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape)]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; ... and {len(problems) - 4} more" if len(problems) > 4 else "")
        hint = f" {hint}." if hint else (f" It was saved with config {payload['config']}: build GPTModel(that config)."
                                         if isinstance(payload.get("config"), dict)
                                         else " Build the model with the config it was trained with.")
        raise CheckpointError(f"{path} was saved from a model of another shape: {shown}.{hint}")
    if optimizer is not None and "optimizer_state_dict" in payload:
        opt, ours = payload["optimizer_state_dict"], [p for g in optimizer.param_groups for p in g["params"]]
        try:
            theirs = [i for group in opt["param_groups"] for i in group["params"]]
            differ = [len(g["params"]) for g in opt["param_groups"]] != [len(g["params"]) for g in optimizer.param_groups]
            differ = differ or any(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape
                                   for p, i in zip(ours, theirs) for v in opt["state"].get(i, {}).values())
        except (KeyError, TypeError, AttributeError):
            differ = True
        if differ:
            raise CheckpointError(
                f"{path}: the optimizer state was saved for other parameters than this optimizer's ({len(ours)} "
                "parameters here): create the optimizer as for the saved run (e.g. AdamW(model.parameters(), ...)), "
                "or pass optimizer=None to load only the weights")


def load_checkpoint(path, model, optimizer=None, map_location="cpu") -> dict:
    """Load a `save_checkpoint` file into `model` (and `optimizer`), every shape checked first; return the payload."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load_checkpoint needs the model (a torch.nn.Module) second, got {type(model).__name__}")
    payload = read_checkpoint(path, map_location=map_location)
    check_fits(path, payload, model, optimizer)
    model.load_state_dict(payload["model_state_dict"])
    if optimizer is not None and "optimizer_state_dict" in payload:
        optimizer.load_state_dict(payload["optimizer_state_dict"])
    return payload


def rng_state() -> dict:
    """The random state of torch's CPU generator (and of the current GPU's, when CUDA is in use)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore a state from `rng_state()`."""
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
