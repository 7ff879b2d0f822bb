"""Notebook 02b's exercise: encoding one piece of text by replaying the learned merges in their order."""

from __future__ import annotations

import functools

from .core import Wrong, exercise, the_verdict, token_ids

# Pieces (as GPT-2's pre-tokenizer cuts them) the check encodes; some hold a pair the training text never merged.
PIECES = [" picture", " Gisburn", " himself", " donkey", " wonderful", " Stroud", " unexpectedly", "Jack", " zebra"]


@functools.lru_cache(maxsize=None)
def verdict_tokenizer():
    """A 300-token BPETokenizer trained on The Verdict (43 merges)."""
    from ..bpe import BPETokenizer

    return BPETokenizer.train(the_verdict(), 300)


@exercise("2b.1")
def encode_with_merges(answer):
    if not callable(answer):
        raise Wrong("the answer should be your function encode_piece(piece, merges)")
    tok = verdict_tokenizer()
    for piece in PIECES:
        expected = tok.encode_ordinary(piece)
        try:
            got = answer(piece.encode("utf-8"), list(tok.merges))
        except Exception as exc:  # noqa: BLE001  (the learner's code)
            raise Wrong(f"encode_piece raised {type(exc).__name__}: {exc}") from None
        got = token_ids(got, f"encode_piece({piece.encode('utf-8')!r}, merges)")
        if tok.decode(got) != piece:
            raise Wrong(f"the ids for {piece!r} do not decode back to it. Hint: merge number k makes id 256 + k "
                        "from the two ids it joins")
        if got != expected:
            raise Wrong(f"{piece!r} gives other ids than the tokenizer's. Hint: a pair learned earlier is merged "
                        "first, wherever it sits in the piece, and a new token can join a later pair")
    return "replaying the merges in the order they were learned is the whole of BPE encoding"
