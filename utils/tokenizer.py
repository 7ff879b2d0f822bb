"""Chapter 2 tokenizers: the regex SimpleTokenizerV1/V2 and GPT-2's byte-pair encoding (tiktoken)."""

from __future__ import annotations

import functools
import re

import tiktoken

SPLIT_PATTERN = r'([,.:;?_!"()\']|--|\s)'


def split_text(text: str) -> list[str]:
    """Split on punctuation, double dashes and whitespace; keep the punctuation, drop the spaces."""
    return [item.strip() for item in re.split(SPLIT_PATTERN, text) if item.strip()]


def build_vocab(text: str, special_tokens: tuple[str, ...] = ()) -> dict[str, int]:
    """Sorted unique tokens of `text` (then `special_tokens`) -> integer ids."""
    words = sorted(set(split_text(text)))
    words.extend(special_tokens)
    return {token: integer for integer, token in enumerate(words)}


def _join(tokens: list[str], punctuation: str = r',.?!"()\'') -> str:
    text = " ".join(tokens)
    return re.sub(rf"\s+([{punctuation}])", r"\1", text)  # no space before punctuation


def _lookup(int_to_str: dict, i) -> str:
    if hasattr(i, "item"):  # a tensor or numpy scalar
        i = i.item()
    if i not in int_to_str:
        raise ValueError(f"token id {i!r} is not in the vocabulary (ids 0..{len(int_to_str) - 1}): "
                         "decode ids that this tokenizer's encode produced")
    return int_to_str[i]


class SimpleTokenizerV1:
    """Words and punctuation -> ids with a fixed vocabulary; an unknown word is an error."""

    def __init__(self, vocab: dict[str, int]):
        self.str_to_int = vocab
        self.int_to_str = {i: s for s, i in vocab.items()}

    def encode(self, text: str, allowed_special=()) -> list[int]:  # allowed_special: tiktoken's signature, unused
        ids = []
        for token in split_text(text):
            if token not in self.str_to_int:
                raise KeyError(
                    f"{token!r} is not in the vocabulary ({len(self.str_to_int)} tokens). "
                    "SimpleTokenizerV1 only knows words from the text it was built on: "
                    "use SimpleTokenizerV2, which maps unknown words to <|unk|>."
                )
            ids.append(self.str_to_int[token])
        return ids

    def decode(self, ids: list[int]) -> str:
        return _join([_lookup(self.int_to_str, i) for i in ids])


class SimpleTokenizerV2:
    """Like V1, but unknown words become `<|unk|>` (the vocabulary must hold `<|unk|>`)."""

    def __init__(self, vocab: dict[str, int]):
        if "<|unk|>" not in vocab:
            raise ValueError("the vocabulary has no '<|unk|>' token: build it with special_tokens=('<|endoftext|>', '<|unk|>')")
        self.str_to_int = vocab
        self.int_to_str = {i: s for s, i in vocab.items()}

    def encode(self, text: str, allowed_special=()) -> list[int]:  # a special token of the vocabulary is always encoded
        tokens = [t if t in self.str_to_int else "<|unk|>" for t in split_text(text)]
        return [self.str_to_int[t] for t in tokens]

    def decode(self, ids: list[int]) -> str:
        return _join([_lookup(self.int_to_str, i) for i in ids], punctuation=r',.:;?!"()\'')  # the book's V2 also joins : and ;


@functools.lru_cache(maxsize=None)
def gpt2_tokenizer():
    """GPT-2's BPE tokenizer (tiktoken, 50257 tokens; downloads its two files once, then cached)."""
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as exc:  # offline: tiktoken's download of its two BPE files fails deep inside requests
        raise RuntimeError("could not load GPT-2's tokenizer: tiktoken downloads its two files (vocab.bpe, encoder.json) once, and that failed (the cause is above). Connect to the internet once, or set TIKTOKEN_CACHE_DIR to a folder that already holds them") from exc
