"""Fault catalogue of utils.tokenizer, utils.data and utils.plots: bad input is refused up front, by name."""

import warnings

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
from utils.bpe import BPETokenizer

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


def test_stride_beyond_the_window_warns():
    with pytest.warns(UserWarning, match="stride=6 > max_length=4: 2 of every 6 tokens fall between windows and are "
                                         "skipped; use stride <= max_length"):
        GPTDatasetV1(TEXT, CharTokenizer(), 4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GPTDatasetV1(TEXT, CharTokenizer(), 4, 4)  # windows that tile the text: no warning


def test_the_simple_tokenizers_make_windows_too():
    """GPTDatasetV1 passes tiktoken's allowed_special: the chapter-2 tokenizers take it, and their ids come out."""
    text = f"{TEXT} <|endoftext|> {TEXT}"
    for tokenizer in (SimpleTokenizerV1(VOCAB), SimpleTokenizerV2(VOCAB)):
        ids = tokenizer.encode(text)
        assert ids[len(ids) // 2] == VOCAB["<|endoftext|>"]
        dataset = GPTDatasetV1(text, tokenizer, max_length=4, stride=4)
        assert dataset[1][0].tolist() == ids[4:8]
        loader = create_dataloader_v1(text, batch_size=2, max_length=4, stride=4, shuffle=False, tokenizer=tokenizer)
        assert next(iter(loader))[1].tolist() == [ids[1:5], ids[5:9]]


def test_a_truncated_merges_file_is_refused(tmp_path):
    """A merges file cut at a line loaded as a different tokenizer (its lost tokens became 'special tokens')."""
    folder = BPETokenizer.train(TEXT * 20, 300).save(tmp_path / "tok")
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    for cut in ("".join(lines[: len(lines) // 2]), "".join(lines[:-1])):
        (folder / "merges.txt").write_text(cut, encoding="utf-8")
        with pytest.raises(ValueError, match=r"vocab.json: '.+' \(id \d+\) is '.+' \+ '.+', a token a merge makes, but "
                                             r".*merges.txt ends after \d+ merges without it: the merges file is truncated"):
            BPETokenizer.load(folder)


def test_training_on_lone_surrogates_learns_what_encode_sees():
    """A lone surrogate has no UTF-8 bytes: training replaces it with U+FFFD, as encode (and tiktoken) do."""
    text = TEXT * 5 + " \ud800 x \udfff\udfff"
    tok = BPETokenizer.train(text, 280)
    assert tok.merges == BPETokenizer.train(text.replace("\ud800", "\ufffd").replace("\udfff", "\ufffd"), 280).merges
    assert tok.decode(tok.encode("a \ud800")) == "a \ufffd"
