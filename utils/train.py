"""Chapter 5 and appendix D: losses, evaluation and the book's training loops, written as the book writes them.

Beyond the book, each loop has a progress bar (tqdm on the loader) and stops at a NaN or inf loss
(`check_finite`); the extras a caller asks for (checkpoints and exact resume, max_steps, log_every) come in a
`TrainingExtras` of `utils/extras.py`, called in one line where each joins the loop. The learning-rate schedule
is `utils/schedule.py`'s `lr_at_step`.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .checks import check_int, check_loader, check_training_args, is_int
from .extras import check_finite
from .generate import generate, text_to_token_ids, token_ids_to_text
from .schedule import lr_at_step


def set_seed(seed: int = 123) -> None:
    """Seed torch's CPU (and CUDA) random generators."""
    if not is_int(seed):
        raise TypeError(f"seed must be a whole number (the book uses 123), got {seed!r}")
    torch.manual_seed(seed)


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross-entropy of next-token predictions; inputs and targets `(batch, num_tokens)`."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (batch, num_tokens, vocab_size)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None, loss_fn=None):
    """Average loss over the first `num_batches` batches (all if None); `loss_fn` defaults to calc_loss_batch."""
    total_loss = 0.
    check_loader(data_loader)  # beyond the book: an empty loader is an error that says what to do
    if num_batches is None:
        num_batches = len(data_loader)
    else:
        check_int(num_batches, "num_batches", hint="None means every batch")
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            loss = (loss_fn or calc_loss_batch)(input_batch, target_batch, model, device)
            total_loss += loss.item()
        else:
            break
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter, loss_fn=None):
    """(train loss, val loss) over `eval_iter` batches each, in eval mode without gradients (`loss_fn` as in calc_loss_loader)."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter, loss_fn=loss_fn)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter, loss_fn=loss_fn)
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
        decoded_text = token_ids_to_text(token_ids, tokenizer)
        print(decoded_text.replace("\n", " "))  # Compact print format
    model.train()


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                       eval_freq, eval_iter, start_context, tokenizer, *, extras=None, progress=True,
                       sample_tokens=50, sample_eos_id=None):
    """The book's training loop. Returns `(train_losses, val_losses, track_tokens_seen)`, one entry per evaluation.

    Beyond the book: a progress bar, a stop at a NaN or inf loss, and only when asked, `extras` (a TrainingExtras
    of utils/extras.py: checkpoints and exact resume, max_steps, log_every); the sample after each epoch is
    `sample_tokens` long and stops at `sample_eos_id`.
    """
    check_training_args(model, optimizer, train_loader, val_loader, num_epochs, eval_freq, eval_iter, start_context, tokenizer)
    # Initialize lists to track losses and tokens seen
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    if extras:  # the extras begin (resuming: the checkpoint's weights, optimizer state, lists and counters)
        tokens_seen, global_step = extras.start(model, optimizer, train_loader, num_epochs, train_losses=train_losses,
                                                val_losses=val_losses, track_tokens_seen=track_tokens_seen)

    # Main training loop
    for epoch in range(num_epochs):
        if extras and extras.skip_epoch(epoch):  # finished before a resume, or after max_steps
            continue
        model.train()  # Set model to training mode

        for input_batch, target_batch in tqdm(train_loader, f"Epoch {epoch + 1}", disable=not progress):
            if extras and extras.skip_batch():  # trained on before a resume
                continue
            optimizer.zero_grad()  # Reset loss gradients from previous batch iteration
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            check_finite(loss, global_step + 1)  # beyond the book: stop at a NaN or inf loss
            loss.backward()  # Calculate loss gradients
            optimizer.step()  # Update model weights using loss gradients
            tokens_seen += input_batch.numel()
            global_step += 1

            # Optional evaluation step
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                if not extras or extras.shows(global_step):  # print (above the progress bar)
                    tqdm.write(f"Ep {epoch + 1} (Step {global_step:06d}): "
                               f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            if extras and extras.after_step(global_step, tokens_seen):  # a checkpoint when due; True at max_steps
                break

        # Print a sample text after each epoch
        if start_context is not None:
            generate_and_print_sample(model, tokenizer, device, start_context, sample_tokens, sample_eos_id)

    return train_losses, val_losses, track_tokens_seen


def train_model(model, train_loader, val_loader, optimizer, device, n_epochs,
                eval_freq, eval_iter, start_context, tokenizer, warmup_steps,
                initial_lr=3e-05, min_lr=1e-6, *, max_norm=1.0, clip_from_step=None, total_steps=None,
                extras=None, progress=True, sample_tokens=50, sample_eos_id=None):
    """Appendix D's loop: `train_model_simple` with linear warmup, cosine decay and gradient clipping.

    Returns `(train_losses, val_losses, track_tokens_seen, track_lrs)`, `track_lrs` one entry per step. The peak
    learning rate is the optimizer's; gradients are clipped to the global norm `max_norm` (None: never) from step
    `clip_from_step` on (default `warmup_steps`; the printed book's `warmup_steps + 1`); the schedule spans
    `total_steps` (default: every step of `n_epochs` epochs). Beyond the book as in `train_model_simple`.
    """
    check_training_args(model, optimizer, train_loader, val_loader, n_epochs, eval_freq, eval_iter, start_context,
                        tokenizer, epochs_name="n_epochs")
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1

    # Retrieve the maximum learning rate from the optimizer
    peak_lr = optimizer.param_groups[0]["lr"]
    # Calculate the total number of iterations in the training process
    total_training_steps = total_steps or len(train_loader) * n_epochs
    clip_from_step = warmup_steps if clip_from_step is None else clip_from_step
    if extras:  # resuming: as in train_model_simple, and only with the same schedule
        tokens_seen, global_step = extras.start(
            model, optimizer, train_loader, n_epochs, "train_model", dict(
                total_steps=total_training_steps, peak_lr=peak_lr, warmup_steps=warmup_steps, initial_lr=initial_lr,
                min_lr=min_lr, max_norm=max_norm, clip_from_step=clip_from_step),
            train_losses=train_losses, val_losses=val_losses, track_tokens_seen=track_tokens_seen, track_lrs=track_lrs)

    for epoch in range(n_epochs):
        if extras and extras.skip_epoch(epoch):
            continue
        model.train()
        for input_batch, target_batch in tqdm(train_loader, f"Epoch {epoch + 1}", disable=not progress):
            if extras and extras.skip_batch():
                continue
            optimizer.zero_grad()
            global_step += 1

            # The learning rate of this step: linear warmup, then cosine decay (utils/schedule.py)
            lr = lr_at_step(global_step, total_training_steps, peak_lr, warmup_steps, initial_lr, min_lr)
            # Apply the calculated learning rate to the optimizer
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            track_lrs.append(lr)  # Store the current learning rate

            # Calculate and backpropagate the loss
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            check_finite(loss, global_step)  # beyond the book: stop at a NaN or inf loss
            loss.backward()

            # Apply gradient clipping after the warmup phase to avoid exploding gradients
            if max_norm is not None and global_step >= clip_from_step:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)

            optimizer.step()
            tokens_seen += input_batch.numel()

            # Periodically evaluate the model on the training and validation sets
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                if not extras or extras.shows(global_step):
                    tqdm.write(f"Ep {epoch + 1} (Step {global_step:06d}): "
                               f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            if extras and extras.after_step(global_step, tokens_seen):
                break

        # Generate and print a sample from the model to monitor progress
        if start_context is not None:
            generate_and_print_sample(model, tokenizer, device, start_context, sample_tokens, sample_eos_id)

    return train_losses, val_losses, track_tokens_seen, track_lrs


def perplexity(loss: float) -> float:
    """exp(loss): the number of tokens the model is, in effect, choosing between (inf for a diverged loss)."""
    if isinstance(loss, torch.Tensor):
        loss = loss.item()
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or math.isnan(loss):
        raise ValueError(f"loss must be a number (a cross-entropy, e.g. 4.6), got {loss!r}")
    try:
        return math.exp(loss)
    except OverflowError:  # a diverged loss (e.g. 800): beyond the largest float
        return math.inf
