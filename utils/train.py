"""Chapter 5: device choice, seeding, losses, evaluation and the training loop (with checkpoints).

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
`torch.load(..., weights_only=True)`: loading a file never runs code. `save_weights` / `load_weights`
write and read plain safetensors files, for weights meant to be shared.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import pickle
import re
from pathlib import Path

import torch

from .generate import generate, text_to_token_ids, token_ids_to_text


class NonFiniteLossError(FloatingPointError):
    """The loss, the gradients or the weights became NaN or infinite; the message names the step."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely, is damaged, or does not fit: the message names the path."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(value, name: str, minimum: int = 1, what: str = "") -> None:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}{what}")


def set_seed(seed: int = 123) -> None:
    """Seed torch's CPU (and CUDA) random generators."""
    if not _is_int(seed):
        raise TypeError(f"seed must be a whole number (the book uses 123), got {seed!r}")
    torch.manual_seed(seed)


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross-entropy of next-token predictions; inputs and targets `(batch, num_tokens)`."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (batch, num_tokens, vocab_size)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def _check_loader_len(data_loader, name: str) -> int:
    try:
        n = len(data_loader)
    except TypeError:
        raise TypeError(f"{name} must be a DataLoader (something with a length), got {type(data_loader).__name__}") from None
    if n == 0:
        raise ValueError(
            f"{name} is empty: the text is too short for one batch "
            "(use a smaller batch_size or context length, more text, or drop_last=False)"
        )
    return n


def calc_loss_loader(data_loader, model, device, num_batches=None, loss_fn=None):
    """Average loss over the first `num_batches` batches (all if None); `loss_fn` defaults to calc_loss_batch."""
    if len(data_loader) == 0:
        raise ValueError(
            "the data loader is empty: the text is too short for one batch "
            "(use a smaller batch_size or context length, or drop_last=False)"
        )
    if num_batches is not None:
        _positive_int(num_batches, "num_batches", what=" (None means every batch)")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total_loss += (loss_fn or calc_loss_batch)(input_batch, target_batch, model, device).item()
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """(train loss, val loss) over `eval_iter` batches each, in eval mode without gradients."""
    _positive_int(eval_iter, "eval_iter", what=" (the number of batches each loss is averaged over)")
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50, eos_id=None):
    """Greedy continuation of `start_context`, printed on one line; stops at `eos_id` when given.

    Uses the KV cache: the same tokens as the book's `generate_text_simple`, computed faster.
    """
    if not isinstance(start_context, str) or not start_context:
        raise ValueError(f"start_context must be a non-empty string (e.g. 'Every effort moves you'), got {start_context!r}")
    if isinstance(tokenizer, (str, bytes)) or not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(f"tokenizer must have an encode method (e.g. gpt2_tokenizer()), got {type(tokenizer).__name__}")
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        token_ids = generate(model, encoded, max_new_tokens, context_size, eos_id=eos_id)
    print(token_ids_to_text(token_ids, tokenizer).replace("\n", " "))
    model.train()


def _can_resume(checkpoint_path) -> bool:
    return checkpoint_path is not None and Path(checkpoint_path).is_file()


def check_finite(loss: torch.Tensor, step: int, epoch: int, *, checkpoint_path=None) -> None:
    """Raise NonFiniteLossError if `loss` is NaN or infinite (before it can reach the weights)."""
    if not torch.isfinite(loss):
        where = ", or resume from the last checkpoint" if _can_resume(checkpoint_path) else ""
        raise NonFiniteLossError(
            f"the loss became {loss.item()} at step {step} (epoch {epoch}): training stopped before the "
            "weights were updated with it (they are still finite). Lower the learning rate, check the inputs "
            f"for bad token ids{where}."
        )


def _first_nonfinite(named_tensors) -> str | None:
    """Name of the first floating-point tensor holding NaN or inf, else None (one device sync, no RNG used)."""
    named = [(n, t) for n, t in named_tensors if t is not None and t.is_floating_point() and t.numel()]
    if not named:
        return None
    by_device: dict = {}
    for n, t in named:
        by_device.setdefault(t.device, []).append((n, t))
    for group in by_device.values():
        maxima = torch.stack(torch._foreach_norm([t.detach() for _, t in group], float("inf")))  # max |x|; NaN stays NaN
        if not bool(torch.isfinite(maxima).all()):
            return next(n for (n, _), m in zip(group, maxima.tolist()) if not math.isfinite(m))
    return None


