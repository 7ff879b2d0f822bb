"""Byte-level byte-pair encoding from scratch: train a tokenizer, or load GPT-2's and encode exactly as tiktoken does.

`BPETokenizer` duck-types `tiktoken.Encoding` (`name`, `n_vocab`, `eot_token`, `encode`, `encode_ordinary`,
`decode`), so it can stand in wherever the series uses `tiktoken.get_encoding("gpt2")`.

Ids: 0-255 are single bytes, 256 + i is the token merge i makes, special tokens come last. The id of a token
is also its rank (lower = merged earlier), as in GPT-2's files and tiktoken.
"""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import AbstractSet, Collection, Iterable, Literal, Sequence

import regex  # tiktoken's own dependency: GPT-2's pattern needs \p{L} and possessive quantifiers

from .checks import END_OF_TEXT, atomic_write_text

# GPT-2's pre-tokenizer, as tiktoken writes it: contractions, letters, digits, other symbols (each with one optional
# leading space), then whitespace. BPE never merges across the pieces it cuts.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# Where tiktoken downloads GPT-2's two files from (and caches them; see `gpt2_file`)
GPT2_FILES = {
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
}
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"  # what `save` writes: the same formats as GPT-2's two files
GPT2_SPECIALS = {END_OF_TEXT, "<|startoftext|>"}  # the entries of GPT-2's encoder.json no merge makes (as tiktoken)
MAX_SPECIAL_TOKENS = 256  # more entries beyond the merges than this: a truncated or mismatched merges file
_CACHE_LIMIT = 500_000
_LONG_PIECE = 256  # bytes; longer pieces are merged with a heap instead of rescanning all pairs after each merge  # pieces remembered by encode before the cache starts over


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (its files store tokens as strings of these)."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_ENCODER = bytes_to_unicode()
_BYTE_DECODER = {c: b for b, c in _BYTE_ENCODER.items()}


def _to_gpt2_str(token: bytes) -> str:
    return "".join(_BYTE_ENCODER[b] for b in token)


def gpt2_file(name: str) -> bytes:
    """The bytes of GPT-2's `encoder.json` or `vocab.bpe`, from tiktoken's cache (downloaded once if missing)."""
    if name not in GPT2_FILES:
        raise ValueError(f"name={name!r}: GPT-2's tokenizer files are {sorted(GPT2_FILES)}")
    from tiktoken.load import read_file_cached

    url, sha256 = GPT2_FILES[name]
    return read_file_cached(url, sha256)


def merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """`ids` with every non-overlapping occurrence of `pair` (left to right) replaced by `new_id`."""
    out, i, n = [], 0, len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def pretokenize(
    text: str, special_tokens: Iterable[str] = (), pattern: str = GPT2_PATTERN, chunk_chars: int = 1 << 20
) -> Counter:
    """Counts of the pre-tokenizer's pieces of `text` (as bytes); special tokens are cut out, never learned."""
    specials = sorted(special_tokens, key=len, reverse=True)
    parts = regex.split("|".join(regex.escape(s) for s in specials), text) if specials else [text]
    pat = regex.compile(pattern)
    counts = Counter()
    for part in parts:
        for chunk in _chunks(part, chunk_chars) if pattern == GPT2_PATTERN else [part]:
            counts.update(pat.findall(chunk))
    try:
        return Counter({piece.encode("utf-8"): n for piece, n in counts.items()})
    except UnicodeEncodeError:  # lone surrogates: learned as encode will see them, replaced
        return pretokenize(replace_lone_surrogates(text), specials, pattern, chunk_chars)


