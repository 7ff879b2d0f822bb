"""Chapter 4's notebook classes and utils.model / utils.generate must agree (same init, same outputs).

Each case pulls the definition out of notebooks/04_gpt_model.ipynb (tests/nbextract.py) and compares it with
the utils one on seeded input, on a tiny config.
"""

import pytest
import torch
from nbextract import extract

import utils

NB04 = "04_gpt_model.ipynb"
NAMES = ("LayerNorm", "GELU", "FeedForward", "TransformerBlock", "GPTModel", "generate_text_simple")
TINY = {
    "vocab_size": 97,
    "context_length": 16,
    "emb_dim": 32,
    "n_heads": 2,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": False,
}


@pytest.fixture(scope="module")
def nb04():
    return extract(NB04, *NAMES)


def seeded(cls, *args):
    torch.manual_seed(123)
    return cls(*args)


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)  # same parameter names, same order
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_layer_norm_agrees(nb04):
    ours, theirs = nb04["LayerNorm"](8), utils.LayerNorm(8)
    with torch.no_grad():  # a non-trivial scale and shift, the same in both
        for m in (ours, theirs):
            m.scale.copy_(torch.linspace(0.5, 2.0, 8))
            m.shift.copy_(torch.linspace(-1.0, 1.0, 8))
    torch.manual_seed(123)
    x = torch.randn(2, 5, 8) * 3 + 1
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    plain = nb04["LayerNorm"](8)(x)  # scale 1, shift 0: mean 0, variance 1 per row
    assert torch.allclose(plain.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(plain.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3)


def test_gelu_agrees(nb04):
    x = torch.linspace(-5, 5, 101)
    assert torch.allclose(nb04["GELU"]()(x), utils.GELU()(x), atol=1e-7)
    assert torch.allclose(utils.GELU()(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-6)


def test_feed_forward_agrees(nb04):
    ours, theirs = seeded(nb04["FeedForward"], TINY), seeded(utils.FeedForward, TINY)
    assert_same_state(ours, theirs)
    torch.manual_seed(123)
    x = torch.rand(2, 3, TINY["emb_dim"])
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
def test_transformer_block_agrees(nb04, fast):
    ours = seeded(nb04["TransformerBlock"], TINY)
    theirs = seeded(utils.TransformerBlock, {**TINY, "fast_attention": fast})
    assert_same_state(ours, theirs)
    ours.eval(), theirs.eval()
    torch.manual_seed(123)
    x = torch.rand(2, 4, TINY["emb_dim"])
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_gpt_model_agrees(nb04):
    ours, theirs = seeded(nb04["GPTModel"], TINY), seeded(utils.GPTModel, TINY)
    assert_same_state(ours, theirs)
    torch.manual_seed(123)
    idx = torch.randint(0, TINY["vocab_size"], (2, 6))
    ours.eval(), theirs.eval()
    out = ours(idx)
    assert out.shape == (2, 6, TINY["vocab_size"])
    assert torch.allclose(out, theirs(idx), atol=1e-5)
    assert sum(p.numel() for p in ours.parameters()) == utils.count_parameters(theirs)


def test_generate_text_simple_agrees(nb04):
    model = seeded(utils.GPTModel, TINY).eval()
    idx = torch.tensor([[1, 2, 3]])
    # 20 new tokens outgrow the 16-token context: both must crop the same way
    ours = nb04["generate_text_simple"](model, idx, max_new_tokens=20, context_size=TINY["context_length"])
    theirs = utils.generate_text_simple(model, idx, max_new_tokens=20, context_size=TINY["context_length"])
    assert ours.shape == (1, 23)
    assert torch.equal(ours, theirs)
    # and the KV-cached greedy generate gives the same tokens while the context fits
    cached = utils.generate(model, idx, max_new_tokens=10, context_size=TINY["context_length"], use_cache=True)
    assert torch.equal(cached, theirs[:, :13])
