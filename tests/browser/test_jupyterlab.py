"""A reader's first run, in a real browser: JupyterLab + headless Chromium run all cells of chapter 2.

The machinery (JupyterLab, chromedriver, a notebook copy) is in browserlab.py, shared with the other browser tests.
"""

from __future__ import annotations

import re

import pytest
from browserlab import ROOT, SCREENSHOTS, needs_chromium, run_notebook_in_lab

pytestmark = needs_chromium

NOTEBOOK = "02_working_with_text.ipynb"
# The book's chapter-2 numbers (issue 3), as the notebook prints them; whitespace inside tensors may vary.
EXPECTED_OUTPUTS = {
    "characters in the-verdict.txt": r"\b20479\b",
    "regex tokens": r"\b4690\b",
    "vocabulary size": r"\b1130\b",
    "vocabulary size with special tokens": r"\b1132\b",
    "BPE tokens": r"\b5145\b",
    "first loader row": r"\[\s*40,\s*367,\s*2885,\s*1464\]",
    "input embeddings shape": r"torch\.Size\(\[8, 4, 256\]\)",
}

def test_chapter2_runs_in_jupyterlab():
    notebook = ROOT / "notebooks" / NOTEBOOK
    if not notebook.exists():
        pytest.skip(f"notebooks/{NOTEBOOK} is not in this checkout")
    state = run_notebook_in_lab(notebook, SCREENSHOTS / NOTEBOOK.replace(".ipynb", ".png"))
    print(f"browser test timings: {state['timings']}")

    assert not state["errors"], "cells show errors in JupyterLab:\n" + "\n".join(state["errors"])
    assert state["executed"] == state["code"], f"only {state['executed']} of {state['code']} code cells ran"
    shown = "\n".join(state["texts"])
    missing = [what for what, pattern in EXPECTED_OUTPUTS.items() if not re.search(pattern, shown)]
    assert not missing, f"expected outputs not rendered: {missing}"
    assert state["images"] >= 1, "no figure (<img> output) was rendered"
