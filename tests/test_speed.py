"""The fast setting (utils.device.fast_setting): same training within a stated tolerance, clear fallback, checkpoints
that move between the fast and the default setting. bfloat16 autocast is forced on: it runs on any CPU, only slower."""

import pytest
import torch

import utils.device
from utils import GPT_CONFIG_124M, GPTModel, calc_loss_batch, fast_setting, load_checkpoint, save_checkpoint

TINY = {**GPT_CONFIG_124M, "vocab_size": 64, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
        "drop_rate": 0.0}
STEPS = 5
# bfloat16 keeps 8 bits of mantissa (~3 significant digits): after 5 steps the losses of the two settings agree to
# within 0.05 (a loss near ln(64) = 4.16, so about 1%); measured differences are below 0.02.
LOSS_TOLERANCE = 0.05


def batches(n=STEPS, seed=0):
    """`n` fixed (inputs, targets) pairs of shape (2, 16)."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, TINY["vocab_size"], (n, 2, 17), generator=gen)
    return [(d[:, :-1], d[:, 1:]) for d in data]


def train(fast, steps=STEPS, model=None, optimizer=None):
    """Train TINY for `steps` steps in the setting `fast`; returns (model, optimizer, losses)."""
    if model is None:
        torch.manual_seed(123)
        model = GPTModel(fast.model_config(TINY))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=fast.fused_adamw)
    losses = []
    with fast.autocast():
        for inputs, targets in batches(steps):
            optimizer.zero_grad()
            loss = calc_loss_batch(inputs, targets, model, "cpu")
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return model, optimizer, losses


def test_fast_setting_matches_the_default_within_tolerance(capsys):
    default = fast_setting(False, "cpu")
    fast = fast_setting(True, "cpu", bf16=True)
    assert "FAST = True" in capsys.readouterr().out
    assert fast.bf16 and fast.fused_adamw and fast.fused_attention and not default.bf16 and not default.fused_adamw
    _, _, book = train(default)
    _, _, quick = train(fast)
    assert all(torch.isfinite(torch.tensor(quick)))
    assert max(abs(a - b) for a, b in zip(book, quick)) < LOSS_TOLERANCE, (book, quick)
    assert book[-1] < book[0] and quick[-1] < quick[0]  # both learn


def test_autocast_really_computes_in_bfloat16_and_off_means_float32():
    x = torch.randn(4, 4)
    with fast_setting(True, "cpu", bf16=True).autocast():
        assert (x @ x).dtype == torch.bfloat16
    with fast_setting(False, "cpu").autocast():
        assert (x @ x).dtype == torch.float32


def test_falls_back_to_float32_with_a_message_without_bf16(monkeypatch, capsys):
    monkeypatch.setattr(utils.device, "bf16_support", lambda device: (False, "this CPU has no bfloat16 units"))
    fast = fast_setting(True, "cpu")
    out = capsys.readouterr().out
    assert not fast.bf16 and fast.fused_adamw  # the rest of the fast setting stays on
    assert "float32 (this CPU has no bfloat16 units)" in out
    x = torch.randn(2, 2)
    with fast.autocast():
        assert (x @ x).dtype == torch.float32


def test_the_one_line_says_what_off_would_change(capsys):
    fast_setting(False, "cpu")
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "FAST = False" in out and "FAST = True would use" in out
    assert "float32 and plain AdamW, as the book trains" in out  # what the notebook then does
    assert "fused attention" not in out  # utils' GPTModel uses it in both settings: not a FAST change


def test_model_config_turns_on_the_fused_attention_only_when_on():
    book = {**TINY, "fast_attention": False}
    assert fast_setting(True, "cpu").model_config(book)["fast_attention"] is True
    assert fast_setting(False, "cpu").model_config(book) == book


def test_enabled_must_be_a_bool():
    with pytest.raises(TypeError, match="True or False"):
        fast_setting("yes", "cpu")


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_checkpoints_move_between_the_settings(tmp_path, first, second):
    """Saved after training in one setting, loaded in the other: same weights, and training goes on there."""
    setting = {True: fast_setting(True, "cpu", bf16=True), False: fast_setting(False, "cpu")}
    model, optimizer, _ = train(setting[first], steps=2)
    save_checkpoint(tmp_path / "ckpt.pth", model, optimizer)
    other = setting[second]
    restored = GPTModel(other.model_config(TINY))
    restored_opt = torch.optim.AdamW(restored.parameters(), lr=1e-3, weight_decay=0.1, fused=other.fused_adamw)
    load_checkpoint(tmp_path / "ckpt.pth", restored, restored_opt)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    assert all(p.dtype == torch.float32 for p in restored.parameters())  # autocast never changes stored weights
    _, _, losses = train(other, steps=2, model=restored, optimizer=restored_opt)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_length_grouped_batches_cover_every_entry_once_with_less_padding():
    from functools import partial

    from torch.utils.data import DataLoader

    from utils import custom_collate_fn, length_grouped_loader, padding_fraction

    lengths = [3, 40, 5, 38, 4, 41, 6, 39] * 4
    dataset = [[1] * n for n in lengths]
    torch.manual_seed(123)
    book = DataLoader(dataset, batch_size=4, shuffle=True, drop_last=True, collate_fn=partial(custom_collate_fn))
    grouped = length_grouped_loader(book)
    assert len(grouped) == len(book) == 8
    torch.manual_seed(123)
    seen = sorted(i for batch in grouped.batch_sampler for i in batch)
    assert seen == list(range(len(lengths)))  # every entry once an epoch
    torch.manual_seed(123)
    assert padding_fraction(grouped) < 0.5 * padding_fraction(book)
    first, second = list(grouped.batch_sampler), list(grouped.batch_sampler)
    assert first != second  # a new order every epoch


def test_a_cpu_with_bf16_instructions_but_no_amx_stays_float32(monkeypatch, capsys):
    """AVX-512 BF16 without AMX measured slower than float32 (05c): the fast setting keeps float32 there."""
    monkeypatch.setattr(utils.device, "bf16_support", lambda device: (True, "this CPU has AVX-512 BF16 instructions"))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not fast_setting(True, "cpu").bf16
    assert "no AMX units" in capsys.readouterr().out
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert fast_setting(True, "cpu").bf16
