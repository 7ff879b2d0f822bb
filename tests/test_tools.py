"""tools/: importing the offline set-up changes nothing; execute.py's --cells parsing; no tool or module imports tests."""

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.execute import cell_range

ROOT = Path(__file__).resolve().parent.parent


def test_importing_offline_has_no_side_effect():
    code = ("import os; before = dict(os.environ); import tools.offline; "
            "assert dict(os.environ) == before; import threading; assert threading.active_count() == 1")
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "LLM_ASSET_MIRROR")}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


def test_cell_range():
    assert cell_range("12-14") == range(12, 15) and cell_range("7") == range(7, 8)
    for bad in ("b-3", "5-2", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="--cells"):
            cell_range(bad)


@pytest.mark.parametrize("folder", ["tools", "utils", "bench"])
def test_no_module_imports_the_tests(folder):
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("conftest", "tests") or n.startswith("test_") for n in names), path
