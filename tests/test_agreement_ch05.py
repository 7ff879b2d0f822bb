"""Chapter 5's step-by-step mapping of OpenAI's GPT-2 tensors onto GPTModel agrees with utils.gpt2's loader.

The notebook defines `assign` and `load_weights_into_gpt` in section 5.5 (tests/nbextract.py pulls them out).
No real GPT-2 weights exist offline, so both loaders read the same tiny checkpoint in GPT-2's layout (names, Conv1D
`(in, out)` shapes, fused query/key/value), written as safetensors the way the real file is, and must give
identical models.
"""

import pytest
import torch
from nbextract import extract
from safetensors.torch import load_file, save_file

import utils
from utils.gpt2 import hf_shapes
from utils.gpt2 import load_weights_into_gpt as utils_load

NB05 = "05_pretraining.ipynb"
TINY = {"vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0}


@pytest.fixture(scope="module")
def nb05():
    return extract(NB05, "assign", "load_weights_into_gpt")


def tiny_checkpoint(tmp_path, cfg, seed=0):
    """A safetensors file with GPT-2's tensor names and layouts for `cfg`, random values; returns it loaded."""
    g = torch.Generator().manual_seed(seed)
    weights = {name: torch.randn(shape, generator=g) for name, shape in hf_shapes(cfg).items()}
    path = tmp_path / "gpt2-tiny.safetensors"
    save_file(weights, str(path))
    return load_file(str(path))


def built(cfg):
    torch.manual_seed(123)
    return utils.GPTModel(cfg).eval()


@pytest.mark.parametrize("qkv_bias", [True, False], ids=["qkv_bias", "no_qkv_bias"])
def test_notebook_mapping_equals_utils_loader(nb05, tmp_path, qkv_bias):
    cfg = {**TINY, "qkv_bias": qkv_bias}
    weights = tiny_checkpoint(tmp_path, cfg)
    ours, theirs = built(cfg), built(cfg)
    nb05["load_weights_into_gpt"](ours, weights)
    utils_load(theirs, weights)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    idx = torch.randint(0, cfg["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ours(idx), theirs(idx))


def test_the_three_steps(nb05, tmp_path):
    """Conv1D weights transposed, the fused query/key/value matrix split in that order, the head tied to wte."""
    cfg = {**TINY, "qkv_bias": True}
    weights = tiny_checkpoint(tmp_path, cfg, seed=2)
    model = built(cfg)
    nb05["load_weights_into_gpt"](model, weights)
    e = cfg["emb_dim"]
    att = model.trf_blocks[1].att
    fused, fused_bias = weights["h.1.attn.c_attn.weight"], weights["h.1.attn.c_attn.bias"]  # (e, 3e), (3e,)
    for k, layer in enumerate([att.W_query, att.W_key, att.W_value]):
        assert torch.equal(layer.weight, fused[:, k * e : (k + 1) * e].T)
        assert torch.equal(layer.bias, fused_bias[k * e : (k + 1) * e])
    assert torch.equal(model.trf_blocks[1].ff.layers[0].weight, weights["h.1.mlp.c_fc.weight"].T)
    assert torch.equal(model.out_head.weight, weights["wte.weight"])


def test_wrong_shape_is_a_clear_error(nb05, tmp_path):
    weights = tiny_checkpoint(tmp_path, {**TINY, "qkv_bias": True})
    other = built({**TINY, "emb_dim": 16, "qkv_bias": True})
    with pytest.raises(ValueError, match="shape mismatch"):
        nb05["load_weights_into_gpt"](other, weights)
