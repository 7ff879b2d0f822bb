"""Fault catalogue of utils.tokenizer, utils.data and utils.plots: bad input is refused up front, by name."""

import matplotlib
import pytest
import torch
from faults import catalogue, expect_fault
from tiny import CharTokenizer

from utils import (
    GPTDatasetV1,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    create_dataloader_v1,
    plot_losses,
    plot_values,
    split_text,
)

matplotlib.use("Agg")
TEXT = "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough."
VOCAB = build_vocab(TEXT, special_tokens=("<|endoftext|>", "<|unk|>"))


CASES = [
    ("split bytes", lambda t: lambda: split_text(b"hello"), TypeError, "decode bytes first"),
    ("vocab special tokens a string", lambda t: lambda: build_vocab(TEXT, special_tokens="<|unk|>"), TypeError,
     "special_tokens must be a tuple of strings"),
    ("V1 unknown word", lambda t: lambda: SimpleTokenizerV1(VOCAB).encode("Hello"), KeyError, "use SimpleTokenizerV2"),
    ("V1 vocab a list", lambda t: lambda: SimpleTokenizerV1(["a"]), ValueError, "vocab must be a non-empty dict"),
    ("V1 vocab with repeated ids", lambda t: lambda: SimpleTokenizerV1({"a": 0, "b": 0}), ValueError, "its own whole-number id"),
    ("V1 decode unknown id", lambda t: lambda: SimpleTokenizerV1(VOCAB).decode([999]), ValueError,
     "token id 999 is not in the vocabulary"),
    ("V1 encode None", lambda t: lambda: SimpleTokenizerV1(VOCAB).encode(None), TypeError, "text must be a str"),
    ("V2 without <|unk|>", lambda t: lambda: SimpleTokenizerV2(build_vocab(TEXT)), ValueError,
     "special_tokens=('<|endoftext|>', '<|unk|>')"),
    ("V2 decode unknown id", lambda t: lambda: SimpleTokenizerV2(VOCAB).decode([-1]), ValueError, "not in the vocabulary"),
    ("dataset text too short", lambda t: lambda: GPTDatasetV1("abc", CharTokenizer(), max_length=8, stride=1), ValueError,
     "use a longer text or a smaller max_length"),
    ("dataset stride 0", lambda t: lambda: GPTDatasetV1(TEXT, CharTokenizer(), 4, 0), ValueError, "use e.g. stride=max_length"),
    ("dataset max_length float", lambda t: lambda: GPTDatasetV1(TEXT, CharTokenizer(), 4.0, 4), ValueError, "use e.g. max_length=256"),
    ("dataset txt a list", lambda t: lambda: GPTDatasetV1([TEXT], CharTokenizer(), 4, 4), TypeError, "txt must be a str"),
    ("dataset without tokenizer", lambda t: lambda: GPTDatasetV1(TEXT, "gpt2", 4, 4), TypeError,
     "tokenizer must have an encode method"),
    ("loader batch_size 0", lambda t: lambda: create_dataloader_v1(TEXT, batch_size=0, tokenizer=CharTokenizer()), ValueError,
     "batch_size must be a positive whole number"),
    ("loader too few windows", lambda t: lambda: create_dataloader_v1(TEXT, batch_size=64, max_length=8, stride=8,
                                                            tokenizer=CharTokenizer()), ValueError, "pass drop_last=False"),
    ("loader num_workers -1", lambda t: lambda: create_dataloader_v1(TEXT, max_length=4, num_workers=-1, tokenizer=CharTokenizer()),
     ValueError, "num_workers must be a whole number >= 0"),
    ("loader shuffle text", lambda t: lambda: create_dataloader_v1(TEXT, max_length=4, shuffle="yes", tokenizer=CharTokenizer()),
     TypeError, "shuffle must be True or False"),
    ("plot different lengths", lambda t: lambda: plot_losses([1, 2], [10, 20], [3.0], [3.0]), ValueError,
     "one entry per evaluation"),
    ("plot nothing", lambda t: lambda: plot_losses([], [], [], []), ValueError, "train with a smaller eval_freq"),
    ("plot tensors with grad", lambda t: lambda: plot_losses([1], [10], [torch.ones(2)], [1.0]), TypeError,
     "use loss.item()"),
    ("plot a string", lambda t: lambda: plot_values("12", [1, 2], [1.0, 2.0], [1.0, 2.0]), TypeError,
     "epochs_seen must be a list of numbers"),
    ("plot empty label", lambda t: lambda: plot_values([1], [1], [1.0], [1.0], label=""), ValueError,
     "label must be a non-empty string"),
]


@catalogue(CASES)
def test_fault(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    expect_fault(case, tmp_path, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written, half or whole


def test_tokenizer_files_unreachable_is_one_clear_error(monkeypatch):
    import tiktoken

    from utils.tokenizer import gpt2_tokenizer

    def offline(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(RuntimeError, match="Connect to the internet once, or set TIKTOKEN_CACHE_DIR"):
        gpt2_tokenizer.__wrapped__()
