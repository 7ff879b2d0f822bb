"""utils.generate: top-k and top-p keep only the allowed tokens, temperature 0 is greedy, eos stops, bad settings fail."""

import math

import pytest
import torch

from utils import GPT_CONFIG_124M, GPTModel, generate, generate_text_simple, top_k_filter, top_p_filter

NEG_INF = float("-inf")


class FixedLogits(torch.nn.Module):
    """A stand-in model whose next-token logits are always `logits` `(vocab_size,)`."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, idx):  # (batch, num_tokens) -> (batch, num_tokens, vocab_size)
        return self.logits.expand(idx.shape[0], idx.shape[1], -1)


def tiny_model():
    torch.manual_seed(123)
    cfg = {**GPT_CONFIG_124M, "vocab_size": 100, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2}
    return GPTModel(cfg).eval()


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.5, -1.0, 2.0, 0.0, 3.0]])
    out = top_k_filter(logits, 2)
    assert torch.equal(out[0], torch.tensor([NEG_INF, 5.0, NEG_INF, 4.0, NEG_INF]))
    assert torch.equal(out[1], torch.tensor([NEG_INF, NEG_INF, 2.0, NEG_INF, 3.0]))
    assert torch.equal(top_k_filter(logits, 10), logits)  # k beyond the vocabulary keeps everything


@pytest.mark.parametrize(
    "top_p,kept",
    [(0.45, {2}), (0.7, {2, 0}), (0.85, {2, 0, 3}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    probs = torch.tensor([0.3, 0.05, 0.5, 0.15])  # sorted: 0.5 (id 2), 0.3 (id 0), 0.15 (id 3), 0.05 (id 1)
    logits = probs.log().unsqueeze(0) + 7.0  # any shift: softmax is the same
    out = top_p_filter(logits, top_p)[0]
    assert {i for i in range(4) if out[i] > NEG_INF} == kept
    assert all(out[i] == logits[0, i] for i in kept)  # kept logits unchanged
    mass = sum(probs[i].item() for i in kept)
    assert mass >= top_p - 1e-6


def test_sampling_stays_inside_top_k_and_top_p():
    model = FixedLogits([2.0, 1.9, 1.8, 0.0, -0.5, -1.0])  # probs ~ .31 .28 .25 .04 .03 .02 (+ ...)
    idx = torch.zeros(4, 1, dtype=torch.long)
    torch.manual_seed(0)
    out = generate(model, idx, 50, context_size=8, temperature=1.0, top_k=2)
    assert set(out[:, 1:].unique().tolist()) == {0, 1}
    torch.manual_seed(0)
    out = generate(model, idx, 50, context_size=8, temperature=1.0, top_p=0.8)
    assert set(out[:, 1:].unique().tolist()) == {0, 1, 2}


def test_temperature_zero_is_greedy():
    model = tiny_model()
    idx = torch.tensor([[5, 17, 3]])
    expected = generate_text_simple(model, idx, 10, context_size=16)
    for use_cache in (True, False):
        torch.manual_seed(1)
        assert torch.equal(generate(model, idx, 10, context_size=16, temperature=0.0, top_k=5, use_cache=use_cache), expected)


def test_temperature_scales_logits():
    """softmax(logits / T): T < 1 sharpens, T > 1 flattens (the book's 0.1 / 1 / 5)."""
    logits = torch.tensor([4.0, 2.0, 1.0])
    sharp, flat = (torch.softmax(logits / t, dim=0) for t in (0.1, 5.0))
    assert sharp[0] > 0.999 and flat.max() - flat.min() < 0.5
    model = FixedLogits(logits)
    torch.manual_seed(0)
    out = generate(model, torch.zeros(1, 1, dtype=torch.long), 200, context_size=4, temperature=0.1)
    assert set(out[0, 1:].tolist()) == {0}


def test_eos_stops():
    model = tiny_model()
    idx = torch.tensor([[5, 17, 3]])
    full = generate(model, idx, 10, context_size=16)
    eos = full[0, 5].item()  # the 3rd new token
    first = next(i for i in range(3, 13) if full[0, i].item() == eos)
    out = generate(model, idx, 10, context_size=16, eos_id=eos)
    assert torch.equal(out, full[:, :first])  # stops before appending <|endoftext|>, as the book's generate


def test_eos_batch_pads_finished_rows():
    model = FixedLogits([0.0, 3.0, 1.0])  # greedy: always token 1
    idx = torch.zeros(2, 2, dtype=torch.long)
    out = generate(model, idx, 5, context_size=4, eos_id=1)
    assert out.shape == (2, 3) and out[:, 2].tolist() == [1, 1]  # every row finished after one step


@pytest.mark.parametrize(
    "kwargs,match",
    [({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
     ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"), ({"top_p": math.nan}, "top_p")],
)
def test_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(FixedLogits([0.0, 1.0]), torch.zeros(1, 1, dtype=torch.long), 3, context_size=4, temperature=1.0, **kwargs)
