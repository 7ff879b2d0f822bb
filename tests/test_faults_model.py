"""Fault catalogue of utils.model, utils.attention and utils.generate: bad input is refused up front, by name."""

import torch
from faults import catalogue, expect_fault
from tiny import CharTokenizer, tiny_config, tiny_model

from utils import (
    GPTModel,
    MultiHeadAttention,
    generate,
    generate_text_simple,
    gpt2_config,
    token_ids_to_text,
    top_k_filter,
    top_p_filter,
)

SMALL = dict(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1)  # the messages name 50 and 8
TINY = tiny_config(**SMALL)


def model():
    return tiny_model(0, **SMALL)


IDS = torch.tensor([[1, 2, 3]])

# Only the faults where torch's own error would confuse a learner are checked (a config or shape mismatch, ids
# outside the vocabulary, more tokens than the context); the rest end in torch's or Python's own clear errors.
CASES = [
    # model config
    ("config not a dict", lambda t: lambda: GPTModel([1, 2]), ValueError, "start from GPT_CONFIG_124M"),
    ("config missing keys", lambda t: lambda: GPTModel({"vocab_size": 5}), ValueError, "the model config lacks"),
    ("emb_dim not divisible", lambda t: lambda: GPTModel({**TINY, "n_heads": 3}), ValueError, "must be divisible by num_heads (3)"),
    ("vocab_size zero", lambda t: lambda: GPTModel({**TINY, "vocab_size": 0}), ValueError, "config['vocab_size'] must be a whole number"),
    ("context_length float", lambda t: lambda: GPTModel({**TINY, "context_length": 8.0}), ValueError, "config['context_length']"),
    ("unknown gpt2 size", lambda t: lambda: gpt2_config("125M"), ValueError, "choose one of 124M"),
    # model input
    # model input
    ("model on a 1-D tensor", lambda t: lambda: model()(torch.tensor([1, 2])), ValueError, "add the batch dimension"),
    ("model on no tokens", lambda t: lambda: model()(torch.zeros(1, 0, dtype=torch.long)), ValueError, "with 1 to 8 tokens"),
    ("token id beyond vocabulary", lambda t: lambda: model()(torch.tensor([[1, 50]])), ValueError,
     "vocabulary 0..49, got ids 1..50: encode with the tokenizer"),
    ("negative token id", lambda t: lambda: model()(torch.tensor([[-1, 2]])), ValueError, "got ids -1..2"),
    # attention
    ("too many tokens", lambda t: lambda: model()(torch.zeros(1, 9, dtype=torch.long)), ValueError, "idx[:, -8:]"),
    # attention
    ("attention heads not dividing", lambda t: lambda: MultiHeadAttention(4, 6, 4, 0.0, num_heads=4), ValueError, "divisible by num_heads"),
    # generation
    ("attention beyond context", lambda t: lambda: MultiHeadAttention(4, 4, 4, 0.0, 2)(torch.ones(1, 5, 4)), ValueError,
     "5 tokens exceed the context length 4"),
    # generation
    ("top_p 0", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=1.0, top_p=0.0), ValueError, "top_p must be in (0, 1]"),
    ("context_size too large", lambda t: lambda: generate(model(), torch.zeros(1, 8, dtype=torch.long), 3, 1024), ValueError,
     "the KV cache already holds 8), got (1, 1): add the batch dimension with ids.unsqueeze(0), keep the last tokens with "
     "idx[:, -8:] (in generate: context_size <= 8)"),
    ("generate on an empty prompt", lambda t: lambda: generate(model(), torch.zeros(1, 0, dtype=torch.long), 3, 8), ValueError,
     "with 1 to 8 tokens"),
    ("generate ids beyond vocabulary", lambda t: lambda: generate(model(), torch.tensor([[99]]), 3, 8), ValueError,
     "in the model's vocabulary 0..49"),
    ("greedy context too large", lambda t: lambda: generate_text_simple(model(), torch.zeros(1, 8, dtype=torch.long), 2, 9),
     ValueError, "context_size <= 8"),
    ("top_p_filter 1.5", lambda t: lambda: top_p_filter(torch.zeros(1, 5), 1.5), ValueError, "top_p must be in (0, 1]"),
    ("decode a batch", lambda t: lambda: token_ids_to_text(torch.zeros(2, 3, dtype=torch.long), CharTokenizer(50)), ValueError,
     "decode one row at a time"),
    ("context_size too large, no cache", lambda t: lambda: generate(model(), torch.zeros(1, 8, dtype=torch.long), 3, 1024,
                                                          use_cache=False), ValueError, "context_size <= 8"),
    ("temperature nan", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=float("nan")), ValueError,
     "temperature must be a finite number (0 or less: greedy decoding), got nan"),
    ("temperature inf", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=float("inf")), ValueError,
     "temperature must be a finite number"),
    ("top_k 0", lambda t: lambda: generate(model(), IDS, 3, 8, temperature=1.0, top_k=0), ValueError,
     "top_k must be at least 1 (the number of most likely tokens to sample from; None: no top-k filter), got 0"),
    ("top_k negative, greedy", lambda t: lambda: generate(model(), IDS, 3, 8, top_k=-1), ValueError, "got -1"),
    ("top_k_filter 0", lambda t: lambda: top_k_filter(torch.zeros(1, 5), 0), ValueError, "top_k must be at least 1"),
    ("prompt a list", lambda t: lambda: generate(model(), [1, 2, 3], 3, 8), ValueError,
     "idx must be a tensor of token ids of shape (batch, num_tokens), got list: use text_to_token_ids(text, tokenizer)"),
    ("prompt a 1-D tensor", lambda t: lambda: generate(model(), torch.tensor([1, 2, 3]), 3, 8, use_cache=False), ValueError,
     "got (3,): use text_to_token_ids(text, tokenizer), ids.unsqueeze(0) or torch.tensor([ids])"),
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


def test_a_tiny_temperature_is_greedy_not_an_overflow():
    """logits / 1e-40 overflows to inf (torch: 'probability tensor contains inf'); the shifted logits give the limit."""
    m = model()
    greedy = generate(m, IDS, 5, 8, temperature=0.0)
    torch.manual_seed(0)
    assert torch.equal(generate(m, IDS, 5, 8, temperature=1e-40), greedy)
    assert torch.equal(generate(m, IDS, 5, 8, temperature=-1.0), greedy)  # the book's rule: 0 or less is greedy
