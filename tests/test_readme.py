"""The README's chapter table stays in step with notebooks/ and with the repository address in tools/headers.py."""

import re
from pathlib import Path

from tools.headers import BADGE_RE, badge

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
ROWS = [line for line in README.splitlines() if line.startswith("| [")]


def test_every_notebook_has_a_row():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert any(f"(notebooks/{path.name})" in row for row in ROWS), f"add a row for {path.name} to the README's chapter table"


def test_badges_point_at_their_notebook():
    assert ROWS, "the README has no chapter table"
    for row in ROWS:
        name = re.search(r"\(notebooks/([^)]+\.ipynb)\)", row).group(1)
        badges = BADGE_RE.findall(row)
        assert badges == [badge(name)], f"README badge for {name} differs from tools.headers.badge({name!r})"


def test_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert blocks[0].endswith("pip install -r requirements.txt && jupyter lab notebooks/")
    assert blocks[1] == "pytest"  # what .ci/run and the GitHub workflow run


def test_every_solutions_notebook_is_linked():
    for path in sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb")):
        assert f"(notebooks/solutions/{path.name})" in README, f"link {path.name} from the README's chapter table"
