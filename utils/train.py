"""Chapter 5 and appendix D: losses, evaluation and the book's training loops, written as the book writes them.

What the loops do beyond the book (progress bar, non-finite guard, checkpoints and exact resume, `max_steps`)
lives in `utils/checkpoint.py` and joins each loop in one line (`TrainingRun`); the learning-rate schedule is
`utils/schedule.py`'s `lr_at_step`.
"""

from __future__ import annotations

import math

import torch

from .checkpoint import TrainingRun, first_nonfinite, trained_parameters
from .checks import check_int, check_loader, check_tokenizer, is_int
from .generate import generate, text_to_token_ids, token_ids_to_text
from .schedule import check_number, lr_at_step


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
        decoded_text = token_ids_to_text(token_ids, tokenizer)
        print(decoded_text.replace("\n", " "))  # Compact print format
    model.train()


def check_training_args(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                        start_context=None, tokenizer=None) -> None:
    """Every argument of a training loop checked before the first step (nothing is changed on an error)."""
    try:
        torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device={device!r} is not a device: use 'cpu', 'cuda' or 'mps' (or get_device())") from None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer (e.g. torch.optim.AdamW(model.parameters())), "
                        f"got {type(optimizer).__name__}")
    if not trained_parameters(model, optimizer):
        raise ValueError("the optimizer updates none of the model's parameters: create it with model.parameters()")
    check_loader(train_loader, "train_loader")
    check_loader(val_loader, "val_loader")
    check_int(num_epochs, "num_epochs")
    check_int(eval_freq, "eval_freq", hint="evaluate every eval_freq optimizer steps")
    check_int(eval_iter, "eval_iter", hint="the number of batches each evaluation averages over")
    if start_context is not None:
        if not isinstance(start_context, str) or not start_context:
            raise ValueError(f"start_context must be a non-empty string or None, got {start_context!r}")
        check_tokenizer(tokenizer)
    bad = first_nonfinite(model.named_parameters())
    if bad:
        raise ValueError(f"the model's parameter {bad} holds NaN or inf before training started: "
                         "rebuild the model or load finite weights (load_checkpoint)")


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                       eval_freq, eval_iter, start_context, tokenizer, *,
                       checkpointer=None, max_steps=None, progress=True, log_every=None, sample_eos_id=None):
    """The book's training loop. Returns `(train_losses, val_losses, track_tokens_seen)`, one entry per evaluation.

    Beyond the book (utils/checkpoint.py's TrainingRun): a progress bar; a stop at the first NaN or inf; with
    `checkpointer` (a Checkpointer) checkpoints and exact resume; `max_steps` optimizer steps at most; only every
    `log_every` steps' evaluation printed; the sample stops at `sample_eos_id`; `start_context=None`: no sample.
    """
    check_training_args(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                        start_context, tokenizer)
    run = TrainingRun(model, optimizer, train_loader, num_epochs, checkpointer, max_steps, progress, log_every)
    # Initialize lists to track losses and tokens seen
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = run.resume(0, -1, train_losses, val_losses, track_tokens_seen)

    with run:  # the progress bar, the non-finite guard and the checkpoints, until the loop ends
        for epoch in run.epochs():  # range(num_epochs), from where a resumed run stopped
            model.train()  # Set model to training mode
            for input_batch, target_batch in run.batches():  # train_loader's batches, from where it stopped
                optimizer.zero_grad()  # Reset loss gradients from previous batch iteration
                loss = calc_loss_batch(input_batch, target_batch, model, device)
                loss.backward()  # Calculate loss gradients
                optimizer.step()  # Update model weights (run's guard checks the gradients before, the weights after)
                tokens_seen += input_batch.numel()
                global_step += 1

                # Optional evaluation step
                if global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                    train_losses.append(train_loss)
                    val_losses.append(val_loss)
                    track_tokens_seen.append(tokens_seen)
                    run.print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                              f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}", global_step)
                if run.step_done(loss, global_step, tokens_seen):  # bar, checkpoint; True at max_steps
                    return train_losses, val_losses, track_tokens_seen

            # Print a sample text after each epoch
            if start_context is not None:
                generate_and_print_sample(model, tokenizer, device, start_context, eos_id=sample_eos_id)

    return train_losses, val_losses, track_tokens_seen


def train_model(model, train_loader, val_loader, optimizer, device, num_epochs,
                eval_freq, eval_iter, start_context, tokenizer, warmup_steps=0,
                initial_lr=1e-5, min_lr=1e-5, *, peak_lr=None, max_norm=1.0, clip_from_step=None,
                checkpointer=None, max_steps=None, progress=True, log_every=None, sample_eos_id=None):
    """Appendix D's loop: `train_model_simple` with linear warmup, cosine decay and gradient clipping.

    Returns `(train_losses, val_losses, track_tokens_seen, track_lrs)`, `track_lrs` one entry per step. The peak
    learning rate is the optimizer's (or `peak_lr`); gradients are clipped to the global norm `max_norm` (None:
    never) from step `clip_from_step` on (default `warmup_steps`; the printed book's `warmup_steps + 1`).
    The extras as in `train_model_simple` (the schedule is saved with a checkpoint and must match to resume).
    """
    check_training_args(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                        start_context, tokenizer)
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    # Retrieve the maximum learning rate from the optimizer
    peak_lr = float(optimizer.param_groups[0]["lr"] if peak_lr is None else peak_lr)
    # Calculate the total number of iterations in the training process
    total_training_steps = len(train_loader) * num_epochs
    clip_from_step = warmup_steps if clip_from_step is None else clip_from_step
    check_schedule(total_training_steps, peak_lr, warmup_steps, initial_lr, min_lr, max_norm, clip_from_step)
    settings = dict(total_steps=total_training_steps, peak_lr=peak_lr, warmup_steps=int(warmup_steps),
                    initial_lr=float(initial_lr), min_lr=float(min_lr), clip_from_step=int(clip_from_step),
                    max_norm=None if max_norm is None else float(max_norm))
    run = TrainingRun(model, optimizer, train_loader, num_epochs, checkpointer, max_steps, progress, log_every,
                      loop="train_model", settings=settings)
    tokens_seen, global_step = run.resume(0, -1, train_losses, val_losses, track_tokens_seen, track_lrs)

    with run:  # the progress bar, the non-finite guard and the checkpoints, until the loop ends
        for epoch in run.epochs():
            model.train()
            for input_batch, target_batch in run.batches():
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
                    run.print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                              f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}", global_step)
                if run.step_done(loss, global_step, tokens_seen):  # bar, checkpoint; True at max_steps
                    return train_losses, val_losses, track_tokens_seen, track_lrs

            # Generate and print a sample from the model to monitor progress
            if start_context is not None:
                generate_and_print_sample(model, tokenizer, device, start_context, eos_id=sample_eos_id)

    return train_losses, val_losses, track_tokens_seen, track_lrs


def check_schedule(total_steps, peak_lr, warmup_steps, initial_lr, min_lr, max_norm, clip_from_step) -> None:
    """Appendix D's settings checked before the first step (lr_at_step names each bad one)."""
    lr_at_step(0, total_steps, peak_lr, warmup_steps, initial_lr, min_lr)
    if max_norm is not None:
        check_number("max_norm", max_norm, low=0.0, low_inclusive=False)
    check_int(clip_from_step, "clip_from_step", minimum=0, hint="the first step whose gradients are clipped")


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
