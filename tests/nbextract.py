"""Pull class and function definitions out of a chapter notebook, for the notebook/utils agreement tests.

    ns = extract("03_attention.ipynb", "MultiHeadAttention")
    mha = ns["MultiHeadAttention"](d_in=3, d_out=2, context_length=6, dropout=0.0, num_heads=2)

Only the definitions run, not the rest of their cells (which may print, plot or need earlier variables):
every top-level `import` of the notebook's code cells, then the requested `class`/`def` statements, each taken
from the last code cell that defines it (a notebook may redefine a class; the last version is the one it keeps).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _python_source(cell_source: str) -> str:
    """The cell's code as plain Python: IPython magics (`%matplotlib inline`, `!pip ...`) become calls or go."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # no IPython: drop magic lines
        return "\n".join(line for line in cell_source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return TransformerManager().transform_cell(cell_source)


def code_cells(notebook: str | Path) -> list[ast.Module]:
    """The parsed code cells of `notebook` (a path, or a file name under notebooks/), in order."""
    path = Path(notebook)
    if not path.exists():
        path = NOTEBOOKS / notebook
    nb = nbformat.read(path, as_version=4)
    return [ast.parse(_python_source(c.source)) for c in nb.cells if c.cell_type == "code"]


def definitions(notebook: str | Path, *names: str) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(all top-level imports, the last top-level definition of each of `names`) of `notebook`, as AST nodes."""
    imports, found = [], {}
    for module in code_cells(notebook):
        for node in module.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(node)
            elif isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in names:
                found[node.name] = node
    missing = [n for n in names if n not in found]
    if missing:
        raise LookupError(f"{notebook} defines no top-level class or function named {', '.join(missing)}")
    return imports, [found[n] for n in names]


def extract(notebook: str | Path, *names: str, namespace: dict | None = None) -> dict:
    """Run the notebook's imports and the definitions of `names` (dependencies first) in a fresh namespace.

    Returns the namespace (a dict): `ns["SimpleTokenizerV1"]` is the notebook's class.
    `namespace` pre-fills names the definitions need that are not imports (e.g. a constant).
    """
    imports, defs = definitions(notebook, *names)
    ns = {"__name__": f"notebook:{Path(notebook).stem}"}
    ns.update(namespace or {})
    for node in imports:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        exec(compile(ast.Module(body=[node], type_ignores=[]), str(notebook), "exec"), ns)
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(notebook), "exec"), ns)
    return ns
