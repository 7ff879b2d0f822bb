"""The extras around the book's training loops, written once: checkpoints, exact resume, the non-finite guard.

One checkpoint format: `save_checkpoint` writes the model's (and optimizer's) state plus tensors, numbers,
strings, lists and dicts, atomically; `read_checkpoint` reads it with `torch.load(weights_only=True)` (loading
never runs code) and names what is wrong. `Checkpointer` saves a loop's state every N steps and resumes it
exactly; `TrainingRun` is what a loop of `train.py` or `spam.py` gets beyond the book, each piece in one line.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path

import torch

from .checks import atomic_write, check_int, is_int


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


def save_checkpoint(path, model, optimizer=None, **state) -> Path:
    """Save model (+ optimizer) state and `state` (tensors, numbers, strings, lists, dicts) to `path` atomically.

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
    payload = {"model_state_dict": model.state_dict(), **state}
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


def check_fits(path, payload: dict, model, optimizer=None) -> None:
    """CheckpointError naming every tensor of the checkpoint that does not fit `model` (or `optimizer`)."""
    saved, own = payload["model_state_dict"], model.state_dict()
    problems = [f"missing {k} (the model has shape {tuple(v.shape)})" for k, v in own.items() if k not in saved]
    problems += [f"unexpected {k} of shape {tuple(getattr(v, 'shape', ()))}" for k, v in saved.items() if k not in own]
    problems += [f"{k}: the checkpoint has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}"
                 for k, v in saved.items() if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape)]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; ... and {len(problems) - 4} more" if len(problems) > 4 else "")
        hint = (f" It was saved with config {payload['config']}: build GPTModel(that config)." if isinstance(
            payload.get("config"), dict) else " Build the model with the config it was trained with.")
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


# --- checkpoints of a training loop, and exact resume -----------------------------------------------------


class Checkpointer:
    """Writes a training loop's state to `path` every `every` steps (None: only at the end); `resume=True`
    continues from it exactly (same weights, optimizer, batches and random numbers as an uninterrupted run)."""

    STATE = ("loop", "epoch", "batches_done", "global_step", "tokens_seen", "history", "rng_epoch_start", "rng_now",
             "train_batches", "settings")

    def __init__(self, path, every=None, resume=False):
        self.path = check_path(path)
        if every is not None:
            check_int(every, "every", hint="None writes a checkpoint only at the end of training")
        self.every, self.resume = every, bool(resume)

    def due(self, global_step: int) -> bool:
        """True after the steps whose checkpoint is due (every `every` steps, counted from step 0)."""
        return bool(self.every) and global_step % self.every == 0

    def save(self, model, optimizer, **state) -> None:
        save_checkpoint(self.path, model, optimizer, **state)

    def read(self, model, optimizer, train_loader, loop: str, settings: dict, map_location="cpu") -> dict:
        """The saved state, checked against this run (nothing is loaded into the model yet)."""
        if not self.path.exists():
            raise FileNotFoundError(f"resume=True but there is no checkpoint at {self.path}: train once with "
                                    "Checkpointer(path) and resume=False, or check the path")
        state = read_checkpoint(self.path, map_location=map_location)
        missing = [k for k in (*self.STATE, "optimizer_state_dict") if k not in state]
        if missing:
            raise CheckpointError(
                f"{self.path} holds weights but no training state ({', '.join(missing[:3])}, ... missing): it was "
                "written by save_checkpoint, not by a training loop's Checkpointer. To start from its weights, "
                "load_checkpoint(path, model) and train with resume=False")
        if state["loop"] != loop or state["settings"] != settings:
            raise CheckpointError(
                f"{self.path} was written by {state['loop']} with the settings {state['settings']}, not by {loop} with "
                f"{settings}: resume with {state['loop']} and the same schedule settings (warmup_steps, learning "
                "rates, max_norm, clip_from_step, epochs and data)")
        n = len(train_loader)
        if state["train_batches"] != n or not (is_int(state["batches_done"]) and 0 <= state["batches_done"] <= n):
            raise CheckpointError(
                f"{self.path} was written while training on {state['train_batches']} batches per epoch; this "
                f"train_loader has {n}: resume with the same data, batch_size and drop_last, or start afresh "
                "(resume=False)")
        check_fits(self.path, state, model, optimizer)
        return state


