"""Your own text as training data: a file or a folder of .txt files -> a memory-mapped uint16 token file.

    build_token_file("books/", "runs/books/tokens.bin")   # tokenizes once; a second call reuses the file
    train_ds, val_ds = train_val_windows("runs/books/tokens.bin", context_length=256)

The corpus is read and tokenized in pieces (never held whole in memory), each file is one document and
documents are joined with `<|endoftext|>`. Next to `tokens.bin` (token ids, uint16, native byte order)
lies `tokens.json`: tokenizer, token count and every source file with its size and sha256, so a changed
source is noticed and the file rebuilt. Training windows are read straight from the file (np.memmap).
Also a command: `python -m utils.corpus --data PATH --out FILE.bin`.

Any tokenizer with tiktoken's interface works (`.name`, `.n_vocab`, `.encode(text, allowed_special=...)`,
`.decode(ids)`, `.eot_token`): GPT-2's BPE by default, or one trained on your own text (utils.bpe).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .assets import sha256_of
from .checks import END_OF_TEXT, atomic_write, atomic_write_text

FORMAT = "llm-from-scratch token file v1"
CHUNK_BYTES = 1 << 18  # read and tokenize 256 KiB at a time: memory stays flat however large the corpus
# Encoded with every tokenizer and stored, so a token file made by a different tokenizer of the same name is noticed
PROBE = "Every effort moves you, 1908: the Verdict <|endoftext|> Ünïcödé\n\n  tokens!"


class CorpusError(ValueError):
    """Bad corpus input (missing, empty, not UTF-8, no .txt files, wrong token file); the message names the file."""


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0-255) plus `<|endoftext|>` (256): the smallest tokenizer with tiktoken's interface.

    A model over 257 tokens is tiny, so it trains fast; GPT-2's BPE packs about 4 bytes into one token instead.
    """

    name = "bytes"
    n_vocab = 257
    eot_token = 256

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        if END_OF_TEXT not in allowed_special and allowed_special != "all":
            return self.encode_ordinary(text)
        ids = []
        for k, part in enumerate(text.split(END_OF_TEXT)):
            if k:
                ids.append(self.eot_token)
            ids.extend(part.encode("utf-8"))
        return ids

    def decode(self, ids) -> str:
        out, run = [], bytearray()
        for i in ids:
            if i == self.eot_token:
                out.append(run.decode("utf-8", errors="replace") + END_OF_TEXT)
                run = bytearray()
            else:
                run.append(int(i))
        return "".join(out) + run.decode("utf-8", errors="replace")


def get_tokenizer(name: str = "gpt2"):
    """'bytes' -> ByteTokenizer(); a folder -> the BPETokenizer saved there (utils.bpe, notebook 02b);
    anything else -> tiktoken.get_encoding(name) (e.g. 'gpt2')."""
    if name == "bytes":
        return ByteTokenizer()
    if Path(name).is_dir():
        from .bpe import BPETokenizer  # a tokenizer trained on your own text and saved with .save(folder)

        return BPETokenizer.load(name)
    import tiktoken

    if name not in tiktoken.list_encoding_names():  # tiktoken would only say "Unknown encoding"
        raise ValueError(f"there is no tokenizer {name!r}: neither a folder of one saved with BPETokenizer.save "
                         f"(notebook 02b; train and save it again there) nor one of tiktoken's "
                         f"({', '.join(tiktoken.list_encoding_names())})")
    return tiktoken.get_encoding(name)


def _default_tokenizer():
    from .tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


def tokenizer_fingerprint(tokenizer) -> dict:
    """What identifies a tokenizer in a token file's description: name, n_vocab, eot id and a probe encoding."""
    ids = tokenizer.encode(PROBE, allowed_special={END_OF_TEXT})
    return {
        "name": str(getattr(tokenizer, "name", type(tokenizer).__name__)),
        "n_vocab": int(tokenizer.n_vocab),
        "eot_token": int(tokenizer.eot_token),
        "probe_sha256": hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest(),
    }


def list_sources(data) -> list[Path]:
    """The text files `data` names: the file itself, or every `*.txt` under the folder (sorted, recursive)."""
    path = Path(data)
    if not path.exists():
        raise CorpusError(f"data path {str(path)!r} does not exist: give a .txt file or a folder of .txt files")
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise CorpusError(
                f"the folder {str(path)!r} holds no .txt files: put your texts there as UTF-8 .txt files "
                "(e.g. Project Gutenberg's 'Plain Text UTF-8' downloads)"
            )
    for f in files:
        if f.stat().st_size == 0:
            raise CorpusError(f"{str(f)!r} is empty: remove it or put text in it")
    return files


