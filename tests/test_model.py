"""utils.model and utils.attention: shapes, parameter counts, fast path = book path, KV cache = no cache."""

import pytest
import torch

from utils import GPT_CONFIG_124M, GPTModel, MultiHeadAttention, count_parameters, generate, gpt2_config

TINY = {**GPT_CONFIG_124M, "vocab_size": 100, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2}


def tiny_model(**overrides):
    torch.manual_seed(123)
    return GPTModel({**TINY, **overrides}).eval()


def test_output_shape():
    model = tiny_model()
    idx = torch.randint(0, 100, (3, 7))
    assert model(idx).shape == (3, 7, 100)  # (batch, num_tokens, vocab_size)


def test_book_parameter_counts():
    """The book's numbers for GPT_CONFIG_124M: 163,009,536 in all, 124,412,160 with the head tied to tok_emb."""
    model = GPTModel(GPT_CONFIG_124M)
    assert count_parameters(model) == 163_009_536
    assert count_parameters(model, tied=True) == 124_412_160


def test_tied_count_tiny():
    model = tiny_model()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model, tied=True) == total - 100 * 32
    assert model.out_head.weight.shape == model.tok_emb.weight.shape


def test_configs():
    assert gpt2_config("355M")["emb_dim"] == 1024 and gpt2_config("355M")["qkv_bias"] is True
    assert gpt2_config("124M", drop_rate=0.1)["drop_rate"] == 0.1
    with pytest.raises(ValueError, match=r"unknown GPT-2 size '7B'.*124M, 355M, 774M, 1558M"):
        gpt2_config("7B")
    with pytest.raises(ValueError, match="lacks.*emb_dim"):
        GPTModel({k: v for k, v in TINY.items() if k != "emb_dim"})


def test_too_long_input_says_what_to_do():
    with pytest.raises(ValueError, match=r"with 1 to 16 tokens.*got \(1, 17\).*idx\[:, -16:\]"):
        tiny_model()(torch.zeros(1, 17, dtype=torch.long))


def test_fast_attention_equals_book_path():
    fast, book = tiny_model(fast_attention=True), tiny_model(fast_attention=False)
    idx = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(fast(idx), book(idx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_attention_cache_token_by_token(fast):
    """Feeding a sequence one token at a time through the KV cache gives each position's full-sequence output."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 8, context_length=6, dropout=0.0, num_heads=2, qkv_bias=True, fast=fast)
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        full = mha(x)
        steps = [mha(x[:, :3], use_cache=True)] + [mha(x[:, i : i + 1], use_cache=True) for i in range(3, 6)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-5)
        with pytest.raises(ValueError, match="7 tokens exceed the context length 6.*reset_cache"):
            mha(x[:, :1], use_cache=True)
    mha.reset_cache()
    assert mha.cache_k is None and mha.cache_pos == 0


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("prompt_len,new", [(4, 8), (10, 12)])  # (10, 12) outgrows the context of 16
def test_kv_cache_generation_same_tokens(fast, prompt_len, new):
    model = tiny_model(fast_attention=fast)
    torch.manual_seed(1)
    idx = torch.randint(0, 100, (2, prompt_len))
    greedy_cache = generate(model, idx, new, context_size=16, use_cache=True)
    greedy_plain = generate(model, idx, new, context_size=16, use_cache=False)
    assert greedy_cache.shape == (2, prompt_len + new)
    assert torch.equal(greedy_cache, greedy_plain)
    sampled = []
    for use_cache in (True, False):
        torch.manual_seed(5)
        sampled.append(generate(model, idx, new, context_size=16, temperature=1.5, top_k=50, use_cache=use_cache))
    assert torch.equal(sampled[0], sampled[1])
    assert model.current_pos == 0 and model.trf_blocks[0].att.cache_k is None  # the cache is emptied afterwards