def _trained(model, optimizer):
    """(name, parameter) of the parameters `optimizer` updates."""
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


def check_step_finite(model, optimizer, loss, step: int, epoch: int, *, stage: str, checkpoint_path=None) -> None:
    """Raise NonFiniteLossError if the gradients (`stage="gradients"`, before `optimizer.step()`) or the updated
    weights (`stage="weights"`, after it) of the trained parameters hold NaN or inf; the message names the tensor."""
    if stage == "gradients":
        bad = _first_nonfinite((n, p.grad) for n, p in _trained(model, optimizer))
        if bad:
            raise NonFiniteLossError(
                f"the gradients became non-finite at step {step} (epoch {epoch}), first in {bad}, although the loss "
                f"was finite ({loss.item():.4g}): training stopped before the optimizer step, so the weights are "
                "still finite. Lower the learning rate or clip the gradients (torch.nn.utils.clip_grad_norm_)"
                + (", then resume from the last checkpoint." if _can_resume(checkpoint_path) else ", then train again.")
            )
    else:
        bad = _first_nonfinite(_trained(model, optimizer))
        if bad:
            lrs = sorted({g.get("lr") for g in optimizer.param_groups if isinstance(g.get("lr"), (int, float))})
            raise NonFiniteLossError(
                f"the weights became non-finite in the optimizer step of step {step} (epoch {epoch}), first in {bad}, "
                f"although the loss ({loss.item():.4g}) and the gradients were finite: the learning rate "
                f"({', '.join(f'{lr:g}' for lr in lrs)}) is too high. The model in memory is now unusable and no "
                "checkpoint was written from it: lower the learning rate and "
                + ("resume from the last checkpoint (checkpoints never hold non-finite weights)." if _can_resume(checkpoint_path)
                   else "train again from the start (rebuild or reload the model).")
            )


# --- checkpoints: only tensors, numbers, strings, lists and dicts (torch.load with weights_only=True) ------


def _check_safe(value, where: str) -> None:
    """TypeError unless `value` is made only of what `torch.load(weights_only=True)` reads back."""
    if value is None or isinstance(value, torch.Tensor) or type(value) in (bool, int, float, str):
        return  # exact types: a numpy float is a float subclass that weights_only cannot read back
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_safe(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"save_checkpoint: {where} has a key {key!r} of type {type(key).__name__}: use str keys")
            _check_safe(item, f"{where}[{key!r}]")
    else:
        raise TypeError(
            f"save_checkpoint: {where} is a {type(value).__module__}.{type(value).__name__}; a checkpoint holds only "
            "tensors, numbers, strings, lists and dicts (so it loads with torch.load(weights_only=True), which never "
            "runs code): pass str(...), float(...), int(...) or a list instead"
        )


