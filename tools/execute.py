"""Execute a notebook in place, as a reader would, to refresh its committed outputs.

    python tools/execute.py notebooks/05_pretraining.ipynb            # full run (the book's settings)
    python tools/execute.py --smoke notebooks/05_pretraining.ipynb    # what CI runs

Uses the same offline set-up as the tests (tiktoken cache and asset mirror from ../shared/data when present).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--smoke", action="store_true", help="set LLM_SMOKE=1 (tiny model, few steps)")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per cell")
    args = parser.parse_args()

    import conftest  # noqa: F401  (offline tiktoken cache + local mirror; it sets LLM_SMOKE=1)

    if not args.smoke:
        os.environ.pop("LLM_SMOKE", None)
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        start = time.time()
        # coalesce_streams: one output per stream, progress-bar redraws (\r) collapsed to the final line
        client = NotebookClient(
            nb, timeout=args.timeout, kernel_name="python3", coalesce_streams=True, record_timing=False,
            resources={"metadata": {"path": str(path.parent)}},
        )
        try:
            client.execute()
        finally:
            nb.metadata.pop("widgets", None)
            for cell in nb.cells:  # a widget's view needs a live kernel: saved, it shows only "VBox(children=...)"
                if "outputs" in cell:
                    cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
            nbformat.write(nb, path)
        print(f"{path}: executed in {time.time() - start:.0f} s ({'smoke' if args.smoke else 'full'})")


if __name__ == "__main__":
    main()
