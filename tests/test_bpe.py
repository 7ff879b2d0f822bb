"""utils.bpe: GPT-2's files encode exactly as tiktoken does; training invariants; a clear error for bad input.

GPT-2's encoder.json and vocab.bpe come from tiktoken's cache (the root conftest fills it from ../shared/data/gpt2-bpe).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbextract import code_cells, extract

from utils import BPETokenizer, GPTDatasetV1
from utils import bpe as bpe_module
from utils.bpe import GPT2_PATTERN, gpt2_file, pretokenize, train_merges
from utils.checks import END_OF_TEXT

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (the offline data sets) is not here")

SPEC = importlib.util.spec_from_file_location("bench_bpe", ROOT / "bench" / "bpe.py")
bench_bpe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench_bpe)

# Property tests: enough examples to hit the odd cases, few enough to run in seconds.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SAMPLE = (
    "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough--so it was no "
    "great surprise to me to hear that, in the height of his glory, he had dropped his painting, married a "
    "rich widow, and established himself in a villa on the Riviera. It's 1908; we'll see. Don't they've?\n\n"
) * 3


@functools.lru_cache(maxsize=None)
def ours():
    return BPETokenizer.from_gpt2()


@functools.lru_cache(maxsize=None)
def theirs():
    import tiktoken

    return tiktoken.get_encoding("gpt2")


@functools.lru_cache(maxsize=None)
def small():
    return BPETokenizer.train(SAMPLE, 300)


def same_as_tiktoken(text: str, **kw):
    ids = ours().encode(text, **kw)
    assert ids == theirs().encode(text, **kw), f"ids differ from tiktoken's on {text[:80]!r}"
    assert ours().decode(ids) == theirs().decode(ids)
    return ids


# --- GPT-2's files: token for token as tiktoken -----------------------------------------------------------------


def test_gpt2_has_tiktokens_shape_and_interface():
    tok, enc = ours(), theirs()
    assert tok.n_vocab == enc.n_vocab == 50257 and tok.eot_token == enc.eot_token == 50256
    assert tok.name == "gpt2" and tok.special_tokens_set == enc.special_tokens_set
    assert tok.max_token_value == enc.max_token_value
    for i in (0, 255, 256, 1000, 50255, 50256):
        assert tok.decode_single_token_bytes(i) == enc.decode_single_token_bytes(i)


@needs_shared
def test_every_sms_line_as_tiktoken():
    lines = (SHARED_DATA / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 5000
    for line in lines:
        assert ours().decode(same_as_tiktoken(line)) == line


@needs_shared
def test_every_instruction_entry_as_tiktoken():
    entries = json.loads((SHARED_DATA / "instruction-data.json").read_text(encoding="utf-8"))
    assert len(entries) == 1100
    for entry in entries:
        for value in entry.values():
            assert ours().decode(same_as_tiktoken(value)) == value
        whole = json.dumps(entry, ensure_ascii=False, indent=2)
        same_as_tiktoken(whole)


@needs_shared
def test_the_verdict_as_tiktoken():
    text = (SHARED_DATA / "the-verdict.txt").read_text(encoding="utf-8")
    ids = same_as_tiktoken(text)
    assert len(ids) == 5145  # the book's count
    assert ours().decode(ids) == text


@pytest.mark.parametrize(
    "text",
    ["", " ", "\n", "\r\n", "  \r\n\r\n  ", "a\r\nb", "   leading", "trailing   ", "x \n\n\n y", "\t\t\tz",
     "1234567890 12,345.67", "it's I'M we'll they've 'd", "!!!???...,,,;;", "😀 👍🏽 🇫🇷 家族 Ünïcödé é\u0301",
     "\u00a0nbsp\u2003em space", "a" * 3000, " " * 1000 + "x", "<|endoftext", "endoftext|>"],
)
def test_edge_cases_as_tiktoken(text):
    ids = same_as_tiktoken(text)
    assert ours().decode(ids) == text
    assert ours().encode_ordinary(text) == theirs().encode_ordinary(text)


# Fragments that stress the pre-tokenizer and the merges: mixed into strings by hypothesis.
FRAGMENTS = [" ", "  ", "\n", "\n\n", "\r\n", "\r", "\t", "\u00a0", "\u3000", "a", "the", " the", "The", "Hello",
             "'s", "'ll", "'T", "'", "0", "42", "2026", "3.14", ",", ".", "...", "!?", "--", "-", "(", ")", "$", "#",
             "é", "ß", "ж", "中文", "ありがとう", "한국어", "😀", "🇫🇷", "👍🏽", "👨‍👩‍👧", "\u0301", "\u200b", "\ufeff",
             END_OF_TEXT]
mixed = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=30).map("".join)
any_text = st.text(max_size=60) | mixed


@FAST
@given(any_text)
def test_property_same_ids_as_tiktoken_and_round_trip(text):
    if END_OF_TEXT in text:
        with pytest.raises(ValueError, match="disallowed special token"):
            ours().encode(text)
        with pytest.raises(ValueError, match="disallowed special token"):
            theirs().encode(text)
    else:
        assert ours().decode(same_as_tiktoken(text)) == text
    # special tokens allowed ("all" and by name) and the check switched off
    for kw in ({"allowed_special": "all"}, {"allowed_special": {END_OF_TEXT}}, {"disallowed_special": ()}):
        assert ours().decode(same_as_tiktoken(text, **kw)) == text
    assert ours().encode_ordinary(text) == theirs().encode_ordinary(text)


@FAST
@given(st.lists(st.integers(0, 50256), max_size=40))
def test_property_decode_of_any_valid_ids_never_raises(ids):
    assert ours().decode(ids) == theirs().decode(ids)  # invalid UTF-8 in between becomes U+FFFD, as in tiktoken
    assert ours().decode_bytes(ids) == theirs().decode_bytes(ids)


@FAST
@given(any_text)
def test_property_trained_tokenizer_round_trips(text):
    tok = small()
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    assert tok.decode(tok.encode_ordinary(text)) == text


@FAST
@given(st.lists(st.integers(0, 299), max_size=40))
def test_property_trained_decode_never_raises(ids):
    assert isinstance(small().decode(ids), str)


def test_lone_surrogates_replaced_as_tiktoken():
    for text in ["\ud800abc", f"x\udfff {END_OF_TEXT}"]:
        same_as_tiktoken(text, allowed_special="all")
        assert ours().encode_ordinary(text) == theirs().encode_ordinary(text)


@pytest.mark.parametrize("text", ["a" * 20000, "ab" * 5000, "1234567890" * 1000, " " * 20000 + "x", "é" * 3000])
def test_long_pieces_as_tiktoken(text):
    assert ours().decode(same_as_tiktoken(text)) == text  # merged with a heap, not rescanned (quadratic) per merge


@FAST
@given(st.binary(max_size=400) | st.text(alphabet="ab e\n", max_size=400).map(str.encode))
def test_property_heap_merge_equals_the_simple_loop(word):
    tok = ours()
    heap_ids = tok._bpe_long(word)
    assert b"".join(tok.decode_single_token_bytes(i) for i in heap_ids) == word
    if word and word not in tok._ranks:  # (a whole-word token is returned at once, by both)
        limit, bpe_module._LONG_PIECE = bpe_module._LONG_PIECE, 10**9  # make _bpe take its simple loop
        try:
            assert tok._bpe(word) == heap_ids
        finally:
            bpe_module._LONG_PIECE = limit


def test_special_tokens_allowed_and_disallowed():
    tok = ours()
    text = f"Hello{END_OF_TEXT} world {END_OF_TEXT}"
    assert same_as_tiktoken(text, allowed_special="all").count(50256) == 2
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(text)
    assert 50256 not in same_as_tiktoken(text, disallowed_special=())
    with pytest.raises(TypeError, match="pass a set"):
        tok.encode(text, allowed_special=END_OF_TEXT)


def test_works_where_the_series_uses_tiktoken():
    tok = small()
    ds = GPTDatasetV1(SAMPLE, tok, max_length=8, stride=8)  # calls encode(txt, allowed_special={"<|endoftext|>"})
    assert len(ds) > 0 and int(ds[0][0].max()) < tok.n_vocab


# --- training --------------------------------------------------------------------------------------------------


def test_training_invariants():
    tok = BPETokenizer.train(SAMPLE, 320)
    assert tok.n_vocab == 320 and len(tok.merges) == 320 - 256 - 1 and tok.eot_token == 319
    for k, (a, b) in enumerate(tok.merges):
        assert a < 256 + k and b < 256 + k  # made of tokens that existed before
    again = BPETokenizer.train(SAMPLE, 320)
    assert again.merges == tok.merges  # deterministic
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert len(tok.encode(SAMPLE)) < 0.7 * len(SAMPLE.encode("utf-8"))  # 63 merges already save a third
    assert BPETokenizer.train(SAMPLE, 300).merges == tok.merges[:43]  # a smaller vocabulary is a prefix
    no_special = BPETokenizer.train(SAMPLE, 300, special_tokens=())
    assert no_special.n_vocab == 300 and no_special.special_tokens_set == set()
    with pytest.raises(AttributeError, match="no <|endoftext|>"):
        _ = no_special.eot_token


def test_special_tokens_are_not_learned():
    text = (f"{END_OF_TEXT}{SAMPLE}" * 5) + "<|pad|>"
    tok = BPETokenizer.train(text, 300, special_tokens=(END_OF_TEXT, "<|pad|>"))
    assert tok.n_vocab == 300 and tok.special_tokens == {END_OF_TEXT: 298, "<|pad|>": 299}
    assert all(b"endoftext" not in tok.decode_single_token_bytes(i) for i in range(298))
    assert all(b"<|" not in tok.decode_single_token_bytes(i) for i in range(298))
    assert tok.encode("<|pad|>", allowed_special="all") == [299]


def test_incremental_training_equals_naive_recount():
    counts = pretokenize(SAMPLE * 2 + "Zażółć gęślą jaźń 😀😀", (END_OF_TEXT,))
    fast, _ = train_merges(counts, 150)
    assert fast == bench_bpe.train_merges_naive(counts, 150)


def test_pretokenize_in_chunks_counts_the_same():
    text = SAMPLE + "  x\n\n  y 12 ab's  " * 20
    assert pretokenize(text, chunk_chars=7) == pretokenize(text, chunk_chars=10**9)


def test_save_load_identical_ids(tmp_path):
    tok = BPETokenizer.train(SAMPLE + " 😀 é 中文 \x00\x7f", 330)
    folder = tok.save(tmp_path / "my-tokenizer")
    assert sorted(p.name for p in folder.iterdir()) == ["merges.txt", "vocab.json"]
    back = BPETokenizer.load(folder)
    assert back.name == "my-tokenizer" and back.n_vocab == tok.n_vocab and back.merges == tok.merges
    text = SAMPLE + f" 😀 é {END_OF_TEXT}"
    assert back.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert back.special_tokens == tok.special_tokens


def test_gpt2_saved_and_loaded_is_gpt2(tmp_path):
    ours().save(tmp_path / "gpt2")
    back = BPETokenizer.load(tmp_path / "gpt2")
    assert back.n_vocab == 50257 and back.encode(SAMPLE) == theirs().encode(SAMPLE)
    saved = json.loads((tmp_path / "gpt2" / "vocab.json").read_text(encoding="utf-8"))
    assert saved == json.loads(gpt2_file("encoder.json"))  # save writes GPT-2's own encoder.json back


# --- bad input: a clear error ----------------------------------------------------------------------------------


def test_bad_training_input():
    with pytest.raises(ValueError, match="vocab_size=256 is below 256 byte tokens"):
        BPETokenizer.train(SAMPLE, 256)
    with pytest.raises(ValueError, match="at least 258"):
        BPETokenizer.train(SAMPLE, 257, special_tokens=(END_OF_TEXT, "<|pad|>"))
    with pytest.raises(ValueError, match="text is empty"):
        BPETokenizer.train("", 300)
    with pytest.raises(ValueError, match="text is empty"):
        BPETokenizer.train(END_OF_TEXT * 3, 300)
    with pytest.raises(ValueError, match="allows only"):
        BPETokenizer.train("ab ab", 1000)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        BPETokenizer.train(SAMPLE, 300.0)
    with pytest.raises(TypeError, match="text must be a str"):
        BPETokenizer.train(b"bytes", 300)
    with pytest.raises(TypeError, match="tuple of strings"):
        BPETokenizer.train(SAMPLE, 300, special_tokens=END_OF_TEXT)


def test_bad_decode_and_encode_input():
    tok = small()
    with pytest.raises(ValueError, match=r"ids \[300\] are outside the vocabulary.*0-299"):
        tok.decode([1, 300])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-1])
    with pytest.raises(TypeError, match="sequence of ints"):
        tok.decode(["a"])
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(123)


def test_files_that_are_not_gpt2s(tmp_path):
    enc, bpe = tmp_path / "encoder.json", tmp_path / "vocab.bpe"
    enc.write_bytes(gpt2_file("encoder.json"))
    bpe.write_bytes(gpt2_file("vocab.bpe"))
    assert BPETokenizer.from_gpt2(enc, bpe).n_vocab == 50257
    with pytest.raises(ValueError, match="is not JSON"):
        BPETokenizer.from_gpt2(bpe, enc)  # swapped
    with pytest.raises(FileNotFoundError, match="is not a file"):
        BPETokenizer.from_gpt2(tmp_path / "missing.json", bpe)
    lines = bpe.read_text(encoding="utf-8").split("\n")
    shuffled = tmp_path / "shuffled.bpe"
    shuffled.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]), encoding="utf-8")
    with pytest.raises(ValueError, match="do not belong together"):
        BPETokenizer.from_gpt2(enc, shuffled)
    no_header = tmp_path / "no_header.bpe"
    no_header.write_text("\n".join(lines[1:]), encoding="utf-8")
    with pytest.raises(ValueError, match="#version"):
        BPETokenizer.from_gpt2(enc, no_header)
    truncated = tmp_path / "truncated.bpe"
    truncated.write_text("\n".join(lines[:1000]), encoding="utf-8")
    with pytest.raises(ValueError, match="entries beyond the merges"):
        BPETokenizer.from_gpt2(enc, truncated)
    slightly_truncated = tmp_path / "slightly_truncated.bpe"
    slightly_truncated.write_text("\n".join(lines[:-3]), encoding="utf-8")  # the last 2 merges missing
    with pytest.raises(ValueError, match="neither a byte, nor made by a merge"):
        BPETokenizer.from_gpt2(enc, slightly_truncated)
    saved = BPETokenizer.from_gpt2(enc, bpe).save(tmp_path / "saved")
    (saved / "merges.txt").write_text("\n".join(lines[:1000]), encoding="utf-8")
    with pytest.raises(ValueError, match="entries beyond the merges"):
        BPETokenizer.load(saved)
    not_a_vocab = tmp_path / "list.json"
    not_a_vocab.write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON object of token string"):
        BPETokenizer.from_gpt2(not_a_vocab, bpe)
    with pytest.raises(FileNotFoundError, match="lacks vocab.json, merges.txt"):
        BPETokenizer.load(tmp_path)


# --- bench/bpe.py runs end to end on a small text (no timing assertions: the machine is shared) -----------------


@needs_shared
def test_bench_runs_quickly(capsys):
    import conftest  # noqa: F401

    text = bench_bpe.build_corpus(20_000)
    enc = bench_bpe.bench_encode(text, reps=1)
    tr = bench_bpe.bench_train(text, 400, naive_merges=3)
    bench_bpe.report(enc, tr, 400)
    out = capsys.readouterr().out
    for line in ("ids identical to tiktoken", "tiktoken / ours:", "naive / ours:"):
        assert line in out


# --- the notebook's teaching trainer agrees with utils.bpe -----------------------------------------------------


def test_notebook_02b_trainer_agrees_with_utils():
    assigned = [node.value for module in code_cells("02b_bpe_from_scratch.ipynb") for node in module.body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "GPT2_PATTERN"]
    assert len(assigned) == 1 and ast.literal_eval(assigned[0]) == GPT2_PATTERN
    ns = extract("02b_bpe_from_scratch.ipynb", "get_stats", "merge", "train_bpe", namespace={"GPT2_PATTERN": GPT2_PATTERN})
    text = SAMPLE + f"{END_OF_TEXT} Zażółć gęślą jaźń 😀😀 42 42"
    assert ns["train_bpe"](text, 320) == BPETokenizer.train(text, 320).merges
    assert ns["merge"]([1, 2, 2, 1, 2], (1, 2), 9) == [9, 2, 9]
