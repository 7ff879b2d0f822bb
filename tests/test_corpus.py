"""utils.corpus: the token file equals tiktoken's encoding, is reused, notices changes, keeps memory flat."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.corpus import (
    ByteTokenizer,
    CorpusError,
    TokenFile,
    TokenWindows,
    build_token_file,
    get_tokenizer,
    train_val_windows,
)
from utils.data import GPTDatasetV1

ROOT = Path(__file__).resolve().parent.parent
needs_gpt2 = pytest.mark.skipif(
    not (ROOT.parent / "shared" / "data" / "gpt2-bpe").is_dir(),
    reason="GPT-2's tokenizer files (../shared/data/gpt2-bpe) are not here",
)
# Pieces that stress the places where a streaming tokenizer could cut wrongly: runs of spaces and newlines,
# Windows newlines, contractions, digits, multi-byte characters, unusual spaces and a literal end-of-text marker.
PIECES = ["a", "bc", " ", "  ", "   ", "\n", "\n\n", "\r\n", " \n", "\t", "é", "1", "23", "!", "?!", "'s", "'ll",
          "<|endoftext|>", "\u3000", "x\u2028", "\x1c", "€", "🙂", "Hello", " world", "."]


def _random_text(seed, n):
    rng = random.Random(seed)
    return "".join(rng.choice(PIECES) for _ in range(n))


@needs_gpt2
def test_token_file_equals_tiktoken_on_the_joined_documents(tmp_path):
    tok = get_tokenizer("gpt2")
    (tmp_path / "books" / "sub").mkdir(parents=True)
    paths = [tmp_path / "books" / "a.txt", tmp_path / "books" / "sub" / "b.txt", tmp_path / "books" / "c.txt"]
    for k, p in enumerate(paths):
        p.write_bytes(_random_text(k, 3000).encode("utf-8"))
    (tmp_path / "books" / "notes.md").write_text("not a .txt: left out")
    # tiny pieces (61 bytes) force thousands of cuts, some inside multi-byte characters
    token_file = build_token_file(tmp_path / "books", tmp_path / "out" / "tokens.bin", tok, progress=False, chunk_bytes=61)
    texts = [p.read_text(encoding="utf-8") for p in sorted(paths)]  # Python's text mode: \r\n -> \n
    expected = tok.encode("<|endoftext|>".join(texts), allowed_special={"<|endoftext|>"})
    assert token_file.num_tokens == len(expected)
    assert np.array_equal(token_file.tokens(), np.array(expected, dtype=np.uint16))
    meta = json.loads((tmp_path / "out" / "tokens.json").read_text())
    assert [s["path"] for s in meta["sources"]] == ["a.txt", "c.txt", "sub/b.txt"]
    assert meta["tokenizer"]["name"] == "gpt2" and meta["tokenizer"]["n_vocab"] == 50257
    assert all(len(s["sha256"]) == 64 and s["size"] > 0 for s in meta["sources"])


def test_rebuild_reuses_and_a_changed_source_is_detected(tmp_path, capsys):
    tok = ByteTokenizer()
    src = tmp_path / "texts"
    src.mkdir()
    (src / "one.txt").write_text("first text " * 50)
    (src / "two.txt").write_text("second text " * 50)
    out = tmp_path / "tokens.bin"
    first = build_token_file(src, out, tok)
    stamp = out.stat().st_mtime_ns, out.stat().st_ino
    capsys.readouterr()
    again = build_token_file(src, out, tok)
    assert "reusing" in capsys.readouterr().out
    assert (out.stat().st_mtime_ns, out.stat().st_ino) == stamp and again.num_tokens == first.num_tokens

    (src / "two.txt").write_text("SECOND text " * 50)  # same size, other content: only the sha256 tells
    changed = build_token_file(src, out, tok)
    assert "source two.txt changed" in capsys.readouterr().out
    start = len("first text " * 50) + 1  # after one.txt and the <|endoftext|> between the files
    assert tok.decode(changed.tokens()[start:start + 6].tolist()) == "SECOND"

    (src / "three.txt").write_text("third")
    grown = build_token_file(src, out, tok)
    assert "new source three.txt" in capsys.readouterr().out
    assert grown.num_tokens == changed.num_tokens + 1 + len("third")


def test_windows_are_complete_and_the_same_as_gptdatasetv1(tmp_path):
    tok = ByteTokenizer()
    text = (ROOT / "data" / "the-verdict.txt").read_text(encoding="utf-8")[:3001]
    (tmp_path / "v.txt").write_text(text, encoding="utf-8")
    token_file = build_token_file(tmp_path / "v.txt", tmp_path / "v.bin", tok, progress=False)
    for context, stride in [(7, 3), (16, 16), (50, 1)]:
        mine, book = TokenWindows(token_file, context, stride), GPTDatasetV1(text, tok, context, stride)
        assert len(mine) == len(book)
        for i in [0, 1, len(book) // 2, len(book) - 1]:
            assert torch.equal(mine[i][0], book[i][0]) and torch.equal(mine[i][1], book[i][1])
        last_input, last_target = mine[len(mine) - 1]
        assert len(last_input) == len(last_target) == context  # complete, never cut short
        assert (len(mine) - 1) * stride + context + 1 <= token_file.num_tokens
    exact = TokenWindows(token_file, 10, 10, start=0, end=11)  # exactly context + 1 tokens: one window
    assert len(exact) == 1 and len(TokenWindows(token_file, 10, 10, start=0, end=10)) == 0
    with pytest.raises(IndexError):
        exact[1]


def test_train_validation_split_by_tokens(tmp_path):
    (tmp_path / "t.txt").write_text("x" * 999)
    token_file = build_token_file(tmp_path / "t.txt", tmp_path / "t.bin", ByteTokenizer(), progress=False)
    train, val = train_val_windows(token_file, 9, val_fraction=0.1)
    assert (train.start, train.end, val.start, val.end) == (0, 899, 899, 999)
    assert len(train) == 99 and len(val) == 11  # windows start every 9 tokens while 10 more remain
    with pytest.raises(CorpusError, match="validation part has 100 tokens"):
        train_val_windows(token_file, 100)


def test_bad_inputs_name_the_file(tmp_path):
    tok = ByteTokenizer()
    with pytest.raises(CorpusError, match="does not exist"):
        build_token_file(tmp_path / "nowhere", tmp_path / "o.bin", tok)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(CorpusError, match="holds no .txt files"):
        build_token_file(tmp_path / "empty_folder", tmp_path / "o.bin", tok)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty.txt.* is empty"):
        build_token_file(tmp_path / "empty.txt", tmp_path / "o.bin", tok)
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "ok.txt").write_text("fine")
    (tmp_path / "latin" / "old.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"old.txt.* is not UTF-8 text \(bad byte b'\\xe9' at byte 3\)"):
        build_token_file(tmp_path / "latin", tmp_path / "o.bin", tok)
    assert not (tmp_path / "o.bin").exists() and not list(tmp_path.glob("*.tmp"))  # nothing half-written left
    with pytest.raises(CorpusError, match="no token file"):
        TokenFile(tmp_path / "o.bin")


@needs_gpt2
def test_token_file_of_another_tokenizer_is_refused(tmp_path):
    (tmp_path / "t.txt").write_text("some text " * 20)
    build_token_file(tmp_path / "t.txt", tmp_path / "t.bin", ByteTokenizer(), progress=False)
    with pytest.raises(CorpusError, match="made by tokenizer 'bytes' .* not by the one in use, 'gpt2'"):
        TokenFile(tmp_path / "t.bin", get_tokenizer("gpt2"))
    with open(tmp_path / "t.bin", "ab") as f:  # a truncated or grown file no longer matches its description
        f.write(b"\0")
    with pytest.raises(CorpusError, match="truncated or was changed"):
        TokenFile(tmp_path / "t.bin")


@needs_gpt2
def test_memory_stays_flat_while_tokenizing_tens_of_megabytes(tmp_path):
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    corpus = tmp_path / "big.txt"
    with open(corpus, "w") as f:  # ~20 MB written a line at a time
        for _ in range(20_000):
            f.write(" ".join(rng.choices(words, k=180)) + ".\n")
    size = corpus.stat().st_size
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        from utils.corpus import build_token_file, get_tokenizer
        tok = get_tokenizer("gpt2")
        tok.encode("warm up the tokenizer " * 2000)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        token_file = build_token_file({str(corpus)!r}, {str(tmp_path / "big.bin")!r}, tok, progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(token_file.num_tokens, (after - before) * 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    num_tokens, growth = map(int, done.stdout.split())
    assert num_tokens > 5_000_000 and size > 20_000_000
    # a Python list of all the tokens would take ~36 bytes each (~400 MB); the stream peaks at a few MB
    assert growth < size / 4, f"peak memory grew by {growth / 1e6:.1f} MB while tokenizing {size / 1e6:.1f} MB"
