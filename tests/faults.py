"""The one runner of the fault catalogues (tests/test_faults_*.py).

A catalogue is a list of cases (name, factory, exception, fragment): `factory(ctx)` builds the call, the call must
raise `exception` whose message holds `fragment` (the what-to-do part), and leave nothing half-written behind.
"""

from collections import namedtuple
from pathlib import Path

import pytest

Case = namedtuple("Case", "name factory error fragment")


def catalogue(cases):
    """Parametrize a test over `cases` as the argument `case`, one test id a case name."""
    return pytest.mark.parametrize("case", [Case(*c) for c in cases], ids=[c[0] for c in cases])


def half_written(folder):
    """Names of the `.part`/`.tmp` files or folders under `folder` (an interrupted atomic write leaves these)."""
    return sorted(p.name for p in Path(folder).rglob("*") if p.suffix in (".part", ".tmp"))


def expect_fault(case, ctx, folder):
    """Run one case: the call built by `case.factory(ctx)` raises `case.error` saying `case.fragment`, and
    leaves in `folder` no `.part`/`.tmp` file and no MARKER (what unpickling a MakesMarker writes). Returns the error."""
    call = case.factory(ctx)
    with pytest.raises(case.error) as info:
        call()
    assert case.fragment in str(info.value)
    assert half_written(folder) == []
    assert not (Path(folder) / "MARKER").exists()
    return info.value


class MakesMarker:
    """Unpickling this runs `open(marker, 'w')`: the code a malicious .pth would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
