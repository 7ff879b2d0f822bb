"""Exercises a learner can check: `check("4.1", answer)` prints one line of feedback.

One module a chapter (ch02.py, ..., chA.py), each registering its checkers with `@exercise("4.1")`; every `ch*.py`
module here is imported below, so adding a chapter's exercises is adding one file. Ids are strings: the book's
exercise numbers and ours, which continue each chapter's numbering. Expected values are computed from `utils`, not
typed in; feedback says what is off and hints at the way, never the expected value itself.
"""

import importlib
import pkgutil

from .core import CHECKERS, CROSS, TICK, Wrong, check, exercise, grade

for _chapter in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("ch")):
    importlib.import_module(f"{__name__}.{_chapter}")

from .ch07 import example_items  # noqa: E402  (chapter 7's notebook names it in exercise 7.2)

__all__ = ["CHECKERS", "CROSS", "TICK", "Wrong", "check", "exercise", "example_items", "grade"]
