"""The Colab install cell (tools/headers.install_source) recovers from whatever state a Colab runtime is in.

Each case runs the cell's own source with a fake `google.colab` module, a local git repository as the clone URL
(no internet), a temporary folder standing in for /content, and a stubbed pip that only records what it was
asked to install (or fails, like a dropped connection). What "is installed" is decided by a stubbed
`importlib.util.find_spec`, so the real environment is never touched.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tools import headers

NEEDED = {"tiktoken", "tqdm", "safetensors", "gguf", "anywidget"}  # what the cell installs when it fails to import
FOLDER = headers.REPO_URL.rstrip("/").rsplit("/", 1)[-1]


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A fake Colab runtime: returns an object whose `run()` executes the install cell once."""
    origin = tmp_path / "origin"  # the "GitHub" repository: a local one with utils/ and notebooks/
    (origin / "utils").mkdir(parents=True)
    (origin / "utils" / "__init__.py").write_text("")
    (origin / "notebooks").mkdir()
    (origin / "notebooks" / "README").write_text("notebooks")
    (origin / "notebooks" / "solutions").mkdir()
    (origin / "notebooks" / "solutions" / "README").write_text("solutions")
    _git("init", "-q", cwd=origin)
    _git("add", ".", cwd=origin)
    _git("commit", "-q", "-m", "init", cwd=origin)

    content = tmp_path / "colab_content"  # stands in for Colab's /content
    content.mkdir()

    def cell(workdir):
        source = headers.install_source(workdir).replace("/content", str(content)).replace(headers.REPO_URL, str(origin))
        assert str(origin) in source and "/content/" not in source
        return compile(source, "install cell", "exec")

    state = types.SimpleNamespace(content=content, clone=content / FOLDER, missing=set(NEEDED),
                                  pip_calls=[], git_calls=0, pip_fails=False)
    real_run, real_find_spec = subprocess.run, importlib.util.find_spec

    def fake_run(cmd, *args, **kwargs):
        if cmd[:3] == [sys.executable, "-m", "pip"]:
            state.pip_calls.append([arg for arg in cmd[cmd.index("install") + 1:] if not arg.startswith("-")])
            if state.pip_fails:
                raise subprocess.CalledProcessError(1, cmd)  # what check=True raises when pip fails
            state.missing -= set(cmd)
            return subprocess.CompletedProcess(cmd, 0)
        if cmd[0] == "git":
            state.git_calls += 1
        return real_run(cmd, *args, **kwargs)

    def fake_find_spec(name, *args, **kwargs):
        return None if name in state.missing else real_find_spec(name, *args, **kwargs)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    monkeypatch.chdir(content)  # a Colab kernel starts in /content

    def run(workdir="notebooks"):
        exec(cell(workdir), {"__name__": "__main__"})

    state.run = run
    return state


def test_first_run_clones_installs_and_enters_notebooks(colab):
    colab.run()
    assert (colab.clone / "utils" / "__init__.py").exists()
    assert Path.cwd() == colab.clone / "notebooks"
    assert [set(call) for call in colab.pip_calls] == [NEEDED]
    assert "GPU" in headers.install_source()  # chapters 5-7: pick a GPU runtime


def test_second_run_does_nothing_again(colab):
    colab.run()
    git_calls = colab.git_calls
    colab.run()  # the same kernel, now in notebooks/
    assert colab.git_calls == git_calls and len(colab.pip_calls) == 1
    assert Path.cwd() == colab.clone / "notebooks"


def test_after_a_restart_it_only_changes_folder(colab):
    colab.run()
    git_calls = colab.git_calls
    os.chdir(colab.content)  # a runtime restart: a new kernel in /content, packages still installed
    colab.run()
    assert colab.git_calls == git_calls and len(colab.pip_calls) == 1
    assert Path.cwd() == colab.clone / "notebooks"


def test_a_failed_install_is_retried_on_the_next_run(colab):
    colab.pip_fails = True
    with pytest.raises(subprocess.CalledProcessError):
        colab.run()
    assert colab.missing == NEEDED  # nothing was installed
    colab.pip_fails = False
    colab.run()  # the learner runs the cell again
    assert [set(call) for call in colab.pip_calls] == [NEEDED, NEEDED]
    assert not colab.missing and Path.cwd() == colab.clone / "notebooks"


def test_only_what_is_missing_is_installed(colab):
    colab.missing = {"safetensors"}  # e.g. a package removed, or a newer Colab image without it
    colab.run()
    assert colab.pip_calls == [["safetensors"]]


def test_an_interrupted_clone_is_redone(colab):
    colab.clone.mkdir()
    (colab.clone / "half-written").write_text("")  # what a clone killed mid-way leaves: no utils/ yet
    colab.run()
    assert (colab.clone / "utils").is_dir() and not (colab.clone / "half-written").exists()


def test_outside_colab_the_cell_does_nothing(colab, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab")
    colab.run()
    assert colab.git_calls == 0 and colab.pip_calls == [] and Path.cwd() == colab.content


def test_solutions_notebooks_work_in_their_folder(colab):
    colab.run("notebooks/solutions")
    assert Path.cwd() == colab.clone / "notebooks" / "solutions"
    git_calls = colab.git_calls
    colab.run("notebooks/solutions")  # run again: already inside the repository (utils two folders up)
    os.chdir(colab.content)  # restart
    colab.run("notebooks/solutions")
    assert colab.git_calls == git_calls and len(colab.pip_calls) == 1
    assert Path.cwd() == colab.clone / "notebooks" / "solutions"