def save_checkpoint(path, model, optimizer=None, **state) -> Path:
    """Save model (+ optimizer) state and `state` to `path` atomically (write `path.tmp`, then rename).

    `state` values may be tensors, numbers, strings, lists and dicts (e.g. `config=cfg`): the file loads
    with `torch.load(path, weights_only=True)`. Non-finite weights are refused (nothing is written).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"save_checkpoint needs the model (a torch.nn.Module) second, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"path must be a file path (str or Path), got {path!r}")
    reserved = {"model_state_dict", "optimizer_state_dict"} & state.keys()
    if reserved:
        raise ValueError(f"save_checkpoint: {', '.join(sorted(reserved))} is written by save_checkpoint itself: rename it")
    for key, value in state.items():
        _check_safe(value, key)
    path = Path(path)
    bad = _first_nonfinite(model.state_dict().items())
    if bad is None and optimizer is not None:
        bad = _first_nonfinite(
            (f"optimizer state {k} of parameter {i}", v) for i, s in optimizer.state_dict()["state"].items()
            for k, v in s.items() if isinstance(v, torch.Tensor)
        )
    if bad:
        raise NonFiniteLossError(
            f"{bad} holds NaN or inf values: refusing to write {path} (a checkpoint to resume from must be finite). "
            "Lower the learning rate (or clip the gradients) and train again from the last good checkpoint."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model_state_dict": model.state_dict(), **state}
    if optimizer is not None:
        payload["optimizer_state_dict"] = optimizer.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(path, map_location="cpu") -> dict:
    """The payload of a `save_checkpoint` file, read with `torch.load(weights_only=True)` (never runs code).

    FileNotFoundError if there is none; CheckpointError (a ValueError) naming the path if it is empty,
    truncated, not a checkpoint, or holds Python objects other than tensors, numbers, strings, lists and dicts.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"path must be a file path (str or Path), got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"there is no checkpoint at {path}: check the path (save one with save_checkpoint)")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes): a save was interrupted. Delete it, or re-save it with save_checkpoint"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise CheckpointError(
                f"{path} is not a readable checkpoint (truncated or corrupt): re-save it with save_checkpoint, or delete it"
            ) from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects"
            + (f" ({found.group(1)})" if found else "")
            + " besides tensors, numbers, strings, lists and dicts, and unpickling those can run any code. "
            "Nothing was loaded. Use only checkpoints written by save_checkpoint (or weights shared as "
            "safetensors, load_weights); if you wrote this file yourself, re-save it with save_checkpoint."
        ) from None
    except Exception as exc:  # torch reports a damaged file as RuntimeError, KeyError, EOFError, ...
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {first}): "
            "re-save it with save_checkpoint, or delete it"
        ) from None
    if not isinstance(payload, dict) or "model_state_dict" not in payload:
        raise CheckpointError(
            f"{path} is not a save_checkpoint file (it holds no 'model_state_dict'): "
            "re-save the model with save_checkpoint(path, model, config=cfg)"
        )
    return payload


def _check_fits(path, payload: dict, model, optimizer=None) -> None:
    """CheckpointError naming every tensor of the checkpoint that does not fit `model` (or `optimizer`)."""
    saved, own = payload["model_state_dict"], model.state_dict()
    problems = [f"missing {k} (the model has shape {tuple(v.shape)})" for k, v in own.items() if k not in saved]
    problems += [f"unexpected {k} of shape {tuple(getattr(v, 'shape', ()))}" for k, v in saved.items() if k not in own]
    problems += [
        f"{k}: the checkpoint has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}"
        for k, v in saved.items() if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape)
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; ... and {len(problems) - 4} more" if len(problems) > 4 else "")
        hint = (f" It was saved with config {payload['config']}: build GPTModel(that config)." if isinstance(
            payload.get("config"), dict) else " Build the model with the config it was trained with.")
        raise CheckpointError(f"{path} was saved from a model of another shape: {shown}.{hint}")
    if optimizer is None or "optimizer_state_dict" not in payload:
        return
    opt = payload["optimizer_state_dict"]
    ours = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        theirs = [i for group in opt["param_groups"] for i in group["params"]]
        sizes_differ = [len(g["params"]) for g in opt["param_groups"]] != [len(g["params"]) for g in optimizer.param_groups]
        shapes_differ = sizes_differ or any(
            isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape
            for p, i in zip(ours, theirs) for v in opt["state"].get(i, {}).values()
        )
    except (KeyError, TypeError, AttributeError):
        sizes_differ = shapes_differ = True
    if shapes_differ:
        raise CheckpointError(
            f"{path}: the optimizer state was saved for other parameters than this optimizer's "
            f"({len(ours)} parameters here): create the optimizer as for the saved run "
            "(e.g. AdamW(model.parameters(), ...)), or pass optimizer=None to load only the weights"
        )


