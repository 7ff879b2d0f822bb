"""utils.train and utils.checkpoint: NaN guard, exact resume, atomic checkpoints, loader errors, device choice."""

import pytest
import torch
from tiny import tiny_config, token_loaders
from torch.utils.data import DataLoader, TensorDataset

from utils import (
    GPTModel,
    NonFiniteLossError,
    TrainingExtras,
    calc_loss_loader,
    get_device,
    load_checkpoint,
    save_checkpoint,
    set_seed,
    train_model_simple,
)

TINY = tiny_config(drop_rate=0.1)
CPU = torch.device("cpu")


loaders = token_loaders  # a shuffled train loader (3 batches an epoch) and a val loader


def fresh(seed, lr=1e-3):
    set_seed(seed)
    model = GPTModel(TINY)
    return model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)


def train(model, optimizer, train_loader, val_loader, **extras):
    """train_model_simple for 2 epochs; `extras` (path, every, resume, max_steps, check_steps) make a TrainingExtras."""
    return train_model_simple(model, train_loader, val_loader, optimizer, CPU, num_epochs=2, eval_freq=2, eval_iter=1,
                              start_context=None, tokenizer=None, progress=False,
                              extras=TrainingExtras(**extras) if extras else None)


def test_nan_guard_names_the_step():
    train_loader, val_loader = loaders()
    model, optimizer = fresh(1)
    calls = []

    def nan_on_the_second_step(module, args, output):
        calls.extend([1] if module.training else [])  # evaluations run in eval mode
        return output * float("nan") if len(calls) == 2 else output

    model.final_norm.register_forward_hook(nan_on_the_second_step)
    with pytest.raises(NonFiniteLossError, match=r"the loss became nan at step 1: .*before the backward pass.*still finite.*Lower the"):
        train(model, optimizer, train_loader, val_loader)  # the guard that is always on: the loss
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_weights_before_training_are_refused():
    train_loader, val_loader = loaders()
    model, optimizer = fresh(1)
    with torch.no_grad():
        model.final_norm.scale.fill_(float("nan"))  # every logit NaN
    with pytest.raises(NonFiniteLossError, match=r"the loss became nan at step 0: .*at step 0: whether the model's weights hold NaN"):
        train(model, optimizer, train_loader, val_loader)


def test_weights_made_non_finite_by_the_step_are_caught_and_never_saved(tmp_path):
    """A finite loss and finite gradients, but a learning rate that sends the weights to inf in the update."""
    train_loader, val_loader = loaders()
    model, _ = fresh(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e10)
    model.final_norm.scale.register_hook(lambda grad: grad * 1e30)  # large, still finite
    ckpt = tmp_path / "run.pth"
    with pytest.raises(NonFiniteLossError, match=r"weights became non-finite in the optimizer step of step 0 .*"
                       r"learning rate \(1e\+10\) is too high.*no checkpoint was written.*train again from the start"):
        train(model, optimizer, train_loader, val_loader, path=ckpt, every=1)
    assert not ckpt.exists() and not list(tmp_path.iterdir())  # nothing written, no .tmp


def test_non_finite_gradients_stop_before_the_step():
    train_loader, val_loader = loaders()
    model, optimizer = fresh(1)
    model.final_norm.scale.register_hook(lambda grad: grad * float("inf"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"gradients became non-finite at step 0 \(epoch 1\), first in "
                       r"final_norm.scale.*weights are still finite"):
        train(model, optimizer, train_loader, val_loader, check_steps=True)  # the fuller guard of TrainingExtras
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    model, optimizer = fresh(1)
    with torch.no_grad():
        model.out_head.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="out_head.weight holds NaN or inf values: refusing to write"):
        save_checkpoint(tmp_path / "bad.pth", model, optimizer)
    assert not list(tmp_path.iterdir())