def describe_sources(files, root=None) -> list[dict]:
    """[{path, size, sha256}] for each file; paths relative to `root` when given (the description stays portable)."""
    out = []
    for f in files:
        f = Path(f)
        name = os.path.relpath(f, root) if root is not None else str(f)
        out.append({"path": name.replace(os.sep, "/"), "size": f.stat().st_size, "sha256": sha256_of(f)})
    return out


def _cut(text: str) -> int:
    """Last index where the text can be split without changing its tokens (0 if none).

    GPT-2-style pre-tokenizers never put a non-space character and a following space or newline into the
    same piece, so a cut right before a ' ' or '\\n' that follows a non-space character is a piece boundary.
    """
    for i in range(len(text) - 1, 0, -1):
        if text[i] in " \n" and not text[i - 1].isspace():
            return i
    return 0


def _normalize(text: str) -> str:
    """Newlines as Python's text mode reads them: \\r\\n and \\r become \\n."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def iter_token_chunks(path, tokenizer, chunk_bytes: int = CHUNK_BYTES, on_bytes=None):
    """Yield the token ids of the UTF-8 file `path` in pieces (lists), identical in total to encoding it whole.

    `<|endoftext|>` written in the file is the end-of-text token. `on_bytes(n)` is called as bytes are read.
    """
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    carry, offset, first = "", 0, True
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            final = not raw
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as e:
                raise CorpusError(
                    f"{str(path)!r} is not UTF-8 text (bad byte {raw[e.start:e.start + 1]!r} at byte "
                    f"{offset + e.start}): save it as UTF-8, or convert it, e.g. "
                    "`iconv -f latin1 -t utf-8 in.txt > out.txt`"
                ) from None
            offset += len(raw)
            if on_bytes is not None and raw:
                on_bytes(len(raw))
            if first and text:
                text, first = text.removeprefix("\ufeff"), False  # a byte-order mark is not text
            carry += text
            if final:
                if carry:
                    yield tokenizer.encode(_normalize(carry), allowed_special={END_OF_TEXT})
                return
            i = _cut(carry)
            if i > 0:
                yield tokenizer.encode(_normalize(carry[:i]), allowed_special={END_OF_TEXT})
                carry = carry[i:]


def _read_description(json_path: Path) -> dict | None:
    try:
        return json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None



def description_path(token_path) -> Path:
    """`tokens.bin` -> `tokens.json`."""
    return Path(token_path).with_suffix(".json")


def build_token_file(data, out, tokenizer=None, *, progress: bool = True, chunk_bytes: int = CHUNK_BYTES) -> "TokenFile":
    """Tokenize the file or folder `data` into the uint16 token file `out` (+ `out` with suffix .json); return it.

    Reuses an existing token file when its description matches the sources (sha256) and the tokenizer;
    otherwise (re)builds it, streaming, with a progress bar, and replaces the old one atomically.
    """
    tokenizer = tokenizer or _default_tokenizer()
    out = Path(out)
    if out.suffix != ".bin":
        raise CorpusError(f"out={str(out)!r}: the token file's name should end in .bin, e.g. runs/mine/tokens.bin")
    if tokenizer.n_vocab > 65536:
        raise CorpusError(
            f"tokenizer {getattr(tokenizer, 'name', '?')!r} has {tokenizer.n_vocab} tokens, more than uint16 holds "
            "(65,536): use GPT-2's tokenizer or a smaller vocabulary"
        )
    data = Path(data)
    files = list_sources(data)
    root = data if data.is_dir() else data.parent
    sources = describe_sources(files, root)
    fingerprint = tokenizer_fingerprint(tokenizer)
    json_path = description_path(out)
    old = _read_description(json_path)
    if old is not None and out.exists():
        if old.get("tokenizer") == fingerprint and old.get("sources") == sources:
            if out.stat().st_size == 2 * old.get("num_tokens", -1):
                if progress:
                    print(f"reusing {out.name}: {old['num_tokens']:,} tokens from {len(sources)} file(s)")
                return TokenFile(out, tokenizer)
        if progress:
            print(f"{out.name} is out of date ({_what_changed(old, sources, fingerprint)}): rebuilding")

    out.parent.mkdir(parents=True, exist_ok=True)
    total = sum(s["size"] for s in sources)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"tokenizing {len(files)} file(s)",
               disable=not progress, mininterval=1.0, ncols=90)
    num_tokens = 0
    try:
        with atomic_write(out) as f:
            for k, path in enumerate(files):
                if k > 0:  # documents are joined with <|endoftext|>
                    np.asarray([tokenizer.eot_token], dtype=np.uint16).tofile(f)
                    num_tokens += 1
                for ids in iter_token_chunks(path, tokenizer, chunk_bytes, on_bytes=bar.update):
                    np.asarray(ids, dtype=np.uint16).tofile(f)
                    num_tokens += len(ids)
    finally:
        bar.close()
    description = {
        "format": FORMAT, "dtype": "uint16", "byteorder": "little" if np.little_endian else "big",
        "num_tokens": num_tokens, "tokenizer": fingerprint, "sources": sources,
    }
    atomic_write_text(json_path, json.dumps(description, indent=1) + "\n")
    if progress:
        print(f"wrote {out.name}: {num_tokens:,} tokens from {len(files)} file(s), {total / 1e6:.1f} MB of text")
    return TokenFile(out, tokenizer)


def _what_changed(old: dict, sources: list[dict], fingerprint: dict) -> str:
    if old.get("tokenizer") != fingerprint:
        return f"made with tokenizer {old.get('tokenizer', {}).get('name')!r}, now {fingerprint['name']!r}"
    before = {s["path"]: s for s in old.get("sources", [])}
    now = {s["path"]: s for s in sources}
    for name in now:
        if name not in before:
            return f"new source {name}"
        if now[name] != before[name]:
            return f"source {name} changed"
    for name in before:
        if name not in now:
            return f"source {name} is gone"
    return "the token file does not match its description"


class TokenFile:
    """A token file and its description; `tokenizer` (if given) must be the one that made it."""

    def __init__(self, path, tokenizer=None):
        self.path = Path(path)
        json_path = description_path(self.path)
        if not self.path.exists() or not json_path.exists():
            raise CorpusError(
                f"no token file at {str(self.path)!r} (with {json_path.name} beside it): build it with "
                "build_token_file(data, out) or `python -m utils.corpus --data PATH --out FILE.bin`"
            )
        meta = _read_description(json_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CorpusError(f"{str(json_path)!r} is not a token-file description ({FORMAT}): rebuild the token file")
        self.meta = meta
        self.num_tokens = int(meta["num_tokens"])
        if self.path.stat().st_size != 2 * self.num_tokens:
            raise CorpusError(
                f"{str(self.path)!r} has {self.path.stat().st_size} bytes but its description says "
                f"{self.num_tokens} uint16 tokens: the file is truncated or was changed; delete it and rebuild"
            )
        if meta.get("byteorder", "little") != ("little" if np.little_endian else "big"):
            raise CorpusError(f"{str(self.path)!r} was written on a machine of the other byte order: rebuild it here")
        if tokenizer is not None:
            fingerprint = tokenizer_fingerprint(tokenizer)
            if meta["tokenizer"] != fingerprint:
                made = meta["tokenizer"]
                raise CorpusError(
                    f"{str(self.path)!r} was made by tokenizer {made.get('name')!r} ({made.get('n_vocab')} tokens), "
                    f"not by the one in use, {fingerprint['name']!r} ({fingerprint['n_vocab']} tokens): "
                    "rebuild it with this tokenizer (build_token_file) or use the tokenizer that made it"
                )
        self.tokenizer_name = meta["tokenizer"]["name"]
        self.n_vocab = int(meta["tokenizer"]["n_vocab"])

    def tokens(self) -> np.memmap:
        """All token ids, `(num_tokens,)` uint16, memory-mapped (read from disk as used)."""
        return np.memmap(self.path, dtype=np.uint16, mode="r", shape=(self.num_tokens,))

    def __repr__(self):
        return f"TokenFile({self.path.name!r}, {self.num_tokens:,} tokens, tokenizer {self.tokenizer_name!r})"


class TokenWindows(Dataset):
    """Windows of `context_length` token ids every `stride` tokens from tokens [start, end) of a token file.

    Item i is `(input_ids, target_ids)`, both `(context_length,)` int64, targets shifted by one; every window is
    complete (the last one ends at most at `end`), the same windows GPTDatasetV1 cuts from the same tokens.
    """

    def __init__(self, token_file, context_length: int, stride: int | None = None, start: int = 0, end: int | None = None):
        token_file = token_file if isinstance(token_file, TokenFile) else TokenFile(token_file)
        if context_length <= 0:
            raise ValueError(f"context_length must be a positive number of tokens, got {context_length}")
        stride = context_length if stride is None else stride
        if stride <= 0:
            raise ValueError(f"stride must be a positive number of tokens, got {stride}")
        end = token_file.num_tokens if end is None else end
        if not 0 <= start <= end <= token_file.num_tokens:
            raise ValueError(f"start={start}, end={end} must satisfy 0 <= start <= end <= {token_file.num_tokens}")
        self.path, self.num_file_tokens = token_file.path, token_file.num_tokens
        self.context_length, self.stride, self.start, self.end = context_length, stride, start, end
        self._length = len(range(0, end - start - context_length, stride))
        self._tokens = None

    def __len__(self):
        return self._length

    def __getitem__(self, idx):
        if not -self._length <= idx < self._length:
            raise IndexError(f"window {idx} out of range ({self._length} windows)")
        idx %= self._length
        if self._tokens is None:  # opened lazily, so the dataset pickles small (DataLoader workers)
            self._tokens = np.memmap(self.path, dtype=np.uint16, mode="r", shape=(self.num_file_tokens,))
        s = self.start + idx * self.stride
        chunk = torch.from_numpy(self._tokens[s : s + self.context_length + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]

    def __getstate__(self):
        return {**self.__dict__, "_tokens": None}


def split_point(num_tokens: int, val_fraction: float) -> int:
    """Index of the first validation token: the last `val_fraction` of the tokens validate."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}: use e.g. 0.1")
    return int(round(num_tokens * (1 - val_fraction)))


