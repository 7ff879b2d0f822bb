"""utils.train.train_model (appendix D): the book's loop exactly, schedule and clipping, exact resume, bad input."""

import inspect
import math

import pytest
import torch
from tiny import tiny_config, token_loaders

from utils import (
    CheckpointError,
    GPTModel,
    TrainingExtras,
    calc_loss_batch,
    evaluate_model,
    lr_at_step,
    set_seed,
    train_model,
    train_model_simple,
)

TINY = tiny_config(drop_rate=0.1)
CPU = torch.device("cpu")
SCHEDULE = dict(warmup_steps=2, initial_lr=1e-5, min_lr=1e-5, max_norm=0.5)
BOOK_ARGS = ["model", "train_loader", "val_loader", "optimizer", "device", "n_epochs", "eval_freq", "eval_iter",
             "start_context", "tokenizer", "warmup_steps", "initial_lr", "min_lr"]  # the book's, in its order


loaders = token_loaders  # a shuffled train loader (3 batches an epoch) and a val loader


def fresh(seed=123, lr=1e-2):
    set_seed(seed)
    model = GPTModel(TINY)
    return model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)


def book_train_model(model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter,
                     warmup_steps, initial_lr, min_lr, max_norm):
    """Appendix D's loop as the printed book writes it (clipping from the step after the warmup)."""
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1
    peak_lr = optimizer.param_groups[0]["lr"]
    total_training_steps = len(train_loader) * n_epochs
    lr_increment = (peak_lr - initial_lr) / warmup_steps
    for _epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            if global_step < warmup_steps:
                lr = initial_lr + global_step * lr_increment
            else:
                progress = (global_step - warmup_steps) / (total_training_steps - warmup_steps)
                lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            track_lrs.append(lr)
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            if global_step > warmup_steps:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)
            optimizer.step()
            tokens_seen += input_batch.numel()
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
    return train_losses, val_losses, track_tokens_seen, track_lrs


def ours(model, optimizer, train_loader, val_loader, checkpoint_path=None, resume=False, max_steps=None, **kwargs):
    kwargs = {**SCHEDULE, **kwargs}
    if checkpoint_path or max_steps is not None:
        kwargs["extras"] = TrainingExtras(checkpoint_path, resume=resume, max_steps=max_steps)
    return train_model(model, train_loader, val_loader, optimizer, CPU, n_epochs=3, eval_freq=2, eval_iter=1,
                       start_context=None, tokenizer=None, progress=False, **kwargs)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_equals_the_books_loop():
    train_loader, val_loader = loaders()
    model_a, opt_a = fresh()
    torch.manual_seed(7)
    book = book_train_model(model_a, train_loader, val_loader, opt_a, CPU, 3, 2, 1, 2, 1e-5, 1e-5, 0.5)
    model_b, opt_b = fresh()
    torch.manual_seed(7)
    result = ours(model_b, opt_b, train_loader, val_loader, clip_from_step=SCHEDULE["warmup_steps"] + 1)
    assert result == book  # losses, tokens seen and learning rates, exactly
    assert same_weights(model_a, model_b)


def test_the_books_parameters_in_the_books_order_with_its_defaults():
    params = inspect.signature(train_model).parameters
    assert list(params)[: len(BOOK_ARGS)] == BOOK_ARGS
    assert params["warmup_steps"].default is inspect.Parameter.empty  # the book requires it
    assert (params["initial_lr"].default, params["min_lr"].default) == (3e-05, 1e-6)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in params.items() if name not in BOOK_ARGS)


def test_called_as_the_books_package_test_calls_it():
    """The book package's own test: keyword n_epochs, the schedule by name; the book's four lists come back."""
    train_loader, val_loader = loaders()
    model, opt = fresh(lr=1e-3)
    result = train_model(model, train_loader, val_loader, opt, CPU, n_epochs=2, eval_freq=5, eval_iter=1,
                         start_context=None, tokenizer=None, warmup_steps=1, initial_lr=1e-5, min_lr=1e-5)
    assert [len(r) for r in result] == [2, 2, 2, 6]  # evaluations at steps 0 and 5; one lr per step
    with pytest.raises(ValueError, match="n_epochs must be a whole number"):
        train_model(model, train_loader, val_loader, opt, CPU, n_epochs=0, eval_freq=5, eval_iter=1,
                    start_context=None, tokenizer=None, warmup_steps=1)


