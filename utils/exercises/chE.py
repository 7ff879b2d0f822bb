"""Appendix E's exercise: which starting values of A and B let a LoRA layer learn."""

from __future__ import annotations

from .core import Wrong, exercise

STARTS = {"a": "A random, B zero", "b": "A zero, B random", "c": "A zero, B zero"}


def letters(answer) -> set[str]:
    """The answer (a set, list or string of the letters a, b, c) as a set of lowercase letters."""
    if isinstance(answer, str):
        answer = [ch for ch in answer if ch.isalpha()]
    if not isinstance(answer, (set, frozenset, list, tuple)) or not all(isinstance(x, str) for x in answer):
        raise Wrong('the answer should be a set of letters, such as {"a", "c"}')
    got = {x.strip().lower() for x in answer}
    if not got <= set(STARTS):
        raise Wrong(f"use the letters of the three starts: {', '.join(STARTS)}")
    return got


@exercise("E.1")
def starts_that_learn(answer):
    got = letters(answer)
    if "c" in got:
        raise Wrong("one of these never learns. Hint: the gradient of A goes through B, and the gradient of B "
                    "goes through A; look at both after one backward pass")
    if got != {"a", "b"}:
        raise Wrong("not every start that learns is in the set. Hint: a start learns if A or B gets a nonzero "
                    "gradient in the first backward pass; try each start on a LinearWithLoRA")
    return ("either matrix zero keeps the model unchanged at the start; one of them must be nonzero, or neither "
            "ever gets a gradient")
