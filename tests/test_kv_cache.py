"""The pre-allocated KV cache (utils.attention.append_to_cache) of GPTModel and LlamaModel: one token at a time it
gives the logits of a whole-sequence forward, also past a buffer's doubling, after a cache cut from outside (the
chat's whole-turn trimming) and at the context length, where the buffers stop growing."""

import pytest
import torch
from tiny import tiny_config

from utils import GPTModel, LlamaModel
from utils.llama import QWEN3_06B

TINY_LLAMA = {**QWEN3_06B, "vocab_size": 100, "context_length": 320, "emb_dim": 32, "n_heads": 4, "n_kv_heads": 2,
              "head_dim": 8, "n_layers": 2, "hidden_dim": 48}


def models():
    torch.manual_seed(0)
    gpt = GPTModel(tiny_config(context_length=320, drop_rate=0.0)).eval()
    torch.manual_seed(0)
    return {"gpt": gpt, "llama": LlamaModel(TINY_LLAMA).eval()}


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_one_token_at_a_time_equals_the_whole_sequence(name):
    model = models()[name]
    ids = torch.randint(0, 100, (2, 300))
    with torch.no_grad():
        whole = model(ids)
        model.reset_kv_cache()
        first = model(ids[:, :40], use_cache=True)
        steps = [model(ids[:, i:i + 1], use_cache=True) for i in range(40, 300)]  # past 256: the buffers double
    assert torch.allclose(torch.cat([first, *steps], dim=1), whole, atol=1e-5)
    layer = next(m for m in model.modules() if hasattr(m, "buffers_kv"))
    assert layer.buffers_kv[0].shape[2] == 320  # doubled from 256 and capped at the context length
    model.reset_kv_cache()
    assert layer.buffers_kv is None and layer.cache_k is None


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_a_cache_cut_from_outside_goes_on_correctly(name):
    model = models()[name]
    ids = torch.randint(0, 100, (1, 30))
    with torch.no_grad():
        whole = model(ids)
        model.reset_kv_cache()
        model(ids[:, :20], use_cache=True)
        layers = [m for m in model.modules() if hasattr(m, "buffers_kv")]
        for layer in layers:  # keep the first 12 tokens, as the chat does when it drops a turn
            layer.cache_k, layer.cache_v = layer.cache_k[:, :, :12], layer.cache_v[:, :, :12]
            if hasattr(layer, "cache_pos"):
                layer.cache_pos = 12
        model.current_pos = 12
        again = model(ids[:, 12:], use_cache=True)
        for layer in layers:  # a cache replaced by another tensor is copied into new buffers
            layer.cache_k, layer.cache_v = layer.cache_k.clone(), layer.cache_v.clone()
        model(ids[:, :1], use_cache=True)
    assert torch.allclose(again, whole[:, 12:], atol=1e-5)
