"""A class a chapter notebook defines and utils also holds must behave the same: two copies must not drift.

Each case pulls the class out of the committed notebook (tests/nbextract.py) and compares it with the utils
one on seeded input. Chapters 4-7 add their cases here the same way.
"""

import pytest
import torch
from nbextract import extract

import utils
from utils.tokenizer import build_vocab, gpt2_tokenizer

NB02 = "02_working_with_text.ipynb"
NB03 = "03_attention.ipynb"

SAMPLES = [
    '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.',
    "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough--so it was no",
    "Hello: do you like tea; or (perhaps) coffee? <|endoftext|> In the sunlit terraces of the palace!",
]


@pytest.fixture(scope="module")
def verdict():
    return utils.fetch("the-verdict").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def nb02():
    return extract(NB02, "SimpleTokenizerV1", "SimpleTokenizerV2", "GPTDatasetV1", "create_dataloader_v1")


@pytest.fixture(scope="module")
def nb03():
    return extract(NB03, "MultiHeadAttention")


def test_simple_tokenizer_v1_agrees(nb02, verdict):
    vocab = build_vocab(verdict)
    ours, theirs = nb02["SimpleTokenizerV1"](vocab), utils.SimpleTokenizerV1(vocab)
    for text in SAMPLES[:2]:
        ids = ours.encode(text)
        assert ids == theirs.encode(text)
        assert ours.decode(ids) == theirs.decode(ids)
    # the book's ids for its example sentence
    assert ours.encode(SAMPLES[0])[:5] == [1, 56, 2, 850, 988]
    # both refuse an unknown word the same way
    messages = []
    for tok in (ours, theirs):
        with pytest.raises(KeyError) as err:
            tok.encode(SAMPLES[2])
        messages.append(err.value.args[0])
    assert messages[0] == messages[1]
    assert "'Hello'" in messages[0] and "SimpleTokenizerV2" in messages[0]


def test_simple_tokenizer_v2_agrees(nb02, verdict):
    vocab = build_vocab(verdict, special_tokens=("<|endoftext|>", "<|unk|>"))
    ours, theirs = nb02["SimpleTokenizerV2"](vocab), utils.SimpleTokenizerV2(vocab)
    for text in SAMPLES:
        ids = ours.encode(text)
        assert ids == theirs.encode(text)
        assert ours.decode(ids) == theirs.decode(ids)
    assert ours.decode(ours.encode(SAMPLES[2])).startswith("<|unk|>: do you like tea; or")


@pytest.mark.parametrize("max_length,stride", [(4, 1), (4, 4), (8, 5)])
def test_gpt_dataset_v1_agrees(nb02, verdict, max_length, stride):
    tokenizer = gpt2_tokenizer()
    ours = nb02["GPTDatasetV1"](verdict, tokenizer, max_length, stride)
    theirs = utils.GPTDatasetV1(verdict, tokenizer, max_length, stride)
    assert len(ours) == len(theirs) > 100
    for i in [0, 1, len(ours) // 2, len(ours) - 1]:
        for a, b in zip(ours[i], theirs[i]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("shuffle", [False, True])
def test_create_dataloader_v1_agrees(nb02, verdict, shuffle):
    settings = dict(batch_size=8, max_length=4, stride=4, shuffle=shuffle)
    torch.manual_seed(123)
    ours = [x for x, _ in nb02["create_dataloader_v1"](verdict, **settings)]
    torch.manual_seed(123)
    theirs = [x for x, _ in utils.create_dataloader_v1(verdict, **settings)]
    assert len(ours) == len(theirs) == 160
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    if not shuffle:
        assert ours[0][0].tolist() == [40, 367, 2885, 1464]


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_multi_head_attention_agrees(nb03, qkv_bias):
    args = dict(d_in=8, d_out=12, context_length=10, dropout=0.1, num_heads=3, qkv_bias=qkv_bias)
    torch.manual_seed(123)
    ours = nb03["MultiHeadAttention"](**args)
    torch.manual_seed(123)
    theirs = utils.MultiHeadAttention(**args, fast=False)
    # same initialisation order -> identical weights under the same seed
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))

    torch.manual_seed(0)
    x = torch.randn(2, 7, 8)  # (batch, num_tokens, d_in), fewer tokens than context_length
    ours.eval(), theirs.eval()
    with torch.no_grad():
        expected = ours(x)
        assert expected.shape == (2, 7, 12)
        torch.testing.assert_close(theirs(x), expected, rtol=0, atol=0)
        theirs.fast = True
        torch.testing.assert_close(theirs(x), expected, rtol=1e-5, atol=1e-6)

    # in training mode the book's path draws the same dropout mask from the same seed
    ours.train(), theirs.train()
    theirs.fast = False
    torch.manual_seed(7)
    a = ours(x)
    torch.manual_seed(7)
    b = theirs(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
