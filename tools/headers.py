"""The opening cells every notebook shares: Colab badge, Colab-only install cell, versions cell.

The repository's public address lives here and only here. After changing REPO_URL, run
`python tools/headers.py` to rewrite the badge and the install cell of every notebook.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

REPO_URL = "https://github.com/llm-notebooks/llm-from-scratch"
BRANCH = "main"
ROOT = Path(__file__).resolve().parent.parent
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def badge(notebook_name: str) -> str:
    """The Colab badge of `notebook_name`, relative to notebooks/ (e.g. "solutions/02_solutions.ipynb")."""
    path = REPO_URL.removeprefix("https://github.com/")
    link = f"https://colab.research.google.com/github/{path}/blob/{BRANCH}/notebooks/{notebook_name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def install_source(workdir: str = "notebooks") -> str:
    """The Colab-only install cell of a notebook in `workdir` ("notebooks" or "notebooks/solutions")."""
    folder = REPO_URL.rstrip("/").rsplit("/", 1)[-1]
    up = "../" * (workdir.count("/") + 1)
    # A new or restarted Colab runtime starts in /content: clone once (a clone cut short, without utils/, is redone),
    # change into {workdir}/, and pip-install what still fails to import (a failed install is retried on the next run).
    return f'''# On Colab only (chapters 5-7: pick a GPU runtime): clone the repository once, install what is missing
import importlib.util, os, shutil, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("{up}utils"):
        if not os.path.isdir("/content/{folder}/utils"):
            shutil.rmtree("/content/{folder}", ignore_errors=True)
            subprocess.run(["git", "clone", "-q", "{REPO_URL}", "/content/{folder}"], check=True)
        os.chdir("/content/{folder}/{workdir}")
    if missing := [name for name in ["tiktoken", "tqdm", "safetensors", "gguf", "anywidget"] if importlib.util.find_spec(name) is None]:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)'''


VERSIONS_SOURCE = '''import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path.cwd().parent))  # makes the repository's `utils` package importable
print("python", sys.version.split()[0])
for package in ["torch", "tiktoken", "matplotlib"]:
    print(package, version(package))

from utils import get_device

print("device:", get_device())  # where this notebook computes: cuda > mps > cpu'''
# From notebooks/solutions/ the repository root is one folder further up.
SOLUTIONS_VERSIONS_SOURCE = VERSIONS_SOURCE.replace("Path.cwd().parent))", "Path.cwd().parent.parent))")


def opening(notebook_name: str) -> tuple[str, str, str]:
    """(badge, install cell, versions cell) of `notebook_name`, relative to notebooks/."""
    if notebook_name.startswith("solutions/"):
        return badge(notebook_name), install_source("notebooks/solutions"), SOLUTIONS_VERSIONS_SOURCE
    return badge(notebook_name), install_source(), VERSIONS_SOURCE


def relative_name(path: Path) -> str:
    """`path`'s name relative to notebooks/ ("02_working_with_text.ipynb", "solutions/02_solutions.ipynb")."""
    path = Path(path)
    return f"solutions/{path.name}" if path.parent.name == "solutions" else path.name


def header_cells(title_markdown: str, notebook_name: str) -> list:
    """Cells 0-2 for a new notebook: title + badge (markdown), install (code), versions (code, output ignored)."""
    lines = title_markdown.strip().split("\n")
    badge_md, install, versions_source = opening(notebook_name)
    md = "\n".join([lines[0], "", badge_md, *([""] + lines[1:] if len(lines) > 1 else [])])
    versions = nbformat.v4.new_code_cell(versions_source)
    versions.metadata["tags"] = ["nbval-ignore-output"]
    return [nbformat.v4.new_markdown_cell(md), nbformat.v4.new_code_cell(install), versions]


def update(path: Path) -> bool:
    """Rewrite the badge, the install cell and the versions cell of notebook `path` in place; True if anything changed."""
    nb = nbformat.read(path, as_version=4)
    title, install, versions = nb.cells[0], nb.cells[1], nb.cells[2]
    badge_md, install_cell, versions_source = opening(relative_name(path))
    new_title = BADGE_RE.sub(badge_md, title.source)
    changed = new_title != title.source or install.source != install_cell or versions.source != versions_source
    title.source, install.source, versions.source = new_title, install_cell, versions_source
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
        (ROOT / "notebooks" / "solutions").glob("*.ipynb"))
    for p in paths:
        print(("updated " if update(p) else "unchanged ") + relative_name(p))