def train_val_windows(token_file, context_length: int, val_fraction: float = 0.1, stride: int | None = None,
                      tokenizer=None):
    """(train, validation) TokenWindows: the first `1 - val_fraction` of the tokens train, the rest validate."""
    token_file = token_file if isinstance(token_file, TokenFile) else TokenFile(token_file, tokenizer)
    split = split_point(token_file.num_tokens, val_fraction)
    parts = {"training": (0, split), "validation": (split, token_file.num_tokens)}
    for name, (a, b) in parts.items():
        if b - a < context_length + 1:
            raise CorpusError(
                f"{str(token_file.path)!r}: the {name} part has {b - a} tokens, fewer than context_length + 1 = "
                f"{context_length + 1} ({token_file.num_tokens} tokens in all, val_fraction={val_fraction}): "
                "add text, lower the context length or change the validation fraction"
            )
    train = TokenWindows(token_file, context_length, stride, 0, split)
    val = TokenWindows(token_file, context_length, stride, split, token_file.num_tokens)
    return train, val


def write_series_corpus(folder) -> Path:
    """Write the texts this series downloads as .txt files into `folder` (a corpus to try things on); return it.

    the-verdict.txt (Edith Wharton's story), sms-messages.txt (the SMS Spam Collection's 5,574 messages, one
    a line) and instructions.txt (the 1,100 instruction/response pairs of chapter 7): about 0.6 MB in all.
    """
    from .assets import fetch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = {"the-verdict.txt": fetch("the-verdict").read_text(encoding="utf-8")}
    lines = fetch("sms-spam").read_text(encoding="utf-8").splitlines()
    texts["sms-messages.txt"] = "\n".join(line.split("\t", 1)[-1] for line in lines if line.strip()) + "\n"
    entries = json.loads(fetch("instruction-data").read_text(encoding="utf-8"))
    texts["instructions.txt"] = "\n\n".join(
        "\n".join(part for part in (e["instruction"], e.get("input", ""), e["output"]) if part) for e in entries
    ) + "\n"
    for name, text in texts.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
    return folder


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Tokenize a text file or a folder of .txt files into a token file.")
    parser.add_argument("--data", required=True, help="a UTF-8 text file or a folder of .txt files")
    parser.add_argument("--out", required=True, help="the token file to write, e.g. runs/mine/tokens.bin")
    parser.add_argument("--tokenizer", default="gpt2", help="'bytes' or a tiktoken encoding name (default gpt2)")
    args = parser.parse_args(argv)
    token_file = build_token_file(args.data, args.out, get_tokenizer(args.tokenizer))
    print(token_file)


if __name__ == "__main__":
    main()