def load_checkpoint(path, model, optimizer=None, map_location="cpu") -> dict:
    """Load a `save_checkpoint` file into `model` (and `optimizer`); return the whole payload.

    Reads with `torch.load(weights_only=True)` (a file holding other Python objects is refused, never run);
    every shape is checked before anything is copied. Errors name the path and say what to do.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load_checkpoint needs the model (a torch.nn.Module) second, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    payload = read_checkpoint(path, map_location=map_location)
    _check_fits(path, payload, model, optimizer)
    model.load_state_dict(payload["model_state_dict"])
    if optimizer is not None and "optimizer_state_dict" in payload:
        optimizer.load_state_dict(payload["optimizer_state_dict"])
    return payload


# --- safetensors: weights meant to be shared (no code, no pickle) -------------------------------------------


def save_weights(model, path, config=None) -> Path:
    """Write `model`'s weights to a safetensors file atomically (`path.tmp`, then rename); `config` goes into its header.

    The file holds tensors only: anyone can load it without running code (`load_weights`, or safetensors itself).
    """
    from safetensors.torch import save_file

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"save_weights needs the model (a torch.nn.Module) first, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"path must be a file path (str or Path), got {path!r}")
    metadata = {"format": "pt"}
    if config is not None:
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict (e.g. GPT_CONFIG_124M) or None, got {type(config).__name__}")
        try:
            metadata["config"] = json.dumps(config)
        except (TypeError, ValueError):
            raise TypeError(f"config must hold only numbers, strings, booleans, lists and dicts, got {config!r:.120}") from None
    path = Path(path)
    bad = _first_nonfinite(model.state_dict().items())
    if bad:
        raise NonFiniteLossError(f"{bad} holds NaN or inf values: refusing to write {path}")
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        tensors[name] = tensor.clone() if key in seen else tensor  # safetensors refuses tensors sharing memory
        seen.add(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except RuntimeError as exc:  # tensors that share memory in another way
            if "share memory" not in str(exc):
                raise
            save_file({k: v.clone() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_weights(model, path, map_location="cpu") -> dict | None:
    """Load a safetensors file (from `save_weights`) into `model`, every name and shape checked first.

    Returns the config stored with it (a dict) or None. Never runs code from the file.
    """
    from safetensors import SafetensorError, safe_open

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load_weights needs the model (a torch.nn.Module) first, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"path must be a file path (str or Path), got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"there is no weights file at {path}: check the path (write one with save_weights)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            saved = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt: {first}): write it again with "
            "save_weights, or delete it"
        ) from None
    config = None
    if "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except ValueError:
            config = None
    _check_fits(path, {"model_state_dict": saved, "config": config}, model)
    model.load_state_dict({k: v.to(map_location) for k, v in saved.items()})
    return config


def _progress(total, initial, enabled):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", mininterval=1.0, ncols=90)


TRAINING_STATE = ("epoch", "batches_done", "global_step", "tokens_seen", "train_losses", "val_losses",
                  "track_tokens_seen", "rng_epoch_start", "rng_now")


def _check_training_args(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                         start_context, tokenizer, checkpoint_path, checkpoint_every, resume, max_steps) -> None:
    """Every argument of a training loop checked before the first step (nothing is changed on an error)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (e.g. GPTModel(cfg)), got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer (e.g. torch.optim.AdamW(model.parameters())), "
                        f"got {type(optimizer).__name__}")
    if not _trained(model, optimizer):
        raise ValueError("the optimizer updates none of the model's parameters: create it with model.parameters()")
    torch.device(device)
    _check_loader_len(train_loader, "train_loader")
    _check_loader_len(val_loader, "val_loader")
    _positive_int(num_epochs, "num_epochs")
    _positive_int(eval_freq, "eval_freq", what=" (evaluate every eval_freq optimizer steps)")
    _positive_int(eval_iter, "eval_iter", what=" (the number of batches each evaluation averages over)")
    if start_context is not None and (not isinstance(start_context, str) or not start_context):
        raise ValueError(f"start_context must be a non-empty string or None, got {start_context!r}")
    if start_context is not None and tokenizer is not None and (
            isinstance(tokenizer, (str, bytes)) or not callable(getattr(tokenizer, "encode", None))):
        raise TypeError(f"tokenizer must have an encode method (e.g. gpt2_tokenizer()), got {type(tokenizer).__name__}")
    if max_steps is not None:
        _positive_int(max_steps, "max_steps", minimum=0, what=" (None trains every epoch)")
    if checkpoint_every is not None:
        _positive_int(checkpoint_every, "checkpoint_every", what=" (None writes a checkpoint only at the end)")
        if checkpoint_path is None:
            raise ValueError(f"checkpoint_every={checkpoint_every} but checkpoint_path is None: pass "
                             "checkpoint_path='data/run.pth' (where to write them)")
    if checkpoint_path is not None and (not isinstance(checkpoint_path, (str, os.PathLike)) or not str(checkpoint_path)):
        raise TypeError(f"checkpoint_path must be a file path (str or Path) or None, got {checkpoint_path!r}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path (the file an earlier run wrote)")
    bad = _first_nonfinite(model.named_parameters())
    if bad:
        raise ValueError(f"the model's parameter {bad} holds NaN or inf before training started: "
                         "rebuild the model or load finite weights (load_checkpoint)")


