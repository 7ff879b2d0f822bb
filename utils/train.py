"""Chapter 5: device choice, seeding, losses, evaluation and the training loop (with checkpoints)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .generate import generate, text_to_token_ids, token_ids_to_text


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


def get_device(preferred: str | None = None) -> torch.device:
    """`preferred` or `$LLM_DEVICE` if set, else cuda > mps > cpu."""
    name = preferred or os.environ.get("LLM_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int = 123) -> None:
    """Seed torch's CPU (and CUDA) random generators."""
    torch.manual_seed(seed)


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross-entropy of next-token predictions; inputs and targets `(batch, num_tokens)`."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (batch, num_tokens, vocab_size)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None, loss_fn=None):
    """Average loss over the first `num_batches` batches (all if None); `loss_fn` defaults to calc_loss_batch."""
    if len(data_loader) == 0:
        raise ValueError(
            "the data loader is empty: the text is too short for one batch "
            "(use a smaller batch_size or context length, or drop_last=False)"
        )
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total_loss += (loss_fn or calc_loss_batch)(input_batch, target_batch, model, device).item()
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """(train loss, val loss) over `eval_iter` batches each, in eval mode without gradients."""
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
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        token_ids = generate(model, encoded, max_new_tokens, context_size, eos_id=eos_id)
    print(token_ids_to_text(token_ids, tokenizer).replace("\n", " "))
    model.train()


def check_finite(loss: torch.Tensor, step: int, epoch: int) -> None:
    """Raise NonFiniteLossError if `loss` is NaN or infinite."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"the loss became {loss.item()} at step {step} (epoch {epoch}): training stopped before the "
            "weights were updated with it. Lower the learning rate, check the inputs for bad token ids, "
            "or resume from the last checkpoint."
        )


def save_checkpoint(path, model, optimizer=None, **state) -> Path:
    """Save model (+ optimizer) state and `state` to `path` atomically (write `path.tmp`, then rename)."""
    path = Path(path)
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


def load_checkpoint(path, model, optimizer=None, map_location="cpu") -> dict:
    """Load a `save_checkpoint` file into `model` (and `optimizer`); return the whole payload."""
    payload = torch.load(path, map_location=map_location, weights_only=False)
    model.load_state_dict(payload["model_state_dict"])
    if optimizer is not None and "optimizer_state_dict" in payload:
        optimizer.load_state_dict(payload["optimizer_state_dict"])
    return payload


def _progress(total, initial, enabled):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", mininterval=1.0, ncols=90)


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
    or a quick look) after that many optimizer steps in total. `log_every` prints only every that many steps'
    evaluation (default: every evaluation; all are returned). `sample_eos_id` stops the per-epoch sample there.
    """
    if len(train_loader) == 0:
        raise ValueError("the training loader is empty: use a smaller batch_size or context length")
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    start_epoch, skip_batches, rng_now = 0, 0, None
    if resume:
        if checkpoint_path is None or not Path(checkpoint_path).exists():
            raise FileNotFoundError(f"resume=True but there is no checkpoint at {checkpoint_path}")
        state = load_checkpoint(checkpoint_path, model, optimizer, map_location=device)
        train_losses, val_losses = state["train_losses"], state["val_losses"]
        track_tokens_seen, tokens_seen, global_step = state["track_tokens_seen"], state["tokens_seen"], state["global_step"]
        start_epoch, skip_batches = state["epoch"], state["batches_done"]
        if skip_batches >= len(train_loader):  # stopped at the end of an epoch: go on with the next
            start_epoch, skip_batches = start_epoch + 1, 0
            torch.set_rng_state(state["rng_now"])
        else:  # stopped mid-epoch: replay the epoch's shuffle, then restore the random state of the stop
            torch.set_rng_state(state["rng_epoch_start"])
            rng_now = state["rng_now"]

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
                loss = calc_loss_batch(input_batch, target_batch, model, device)
                check_finite(loss, global_step + 1, epoch + 1)
                loss.backward()
                optimizer.step()
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
                    return train_losses, val_losses, track_tokens_seen
            if start_context is not None and tokenizer is not None:
                bar.clear()
                generate_and_print_sample(model, tokenizer, device, start_context, eos_id=sample_eos_id)
        checkpoint(num_epochs, 0, torch.get_rng_state())
    finally:
        bar.close()
    return train_losses, val_losses, track_tokens_seen


def perplexity(loss: float) -> float:
    """exp(loss): the number of tokens the model is, in effect, choosing between."""
    return math.exp(loss)
