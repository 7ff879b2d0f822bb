"""Chapter 8 writes RMSNorm, SwiGLU, RoPE, grouped-query attention and the Hugging Face names; utils.llama keeps them.
Each notebook definition must give the same output as the utils one on seeded input (tests/nbextract.py)."""

import ast

import pytest
import torch
from nbextract import code_cells, extract

import utils.llama as llama

NB08 = "08_gpt_to_llama_and_qwen.ipynb"
CFG = {**llama.QWEN3_06B, "vocab_size": 64, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_kv_heads": 2,
       "head_dim": 8, "n_layers": 2, "hidden_dim": 48}


@pytest.fixture(scope="module")
def nb08():
    """The notebook's definitions, with its HF_NAMES table (an assignment, which extract does not take)."""
    table = next(node for module in code_cells(NB08) for node in module.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "HF_NAMES")
    names = {}
    exec(compile(ast.Module(body=[table], type_ignores=[]), NB08, "exec"), names)
    return extract(NB08, "RMSNorm", "SwiGLU", "compute_rope_params", "apply_rope", "GroupedQueryAttention", "hf_name",
                   namespace=names)


def _same_weights(ours, theirs):
    torch.manual_seed(123)
    for p in theirs.parameters():
        torch.nn.init.normal_(p)
    ours.load_state_dict(theirs.state_dict())


def test_rmsnorm_and_swiglu_agree(nb08):
    x = torch.randn(2, 5, 32)
    for name, args in (("RMSNorm", (32, 1e-6)), ("SwiGLU", (CFG,))):
        mine, kept = nb08[name](*args), getattr(llama, name)(*args)
        _same_weights(mine, kept)
        assert torch.equal(mine(x), kept(x)), name
    assert torch.equal(nb08["RMSNorm"](32)(x.bfloat16()), llama.RMSNorm(32)(x.bfloat16()))


def test_rope_agrees(nb08):
    positions = torch.tensor([0, 1, 7, 5003])
    cos, sin = nb08["compute_rope_params"](64, 10_000.0, positions)
    kept_cos, kept_sin = llama.compute_rope_params(64, 10_000.0, positions)
    assert torch.equal(cos, kept_cos) and torch.equal(sin, kept_sin)
    x = torch.randn(1, 2, 4, 64)
    assert torch.equal(nb08["apply_rope"](x, cos, sin), llama.apply_rope(x, cos, sin))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_grouped_query_attention_agrees_with_and_without_the_cache(nb08, qk_norm):
    cfg = {**CFG, "qk_norm": qk_norm}
    mine, kept = nb08["GroupedQueryAttention"](cfg), llama.GroupedQueryAttention(cfg)
    _same_weights(mine, kept)
    x = torch.randn(2, 6, 32)
    cos, sin = llama.compute_rope_params(8, 10_000.0, torch.arange(6))
    assert torch.allclose(mine(x, cos, sin), kept(x, cos, sin), atol=1e-6)
    for att in (mine, kept):
        att.reset_cache()
    first = [att(x[:, :4], cos[:4], sin[:4], use_cache=True) for att in (mine, kept)]
    then = [att(x[:, 4:], cos[4:], sin[4:], use_cache=True) for att in (mine, kept)]
    assert torch.allclose(first[0], first[1], atol=1e-6) and torch.allclose(then[0], then[1], atol=1e-6)


def test_hf_names_agree(nb08):
    with torch.device("meta"):
        model = llama.LlamaModel(CFG)
    names = [name for name, _ in model.named_parameters()]
    assert [nb08["hf_name"](n) for n in names] == [llama.hf_name(n) for n in names]