def _read_training_state(checkpoint_path, model, optimizer, train_loader, device) -> dict:
    """The training checkpoint's payload, checked against this run (nothing is loaded into the model yet)."""
    if not Path(checkpoint_path).exists():
        raise FileNotFoundError(f"resume=True but there is no checkpoint at {checkpoint_path}: train once with "
                                "checkpoint_path set (resume=False), or check the path")
    state = read_checkpoint(checkpoint_path, map_location=device)
    missing = [k for k in (*TRAINING_STATE, "optimizer_state_dict") if k not in state]
    if missing:
        raise CheckpointError(
            f"{checkpoint_path} holds weights but no training state ({', '.join(missing[:3])}, ... missing): it was "
            "written by save_checkpoint, not by train_model_simple(checkpoint_path=...). To start from its weights, "
            "load_checkpoint(path, model) and train with resume=False"
        )
    n = len(train_loader)
    saved_n = state.get("train_batches")
    if (saved_n is not None and saved_n != n) or not (_is_int(state["batches_done"]) and 0 <= state["batches_done"] <= n):
        raise CheckpointError(
            f"{checkpoint_path} was written while training on {saved_n if saved_n is not None else 'another number of'} "
            f"batches per epoch; this train_loader has {n}: resume with the same data, batch_size and drop_last, "
            "or start afresh (resume=False)"
        )
    _check_fits(checkpoint_path, state, model, optimizer)
    return state


def train_model_simple(
    model,
    train_loader,
    val_loader,
    optimizer,
    device,
    num_epochs,
    eval_freq,
    eval_iter,
    start_context,
    tokenizer,
    *,
    checkpoint_path=None,
    checkpoint_every=None,
    resume=False,
    max_steps=None,
    progress=True,
    log_every=None,
    sample_eos_id=None,
):
    """The book's training loop, plus a progress bar, a NaN guard and checkpoints that resume exactly.

    Returns `(train_losses, val_losses, track_tokens_seen)`, one entry per evaluation (every `eval_freq` steps).
    With `checkpoint_path`, a checkpoint is written atomically every `checkpoint_every` steps and at the end;
    `resume=True` continues from it where it stopped (same batches, same random numbers), so an
    interrupted run ends with the same weights as an uninterrupted one. `max_steps` stops early (for a test
    or a quick look) after that many optimizer steps in total (0: none). Every argument is checked before the
    first step; a NaN or inf in the loss, the gradients or the updated weights stops training at that step.
    `log_every` prints only every that many steps' evaluation (default: every evaluation; all are returned).
    `sample_eos_id` stops the per-epoch sample there.
    """
    _check_training_args(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                         start_context, tokenizer, checkpoint_path, checkpoint_every, resume, max_steps)
    return _training_loop(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                          start_context, tokenizer, checkpoint_path, checkpoint_every, resume, max_steps, progress,
                          schedule=None, log_every=log_every, sample_eos_id=sample_eos_id)[:3]


