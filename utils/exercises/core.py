"""The exercise registry and `check`, plus the answer readers every chapter's checkers share.

A checker takes the learner's answer and returns the line to print when it is right; it raises `Wrong` with what is
off and a hint. `@exercise("4.1")` registers it; `check("4.1", answer)` runs it and prints one line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn as nn

TICK, CROSS = "✓", "✗"
CHECKERS: dict[str, Callable] = {}


class Wrong(Exception):
    """Raised inside a checker: what is off, and a hint."""


def exercise(exercise_id: str):
    """Decorator: register the checker of exercise `exercise_id` ("4.1"); an id registered twice is an error."""

    def register(checker: Callable) -> Callable:
        if exercise_id in CHECKERS:
            raise ValueError(f"exercise {exercise_id} has two checkers: {CHECKERS[exercise_id].__module__} "
                             f"and {checker.__module__}")
        CHECKERS[exercise_id] = checker
        return checker

    return register


def unanswered(answer) -> bool:
    """True for None, or `...` anywhere in the answer (a None inside may be meant, e.g. top_k=None)."""
    return answer is None or _holds_ellipsis(answer)


def _holds_ellipsis(answer) -> bool:
    if answer is Ellipsis:
        return True
    if isinstance(answer, (list, tuple)):
        return any(_holds_ellipsis(a) for a in answer)
    if isinstance(answer, dict):
        return any(_holds_ellipsis(a) for a in answer.values())
    return False


def grade(exercise_id: str, answer) -> tuple[bool, str]:
    """(right, the one line of feedback) for `answer` to exercise `exercise_id`; ValueError for an unknown id."""
    key = str(exercise_id).strip()
    if key not in CHECKERS:
        raise ValueError(f"unknown exercise id {exercise_id!r}: known ids are {', '.join(sorted(CHECKERS))}")
    if unanswered(answer):
        return False, f"Exercise {key}: not answered yet (replace the ... above with your answer)"
    try:
        return True, f"{TICK} Exercise {key}: right. {CHECKERS[key](answer)}"
    except Wrong as exc:
        return False, f"{CROSS} Exercise {key}: {exc}"
    except Exception as exc:  # noqa: BLE001  (an answer of an unexpected kind: say so, never raise)
        return False, f"{CROSS} Exercise {key}: could not check this answer ({type(exc).__name__}: {exc})"


def check(exercise_id: str, answer) -> None:
    """Check `answer` to exercise `exercise_id` ("2.1", "4.2", "A.3", ...) and print one line of feedback.

    Returns None, so a notebook cell shows the line and nothing else; `grade` returns (right, line) instead.
    """
    print(grade(exercise_id, answer)[1])


# --- reading an answer: each raises Wrong saying what kind of value was expected ---------------------------------


def whole_number(value, what: str) -> int:
    """`value` (an int, an integral float or a one-element tensor) as an int."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise Wrong(f"{what} should be a whole number, got {value!r}")
    return int(value)


def number(value, what: str) -> float:
    """`value` (an int, a float or a one-element tensor) as a float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Wrong(f"{what} should be a number, got {type(value).__name__} {value!r}")
    return float(value)


def token_ids(value, what: str) -> list[int]:
    """`value` (a list of ints or a tensor of any shape) as a flat list of token ids."""
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
        raise Wrong(f"{what} should be a list of integer token ids, got {type(value).__name__}")
    return list(value)


def answer_tensor(value, what: str) -> torch.Tensor:
    """`value` as a detached CPU tensor."""
    if not isinstance(value, torch.Tensor):
        raise Wrong(f"{what} should be a tensor, got {type(value).__name__}")
    return value.detach().cpu()


def items(answer, what: str, n: int = 2) -> tuple:
    """`answer` as a tuple of `n` items; `what` names them for the learner."""
    if not isinstance(answer, (tuple, list)) or len(answer) != n:
        raise Wrong(f"the answer should be a tuple of {n}: {what}")
    return tuple(answer)


def module(value, what: str) -> nn.Module:
    """`value`, which must be a torch.nn.Module."""
    if not isinstance(value, nn.Module):
        raise Wrong(f"{what} should be a torch.nn.Module, got {type(value).__name__}")
    return value


def call_eval(model: nn.Module, *args):
    """`model(*args)` in eval mode without gradients, restoring its mode; a failure is the learner's to see."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*args)
    except Exception as exc:  # noqa: BLE001  (the learner's code: report, never raise)
        raise Wrong(f"calling the module raised {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of `model` (only those with requires_grad when `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def meta_model(cfg: dict) -> nn.Module:
    """A GPTModel with `cfg` on the meta device: parameter shapes without memory or time."""
    from ..model import GPTModel

    with torch.device("meta"):
        return GPTModel(cfg)


@functools.lru_cache(maxsize=None)
def tokenizer():
    """GPT-2's tokenizer (tiktoken), loaded once."""
    from ..tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


@functools.lru_cache(maxsize=None)
def the_verdict() -> str:
    """The text of chapter 2's short story (fetched once)."""
    from ..assets import fetch

    return fetch("the-verdict", progress=False).read_text(encoding="utf-8")
