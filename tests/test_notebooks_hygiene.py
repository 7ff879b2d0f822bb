"""What every committed notebook must look like: the shared opening cells, and nothing stale or machine-specific.

Parametrized over the notebooks present in notebooks/, so it holds for whatever chapters exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tools import headers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
HEAVY = ("05_", "06_", "07_", "D_", "E_")  # notebooks that train: they read LLM_SMOKE in their first config cell
HEAVY_SOLUTIONS = ("05_", "06_", "07_")  # of the solutions, those that train (D's and E's work on a few numbers)
SMOKE_LINE = 'SMOKE = os.environ.get("LLM_SMOKE") == "1"'
MAX_STREAM_CHARS = 5000  # a longer stream output is a progress-bar wall (or a dump nobody reads)

# Absolute paths of this or any reader's machine; outputs must show paths relative to the repository.
ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/work/|/home/|/root/|/tmp/|/Users/|/private/var/|/opt/|/usr/lib/|[A-Za-z]:\\)")
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")


def _nb(path: Path):
    return nbformat.read(path, as_version=4)


def _output_texts(output) -> list[str]:
    """The text an output shows: stream text, text/* data, and an error's name, value and traceback."""
    if output.output_type == "stream":
        return [output.text]
    if output.output_type == "error":
        return [output.ename, output.evalue, *output.traceback]
    data = output.get("data", {})
    return [v if isinstance(v, str) else "".join(v) for k, v in data.items() if k.startswith("text/")]


def _where(index: int, cell) -> str:
    first = cell.source.strip().split("\n", 1)[0][:60]
    return f"cell {index} ({cell.cell_type}: {first!r})"


every_notebook = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
HEAVY_NOTEBOOKS = [p for p in NOTEBOOKS
                  if p.name.startswith(HEAVY_SOLUTIONS if p.parent.name == "solutions" else HEAVY)]


@every_notebook
def test_valid_nbformat_with_python3_kernel(path):
    nb = _nb(path)
    nbformat.validate(nb)
    # Without a kernelspec JupyterLab asks the reader to pick a kernel before anything runs.
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: metadata.kernelspec.name should be 'python3' (JupyterLab otherwise opens a 'Select Kernel' dialog)"
    )


@every_notebook
def test_opening_cells(path):
    cells = _nb(path).cells
    assert len(cells) >= 3, f"{path.name}: fewer than the three opening cells (tools.headers.header_cells)"
    title, install, versions = cells[:3]
    badge, install_source, versions_source = headers.opening(headers.relative_name(path))
    assert title.cell_type == "markdown" and title.source.startswith("# "), (
        f"{path.name}: cell 0 should be markdown starting with a '# ' title"
    )
    assert badge in title.source, (
        f"{path.name}: cell 0 lacks the Colab badge for this notebook on {headers.BRANCH}; "
        "run `python tools/headers.py` to rewrite it"
    )
    assert install.cell_type == "code" and install.source == install_source, (
        f"{path.name}: cell 1 should be the Colab-only install cell from tools.headers.install_source(); "
        "run `python tools/headers.py` to rewrite it"
    )
    assert versions.cell_type == "code" and versions.source == versions_source, (
        f"{path.name}: cell 2 should be the versions cell (tools.headers.VERSIONS_SOURCE)"
    )
    assert "nbval-ignore-output" in versions.metadata.get("tags", []), (
        f"{path.name}: the versions cell (cell 2) needs the nbval-ignore-output tag"
    )


@every_notebook
def test_no_absolute_paths(path):
    found = []
    for i, cell in enumerate(_nb(path).cells):
        texts = [cell.source] + [t for o in cell.get("outputs", []) for t in _output_texts(o)]
        for text in texts:
            for match in ABSOLUTE_PATH.finditer(text):
                line = text[max(0, match.start() - 40) : match.end() + 40].replace("\n", " ")
                found.append(f"{_where(i, cell)}: ...{line}...")
    assert not found, f"{path.name} holds absolute paths:\n" + "\n".join(found[:10])


@every_notebook
def test_executed_top_to_bottom_without_errors(path):
    problems, counts = [], []
    for i, cell in enumerate(_nb(path).cells):
        if cell.cell_type != "code":
            continue
        raises = "raises-exception" in cell.metadata.get("tags", [])
        if cell.outputs and cell.execution_count is None:
            problems.append(f"{_where(i, cell)} has outputs but no execution count (stale output)")
        if cell.execution_count is None:
            problems.append(f"{_where(i, cell)} was not executed")
        else:
            counts.append(cell.execution_count)
        for output in cell.outputs:
            if output.output_type == "error" and not raises:
                problems.append(f"{_where(i, cell)} holds an error output: {output.ename}: {output.evalue}")
            if output.output_type == "stream" and output.name == "stderr" and "Traceback" in output.text:
                problems.append(f"{_where(i, cell)} holds a traceback on stderr")
    if counts != sorted(counts) or len(set(counts)) != len(counts):
        problems.append(f"execution counts are not one top-to-bottom run: {counts}")
    assert not problems, f"{path.name}: re-execute it with tools/execute.py\n" + "\n".join(problems)


@every_notebook
def test_no_widget_state_or_progress_walls(path):
    nb = _nb(path)
    problems = []
    if "widgets" in nb.metadata:
        problems.append("notebook metadata holds widget state (metadata.widgets)")
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            mimes = [m for m in output.get("data", {}) if m in WIDGET_MIMES]
            if mimes:
                problems.append(f"{_where(i, cell)} has a widget output ({mimes[0]}): use tqdm's text bar")
            if output.output_type == "stream" and len(output.text) > MAX_STREAM_CHARS:
                problems.append(
                    f"{_where(i, cell)} has a {len(output.text)}-character {output.name} output "
                    f"({output.text.count(chr(13))} carriage returns): a progress-bar wall"
                )
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", HEAVY_NOTEBOOKS, ids=[p.name for p in HEAVY_NOTEBOOKS])
def test_heavy_chapters_read_smoke_flag_first(path):
    code = [(i, c) for i, c in enumerate(_nb(path).cells) if c.cell_type == "code"][2:]  # after install + versions
    using = [(i, c) for i, c in code if "SMOKE" in c.source]
    assert using, f"{path.name}: no cell reads the smoke flag; add `{SMOKE_LINE}` to the first config cell"
    i, first = using[0]
    assert SMOKE_LINE in [line.split("#")[0].strip() for line in first.source.split("\n")], (
        f"{path.name}: the first cell that uses SMOKE ({_where(i, first)}) should set `{SMOKE_LINE}`"
    )
    assignments = [j for j, c in code if re.search(r"^\s*SMOKE\s*=", c.source, re.M)]
    assert assignments == [i], f"{path.name}: SMOKE is set in cells {assignments}; set it once, in the config cell"


# What a learner reads speaks of the learner's run, not of the test suite: no test plumbing in markdown, code
# comments or outputs. The one exception is the settings cell of a heavy chapter (the code cell that sets SMOKE)
# and the markdown just before it, where the quick setting is explained.
PLUMBING = re.compile(
    r"\bsmoke\b|\bnbval\b|\bpytest\b|\bconftest\b|\bLLM_SMOKE\b|\btest suite\b|\bthe tests\b|\btests?/\w|"
    r"(?-i:\bCI\b)",
    re.IGNORECASE,
)
CHAPTERS = [p for p in NOTEBOOKS if re.match(r"\d\d_", p.name) and p.parent.name != "solutions"]  # the book's chapters (not bonus notebooks)
OWN_INPUT = ("02_", "05_", "06_", "07_")  # chapters with a cell for the learner's own input


def _comments(source: str) -> list[str]:
    """The `#` comments of a code cell (IPython magics and shell lines are skipped)."""
    import io
    import tokenize

    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return [line.split("#", 1)[1] for line in code.split("\n") if "#" in line]


def _settings_cells(cells) -> set[int]:
    """Indices of the settings cell (the code cell that sets SMOKE) and of the markdown cell right before it."""
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and re.search(r"^\s*SMOKE\s*=", cell.source, re.M):
            return {i, i - 1} if i and cells[i - 1].cell_type == "markdown" else {i}
    return set()


@every_notebook
def test_no_test_plumbing_in_what_a_learner_reads(path):
    cells = _nb(path).cells
    exempt = _settings_cells(cells)
    found = []
    for i, cell in enumerate(cells):
        if i in exempt:
            continue
        if cell.cell_type == "markdown":
            texts = [cell.source]
        elif cell.cell_type == "code":
            texts = _comments(cell.source) + [t for o in cell.get("outputs", []) for t in _output_texts(o)]
        else:
            continue
        for text in texts:
            for match in PLUMBING.finditer(text):
                context = text[max(0, match.start() - 40) : match.end() + 40].replace("\n", " ")
                found.append(f"{_where(i, cell)}: ...{context}...")
    assert not found, (
        f"{path.name}: test plumbing outside the settings cell (speak of the learner's run; the quick size belongs "
        "in the settings cell only):\n" + "\n".join(found[:10])
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_ends_with_summary_and_next_link(path):
    cells = _nb(path).cells
    summary = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and re.search(r"^##\s+Summary", c.source, re.M)]
    assert summary, f"{path.name}: no '## Summary' markdown cell"
    after = "\n".join(c.source for c in cells[summary[-1] :] if c.cell_type == "markdown")
    links = re.findall(r"\*\*Next:\*\*.*?\]\(([^)]+)\)", after, re.S)
    assert links, f"{path.name}: no '**Next:** [...](...)' link at or after the summary"
    target = (path.parent / links[0].split("#")[0]).resolve()
    assert target.exists(), f"{path.name}: the next-chapter link points to {links[0]}, which does not exist"


@pytest.mark.parametrize("path", [p for p in CHAPTERS if p.name.startswith(OWN_INPUT)],
                         ids=[p.name for p in CHAPTERS if p.name.startswith(OWN_INPUT)])
def test_chapter_has_a_cell_for_the_learners_own_input(path):
    cells = _nb(path).cells
    turns = [i for i, c in enumerate(cells[:-1]) if c.cell_type == "markdown" and re.search(r"^#+ Your turn", c.source, re.M)]
    assert turns and cells[turns[0] + 1].cell_type == "code", (
        f"{path.name}: no '## Your turn' markdown cell followed by a code cell for the learner's own input"
    )