def train_model(
    model,
    train_loader,
    val_loader,
    optimizer,
    device,
    num_epochs,
    eval_freq,
    eval_iter,
    start_context,
    tokenizer,
    *,
    warmup_steps=0,
    initial_lr=1e-5,
    min_lr=1e-5,
    peak_lr=None,
    max_norm=1.0,
    clip_from_step=None,
    checkpoint_path=None,
    checkpoint_every=None,
    resume=False,
    max_steps=None,
    progress=True,
    log_every=None,
    sample_eos_id=None,
):
    """`train_model_simple` plus appendix D: linear warmup, cosine decay and gradient clipping.

    Before optimizer step `s` (0-based) every parameter group's learning rate is set to
    `lr_at_step(s, num_epochs * len(train_loader), peak_lr, warmup_steps, initial_lr, min_lr)`; `peak_lr=None`
    takes the optimizer's learning rate when called. From step `clip_from_step` on (default: `warmup_steps`, the
    end of warmup; the printed book starts one step later, `warmup_steps + 1`) the gradients are clipped to the
    global norm `max_norm` (None: never). Returns `(train_losses, val_losses, track_tokens_seen, track_lrs)`,
    `track_lrs` one entry per step. Progress bar, NaN guard, checkpoints and exact resume as `train_model_simple`
    (the schedule is saved with the checkpoint; resuming with other schedule settings is an error);
    `log_every` and `sample_eos_id` as there.
    """
    from .schedule import _check_number, lr_at_step

    _check_training_args(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                         start_context, tokenizer, checkpoint_path, checkpoint_every, resume, max_steps)
    if peak_lr is None:
        peak_lr = optimizer.param_groups[0]["lr"]
    if isinstance(peak_lr, torch.Tensor):
        peak_lr = peak_lr.item()
    total_steps = num_epochs * len(train_loader)
    lr_at_step(0, total_steps, peak_lr, warmup_steps, initial_lr, min_lr)  # checks every schedule argument
    if max_norm is not None:
        _check_number("max_norm", max_norm, low=0.0, low_inclusive=False)
    if clip_from_step is None:
        clip_from_step = warmup_steps
    _positive_int(clip_from_step, "clip_from_step", minimum=0, what=" (the first step whose gradients are clipped)")
    schedule = {"total_steps": int(total_steps), "peak_lr": float(peak_lr), "warmup_steps": int(warmup_steps),
                "initial_lr": float(initial_lr), "min_lr": float(min_lr),
                "max_norm": None if max_norm is None else float(max_norm), "clip_from_step": int(clip_from_step)}
    return _training_loop(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                          start_context, tokenizer, checkpoint_path, checkpoint_every, resume, max_steps, progress,
                          schedule=schedule, log_every=log_every, sample_eos_id=sample_eos_id)


