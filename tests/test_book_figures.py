"""Every number a notebook attributes to the printed book is one the printed book prints (issue 18, section 5).

The one table of the printed book's figures is BOOK below: ../shared/BOOK.md says where they come from (the
book's CPU runs, before the code repository's later MPS re-runs, whose numbers differ). A notebook writes a book
figure in one of two forms, so this test finds every one of them:

- in text (markdown, a code comment or a printed string): `book: 97.21%` or `book: 0.391 / 6.452` - the word
  "book", a colon, then the figures, separated by " / " or ", ";
- in code: a name starting with `BOOK_` assigned a literal, e.g. `BOOK_EVALUATIONS = {0: (9.781, 9.933), ...}`
  (numbers, and figures with a decimal point inside its strings: `{"initial loss": "3.8259 / 3.7619"}`).

A second check keeps other forms out: a figure-shaped number (with a decimal point, or thousands separators) written
right after the word "book" that is not in one of the two forms fails, so a misquote cannot hide in free text.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))

# The printed book's figures, by chapter (the notebooks' first characters: "05", "05b" and "05_solutions" -> "05").
BOOK = {
    "04": {
        "parameters of GPTModel(GPT_CONFIG_124M)": 163_009_536,
        "parameters with the output head tied": 124_412_160,
        "size in float32, MB": 621.83,
    },
    "05": {
        # BOOK.md: the first and last evaluations of train_model_simple, 10 epochs
        "first evaluation, train / val": (9.781, 9.933),
        "last evaluation, train / val": (0.391, 6.452),
        "other printed evaluations": (8.111, 8.339, 6.661, 7.048, 5.961, 6.616, 0.541, 6.393),
        "learning rate, weight decay": (4e-4, 0.1),
        "target probabilities, text 1": (7.4541e-05, 3.1061e-05, 1.1563e-05),
        "cross-entropy of the two examples": 10.7940,
        "perplexity of the two examples": 48725.8203,
        "loss before training, train / val": (10.98758, 10.98110),
        "draws out of 1,000 at T=1, forward / toward": (582, 343),
        "GPT-2 124M on The Verdict, train / val (exercise 5.5)": (3.7547, 3.5596),
        # BOOK.md: exercise 5.4's solution continues chapter 5's saved run for one epoch
        "exercise 5.4, steps 0 and 5, train / val": (0.271, 6.545, 0.244, 6.614),
    },
    "06": {
        "ham messages read by pandas": 4825,
        "longest training message, tokens": 120,
        "accuracy before finetuning, train / val / test": (46.25, 45.00, 48.75),
        "accuracy after finetuning, train / val / test": (97.21, 97.32, 95.67),
        "training time, minutes (the book says about 6 on an M3 MacBook Air)": 5.65,
        # appendix C, the exercise solutions (test accuracy): 6.1 padded to 1,024, 6.2 whole model, 6.3 first token
        "exercise test accuracies 6.1 / 6.2 / 6.3": (78.33, 96.67, 75.00),
    },
    "07": {
        "loss before finetuning, train / val": (3.8259, 3.7619),
        "last evaluation, train / val": (0.299, 0.657),
        "training time on an A100, minutes": 0.87,
        # appendix C / the book's exercise solutions (GPT-2 medium; times on an Nvidia L4 GPU; Ollama judge scores)
        "7.1 Phi-3 prompt: minutes Phi-3 / Alpaca, score": (1.50, 1.80, 48.87),
        "7.2 masked instructions: score": 47.73,
        "7.3 Alpaca 52k: training minutes, score": (196.38, 48.16),
        "7.4 LoRA: trainable parameters, minutes, score": (7_898_384, 1.30, 50.23),
    },
    "A": {
        "logistic regression loss and gradients": (0.0852, -0.0898, -0.0817),
        "training losses": (0.75, 0.65, 0.44, 0.13, 0.03, 0.00),
    },
    "D": {
        # BOOK.md: train_model (warmup, cosine, clipping from global_step > warmup_steps), 15 epochs
        "first evaluation, train / val": (10.934, 10.939),
        "second evaluation, train / val": (9.151, 9.461),
        "third and fourth evaluations": (7.949, 8.184, 6.362, 6.876),
        "last evaluation, train / val": (0.041, 6.915),
    },
    "E": {
        "accuracy with LoRA, train / val / test": (99.81, 97.99, 96.67),
        "trainable parameters before LoRA": 124_441_346,
        "trainable LoRA parameters at rank 16": 2_666_528,
        "learning rate, weight decay": (8e-4, 0.1),
        "rank, alpha (the layer multiplies by alpha)": (16, 16),
    },
}

NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?%?"
MARKER = re.compile(rf"\bbook:[ \t]+\**({NUMBER}(?:\s*(?:/|,|\|)\s*{NUMBER})*)", re.IGNORECASE)
FIGURE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+\.\d+(?:e-?\d+)?")  # 0.391, 97.21, 124,441,346
NEAR_BOOK = re.compile(r"\bbook\b[^\n.;(={]{0,60}?(?<![:\w])(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+\.\d+(?:e-?\d+)?)", re.IGNORECASE)


def chapter(path: Path) -> str:
    return path.stem.split("_")[0].removesuffix("b").removesuffix("c")


def value(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def flat(figures) -> set[float]:
    out = set()
    for figure in figures.values():
        out.update(figure if isinstance(figure, tuple) else (figure,))
    return {float(f) for f in out}


def marked(source: str) -> list[str]:
    """Every figure the source attributes to the book: in `book: ...` markers and in `BOOK_...` literals."""
    found = [n for m in MARKER.finditer(source) for n in re.findall(NUMBER, m.group(1))]
    try:
        tree = ast.parse(re.sub(r"(?m)^\s*[%!].*$", "", source))  # IPython magics are not Python
    except SyntaxError:  # markdown
        return found
    for node in ast.walk(tree):
        names = [t for target in getattr(node, "targets", []) for t in ast.walk(target) if isinstance(t, ast.Name)]
        if isinstance(node, ast.Assign) and any(t.id.startswith("BOOK_") for t in names):
            keys = {id(k) for d in ast.walk(node.value) if isinstance(d, ast.Dict) for k in d.keys}  # steps, names
            found += [repr(c.value) for c in ast.walk(node.value) if id(c) not in keys
                      and isinstance(c, ast.Constant) and isinstance(c.value, (int, float)) and not isinstance(c.value, bool)]
            found += [n for c in ast.walk(node.value) if id(c) not in keys and isinstance(c, ast.Constant)
                      and isinstance(c.value, str) for n in FIGURE.findall(c.value)]  # "3.8259 / 3.7619" in a table
    return found


def cells(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_book_figure_is_the_printed_books(path):
    allowed = flat(BOOK.get(chapter(path), {}))
    wrong = [(i, n) for i, source in enumerate(cells(path)) for n in marked(source)
             if value(n) not in allowed]
    assert not wrong, (f"{path.name}: figures attributed to the book that are not in tests/test_book_figures.BOOK "
                       f"(cell, figure): {wrong}. Quote the printed book (../shared/BOOK.md).")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_book_figures_are_written_in_the_checked_form(path):
    loose = []
    for i, source in enumerate(cells(path)):
        inside = {n for n in marked(source)}
        for m in NEAR_BOOK.finditer(source):
            if m.group(1) not in inside and not MARKER.search(m.group(0)):
                loose.append((i, m.group(0)[-80:]))
    assert not loose, (f"{path.name}: a figure next to the word 'book' outside the checked forms (cell, text): {loose}. "
                       "Write it as `book: <figure>` or in a BOOK_ constant, so tests/test_book_figures.py checks it.")


def test_the_table_holds_book_md():
    """The figures ../shared/BOOK.md lists are in the table (where ../shared is present)."""
    book_md = ROOT.parent / "shared" / "BOOK.md"
    if not book_md.is_file():
        pytest.skip("../shared/BOOK.md is not on this machine")
    text = book_md.read_text(encoding="utf-8")
    for key, line in [("05", "chapter 5"), ("D", "appendix D")]:
        row = next(r for r in text.splitlines() if r.startswith(f"| {line}"))
        printed = row.split("|")[2]  # the "printed book" column
        assert {value(n) for n in FIGURE.findall(printed)} <= flat(BOOK[key]), (line, printed)


def test_a_misquote_is_found():
    """The repository's MPS re-run (0.569 / 6.373) quoted as the book's is caught in both forms."""
    assert marked("ends at the book's loss (book: 0.569 / 6.373)") == ["0.569", "6.373"]
    assert marked("BOOK_LAST = {85: (0.569, 6.373)}  # the book's") == ["0.569", "6.373"]
    assert not {value(n) for n in marked("book: 0.569 / 6.373")} <= flat(BOOK["05"])
    assert NEAR_BOOK.search("The book reports 0.569 for the training loss")
