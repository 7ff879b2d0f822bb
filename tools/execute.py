"""Execute a notebook in place, as a reader would, to refresh its committed outputs.

    python tools/execute.py notebooks/05_pretraining.ipynb                 # full run (the book's settings)
    python tools/execute.py --smoke notebooks/05_pretraining.ipynb         # what CI runs
    python tools/execute.py --cells 12-14 notebooks/05_pretraining.ipynb   # run cells 0..14, keep only 12-14's outputs

Uses the same offline set-up as the tests (tools/offline.py: tiktoken cache and asset mirror from ../shared/data
when present). `--cells A-B` (0-based cell indices, as nbformat counts them) runs every cell up to B in a fresh
kernel, exactly as a full run would, and writes back the outputs of cells A..B only: an honest way to refresh one
figure early in a long notebook, since the cells before it run too.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
sys.path.insert(0, str(ROOT))


def cell_range(text: str) -> range:
    """'12-14' -> range(12, 15); '7' -> range(7, 8)."""
    first, _, last = text.partition("-")
    try:
        first, last = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cells {text!r}: give A-B, two cell indices such as 12-14") from None
    if not 0 <= first <= last:
        raise argparse.ArgumentTypeError(f"--cells {text!r}: need 0 <= A <= B")
    return range(first, last + 1)


def execute(nb, path: Path, timeout: int, cells: range | None = None) -> None:
    """Run `nb` (all of it, or its cells up to cells[-1]) in a fresh kernel; outputs land in `nb`'s cells."""
    run = nb if cells is None else copy.deepcopy(nb)
    if cells is not None:
        if cells[-1] >= len(nb.cells):
            raise SystemExit(f"{path}: --cells up to {cells[-1]}, but the notebook has {len(nb.cells)} cells")
        run.cells = run.cells[: cells[-1] + 1]
    # coalesce_streams: one output per stream, progress-bar redraws (\r) collapsed to the final line
    client = NotebookClient(run, timeout=timeout, kernel_name="python3", coalesce_streams=True, record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for i in cells or ():
        if nb.cells[i].cell_type == "code":
            nb.cells[i].outputs = run.cells[i].outputs
            nb.cells[i].execution_count = run.cells[i].execution_count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--smoke", action="store_true", help="set LLM_SMOKE=1 (tiny model, few steps)")
    parser.add_argument("--cells", type=cell_range, help="A-B: run cells 0..B, write back the outputs of A..B only")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per cell")
    args = parser.parse_args()

    from tools.offline import use_shared_data

    use_shared_data()
    # OpenMP's waiting: the kernel's `import utils` sets it (utils/__init__.py), as in a reader's notebook
    if args.smoke:
        os.environ["LLM_SMOKE"] = "1"
    else:
        os.environ.pop("LLM_SMOKE", None)
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        start = time.time()
        try:
            execute(nb, path, args.timeout, args.cells)
        finally:
            nb.metadata.pop("widgets", None)
            for cell in nb.cells:  # a widget's view needs a live kernel: saved, it shows only "VBox(children=...)"
                if "outputs" in cell:
                    cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
            nbformat.write(nb, path)
        what = "smoke" if args.smoke else "full"
        cells = f", outputs of cells {args.cells[0]}-{args.cells[-1]} written back" if args.cells else ""
        print(f"{path}: executed in {time.time() - start:.0f} s ({what}{cells})")


if __name__ == "__main__":
    main()