def _training_loop(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                   start_context, tokenizer, checkpoint_path, checkpoint_every, resume, max_steps, progress, schedule,
                   log_every=None, sample_eos_id=None):
    """The loop both trainers share; `schedule` None (train_model_simple) or train_model's settings.

    Returns `(train_losses, val_losses, track_tokens_seen, track_lrs)`.
    """
    from .schedule import lr_at_step

    if log_every is not None:
        _positive_int(log_every, "log_every", what=" (print every that many steps' evaluation; None prints all)")
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1
    start_epoch, skip_batches, rng_now = 0, 0, None
    if resume:
        state = _read_training_state(checkpoint_path, model, optimizer, train_loader, device)
        if schedule is not None and state.get("schedule") != schedule:
            raise CheckpointError(
                f"{checkpoint_path} was written with the schedule {state.get('schedule')}, not {schedule}: resume "
                "with the same warmup_steps, learning rates, max_norm, clip_from_step, epochs and data"
                + (" (it was written by train_model_simple: resume with that)" if "schedule" not in state else "")
            )
        track_lrs = list(state.get("track_lrs", []))
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
        train_losses, val_losses = state["train_losses"], state["val_losses"]
        track_tokens_seen, tokens_seen, global_step = state["track_tokens_seen"], state["tokens_seen"], state["global_step"]
        start_epoch, skip_batches = state["epoch"], state["batches_done"]
        if skip_batches >= len(train_loader):  # stopped at the end of an epoch: go on with the next
            start_epoch, skip_batches = start_epoch + 1, 0
            torch.set_rng_state(state["rng_now"].cpu())
        else:  # stopped mid-epoch: replay the epoch's shuffle, then restore the random state of the stop
            torch.set_rng_state(state["rng_epoch_start"].cpu())
            rng_now = state["rng_now"].cpu()
    if max_steps is not None and global_step + 1 >= max_steps:  # max_steps=0 (or already reached): no step
        return train_losses, val_losses, track_tokens_seen, track_lrs

    total_steps = num_epochs * len(train_loader)
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    bar = _progress(total_steps, global_step + 1, progress)

    def checkpoint(epoch, batches_done, rng_epoch_start):
        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path, model, optimizer, epoch=epoch, batches_done=batches_done, global_step=global_step,
                tokens_seen=tokens_seen, train_losses=train_losses, val_losses=val_losses,
                track_tokens_seen=track_tokens_seen, rng_epoch_start=rng_epoch_start, rng_now=torch.get_rng_state(),
                train_batches=len(train_loader),
                **({} if schedule is None else {"schedule": schedule, "track_lrs": track_lrs}),
            )

    try:
        for epoch in range(start_epoch, num_epochs):
            model.train()
            rng_epoch_start = torch.get_rng_state()
            batches = iter(train_loader)
            for _ in range(skip_batches):  # replay the epoch's order up to where the checkpoint stopped
                next(batches)
            batches_done = skip_batches
            if rng_now is not None:
                torch.set_rng_state(rng_now)
                rng_now = None
            skip_batches = 0
            for input_batch, target_batch in batches:
                optimizer.zero_grad()
                if schedule is not None:  # appendix D: this step's learning rate (warmup, then cosine decay)
                    lr = lr_at_step(global_step + 1, schedule["total_steps"], schedule["peak_lr"],
                                    schedule["warmup_steps"], schedule["initial_lr"], schedule["min_lr"])
                    for param_group in optimizer.param_groups:
                        param_group["lr"] = lr
                    track_lrs.append(lr)
                loss = calc_loss_batch(input_batch, target_batch, model, device)
                check_finite(loss, global_step + 1, epoch + 1, checkpoint_path=checkpoint_path)
                loss.backward()
                check_step_finite(model, optimizer, loss, global_step + 1, epoch + 1, stage="gradients",
                                  checkpoint_path=checkpoint_path)
                if (schedule is not None and schedule["max_norm"] is not None
                        and global_step + 1 >= schedule["clip_from_step"]):  # appendix D: gradient clipping
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=schedule["max_norm"])
                optimizer.step()
                check_step_finite(model, optimizer, loss, global_step + 1, epoch + 1, stage="weights",
                                  checkpoint_path=checkpoint_path)
                tokens_seen += input_batch.numel()
                global_step += 1
                batches_done += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                    train_losses.append(train_loss)
                    val_losses.append(val_loss)
                    track_tokens_seen.append(tokens_seen)
                    if global_step % (log_every or eval_freq) == 0:
                        bar.write(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
                if checkpoint_every and global_step % checkpoint_every == 0:
                    checkpoint(epoch, batches_done, rng_epoch_start)
                if max_steps is not None and global_step + 1 >= max_steps:
                    checkpoint(epoch, batches_done, rng_epoch_start)
                    return train_losses, val_losses, track_tokens_seen, track_lrs
            if start_context is not None and tokenizer is not None:
                bar.clear()
                generate_and_print_sample(model, tokenizer, device, start_context, eos_id=sample_eos_id)
        checkpoint(num_epochs, 0, torch.get_rng_state())
    finally:
        bar.close()
    return train_losses, val_losses, track_tokens_seen, track_lrs


def perplexity(loss: float) -> float:
    """exp(loss): the number of tokens the model is, in effect, choosing between."""
    if isinstance(loss, torch.Tensor):
        loss = loss.item()
    if not isinstance(loss, numbers.Real) or isinstance(loss, bool) or not math.isfinite(loss):
        raise ValueError(f"loss must be a finite number (a cross-entropy, e.g. 4.6), got {loss!r}")
    return math.exp(loss)