def test_max_steps_zero_takes_no_step(tmp_path):
    train_loader, val_loader = loaders()
    model, optimizer = fresh(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert train(model, optimizer, train_loader, val_loader, max_steps=0) == ([], [], [])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and not optimizer.state


def test_checkpoint_loads_with_weights_only(tmp_path):
    train_loader, val_loader = loaders()
    model, optimizer = fresh(1)
    ckpt = tmp_path / "run.pth"
    train(model, optimizer, train_loader, val_loader, path=ckpt, max_steps=2)
    payload = torch.load(ckpt, weights_only=True)
    assert payload["global_step"] == 1 and payload["train_batches"] == 3
    assert isinstance(payload["rng_now"]["cpu"], torch.Tensor) and payload["loop"] == "train_model_simple"


def test_exploding_lr_stops_before_the_update():
    train_loader, val_loader = loaders()
    model, optimizer = fresh(1, lr=1e30)
    with pytest.raises(NonFiniteLossError, match=r"the loss became .* at step \d+: ") as info:
        train(model, optimizer, train_loader, val_loader)
    assert "at step 0: training" not in str(info.value)  # the first loss is fine; a later one is not
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad loss never reached the weights


@pytest.mark.parametrize("stop_after", [2, 3, 4])  # mid-epoch 1, end of epoch 1, mid-epoch 2
def test_resume_equals_uninterrupted(tmp_path, stop_after):
    train_loader, val_loader = loaders()
    model, optimizer = fresh(1)
    set_seed(42)
    expected = train(model, optimizer, train_loader, val_loader)

    ckpt = tmp_path / "run.pth"
    model_a, optimizer_a = fresh(1)
    set_seed(42)
    train(model_a, optimizer_a, train_loader, val_loader, path=ckpt, max_steps=stop_after)
    assert load_checkpoint(ckpt, GPTModel(TINY))["global_step"] == stop_after - 1
    torch.manual_seed(999)  # whatever happens between the runs must not matter
    model_b, optimizer_b = fresh(7)  # a new process: other initial weights, fresh optimizer
    resumed = train(model_b, optimizer_b, train_loader, val_loader, path=ckpt, resume=True)

    assert resumed == expected  # train losses, val losses, tokens seen
    assert len(expected[0]) == 3  # evaluations at steps 0, 2, 4
    for (name, a), b in zip(model.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_without_checkpoint(tmp_path):
    model, optimizer = fresh(1)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(model, optimizer, *loaders(), path=tmp_path / "none.pth", resume=True)


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    model, optimizer = fresh(1)
    path = save_checkpoint(tmp_path / "ckpt.pth", model, optimizer, config=TINY, note="first")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, optimizer, note="second")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no .tmp left behind
    other, other_opt = fresh(2)
    payload = load_checkpoint(path, other, other_opt)  # the old checkpoint is intact
    assert payload["note"] == "first" and payload["config"] == TINY
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_empty_loader_errors():
    model, optimizer = fresh(1)
    empty = DataLoader(TensorDataset(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)),
                       batch_size=2, drop_last=True)
    assert len(empty) == 0
    with pytest.raises(ValueError, match="data_loader has no batches.*smaller batch_size"):
        calc_loss_loader(empty, model, CPU)
    with pytest.raises(ValueError, match="train_loader has no batches"):
        train(model, optimizer, empty, empty)


def test_calc_loss_loader_num_batches():
    model, _ = fresh(1)
    model.eval()
    _, val_loader = loaders(n_train=6)
    with torch.no_grad():
        loss = calc_loss_loader(val_loader, model, CPU, num_batches=5)  # more than there are: all of them
    assert 4.0 < loss < 5.5  # about ln(100) = 4.6 for an untrained model


def test_get_device_honours_env(monkeypatch):
    monkeypatch.setenv("LLM_DEVICE", "meta")
    assert get_device() == torch.device("meta")
    assert get_device("cpu") == torch.device("cpu")  # an explicit choice wins
    monkeypatch.delenv("LLM_DEVICE")
    assert get_device().type in {"cuda", "mps", "cpu"}


def test_perplexity_of_a_diverged_loss_is_infinite():
    from utils import perplexity

    assert perplexity(800.0) == float("inf") and perplexity(torch.tensor(float("inf"))) == float("inf")
    assert perplexity(0.0) == 1.0


def test_log_every_prints_only_every_nth_evaluation_and_keeps_them_all(capsys):
    train_loader, val_loader = loaders()
    model, optimizer = fresh(1)
    train_losses, _, _ = train(model, optimizer, train_loader, val_loader, log_every=4)  # evaluations at 0, 2, 4
    printed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert len(train_losses) == 3 and printed == ["Ep 1 (Step 000000)", "Ep 2 (Step 000004)"]
