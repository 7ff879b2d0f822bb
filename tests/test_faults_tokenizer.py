"""Fault catalogue of utils.tokenizer, utils.data and utils.plots: bad input is refused up front, by name."""

import matplotlib
import pytest
from faults import catalogue, expect_fault
from tiny import CharTokenizer

from utils import (
    GPTDatasetV1,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    create_dataloader_v1,
    plot_losses,
)

matplotlib.use("Agg")
TEXT = "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough."
VOCAB = build_vocab(TEXT, special_tokens=("<|endoftext|>", "<|unk|>"))


CASES = [
    ("V1 unknown word", lambda t: lambda: SimpleTokenizerV1(VOCAB).encode("Hello"), KeyError, "use SimpleTokenizerV2"),
    ("V1 decode unknown id", lambda t: lambda: SimpleTokenizerV1(VOCAB).decode([999]), ValueError,
     "token id 999 is not in the vocabulary"),
    ("V2 without <|unk|>", lambda t: lambda: SimpleTokenizerV2(build_vocab(TEXT)), ValueError,
     "special_tokens=('<|endoftext|>', '<|unk|>')"),
    ("V2 decode unknown id", lambda t: lambda: SimpleTokenizerV2(VOCAB).decode([-1]), ValueError, "not in the vocabulary"),
    ("dataset text too short", lambda t: lambda: GPTDatasetV1("abc", CharTokenizer(), max_length=8, stride=1), ValueError,
     "use a longer text or a smaller max_length"),
    ("dataset stride 0", lambda t: lambda: GPTDatasetV1(TEXT, CharTokenizer(), 4, 0), ValueError, "use e.g. stride=max_length"),
    ("loader too few windows", lambda t: lambda: create_dataloader_v1(TEXT, batch_size=64, max_length=8, stride=8),
     ValueError, "pass drop_last=False"),
    ("plot different lengths", lambda t: lambda: plot_losses([1, 2], [10, 20], [3.0], [3.0]), ValueError,
     "one entry per evaluation"),
    ("plot nothing", lambda t: lambda: plot_losses([], [], [], []), ValueError, "train with a smaller eval_freq"),
    ("dataset max_length 0", lambda t: lambda: GPTDatasetV1(TEXT, CharTokenizer(), 0, 4), ValueError, "use e.g. max_length=256"),
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