# --- what a book loop gets beyond the book ------------------------------------------------------------------


class TrainingRun:
    """The extras of a book loop, each joining it in one line: a progress bar, the non-finite guard (gradients
    checked before `optimizer.step()`, weights after it), `max_steps`, `log_every`, and with a `Checkpointer`
    its checkpoints and exact resume. Use it as a context manager around the loop (`with run:`)."""

    def __init__(self, model, optimizer, train_loader, num_epochs, checkpointer=None, max_steps=None, progress=True,
                 log_every=None, loop="train_model_simple", settings=None):
        if checkpointer is not None and not isinstance(checkpointer, Checkpointer):
            raise TypeError(f"checkpointer must be a Checkpointer(path, every, resume) or None, got {checkpointer!r}")
        for name, value in (("max_steps", max_steps), ("log_every", log_every)):
            if value is not None:
                check_int(value, name, minimum=0 if name == "max_steps" else 1, hint="None: no limit")
        self.model, self.optimizer, self.loader, self.num_epochs = model, optimizer, train_loader, num_epochs
        self.checkpointer, self.max_steps, self.progress, self.log_every = checkpointer, max_steps, progress, log_every
        self.loop, self.settings = loop, settings or {}
        self.step, self.epoch, self.start_epoch, self.skip, self.batches_done = 0, 0, 0, 0, 0
        self.stopped, self.history, self.tokens_seen, self.rng_now, self.rng_epoch_start = False, [], 0, None, None

    def resume(self, tokens_seen, global_step, *history):
        """Keep the loop's history lists (filled in place when resuming); return `(tokens_seen, global_step)`."""
        self.history = history
        if self.checkpointer is not None and self.checkpointer.resume:
            device = next(self.model.parameters()).device
            state = self.checkpointer.read(self.model, self.optimizer, self.loader, self.loop, self.settings, device)
            self.model.load_state_dict(state["model_state_dict"])
            self.optimizer.load_state_dict(state["optimizer_state_dict"])
            for mine, saved in zip(history, state["history"]):
                mine[:] = saved
            tokens_seen, global_step = state["tokens_seen"], state["global_step"]
            self.start_epoch, self.skip = state["epoch"], state["batches_done"]
            if self.skip >= len(self.loader):  # stopped at the end of an epoch: go on with the next
                self.start_epoch, self.skip = self.start_epoch + 1, 0
                set_rng_state(state["rng_now"])
            else:  # stopped mid-epoch: replay the epoch's shuffle, then restore the random state of the stop
                set_rng_state(state["rng_epoch_start"])
                self.rng_now = state["rng_now"]
        self.tokens_seen, self.step = tokens_seen, global_step + 1
        return tokens_seen, global_step

    def __enter__(self):
        from tqdm import tqdm

        total = self.num_epochs * len(self.loader)
        self.bar = tqdm(total=total if self.max_steps is None else min(total, self.max_steps), initial=self.step,
                        disable=not self.progress, unit="step", mininterval=1.0, ncols=90)
        self.trained = trained_parameters(self.model, self.optimizer)
        self.hooks = [self.optimizer.register_step_pre_hook(self.check_gradients),
                      self.optimizer.register_step_post_hook(self.check_weights)]
        return self

    def __exit__(self, error_type, error, traceback):
        for hook in self.hooks:
            hook.remove()
        self.bar.close()
        if error_type is None and not self.stopped:  # the end of training: the last checkpoint
            self.save(self.num_epochs, 0, rng_state())

    def epochs(self):
        """`range(num_epochs)`, from the epoch a resumed run stopped in; nothing once `max_steps` is reached."""
        for epoch in range(self.start_epoch, self.num_epochs):
            if self.max_steps is not None and self.step >= self.max_steps:
                self.stopped = True
                return
            self.epoch = epoch
            yield epoch

    def batches(self):
        """The batches of `train_loader`, from the batch a resumed run stopped at (same order, same random state)."""
        self.rng_epoch_start = rng_state()
        if hasattr(getattr(self.loader, "sampler", None), "set_epoch"):  # a DistributedSampler: this epoch's order
            self.loader.sampler.set_epoch(self.epoch)
        batches = iter(self.loader)
        for _ in range(self.skip):
            next(batches)
        self.batches_done, self.skip = self.skip, 0
        if self.rng_now is not None:
            set_rng_state(self.rng_now)
            self.rng_now = None
        for batch in batches:
            yield batch
        self.bar.clear()  # the sample after the epoch goes on a line of its own

    def print(self, line: str, global_step=None) -> None:
        """Print `line` above the progress bar (with `log_every`, only every that many steps)."""
        if global_step is None or self.log_every is None or global_step % self.log_every == 0:
            self.bar.write(line)

    def step_done(self, loss, global_step: int, tokens_seen: int) -> bool:
        """After each step: the bar, a checkpoint when due; True when `max_steps` is reached (checkpoint written)."""
        self.step, self.tokens_seen, self.batches_done = global_step + 1, tokens_seen, self.batches_done + 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        self.stopped = self.max_steps is not None and self.step >= self.max_steps
        if self.stopped or (self.checkpointer is not None and self.checkpointer.due(global_step)):
            self.save(self.epoch, self.batches_done, self.rng_epoch_start)
        return self.stopped

    def save(self, epoch, batches_done, rng_epoch_start) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(
                self.model, self.optimizer, loop=self.loop, epoch=epoch, batches_done=batches_done,
                global_step=self.step - 1, tokens_seen=self.tokens_seen, history=[list(h) for h in self.history],
                rng_epoch_start=rng_epoch_start, rng_now=rng_state(), train_batches=len(self.loader),
                settings=self.settings)

    def check_gradients(self, optimizer, args, kwargs) -> None:
        """Before `optimizer.step()`: NonFiniteLossError if a gradient holds NaN or inf (the weights are untouched)."""
        bad = first_nonfinite((n, p.grad) for n, p in self.trained)
        if bad:
            raise NonFiniteLossError(
                f"the gradients became non-finite at step {self.step} (epoch {self.epoch + 1}), first in {bad} (a NaN "
                "or inf loss makes them so): training stopped before the optimizer step, so the weights are still "
                "finite. Lower the learning rate, check the inputs for bad token ids, or clip the gradients "
                f"(torch.nn.utils.clip_grad_norm_), then {self.then()}.")

    def check_weights(self, optimizer, args, kwargs) -> None:
        """After `optimizer.step()`: NonFiniteLossError if the update made a weight NaN or inf."""
        bad = first_nonfinite(self.trained)
        if bad:
            lrs = sorted({g["lr"] for g in optimizer.param_groups if isinstance(g.get("lr"), (int, float))})
            raise NonFiniteLossError(
                f"the weights became non-finite in the optimizer step of step {self.step} (epoch {self.epoch + 1}), "
                f"first in {bad}, although the gradients were finite: the learning rate "
                f"({', '.join(f'{lr:g}' for lr in lrs)}) is too high. The model in memory is now unusable and no "
                f"checkpoint was written from it: lower the learning rate and {self.then()}.")

    def then(self) -> str:
        if self.checkpointer is not None and self.checkpointer.path.is_file():
            return "resume from the last checkpoint (checkpoints never hold non-finite weights)"
        return "train again from the start (rebuild or reload the model)"
