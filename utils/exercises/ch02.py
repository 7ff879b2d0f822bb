"""Chapter 2's exercises: tokenizing an unknown word, data-loader windows, word vs BPE vocabularies."""

from __future__ import annotations

import torch

from .core import Wrong, answer_tensor, exercise, items, the_verdict, token_ids, tokenizer, whole_number


@exercise("2.1")
def unknown_word_ids(answer):
    ids = token_ids(answer, "the answer")
    expected = tokenizer().encode("Akwirw ier")
    if ids == expected:
        return "tiktoken splits the unknown word into known pieces, so nothing is ever out of vocabulary"
    if len(ids) != len(expected):
        raise Wrong(f"{len(ids)} ids, but 'Akwirw ier' encodes to a different number of tokens. "
                    "Hint: the space is part of the text too: encode the whole string at once")
    raise Wrong("the right number of ids, but not the right ids. Hint: GPT-2's BPE encoding, not a vocabulary "
                "of your own")


def first_inputs(max_length: int, stride: int) -> torch.Tensor:
    """The inputs of the first batch of 4 windows of The Verdict, unshuffled: (4, max_length)."""
    from ..data import create_dataloader_v1

    loader = create_dataloader_v1(the_verdict(), batch_size=4, max_length=max_length, stride=stride, shuffle=False)
    return next(iter(loader))[0]


@exercise("2.2")
def loader_windows(answer):
    a, b = items(answer, "(first inputs with max_length=2, stride=2, first inputs with max_length=8, stride=2)")
    for value, (max_length, stride), name in [(a, (2, 2), "first"), (b, (8, 2), "second")]:
        got, expected = answer_tensor(value, f"the {name} batch"), first_inputs(max_length, stride)
        if tuple(got.shape) != tuple(expected.shape):
            raise Wrong(f"the {name} batch has shape {tuple(got.shape)}; a batch of 4 windows of max_length="
                        f"{max_length} should be (4, {max_length}). Hint: batch_size=4, and take the inputs, not the targets")
        if not torch.equal(got, expected):
            raise Wrong(f"the {name} batch (max_length={max_length}, stride={stride}) holds other token ids. "
                        "Hint: shuffle=False, and the inputs (the first tensor of a batch), not the targets")
    return "with stride == max_length windows do not overlap; with stride < max_length they share tokens"


@exercise("2.3")
def vocabulary_sizes(answer):
    from ..tokenizer import build_vocab

    words, bpe = items(answer, "(word vocabulary size, distinct BPE token ids)")
    words, bpe = whole_number(words, "the word vocabulary size"), whole_number(bpe, "the number of distinct BPE ids")
    text = the_verdict()
    exp_words, exp_bpe = len(build_vocab(text)), len(set(tokenizer().encode(text)))
    if words != exp_words:
        hint = ("the special tokens are not words of the text" if words == exp_words + 2 else
                "a vocabulary holds each distinct word or punctuation mark once, however often it occurs")
        raise Wrong(f"the word vocabulary size is off. Hint: {hint}")
    if bpe != exp_bpe:
        raise Wrong("the number of distinct BPE ids is off. Hint: count each id once, not the length of the "
                    "encoded text")
    return "a word vocabulary grows with every new text; BPE's stays at 50,257 pieces and spells any word"