def test_learning_rates_follow_lr_at_step_and_clipping_starts_at_warmup_end(monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_

    def counting(parameters, max_norm, *args, **kwargs):
        calls.append(max_norm)
        return real(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counting)
    train_loader, val_loader = loaders()
    model, opt = fresh()
    *_, lrs = ours(model, opt, train_loader, val_loader)
    assert lrs == [lr_at_step(s, 9, 1e-2, 2, 1e-5, 1e-5) for s in range(9)]
    assert calls == [0.5] * (9 - 2)  # steps 2..8: from the end of the warmup on


def test_no_clipping_and_the_peak_lr_is_the_optimizers(monkeypatch):
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: pytest.fail("clipped"))
    train_loader, val_loader = loaders()
    model, opt = fresh(lr=1e-3)
    *_, lrs = ours(model, opt, train_loader, val_loader, max_norm=None)
    assert max(lrs) == pytest.approx(1e-3)


@pytest.mark.parametrize("stop_after", [4, 6])  # mid-epoch, and at the end of an epoch
def test_resume_equals_uninterrupted(tmp_path, stop_after):
    train_loader, val_loader = loaders()
    model_a, opt_a = fresh()
    torch.manual_seed(5)
    whole = ours(model_a, opt_a, train_loader, val_loader)

    path = tmp_path / "run.pth"
    model_b, opt_b = fresh()
    torch.manual_seed(5)
    ours(model_b, opt_b, train_loader, val_loader, checkpoint_path=path, max_steps=stop_after)
    model_c, opt_c = fresh(seed=999)  # a new process: other weights, optimizer at the peak lr again
    torch.manual_seed(0)  # ... and another random state: the checkpoint restores it
    resumed = ours(model_c, opt_c, train_loader, val_loader, checkpoint_path=path, resume=True)
    assert resumed == whole
    assert same_weights(model_a, model_c)


def test_simple_loop_resumes_as_before(tmp_path):
    """train_model_simple (sharing the loop) still resumes exactly and returns three lists."""
    train_loader, val_loader = loaders()
    model_a, opt_a = fresh(lr=1e-3)
    torch.manual_seed(5)
    whole = train_model_simple(model_a, train_loader, val_loader, opt_a, CPU, 3, 2, 1, None, None, progress=False)
    assert len(whole) == 3
    path = tmp_path / "run.pth"
    model_b, opt_b = fresh(lr=1e-3)
    torch.manual_seed(5)
    train_model_simple(model_b, train_loader, val_loader, opt_b, CPU, 3, 2, 1, None, None, progress=False,
                       extras=TrainingExtras(path, max_steps=4))
    model_c, opt_c = fresh(seed=999, lr=1e-3)
    resumed = train_model_simple(model_c, train_loader, val_loader, opt_c, CPU, 3, 2, 1, None, None, progress=False,
                                 extras=TrainingExtras(path, resume=True))
    assert resumed == whole and same_weights(model_a, model_c)


def test_resume_with_another_schedule_is_an_error(tmp_path):
    train_loader, val_loader = loaders()
    path = tmp_path / "run.pth"
    model, opt = fresh()
    ours(model, opt, train_loader, val_loader, checkpoint_path=path, max_steps=3)
    model, opt = fresh()
    with pytest.raises(CheckpointError, match="schedule"):
        ours(model, opt, train_loader, val_loader, checkpoint_path=path, resume=True, warmup_steps=3)
    path2 = tmp_path / "simple.pth"
    model, opt = fresh()
    train_model_simple(model, train_loader, val_loader, opt, CPU, 3, 2, 1, None, None, progress=False,
                       extras=TrainingExtras(path2, max_steps=3))
    with pytest.raises(CheckpointError, match="train_model_simple"):
        ours(model, opt, train_loader, val_loader, checkpoint_path=path2, resume=True)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(warmup_steps=10), ValueError, "warmup_steps"),
    (dict(warmup_steps=-1), ValueError, "warmup_steps"),
    (dict(min_lr=1.0), ValueError, "min_lr"),
    (dict(lr=0.0), ValueError, "peak_lr"),  # the optimizer's learning rate is the peak
])
def test_bad_arguments_fail_before_training(kwargs, error, words):
    """lr_at_step names a bad schedule setting at step 0, before the first update."""
    train_loader, val_loader = loaders()
    model, opt = fresh(**{k: kwargs.pop(k) for k in ["lr"] if k in kwargs})
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(error, match=words):
        ours(model, opt, train_loader, val_loader, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