def replace_lone_surrogates(text: str) -> str:
    """`text` with each lone surrogate (not Unicode text: no UTF-8 bytes) replaced by U+FFFD, as tiktoken does."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


_SAFE_CUT = regex.compile(r"(?<=[^\s]) (?=\p{L})")  # before " word" after a non-space: never inside a GPT-2 piece


def _chunks(text: str, size: int):
    """`text` in pieces of about `size` characters, cut only where the pre-tokenizer cuts anyway (memory stays flat)."""
    start = 0
    while len(text) - start > size:
        cut = _SAFE_CUT.search(text, start + size)
        if cut is None:
            break
        yield text[start : cut.start()]
        start = cut.start()
    yield text[start:]


def train_merges(word_counts: dict[bytes, int], n_merges: int, start_id: int = 256):
    """Learn `n_merges` merges from word counts; returns (merges, words) where words are the final id sequences.

    Pair counts are updated incrementally: a merge touches only the words that hold the pair (an index maps each
    pair to those words), instead of recounting the whole corpus. The most frequent pair wins; ties go to the
    smallest (left id, right id), so the same text always gives the same merges.
    """
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += freqs[wi]
            where[pair].add(wi)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    for k in range(n_merges):
        while heap:
            neg, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) == -neg:  # else a stale entry: the count changed after it was pushed
                break
        else:
            break  # no pair left: every word is a single token
        new_id = start_id + k
        merges.append(pair)
        changed = set()
        for wi in where.pop(pair):
            w, f = words[wi], freqs[wi]
            new_w = merge_pair(w, pair, new_id)
            if len(new_w) == len(w):
                continue  # the index is allowed to be stale: this word lost the pair to an earlier merge
            for q in zip(w, w[1:]):
                pair_counts[q] -= f
                changed.add(q)
            for q in zip(new_w, new_w[1:]):
                pair_counts[q] += f
                changed.add(q)
                where[q].add(wi)
            words[wi] = new_w
        for q in changed:
            c = pair_counts[q]
            if c > 0:
                heapq.heappush(heap, (-c, q))
            else:
                del pair_counts[q]
    return merges, words


def _check_special_tokens(special_tokens) -> tuple[str, ...]:
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens={special_tokens!r}: pass a tuple of strings, e.g. ({special_tokens!r},)")
    specials = tuple(special_tokens)
    for s in specials:
        if not isinstance(s, str) or not s:
            raise TypeError(f"special_tokens: {s!r} is not a non-empty string")
    if len(specials) > MAX_SPECIAL_TOKENS:
        raise ValueError(f"special_tokens: {len(specials)} tokens; at most {MAX_SPECIAL_TOKENS} are supported")
    if len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens={specials!r} holds a token twice")
    return specials


class BPETokenizer:
    """Byte-level BPE: 256 byte tokens, `merges` (pairs of ids, in rank order), then `special_tokens`.

    Build one with `train(text, vocab_size)`, `from_gpt2()` or `load(folder)`; encode/decode as tiktoken does.
    `byte_order`: which byte each of the ids 0-255 stands for (GPT-2 uses its own order; default: id = byte).
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]],
        special_tokens: Sequence[str] = (END_OF_TEXT,),
        *,
        name: str = "bpe",
        byte_order: Sequence[int] | None = None,
        pattern: str = GPT2_PATTERN,
    ):
        byte_order = list(range(256)) if byte_order is None else list(byte_order)
        if sorted(byte_order) != list(range(256)):
            raise ValueError("byte_order must list each of the 256 byte values exactly once")
        self.name = str(name)
        self.pattern = pattern
        self._pat = regex.compile(pattern)
        self.byte_order = byte_order
        self._vocab: list[bytes] = [bytes([b]) for b in byte_order]
        self.merges: list[tuple[int, int]] = []
        for k, (a, b) in enumerate(merges):
            a, b = int(a), int(b)
            if not (0 <= a < len(self._vocab) and 0 <= b < len(self._vocab)):
                raise ValueError(f"merge {k} = ({a}, {b}) uses an id that does not exist before it (0-{len(self._vocab) - 1})")
            self.merges.append((a, b))
            self._vocab.append(self._vocab[a] + self._vocab[b])
        self._ranks = {tok: i for i, tok in enumerate(self._vocab)}
        if len(self._ranks) != len(self._vocab):
            dup = next(t for i, t in enumerate(self._vocab) if self._ranks[t] != i)
            raise ValueError(f"two merges make the same token {dup!r}: a token has one rank")
        specials = _check_special_tokens(special_tokens)
        self._special = {s: len(self._vocab) + i for i, s in enumerate(specials)}
        self._decoder = self._vocab + [s.encode("utf-8") for s in specials]  # id -> bytes, for decode
        self._special_pat = {}  # frozenset of tokens -> compiled pattern
        self._cache: dict[str, tuple[int, ...]] = {}

    # ---- tiktoken's interface ----
    @property
    def n_vocab(self) -> int:
        """Number of ids: 256 bytes + merges + special tokens."""
        return len(self._decoder)

    @property
    def max_token_value(self) -> int:
        return len(self._decoder) - 1

    @property
    def eot_token(self) -> int:
        """Id of `<|endoftext|>` (AttributeError if this tokenizer has none)."""
        if END_OF_TEXT not in self._special:
            raise AttributeError(f"tokenizer {self.name!r} has no {END_OF_TEXT} token (special tokens: {sorted(self._special)})")
        return self._special[END_OF_TEXT]

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._special)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    def __repr__(self) -> str:
        return f"<BPETokenizer {self.name!r}: {self.n_vocab} tokens, {len(self.merges)} merges, specials {list(self._special)}>"

    def _bpe(self, word: bytes) -> tuple[int, ...]:
        """Ids of one pre-tokenized piece: repeatedly merge the adjacent pair whose joined bytes rank lowest
        (leftmost on a tie), exactly as tiktoken's byte_pair_merge does."""
        ranks = self._ranks
        whole = ranks.get(word)
        if whole is not None:
            return (whole,)
        if len(word) > _LONG_PIECE:
            return self._bpe_long(word)
        parts = [word[i : i + 1] for i in range(len(word))]
        pair_ranks = [ranks.get(parts[i] + parts[i + 1]) for i in range(len(parts) - 1)]
        while True:
            best, best_i = None, -1
            for i, r in enumerate(pair_ranks):
                if r is not None and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
            del pair_ranks[best_i]
            if best_i < len(parts) - 1:
                pair_ranks[best_i] = ranks.get(parts[best_i] + parts[best_i + 1])
            if best_i > 0:
                pair_ranks[best_i - 1] = ranks.get(parts[best_i - 1] + parts[best_i])
        return tuple(ranks[p] for p in parts)

    def _bpe_long(self, word: bytes) -> tuple[int, ...]:
        """The same merges as `_bpe` in O(n log n) for long pieces (a run of 10,000 'a's): a heap of candidate pairs
        ordered by (rank, position), parts kept as a linked list of start offsets, stale candidates skipped."""
        ranks, n = self._ranks, len(word)
        nxt = list(range(1, n + 1))  # nxt[s]: where the part starting at s ends (= the next part's start)
        prv = list(range(-1, n - 1))  # prv[s]: start of the part before the one starting at s
        alive = [True] * n
        heap = [(r, s, s + 2) for s in range(n - 1) if (r := ranks.get(word[s : s + 2])) is not None]
        heapq.heapify(heap)
        while heap:
            _, s, e = heapq.heappop(heap)
            m = nxt[s] if alive[s] else n
            if m >= n or nxt[m] != e:
                continue  # stale: one of the two parts has merged since this pair was pushed
            alive[m] = False
            nxt[s] = e
            if e < n:
                prv[e] = s
                r = ranks.get(word[s : nxt[e]])
                if r is not None:
                    heapq.heappush(heap, (r, s, nxt[e]))
            if prv[s] >= 0:
                r = ranks.get(word[prv[s] : e])
                if r is not None:
                    heapq.heappush(heap, (r, prv[s], e))
        out, s = [], 0
        while s < n:
            out.append(ranks[word[s : nxt[s]]])
            s = nxt[s]
        return tuple(out)

    def _encode_chunk(self, text: str, out: list[int]) -> None:
        cache = self._cache
        for piece in self._pat.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._bpe(piece.encode("utf-8"))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[piece] = ids
            out.extend(ids)

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`; special-token text is encoded as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out: list[int] = []
        try:
            self._encode_chunk(text, out)
        except UnicodeEncodeError:  # lone surrogates: replaced, as tiktoken does
            out = []
            self._encode_chunk(replace_lone_surrogates(text), out)
        return out

    def _special_regex(self, tokens: AbstractSet[str]):
        key = frozenset(tokens)
        if key not in self._special_pat:
            alts = sorted(key, key=len, reverse=True)
            self._special_pat[key] = regex.compile("(" + "|".join(regex.escape(t) for t in alts) + ")")
        return self._special_pat[key]

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Token ids of `text`, as `tiktoken.Encoding.encode`: special-token text raises ValueError unless it is
        in `allowed_special` ("all" allows every one), or the check is off (`disallowed_special=()`)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if allowed_special == "all":
            allowed_special = self.special_tokens_set
        elif isinstance(allowed_special, str):
            raise TypeError(f"allowed_special={allowed_special!r}: pass a set, e.g. {{{allowed_special!r}}}, or 'all'")
        allowed_special = set(allowed_special) & self.special_tokens_set  # tiktoken ignores names it does not have
        if disallowed_special == "all":
            disallowed_special = self.special_tokens_set - allowed_special
        if disallowed_special:
            match = self._special_regex(set(disallowed_special)).search(text)
            if match:
                token = match.group()
                raise ValueError(
                    f"Encountered text corresponding to disallowed special token {token!r}.\n"
                    f"If you want this text to be encoded as a special token, pass it to `allowed_special`, "
                    f"e.g. `allowed_special={{{token!r}, ...}}` (or allowed_special='all').\n"
                    "To encode it as normal text instead, pass `disallowed_special=()`."
                )
        if not allowed_special:
            return self.encode_ordinary(text)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = replace_lone_surrogates(text)
        out: list[int] = []
        for i, part in enumerate(self._special_regex(allowed_special).split(text)):
            if i % 2:  # split() with a group: odd parts are the special tokens
                out.append(self._special[part])
            elif part:
                self._encode_chunk(part, out)
        return out

    def _check_ids(self, ids) -> list[int]:
        try:
            ids = [int(i) for i in ids]
        except (TypeError, ValueError):
            raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}") from None
        n = len(self._decoder)
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary of {self.name!r} (valid ids: 0-{n - 1})")
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes `ids` stand for (ValueError for ids outside 0..n_vocab-1)."""
        dec = self._decoder
        return b"".join([dec[i] for i in self._check_ids(ids)])

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of `ids`; bytes that are not valid UTF-8 on their own (a token cut mid-character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one token id."""
        return self._decoder[self._check_ids([token])[0]]

    # ---- training ----
    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (END_OF_TEXT,),
        *,
        name: str | None = None,
        pattern: str = GPT2_PATTERN,
    ) -> BPETokenizer:
        """Learn a byte-level BPE tokenizer of exactly `vocab_size` ids (256 bytes + merges + special tokens)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
        specials = _check_special_tokens(special_tokens)
        least = 256 + len(specials)
        if vocab_size < least:
            raise ValueError(
                f"vocab_size={vocab_size} is below 256 byte tokens + {len(specials)} special tokens = {least}: "
                f"ask for at least {least}"
            )
        counts = pretokenize(text, specials, pattern)
        if not counts:
            raise ValueError("text is empty (after removing special tokens): train on some text")
        n_merges = vocab_size - least
        merges, _ = train_merges(counts, n_merges)
        if len(merges) < n_merges:
            raise ValueError(
                f"vocab_size={vocab_size}: this text allows only {len(merges)} merges (every word is then one token), "
                f"so at most vocab_size={least + len(merges)}; use more text or a smaller vocab_size"
            )
        return cls(merges, specials, name=name or f"bpe-{vocab_size}", pattern=pattern)

    # ---- files: GPT-2's formats ----
    @classmethod
    def from_gpt2(
        cls, encoder_json: str | os.PathLike | None = None, vocab_bpe: str | os.PathLike | None = None, *, name: str = "gpt2"
    ) -> BPETokenizer:
        """GPT-2's tokenizer from OpenAI's `encoder.json` and `vocab.bpe` (paths; None: tiktoken's cached copies).

        Raises ValueError when the two files are not a matching GPT-2-style pair.
        """
        enc_text = gpt2_file("encoder.json").decode("utf-8") if encoder_json is None else _read(encoder_json, "encoder_json")
        bpe_text = gpt2_file("vocab.bpe").decode("utf-8") if vocab_bpe is None else _read(vocab_bpe, "vocab_bpe")
        enc_where = "tiktoken's cached encoder.json" if encoder_json is None else str(encoder_json)
        bpe_where = "tiktoken's cached vocab.bpe" if vocab_bpe is None else str(vocab_bpe)
        return cls._from_texts(enc_text, bpe_text, enc_where, bpe_where, name, GPT2_SPECIALS)

    @classmethod
    def _from_texts(
        cls, enc_text: str, bpe_text: str, enc_where: str, bpe_where: str, name: str, specials_allowed=None
    ) -> BPETokenizer:
        try:
            encoder = json.loads(enc_text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{enc_where} is not JSON ({exc}): expected GPT-2's encoder.json (token string -> id)") from None
        if not isinstance(encoder, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in encoder.values()):
            raise ValueError(f"{enc_where} is not a JSON object of token string -> integer id, as GPT-2's encoder.json is")
        lines = bpe_text.split("\n")
        if not lines or not lines[0].startswith("#version"):
            raise ValueError(
                f"{bpe_where} does not start with '#version', as GPT-2's vocab.bpe does (one merge 'left right' per line)"
            )
        # single bytes: ids 0-255
        byte_order = [None] * 256
        for key, i in encoder.items():
            if len(key) == 1 and key in _BYTE_DECODER:
                if not 0 <= i < 256:
                    raise ValueError(f"{enc_where}: the byte token {key!r} has id {i}; byte tokens must have ids 0-255")
                byte_order[i] = _BYTE_DECODER[key]
        if None in byte_order:
            raise ValueError(f"{enc_where} lacks some of the 256 byte tokens (ids 0-255): not a byte-level BPE vocabulary")
        str_to_id = {_BYTE_ENCODER[b]: i for i, b in enumerate(byte_order)}
        merges = []
        for lineno, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{bpe_where} line {lineno}: {line[:60]!r} is not a merge 'left right'")
            try:
                a, b = str_to_id[parts[0]], str_to_id[parts[1]]
            except KeyError as exc:
                raise ValueError(f"{bpe_where} line {lineno}: {exc.args[0]!r} is not a token made by the lines before it") from None
            joined = parts[0] + parts[1]
            want = 256 + len(merges)
            if encoder.get(joined) != want:
                raise ValueError(
                    f"{bpe_where} line {lineno} makes {joined!r}, merge number {len(merges)}, so its id must be {want}, "
                    f"but {enc_where} gives {encoder.get(joined)}: the two files do not belong together"
                )
            merges.append((a, b))
            str_to_id[joined] = want
        specials = special_entries(encoder, str_to_id, len(merges), enc_where, bpe_where, specials_allowed)
        return cls(merges, specials, name=name, byte_order=byte_order)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `vocab.json` (token -> id, GPT-2's encoder.json format) and `merges.txt` (vocab.bpe format)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vocab = {_to_gpt2_str(tok): i for i, tok in enumerate(self._vocab)}
        vocab.update(self._special)
        merges = "".join(f"{_to_gpt2_str(self._vocab[a])} {_to_gpt2_str(self._vocab[b])}\n" for a, b in self.merges)
        atomic_write_text(folder / VOCAB_FILE, json.dumps(vocab, ensure_ascii=False))
        atomic_write_text(folder / MERGES_FILE, "#version: 0.2\n" + merges)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, name: str | None = None) -> BPETokenizer:
        """A tokenizer saved with `save(folder)` (or any folder holding GPT-2-style vocab.json + merges.txt)."""
        folder = Path(folder)
        files = [folder / VOCAB_FILE, folder / MERGES_FILE]
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}: save a tokenizer there with tok.save(folder)")
        return cls._from_texts(
            _read(files[0], "folder"), _read(files[1], "folder"), str(files[0]), str(files[1]), name or folder.name
        )


def special_entries(encoder: dict, str_to_id: dict, n_merges: int, enc_where: str, bpe_where: str, specials_allowed) -> list[str]:
    """The entries of `encoder` beyond the bytes and merges (`str_to_id`), in id order: they must be special tokens."""
    specials = sorted(((i, k) for k, i in encoder.items() if k not in str_to_id), key=lambda t: t[0])
    if len(specials) > MAX_SPECIAL_TOKENS:
        raise ValueError(
            f"{enc_where} has {len(specials)} entries beyond the merges of {bpe_where} (special tokens: at most "
            f"{MAX_SPECIAL_TOKENS}): the merges file is truncated or the two files do not belong together"
        )
    for j, (i, k) in enumerate(specials):
        if (specials_allowed is not None and k not in specials_allowed) or i != 256 + n_merges + j:
            raise ValueError(
                f"{enc_where}: {k!r} (id {i}) is neither a byte, nor made by a merge of {bpe_where}, nor a special "
                f"token right after the merges (id {256 + n_merges + j}): the two files do not belong together"
            )
        parts = next(((k[:c], k[c:]) for c in range(1, len(k)) if k[:c] in str_to_id and k[c:] in str_to_id), None)
        if parts:  # what the next merge would make: the merges file ends early
            raise ValueError(
                f"{enc_where}: {k!r} (id {i}) is {parts[0]!r} + {parts[1]!r}, a token a merge makes, but {bpe_where} "
                f"ends after {n_merges} merges without it: the merges file is truncated (or the two files do not "
                "belong together); save the tokenizer again, or fetch the files again"
            )
    return [k for _, k in specials]


def _read(path, argument: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}={str(path)!r} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{argument}={str(path)!r} is not UTF-8 text: not one of GPT-2's tokenizer files") from None

