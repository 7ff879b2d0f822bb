"""Fault catalogue of utils.assets.fetch: bad settings and bad servers raise a clear error; nothing half-written.

Each case: (id, set-up(ctx) -> callable, exception, message fragment). `ctx` holds the data folder, a local
HTTP server and monkeypatch. After every case the data folder holds no `.part`/`.tmp` file.
"""

import os
import time
from types import SimpleNamespace

import pytest
from faults import catalogue, expect_fault
from test_assets import CONTENT, SHA, LocalServer, body, closed_port_url

import utils.assets as assets
from utils.assets import Asset, AssetError, AssetUnavailable, UnknownAssetError, data_dir, fetch


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    server = LocalServer()
    folder = tmp_path / "data"
    monkeypatch.setenv("LLM_DATA_DIR", str(folder))
    monkeypatch.delenv("LLM_ASSET_MIRROR", raising=False)
    monkeypatch.delenv("LLM_DOWNLOAD_MIN_RATE", raising=False)
    monkeypatch.setenv("LLM_DOWNLOAD_TIMEOUT", "10")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    asset = Asset("hello.txt", (server.url("/a/hello.txt"),), SHA, len(CONTENT), "a test file")
    monkeypatch.setattr(assets, "ASSETS", {"hello": asset})
    yield SimpleNamespace(tmp=tmp_path, data=folder, server=server, mp=monkeypatch, asset=asset)
    server.close()


def env(name, value, call=lambda: fetch("hello")):
    def setup(c):
        c.mp.setenv(name, value)
        return call
    return setup


def served(action, **settings):
    def setup(c):
        for name, value in settings.items():
            c.mp.setenv(name, value)
        c.server.routes["/a/hello.txt"] = action(c)
        return lambda: fetch("hello")
    return setup


def trickle(c):
    def action(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(CONTENT)))
        h.end_headers()
        for byte in CONTENT:
            if c.server.release.is_set():
                return
            try:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)
    return action


def cached_bad_file(c):
    c.data.mkdir()
    (c.data / "hello.txt").write_bytes(CONTENT[:-5])
    return lambda: fetch("hello")


def data_dir_is_a_file(c):
    c.tmp.joinpath("afile").write_text("x")
    c.mp.setenv("LLM_DATA_DIR", str(c.tmp / "afile"))
    return lambda: fetch("hello")


def data_dir_under_a_file(c):
    c.tmp.joinpath("afile").write_text("x")
    c.mp.setenv("LLM_DATA_DIR", str(c.tmp / "afile" / "data"))
    c.server.routes["/a/hello.txt"] = body(CONTENT)
    return lambda: fetch("hello")


CASES = [
    ("unknown name", lambda c: lambda: fetch("the-verdikt"), UnknownAssetError, "known assets: hello"),
    ("LLM_DATA_DIR is a file", data_dir_is_a_file, ValueError, "LLM_DATA_DIR="),
    ("LLM_DATA_DIR not creatable", data_dir_under_a_file, ValueError, "point LLM_DATA_DIR at a folder you can write to"),
    ("LLM_DOWNLOAD_TIMEOUT text", env("LLM_DOWNLOAD_TIMEOUT", "thirty"), ValueError,
     "LLM_DOWNLOAD_TIMEOUT='thirty' is not a positive number"),
    ("LLM_DOWNLOAD_TIMEOUT zero", env("LLM_DOWNLOAD_TIMEOUT", "0"), ValueError, "set it to e.g. 30"),
    ("LLM_DOWNLOAD_TIMEOUT nan", env("LLM_DOWNLOAD_TIMEOUT", "nan"), ValueError, "LLM_DOWNLOAD_TIMEOUT='nan'"),
    ("LLM_DOWNLOAD_MIN_RATE negative", env("LLM_DOWNLOAD_MIN_RATE", "-5"), ValueError,
     "LLM_DOWNLOAD_MIN_RATE='-5' is not a non-negative number"),
    ("LLM_ASSET_MIRROR not a URL", env("LLM_ASSET_MIRROR", "my-mirror"), ValueError,
     "LLM_ASSET_MIRROR='my-mirror' is not a base URL"),
    ("LLM_ASSET_MIRROR ftp", env("LLM_ASSET_MIRROR", "ftp://example.org"), ValueError, "such as http://127.0.0.1:8000"),
    ("server trickles bytes", served(trickle, LLM_DOWNLOAD_TIMEOUT="1", LLM_DOWNLOAD_MIN_RATE="1000"),
     AssetUnavailable, "under the minimum of 1000 bytes/s (LLM_DOWNLOAD_MIN_RATE)"),
    ("404", served(lambda c: lambda h: h.send_error(404)), AssetUnavailable, "To place it by hand"),
    ("wrong bytes", served(lambda c: body(CONTENT[::-1])), AssetUnavailable, "sha256 mismatch"),
    ("truncated body", served(lambda c: body(CONTENT[:50], length=len(CONTENT))), AssetUnavailable, "by hand"),
    ("cached file does not verify", cached_bad_file, AssetError, "Delete it and run again"),
    ("nothing listens", lambda c: (c.mp.setattr(assets, "ASSETS", {"hello": Asset(
        "hello.txt", (closed_port_url("/a"),), SHA, None, "a test file")}), lambda: fetch("hello"))[1],
     AssetUnavailable, "refused"),
]


@catalogue(CASES)
def test_fault(ctx, case):
    expect_fault(case, ctx, ctx.tmp)


def test_a_cached_bad_file_is_not_unavailable(ctx):
    """gpt2_or_fallback falls back only on AssetUnavailable: a bad file in data/ must not look like one."""
    cached_bad_file(ctx)
    with pytest.raises(AssetError) as info:
        fetch("hello")
    assert not isinstance(info.value, AssetUnavailable)


def test_stale_part_files_are_removed_and_live_ones_kept(ctx, capsys):
    ctx.server.routes["/a/hello.txt"] = body(CONTENT)
    ctx.data.mkdir()
    stale = ctx.data / "hello.txt.0badc0de.part"
    stale.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    stale_dir = ctx.data / "hello.txt.abc.tmp"
    stale_dir.mkdir()
    (stale_dir / "download.zip").write_bytes(b"zip")
    os.utime(stale_dir / "download.zip", (old, old))
    os.utime(stale_dir, (old, old))
    live = ctx.data / "hello.txt.1ive1ive.part"  # another fetch writing right now
    live.write_bytes(b"y")
    other = ctx.data / "other.bin.0badc0de.part"  # another asset's: not ours to judge
    other.write_bytes(b"z")
    os.utime(other, (old, old))
    assert fetch("hello").read_bytes() == CONTENT
    assert not stale.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()
    assert "hello.txt.0badc0de.part" in capsys.readouterr().out


def test_data_dir_default_and_expanded(monkeypatch):
    monkeypatch.setenv("LLM_DATA_DIR", "")
    assert data_dir() == assets.REPO_ROOT / "data"
    monkeypatch.setenv("LLM_DATA_DIR", "~/llm-data")
    assert data_dir() == assets.Path("~/llm-data").expanduser()
