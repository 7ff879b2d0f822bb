"""What the book's training loops get beyond the book, written once.

Always on, one line in each loop: `check_finite(loss, step)`, which stops at a NaN or inf loss before it reaches
the weights. Only when the caller asks, by passing `extras=TrainingExtras(...)`: checkpoints every N steps and
exact resume, a stop after `max_steps`, only every `log_every`-th evaluation printed, and the fuller guard
(gradients checked before each optimizer step, weights after it). The loop calls the extras in one line at each
point where they join it: `start` (before the first step), `skip_epoch`, `skip_batch`, `shows`, `after_step`.
"""

from __future__ import annotations

import torch

from .checkpoint import (
    CheckpointError,
    NonFiniteLossError,
    check_fits,
    check_path,
    first_nonfinite,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trained_parameters,
)
from .checks import check_int, is_int


def check_finite(loss, step: int) -> None:
    """NonFiniteLossError when `loss` (a 0-dim tensor) of step `step` is NaN or inf: before its backward pass."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"the loss became {loss.item()} at step {step}: training stopped before the backward pass, so "
                                 "the weights are still finite. Lower the learning rate or check the inputs (at step 0: "
                                 "whether the model's weights hold NaN or inf), then train again")


class TrainingExtras:
    """The extras a caller asks a training loop for (all optional): a checkpoint at `path` every `every` steps and
    at the end (`resume=True` continues from it exactly: same weights, optimizer, batches and random numbers as an
    uninterrupted run), a stop after `max_steps` steps, only every `log_every`-th step's evaluation printed, and
    with `check_steps` the gradients checked before each optimizer step and the weights after it; `meta`: more
    fields every checkpoint holds (e.g. the model's config)."""

    STATE = ("loop", "epoch", "batches_done", "global_step", "tokens_seen", "history", "rng_epoch_start", "rng_now",
             "train_batches", "settings")

    def __init__(self, path=None, every=None, resume=False, max_steps=None, log_every=None, check_steps=True, meta=None):
        self.path = None if path is None else check_path(path)
        for name, value, minimum in (("every", every, 1), ("max_steps", max_steps, 0), ("log_every", log_every, 1)):
            if value is not None:
                check_int(value, name, minimum=minimum, hint="None: no limit" if name == "max_steps" else "")
        if (every is not None or resume) and self.path is None:
            raise ValueError("every and resume need a checkpoint path: TrainingExtras(path, every=..., resume=...)")
        self.every, self.resume, self.max_steps, self.log_every = every, bool(resume), max_steps, log_every
        self.check_steps, self.meta, self.hooks = check_steps, meta or {}, []

    # --- the join points, in the order a loop meets them ---------------------------------------------------

    def start(self, model, optimizer, train_loader, num_epochs, loop="train_model_simple", settings=None, **history):
        """Before the first step: the guard's hooks, and when resuming the checkpoint's weights, optimizer state and
        `history` lists (by name, filled in place). Returns `(tokens_seen, global_step)` to go on from ((0, -1) afresh)."""
        self.model, self.optimizer, self.loader, self.history = model, optimizer, train_loader, history
        self.loop, self.settings, self.total = loop, settings or {}, num_epochs * len(train_loader)
        self.start_epoch, self.skip, self.rng_resume, self.rng_now = 0, 0, None, None
        self.step, self.tokens_seen, self.epoch, self.batches_done, self.stopped = 0, 0, 0, 0, False
        if self.path is not None and loop == "train_classifier_simple":
            raise ValueError("train_classifier_simple takes TrainingExtras without a path (max_steps, log_every, the "
                             "step guard): its checkpoints would miss the accuracies measured after each epoch")
        if self.resume:
            self.restore(read_resumable(self, model, optimizer, train_loader, loop, self.settings))
        self.remove_hooks()  # a run stopped by an error left its hooks on the optimizer
        if self.check_steps and self.step < min(self.total, self.max_steps if self.max_steps is not None else self.total):
            self.trained = trained_parameters(model, optimizer)
            self.hooks = [optimizer.register_step_pre_hook(self.check_gradients),
                          optimizer.register_step_post_hook(self.check_weights)]
        return self.tokens_seen, self.step - 1

    def skip_epoch(self, epoch: int) -> bool:
        """True for an epoch not to run: finished before a resume, or after `max_steps`. Else notes the random state
        the epoch starts with (a checkpoint mid-epoch replays its shuffle) and gives a DistributedSampler the epoch."""
        if epoch < self.start_epoch or (self.max_steps is not None and self.step >= self.max_steps):
            self.stopped = self.stopped or epoch >= self.start_epoch
            return True
        if self.rng_resume is not None:  # the epoch a resumed run stopped in: replay its shuffle
            set_rng_state(self.rng_resume)
            self.rng_resume = None
        self.epoch, self.batches_done, self.rng_epoch_start = epoch, 0, rng_state()
        if hasattr(getattr(self.loader, "sampler", None), "set_epoch"):  # a DistributedSampler: this epoch's order
            self.loader.sampler.set_epoch(epoch)
        return False

    def skip_batch(self) -> bool:
        """True for a batch a resumed run had already trained on in this epoch (the same batches come again)."""
        if self.skip:
            self.skip, self.batches_done = self.skip - 1, self.batches_done + 1
            return True
        if self.rng_now is not None:  # the first new batch: the random state of the moment the run stopped
            set_rng_state(self.rng_now)
            self.rng_now = None
        return False

    def shows(self, global_step: int) -> bool:
        """Whether to print the evaluation of step `global_step` (with `log_every`: every that many steps)."""
        return self.log_every is None or global_step % self.log_every == 0

    def after_step(self, global_step: int, tokens_seen: int) -> bool:
        """After each step: a checkpoint when due (and at the end, or at `max_steps`); True when `max_steps` is reached
        before the epoch's last batch (the loop breaks; at the last batch it ends by itself, and the bar shows all)."""
        self.step, self.tokens_seen, self.batches_done = global_step + 1, tokens_seen, self.batches_done + 1
        self.stopped = self.max_steps is not None and self.step >= self.max_steps
        if self.stopped or self.step == self.total or (self.every and global_step % self.every == 0):
            self.save()
        if self.stopped or self.step == self.total:
            self.remove_hooks()
        return self.stopped and self.batches_done < len(self.loader)

    # --- saving and resuming ------------------------------------------------------------------------------

    def save(self) -> None:
        """The loop's state at `path` (one save_checkpoint file), if there is a path."""
        if self.path is not None:
            save_checkpoint(
                self.path, self.model, self.optimizer, loop=self.loop, epoch=self.epoch,
                batches_done=self.batches_done, global_step=self.step - 1, tokens_seen=self.tokens_seen,
                history={name: list(h) for name, h in self.history.items()}, rng_epoch_start=self.rng_epoch_start,
                rng_now=rng_state(), train_batches=len(self.loader), settings=self.settings, **self.meta)

    def restore(self, state: dict) -> None:
        """Load a checkpoint's weights, optimizer state, history and counters; plan the batches to skip."""
        self.model.load_state_dict(state["model_state_dict"])
        self.optimizer.load_state_dict(state["optimizer_state_dict"])
        for name, saved in state["history"].items():
            self.history[name][:] = saved
        self.tokens_seen, self.step = state["tokens_seen"], state["global_step"] + 1
        self.start_epoch, self.skip = state["epoch"], state["batches_done"]
        if self.skip >= len(self.loader):  # stopped at the end of an epoch: go on with the next
            self.start_epoch, self.skip = self.start_epoch + 1, 0
            set_rng_state(state["rng_now"])
        else:  # stopped mid-epoch: replay the epoch's shuffle, then restore the random state of the stop
            self.rng_resume, self.rng_now = state["rng_epoch_start"], state["rng_now"]

    # --- the fuller non-finite guard: optimizer step hooks ---------------------------------------------------

    def check_gradients(self, optimizer, args, kwargs) -> None:
        """Before `optimizer.step()`: NonFiniteLossError if a gradient holds NaN or inf (the weights are untouched)."""
        bad = first_nonfinite((n, p.grad) for n, p in self.trained)
        if bad:
            raise NonFiniteLossError(
                f"the gradients became non-finite at step {self.step} (epoch {self.epoch + 1}), first in {bad}: "
                "training stopped before the optimizer step, so the weights are still finite. Lower the learning "
                f"rate, or clip the gradients (torch.nn.utils.clip_grad_norm_), then {self.then()}.")

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
        if self.path is not None and self.path.is_file():
            return "resume from the last checkpoint (checkpoints never hold non-finite weights)"
        return "train again from the start (rebuild or reload the model)"

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


def read_resumable(extras, model, optimizer, train_loader, loop: str, settings: dict) -> dict:
    """The checkpoint at `extras.path` checked against this run (nothing is loaded into the model yet)."""
    path = extras.path
    if not path.exists():
        raise FileNotFoundError(f"resume=True but there is no checkpoint at {path}: train once with "
                                "TrainingExtras(path) and resume=False, or check the path")
    state = read_checkpoint(path, map_location=next(model.parameters()).device)
    missing = [k for k in (*TrainingExtras.STATE, "optimizer_state_dict") if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} holds weights but no training state ({', '.join(missing[:3])}, ... missing): it was written by "
            "save_checkpoint, not by a training loop's TrainingExtras. To start from its weights, "
            "load_checkpoint(path, model) and train with resume=False")
    if state["loop"] != loop or state["settings"] != settings:
        raise CheckpointError(
            f"{path} was written by {state['loop']} with the settings {state['settings']}, not by {loop} with "
            f"{settings}: resume with {state['loop']} and the same schedule settings (warmup_steps, learning "
            "rates, max_norm, clip_from_step, epochs and data)")
    n = len(train_loader)
    if state["train_batches"] != n or not (is_int(state["batches_done"]) and 0 <= state["batches_done"] <= n):
        raise CheckpointError(
            f"{path} was written while training on {state['train_batches']} batches per epoch; this train_loader "
            f"has {n}: resume with the same data, batch_size and drop_last, or start afresh (resume=False)")
    check_fits(path, state, model, optimizer)
    return state
