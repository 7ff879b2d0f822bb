"""Notebook 05b's exercise: how many training and validation windows a token file gives."""

from __future__ import annotations

from .core import Wrong, exercise, items, whole_number

# (num_tokens, context_length, val_fraction): a story-sized file, a book-sized one, and parts of exact multiples
CASES = [(20_480, 256, 0.1), (10_240, 256, 0.1), (1_000, 64, 0.2), (3_000_000, 1024, 0.1), (65_537, 128, 0.25)]


def windows(num_tokens: int, context_length: int, val_fraction: float) -> tuple[int, int]:
    """(training windows, validation windows) of utils.corpus.train_val_windows at stride = context_length."""
    from ..corpus import split_point

    split = split_point(num_tokens, val_fraction)
    return tuple(len(range(0, part - context_length, context_length)) for part in (split, num_tokens - split))


@exercise("5b.1")
def window_counts(answer):
    if not callable(answer):
        raise Wrong("the answer should be your function count_windows(num_tokens, context_length, val_fraction)")
    for case in CASES:
        try:
            got = answer(*case)
        except Exception as exc:  # noqa: BLE001  (the learner's code)
            raise Wrong(f"count_windows{case} raised {type(exc).__name__}: {exc}") from None
        train, val = items(got, "(training windows, validation windows)")
        got = (whole_number(train, "the training windows"), whole_number(val, "the validation windows"))
        expected = windows(*case)
        if got == expected[::-1]:
            raise Wrong("the two counts are swapped: training first, then validation")
        if got != expected:
            raise Wrong(f"count_windows{case} is off. Hint: a window's targets reach one token past its inputs; "
                        "count how many whole windows fit into each part")
    return "windows of context_length + 1 tokens, one every context_length tokens: no token is trained on twice"
