"""utils.lora: unchanged outputs at B=0, exact trainable counts, gradients only for A and B, merge, small file, bad input."""

import copy
import math

import pytest
import torch

from utils import (
    GPT_CONFIG_124M,
    GPTModel,
    LoRALayer,
    gpt2_config,
    load_lora,
    lora_layers,
    merge_lora,
    replace_linear_with_lora,
    save_lora,
)

TINY = {**GPT_CONFIG_124M, "vocab_size": 100, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
        "drop_rate": 0.0, "qkv_bias": True}


def classifier(cfg=TINY, seed=123, device=None):
    """The appendix-E set-up: a GPT with a new 2-class head, every original weight frozen."""
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = GPTModel(cfg)
        model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
    for p in model.parameters():
        p.requires_grad = False
    return model


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def tokens(seed=0, batch=3, n=10):
    return torch.randint(0, TINY["vocab_size"], (batch, n), generator=torch.Generator().manual_seed(seed))


def train_a_little(model, steps=3):
    """Move B away from zero so the LoRA updates matter."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        x = tokens(step)
        loss = torch.nn.functional.cross_entropy(model(x)[:, -1, :], torch.tensor([0, 1, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def wrapped(model, rank, alpha):
    replace_linear_with_lora(model, rank, alpha)  # in place, like the book's (returns None)
    return model


def test_lora_layer_init_and_shapes():
    torch.manual_seed(123)
    layer = LoRALayer(6, 4, rank=2, alpha=4)
    assert layer.A.shape == (6, 2) and layer.B.shape == (2, 4)
    assert torch.count_nonzero(layer.B) == 0
    torch.manual_seed(123)
    expected = torch.empty(6, 2)
    torch.nn.init.kaiming_uniform_(expected, a=math.sqrt(5))  # the book's initialisation of A
    assert torch.equal(layer.A, expected)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer(x), 2.0 * (x @ layer.A @ layer.B))  # alpha / rank = 2


def test_outputs_unchanged_at_b_zero():
    model = classifier()
    x = tokens()
    with torch.no_grad():
        before = model(x)
        replace_linear_with_lora(model, rank=4, alpha=8)
        after = model(x)
    assert torch.equal(before, after)


def test_every_linear_is_wrapped():
    model = classifier()
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    replace_linear_with_lora(model, rank=4, alpha=4)
    names = set(lora_layers(model))
    assert len(names) == n_linear == TINY["n_layers"] * 6 + 1
    for block in ("trf_blocks.0", "trf_blocks.1"):
        for part in ("att.W_query", "att.W_key", "att.W_value", "att.out_proj", "ff.layers.0", "ff.layers.2"):
            assert f"{block}.{part}" in names
    assert "out_head" in names
    assert not any(type(m) is torch.nn.Linear and not name.endswith(".linear") for name, m in model.named_modules())


def test_trainable_count_tiny():
    model = classifier()
    assert trainable(model) == 0
    replace_linear_with_lora(model, rank=4, alpha=4)
    d, r = TINY["emb_dim"], 4
    per_block = 4 * (d * r + r * d) + (d * r + r * 4 * d) + (4 * d * r + r * d)
    assert trainable(model) == TINY["n_layers"] * per_block + (d * r + r * 2) == 4744


def test_trainable_count_124m_classifier_matches_the_book():
    model = classifier(gpt2_config("124M", drop_rate=0.0), device="meta")  # shapes only, no memory
    assert sum(p.numel() for p in model.parameters()) == 124_441_346  # the book's count before freezing
    replace_linear_with_lora(model, rank=16, alpha=16)
    assert trainable(model) == 2_666_528


def test_only_a_and_b_get_gradients():
    model = wrapped(classifier(), rank=2, alpha=2)
    model(tokens())[:, -1, :].sum().backward()
    for name, p in model.named_parameters():
        if name.endswith((".lora.A", ".lora.B")):
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    # at B = 0 only B's gradient is non-zero (A's path is multiplied by B)
    assert all(torch.count_nonzero(m.lora.B.grad) > 0 for m in lora_layers(model).values())


def test_merge_equals_unmerged():
    model = train_a_little(wrapped(classifier(), rank=4, alpha=8))
    x = tokens(7)
    with torch.no_grad():
        unmerged = model(x)
        merged_model = merge_lora(copy.deepcopy(model))
        merged = merged_model(x)
    assert not lora_layers(merged_model)
    assert all(type(m) is torch.nn.Linear for m in merged_model.modules() if isinstance(m, torch.nn.Linear))
    assert set(merged_model.state_dict()) == set(classifier().state_dict())  # a plain model again
    assert (unmerged - merged).abs().max().item() < 1e-5
    assert not torch.equal(merged, classifier()(x))  # the training changed something


def test_small_file_reloads_with_identical_outputs(tmp_path):
    model = train_a_little(wrapped(classifier(), rank=4, alpha=8))
    path = save_lora(model, tmp_path / "lora.safetensors", include=["out_head"])
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    full_size = sum(t.numel() * 4 for t in model.state_dict().values())
    assert path.stat().st_size < full_size / 5
    fresh = classifier(seed=999)  # different head init: the file's head must replace it
    fresh.load_state_dict(classifier().state_dict())  # the same base weights (e.g. GPT-2's) ...
    with torch.no_grad():
        fresh.out_head.weight.zero_()  # ... but not the head
    load_lora(fresh, path)
    x = tokens(11)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_loading_into_an_already_wrapped_model(tmp_path):
    model = train_a_little(wrapped(classifier(), rank=4, alpha=8))
    path = save_lora(model, tmp_path / "lora.safetensors", include=["out_head"])
    fresh = wrapped(classifier(), rank=4, alpha=8)
    load_lora(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(tokens()), model(tokens()))


def test_wrapping_twice_is_an_error():
    model = wrapped(classifier(), rank=2, alpha=2)
    with pytest.raises(ValueError, match="already has LoRA"):
        replace_linear_with_lora(model, rank=2, alpha=2)


def test_merging_a_model_without_lora_is_an_error():
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(classifier())


def test_loading_into_another_shape_is_an_error(tmp_path):
    path = save_lora(wrapped(classifier(), rank=2, alpha=2), tmp_path / "a.safetensors",
                     include=["out_head"])
    wider = classifier({**TINY, "emb_dim": 64})
    with pytest.raises(ValueError, match="differ in shape"):
        load_lora(wider, path)
    deeper = classifier({**TINY, "n_layers": 3})
    with pytest.raises(ValueError, match="not in the file"):
        load_lora(deeper, path)
    other_rank = wrapped(classifier(), rank=3, alpha=2)
    with pytest.raises(ValueError, match="rank 2"):
        load_lora(other_rank, path)
    with pytest.raises(FileNotFoundError):
        load_lora(classifier(), tmp_path / "missing.safetensors")


def test_not_a_lora_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a save_lora file"):
        load_lora(classifier(), tmp_path / "other.safetensors")


class _BookLoRA(torch.nn.Module):
    """A look-alike written by hand, as a notebook does (not utils' class)."""

    def __init__(self, in_dim, out_dim, rank, alpha):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(in_dim, rank))
        self.B = torch.nn.Parameter(torch.randn(rank, out_dim) * 0.1)
        self.rank, self.alpha = rank, alpha

    def forward(self, x):
        return self.alpha / self.rank * (x @ self.A @ self.B)


class _BookLinearWithLoRA(torch.nn.Module):
    def __init__(self, linear, rank, alpha):
        super().__init__()
        self.linear, self.lora = linear, _BookLoRA(linear.in_features, linear.out_features, rank, alpha)

    def forward(self, x):
        return self.linear(x) + self.lora(x)


def test_a_hand_written_lora_class_is_recognised(tmp_path):
    model = classifier()
    torch.manual_seed(0)
    for block in model.trf_blocks:
        block.att.W_query = _BookLinearWithLoRA(block.att.W_query, 2, 4)
    with pytest.raises(ValueError, match="already has LoRA"):
        replace_linear_with_lora(model, rank=2, alpha=4)
    assert len(lora_layers(model)) == TINY["n_layers"]
    path = save_lora(model, tmp_path / "book.safetensors")
    x = tokens()
    with torch.no_grad():
        expected = model(x)
        assert (merge_lora(copy.deepcopy(model))(x) - expected).abs().max() < 1e-5
    fresh = classifier()
    for block in fresh.trf_blocks:
        block.att.W_query = _BookLinearWithLoRA(block.att.W_query, 2, 4)
    load_lora(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
