"""Fault catalogue of utils.model, utils.attention and utils.generate: bad input is refused up front, by name."""

import torch
from faults import catalogue, expect_fault
from tiny import CharTokenizer, tiny_config, tiny_model

from utils import (
    FeedForward,
    GPTModel,
    LayerNorm,
    MultiHeadAttention,
    count_parameters,
    generate,
    generate_text_simple,
    gpt2_config,
    text_to_token_ids,
    token_ids_to_text,
    top_k_filter,
    top_p_filter,
)

SMALL = dict(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1)  # the messages name 50 and 8
TINY = tiny_config(**SMALL)


def model():
    return tiny_model(0, **SMALL)


IDS = torch.tensor([[1, 2, 3]])

CASES = [
    # model config
    ("config not a dict", lambda t: lambda: GPTModel([1, 2]), TypeError, "start from GPT_CONFIG_124M"),
    ("config missing keys", lambda t: lambda: GPTModel({"vocab_size": 5}), ValueError, "the model config lacks"),
    ("emb_dim not divisible", lambda t: lambda: GPTModel({**TINY, "n_heads": 3}), ValueError, "must be divisible by config['n_heads']"),
    ("vocab_size zero", lambda t: lambda: GPTModel({**TINY, "vocab_size": 0}), ValueError, "config['vocab_size'] must be a whole number"),
    ("context_length float", lambda t: lambda: GPTModel({**TINY, "context_length": 8.0}), ValueError, "config['context_length']"),
    ("drop_rate 1", lambda t: lambda: GPTModel({**TINY, "drop_rate": 1.0}), ValueError, "config['drop_rate'] must be a number in [0, 1)"),
    ("qkv_bias text", lambda t: lambda: GPTModel({**TINY, "qkv_bias": "yes"}), TypeError, "config['qkv_bias'] must be True or False"),
    ("unknown gpt2 size", lambda t: lambda: gpt2_config("125M"), ValueError, "choose one of 124M"),
    ("LayerNorm emb_dim 0", lambda t: lambda: LayerNorm(0), ValueError, "emb_dim must be a whole number >= 1"),
    ("FeedForward no emb_dim", lambda t: lambda: FeedForward({}), ValueError, "FeedForward needs a config dict"),
    ("count_parameters of a dict", lambda t: lambda: count_parameters({}), TypeError, "needs a torch.nn.Module"),
    # model input
    ("model on a 1-D tensor", lambda t: lambda: model()(torch.tensor([1, 2])), ValueError, "add the batch dimension"),
    ("model on a list", lambda t: lambda: model()([[1, 2]]), TypeError, "use text_to_token_ids(text, tokenizer)"),
    ("model on floats", lambda t: lambda: model()(torch.ones(1, 3)), TypeError, "integer token ids"),
    ("model on no tokens", lambda t: lambda: model()(torch.zeros(1, 0, dtype=torch.long)), ValueError, "is empty"),
    ("token id beyond vocabulary", lambda t: lambda: model()(torch.tensor([[1, 50]])), ValueError,
     "outside the model's vocabulary 0..49: encode with the tokenizer"),
    ("negative token id", lambda t: lambda: model()(torch.tensor([[-1, 2]])), ValueError, "token id -1"),
    ("too many tokens", lambda t: lambda: model()(torch.zeros(1, 9, dtype=torch.long)), ValueError, "keep only the last 8 tokens"),
    # attention
    ("attention heads not dividing", lambda t: lambda: MultiHeadAttention(4, 6, 4, 0.0, num_heads=4), ValueError, "divisible by num_heads"),
    ("attention dropout 2", lambda t: lambda: MultiHeadAttention(4, 4, 4, 2.0, num_heads=2), ValueError, "dropout must be a probability"),
    ("attention num_heads 0", lambda t: lambda: MultiHeadAttention(4, 4, 4, 0.0, num_heads=0), ValueError, "num_heads must be a whole number"),
    ("attention on 2-D input", lambda t: lambda: MultiHeadAttention(4, 4, 4, 0.0, 2)(torch.ones(3, 4)), ValueError,
     "x.unsqueeze(0)"),
    ("attention wrong width", lambda t: lambda: MultiHeadAttention(4, 4, 4, 0.0, 2)(torch.ones(1, 3, 5)), ValueError, "d_in=4"),
    ("attention beyond context", lambda t: lambda: MultiHeadAttention(4, 4, 4, 0.0, 2)(torch.ones(1, 5, 4)), ValueError,
     "x[:, -4:]"),
    # generation
    ("temperature nan", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=float("nan")), ValueError,
     "temperature must be a finite number >= 0"),
    ("temperature inf", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=float("inf")), ValueError, "finite number"),
    ("temperature negative", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=-1.0), ValueError, "(0 is greedy)"),
    ("temperature a string", lambda t: lambda: generate(model(), IDS, 3, 8, temperature="hot"), ValueError, "temperature must be"),
    ("top_k 0", lambda t: lambda: generate(model(), IDS, 3, 8, top_k=0), ValueError, "top_k must be a whole number >= 1"),
    ("top_k float", lambda t: lambda: generate(model(), IDS, 3, 8, top_k=2.5), ValueError, "top_k must be a whole number"),
    ("top_p nan", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=1.0, top_p=float("nan")), ValueError,
     "top_p must be in (0, 1]"),
    ("top_p 0", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=1.0, top_p=0.0), ValueError, "top_p must be in (0, 1]"),
    ("context_size too large", lambda t: lambda: generate(model(), IDS, 3, 1024), ValueError, "pass context_size=8"),
    ("context_size 0", lambda t: lambda: generate(model(), IDS, 3, 0), ValueError, "context_size must be a whole number >= 1"),
    ("max_new_tokens negative", lambda t: lambda: generate(model(), IDS, -1, 8), ValueError, "max_new_tokens must be"),
    ("generate on 1-D ids", lambda t: lambda: generate(model(), torch.tensor([1, 2]), 3, 8), ValueError, "idx.unsqueeze(0)"),
    ("generate on a list", lambda t: lambda: generate(model(), [[1, 2]], 3, 8), TypeError, "use text_to_token_ids"),
    ("generate on an empty prompt", lambda t: lambda: generate(model(), torch.zeros(1, 0, dtype=torch.long), 3, 8), ValueError,
     "an empty prompt has none"),
    ("generate ids beyond vocabulary", lambda t: lambda: generate(model(), torch.tensor([[99]]), 3, 8), ValueError,
     "outside the model's vocabulary"),
    ("eos_id beyond vocabulary", lambda t: lambda: generate(model(), IDS, 3, 8, eos_id=50256), ValueError, "eos_id must be a token id"),
    ("use_cache text", lambda t: lambda: generate(model(), IDS, 3, 8, use_cache="yes"), TypeError, "use_cache must be True or False"),
    ("greedy on 1-D ids", lambda t: lambda: generate_text_simple(model(), torch.tensor([1]), 2, 8), ValueError, "unsqueeze(0)"),
    ("greedy context too large", lambda t: lambda: generate_text_simple(model(), IDS, 2, 9), ValueError, "pass context_size=8"),
    ("top_k_filter 0", lambda t: lambda: top_k_filter(torch.zeros(1, 5), 0), ValueError, "top_k must be a whole number >= 1"),
    ("top_p_filter 1.5", lambda t: lambda: top_p_filter(torch.zeros(1, 5), 1.5), ValueError, "top_p must be a number in (0, 1]"),
    ("empty text", lambda t: lambda: text_to_token_ids("", CharTokenizer(50)), ValueError, "give at least one word"),
    ("text bytes", lambda t: lambda: text_to_token_ids(b"hi", CharTokenizer(50)), TypeError, "text must be a str"),
    ("no tokenizer", lambda t: lambda: text_to_token_ids("hi", None), TypeError, "tokenizer must have a encode method"),
    ("decode a batch", lambda t: lambda: token_ids_to_text(torch.zeros(2, 3, dtype=torch.long), CharTokenizer(50)), ValueError,
     "decode one row at a time"),
    ("decode floats", lambda t: lambda: token_ids_to_text(torch.ones(1, 3), CharTokenizer(50)), TypeError, "integer token ids"),
]


@catalogue(CASES)
def test_fault(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    expect_fault(case, tmp_path, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written, half or whole


def test_checks_use_no_random_numbers():
    """A sampled generation gives the same tokens with the checks as the same arithmetic without them."""
    m = model()
    torch.manual_seed(7)
    out = generate(m, IDS, 5, 8, temperature=1.0, top_k=10, top_p=0.9)
    torch.manual_seed(7)
    expected = IDS
    for _ in range(5):
        with torch.no_grad():
            logits = m(expected[:, -8:])[:, -1, :]
        logits = top_p_filter(top_k_filter(logits, 10) / 1.0, 0.9)
        expected = torch.cat([expected, torch.multinomial(torch.softmax(logits, dim=-1), 1)], dim=1)
    assert torch.equal(out, expected)
