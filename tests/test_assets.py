"""utils.assets.fetch against a local HTTP server on 127.0.0.1: caching, verification, backups, faults.

Every failing case must raise AssetError naming the file and how to place it by hand, and leave nothing
(no file, part file, temp folder or empty file) in the data folder. No test here reaches the internet.
"""

import errno
import hashlib
import http.server
import io
import os
import socket
import stat
import threading
import urllib.parse
import zipfile
from pathlib import Path

import pytest

import utils.assets as assets
from utils.assets import Asset, AssetError, fetch, sha256_of

CONTENT = b"I HAD always thought Jack Gisburn rather a cheap genius--\n" * 20
SHA = hashlib.sha256(CONTENT).hexdigest()
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out and left: not a test failure
        pass


class LocalServer:
    """A server whose answer per path is a function of the handler; it counts every request."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        self.release = threading.Event()  # set at teardown so stalled handlers end
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.unquote(self.path)
                owner.requests.append(path)
                action = owner.routes.get(path)
                if action is None:
                    self.send_error(404)
                else:
                    action(self)

            def log_message(self, *args):
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{urllib.parse.quote(path)}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def body(data, *, status=200, length=None):
    """Answer `status` with `data`, announcing `length` bytes (default: the true length)."""

    def action(h):
        h.send_response(status)
        h.send_header("Content-Length", str(len(data) if length is None else length))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()
        h.close_connection = True

    return action


def status(code):
    return lambda h: h.send_error(code)


@pytest.fixture
def server():
    s = LocalServer()
    yield s
    s.close()


@pytest.fixture
def data(tmp_path, monkeypatch):
    """An empty data folder; no mirror unless a test sets one; localhost never proxied.

    The timeout is generous here (a busy machine must not fail a good download); the stall tests lower it to 1 s.
    """
    folder = tmp_path / "data"
    monkeypatch.setenv("LLM_DATA_DIR", str(folder))
    monkeypatch.delenv("LLM_ASSET_MIRROR", raising=False)
    monkeypatch.setenv("LLM_DOWNLOAD_TIMEOUT", "10")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return folder


def register(monkeypatch, server, **overrides):
    """Replace the registry by one small test asset served from /a/ then (backup) /b/."""
    fields = dict(
        filename="hello.txt",
        urls=(server.url("/a/hello.txt"), server.url("/b/hello.txt")),
        sha256=SHA,
        size=len(CONTENT),
        description="a test file",
    )
    fields.update(overrides)
    asset = Asset(**fields)
    monkeypatch.setattr(assets, "ASSETS", {"hello": asset})
    return asset


def listing(folder):
    """Everything in the data folder, recursively (a missing folder lists as empty)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def assert_failed_cleanly(excinfo, folder, asset):
    message = str(excinfo.value)
    assert asset.filename in message
    assert "by hand" in message and str(folder / asset.filename) in message
    assert listing(folder) == []


def zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buf.getvalue()


def closed_port_url(path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"  # nothing listens there any more: connection refused


# --- success ---------------------------------------------------------------------------------


def test_happy_path(server, data, monkeypatch):
    register(monkeypatch, server)
    server.routes["/a/hello.txt"] = body(CONTENT)
    path = fetch("hello")
    assert path == data / "hello.txt"
    assert path.read_bytes() == CONTENT and sha256_of(path) == SHA
    assert listing(data) == ["hello.txt"]
    assert server.requests == ["/a/hello.txt"]
    (data / "by-open.txt").write_bytes(b"")  # the fetched file gets the same permissions as any file written here
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((data / "by-open.txt").stat().st_mode)


def test_cache_hit_makes_no_request(server, data, monkeypatch):
    register(monkeypatch, server)
    server.routes["/a/hello.txt"] = body(CONTENT)
    first = fetch("hello")
    server.routes.clear()  # the server now has nothing: a second request would fail
    assert fetch("hello") == first
    assert server.requests == ["/a/hello.txt"]


def test_progress_bar_only_for_large_files(server, data, monkeypatch, capsys):
    big = bytes(range(256)) * 24_000  # 6.1 MB
    register(monkeypatch, server, filename="big.bin", sha256=hashlib.sha256(big).hexdigest(), size=len(big))
    server.routes["/a/hello.txt"] = body(big)
    fetch("hello")
    err = capsys.readouterr().err
    assert "big.bin" in err and "100%" in err
    register(monkeypatch, server)
    server.routes["/a/hello.txt"] = body(CONTENT)
    fetch("hello")
    assert capsys.readouterr().err == ""  # small files: no bar


def test_404_then_backup(server, data, monkeypatch):
    register(monkeypatch, server)
    server.routes["/b/hello.txt"] = body(CONTENT)
    assert fetch("hello").read_bytes() == CONTENT
    assert server.requests == ["/a/hello.txt", "/b/hello.txt"]
    assert listing(data) == ["hello.txt"]


def test_mirror_is_tried_first(server, data, monkeypatch):
    register(monkeypatch, server)
    server.routes["/mirror/hello.txt"] = body(CONTENT)
    server.routes["/a/hello.txt"] = body(CONTENT)
    monkeypatch.setenv("LLM_ASSET_MIRROR", server.url("/mirror") + "/")
    assert fetch("hello").read_bytes() == CONTENT
    assert server.requests == ["/mirror/hello.txt"]


def test_mirror_missing_falls_back_to_real_url(server, data, monkeypatch):
    register(monkeypatch, server)
    server.routes["/a/hello.txt"] = body(CONTENT)
    monkeypatch.setenv("LLM_ASSET_MIRROR", server.url("/mirror"))
    assert fetch("hello").read_bytes() == CONTENT
    assert server.requests == ["/mirror/hello.txt", "/a/hello.txt"]


def test_zip_member_is_extracted_and_verified(server, data, monkeypatch):
    payload = b"ham\tGo until jurong point\nspam\tFree entry\n"
    asset = register(
        monkeypatch, server, filename="Collection", urls=(server.url("/a/col+lection.zip"),),
        sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
        download_name="col+lection.zip", extract="Collection",
    )
    server.routes["/mirror/col+lection.zip"] = body(zip_bytes({"Collection": payload, "readme": b"about"}))
    monkeypatch.setenv("LLM_ASSET_MIRROR", server.url("/mirror"))
    path = fetch("hello")
    assert path == data / asset.filename and path.read_bytes() == payload
    assert listing(data) == ["Collection"]  # neither the zip nor the readme is kept
    assert server.requests == ["/mirror/col+lection.zip"]


def test_concurrent_fetches_do_not_collide(server, data, monkeypatch):
    register(monkeypatch, server)
    gate = threading.Barrier(2, timeout=5)

    def slow(h):  # both downloads are half-written at the same moment
        h.send_response(200)
        h.send_header("Content-Length", str(len(CONTENT)))
        h.end_headers()
        h.wfile.write(CONTENT[:100])
        h.wfile.flush()
        gate.wait()
        h.wfile.write(CONTENT[100:])

    server.routes["/a/hello.txt"] = slow
    results, errors = [], []

    def worker():
        try:
            results.append(fetch("hello"))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == [] and results == [data / "hello.txt"] * 2
    assert (data / "hello.txt").read_bytes() == CONTENT
    assert listing(data) == ["hello.txt"]


# --- failures: each one a clear error and an empty data folder --------------------------------


def test_wrong_hash_names_url_and_both_hashes(server, data, monkeypatch):
    asset = register(monkeypatch, server, urls=(server.url("/a/hello.txt"),))
    wrong = CONTENT.upper()  # same size, other bytes
    server.routes["/a/hello.txt"] = body(wrong)
    with pytest.raises(AssetError) as excinfo:
        fetch("hello")
    message = str(excinfo.value)
    assert server.url("/a/hello.txt") in message
    assert SHA in message and hashlib.sha256(wrong).hexdigest() in message
    assert_failed_cleanly(excinfo, data, asset)


def test_wrong_size_without_length_check_still_reports_hashes(server, data, monkeypatch):
    asset = register(monkeypatch, server, urls=(server.url("/a/hello.txt"),))
    server.routes["/a/hello.txt"] = body(b"<html>captive portal</html>")
    with pytest.raises(AssetError, match="sha256 mismatch") as excinfo:
        fetch("hello")
    assert_failed_cleanly(excinfo, data, asset)


def test_truncated_body(server, data, monkeypatch):
    asset = register(monkeypatch, server, urls=(server.url("/a/hello.txt"),), size=None)
    server.routes["/a/hello.txt"] = body(CONTENT[:300], length=len(CONTENT))  # then the server hangs up
    with pytest.raises(AssetError, match=rf"closed after 300 of {len(CONTENT)} bytes") as excinfo:
        fetch("hello")
    assert_failed_cleanly(excinfo, data, asset)


def test_server_error_500(server, data, monkeypatch):
    asset = register(monkeypatch, server)
    server.routes["/a/hello.txt"] = status(500)
    server.routes["/b/hello.txt"] = status(500)
    with pytest.raises(AssetError, match="HTTP Error 500") as excinfo:
        fetch("hello")
    assert server.requests == ["/a/hello.txt", "/b/hello.txt"]
    assert_failed_cleanly(excinfo, data, asset)


def test_garbage_response_then_backup(server, data, monkeypatch):
    register(monkeypatch, server)

    def garbage(h):
        h.wfile.write(b"this is not HTTP\r\n\r\n")
        h.close_connection = True

    server.routes["/a/hello.txt"] = garbage
    server.routes["/b/hello.txt"] = body(CONTENT)
    assert fetch("hello").read_bytes() == CONTENT
    assert listing(data) == ["hello.txt"]


def test_stall_before_headers_times_out(server, data, monkeypatch):
    monkeypatch.setenv("LLM_DOWNLOAD_TIMEOUT", "1")
    asset = register(monkeypatch, server, urls=(server.url("/a/hello.txt"),))
    server.routes["/a/hello.txt"] = lambda h: server.release.wait(30)  # accepts, then says nothing
    with pytest.raises(AssetError, match="timed out") as excinfo:
        fetch("hello")
    assert_failed_cleanly(excinfo, data, asset)


def test_stall_after_headers_times_out(server, data, monkeypatch):
    monkeypatch.setenv("LLM_DOWNLOAD_TIMEOUT", "1")
    asset = register(monkeypatch, server, urls=(server.url("/a/hello.txt"),))

    def stall(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(CONTENT)))
        h.end_headers()
        h.wfile.write(CONTENT[:100])
        h.wfile.flush()
        server.release.wait(30)

    server.routes["/a/hello.txt"] = stall
    with pytest.raises(AssetError, match="timed out") as excinfo:
        fetch("hello")
    assert_failed_cleanly(excinfo, data, asset)


def test_nothing_reachable(data, monkeypatch):
    urls = (closed_port_url("/a/hello.txt"), closed_port_url("/b/hello.txt"))
    asset = Asset("hello.txt", urls, SHA, len(CONTENT), "a test file")
    monkeypatch.setattr(assets, "ASSETS", {"hello": asset})
    monkeypatch.setenv("LLM_ASSET_MIRROR", closed_port_url("/mirror"))
    with pytest.raises(AssetError) as excinfo:
        fetch("hello")
    message = str(excinfo.value)
    assert message.count("refused") == 3  # the mirror and both real URLs were tried
    assert urls[0] in message  # the by-hand hint points at the real source, not the mirror
    assert_failed_cleanly(excinfo, data, asset)


def test_zip_without_the_member(server, data, monkeypatch):
    asset = register(
        monkeypatch, server, filename="Collection", urls=(server.url("/a/c.zip"),),
        download_name="c.zip", extract="Collection",
    )
    server.routes["/a/c.zip"] = body(zip_bytes({"readme": b"no collection here"}))
    with pytest.raises(AssetError, match="not a zip holding Collection") as excinfo:
        fetch("hello")
    assert "unzip it" in str(excinfo.value)
    assert_failed_cleanly(excinfo, data, asset)


def test_not_a_zip(server, data, monkeypatch):
    asset = register(
        monkeypatch, server, filename="Collection", urls=(server.url("/a/c.zip"),),
        download_name="c.zip", extract="Collection",
    )
    server.routes["/a/c.zip"] = body(b"<html>moved</html>")
    with pytest.raises(AssetError, match="not a zip") as excinfo:
        fetch("hello")
    assert_failed_cleanly(excinfo, data, asset)


def test_empty_body_for_an_unhashed_asset(server, data, monkeypatch):
    asset = register(monkeypatch, server, urls=(server.url("/a/hello.txt"),), sha256=None, size=None)
    server.routes["/a/hello.txt"] = body(b"")
    with pytest.raises(AssetError, match="empty file") as excinfo:
        fetch("hello")
    assert_failed_cleanly(excinfo, data, asset)


def test_unknown_asset_name_lists_known_ones():
    with pytest.raises(KeyError) as excinfo:
        fetch("the-verdikt")
    message = str(excinfo.value)
    assert "the-verdikt" in message
    for name in ["the-verdict", "sms-spam", "instruction-data", "gpt2-124M"]:
        assert name in message


def test_corrupt_cached_file_says_delete_it(server, data, monkeypatch):
    register(monkeypatch, server)
    server.routes["/a/hello.txt"] = body(CONTENT)
    data.mkdir()
    (data / "hello.txt").write_bytes(CONTENT[:-10])  # e.g. an interrupted copy by hand
    with pytest.raises(AssetError, match=r"exists but does not verify.*Delete it") as excinfo:
        fetch("hello")
    assert str(data / "hello.txt") in str(excinfo.value)
    assert server.requests == []  # the reader's file is neither replaced nor deleted behind their back
    assert listing(data) == ["hello.txt"]


# --- the real registry, served from the offline copies ------------------------------------------


@pytest.mark.skipif(
    not SHARED_DATA.is_dir() or not os.environ.get("LLM_ASSET_MIRROR"),
    reason="needs ../shared/data served by conftest.py as LLM_ASSET_MIRROR (offline copies); not on a reader's laptop",
)
def test_real_assets_from_offline_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ["the-verdict", "sms-spam", "instruction-data"]:
        asset = assets.ASSETS[name]
        path = fetch(name)
        assert path == tmp_path / asset.filename
        assert sha256_of(path) == asset.sha256 and path.stat().st_size == asset.size
    assert sha256_of(tmp_path / "SMSSpamCollection") == "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
    assert listing(tmp_path) == ["SMSSpamCollection", "instruction-data.json", "the-verdict.txt"]


# --- a full disk -----------------------------------------------------------------------------


class FillingDisk:
    """An unbuffered file on a disk with `room` bytes left: a write takes what fits (a short write), then, per
    `mode`, the next write raises ENOSPC ("enospc") or takes nothing without an error ("zero")."""

    def __init__(self, f, room, mode):
        self.f, self.room, self.mode = f, room, mode

    def write(self, data):
        if self.room == 0:
            if self.mode == "enospc":
                raise OSError(errno.ENOSPC, "No space left on device")
            return 0
        n = min(len(data), self.room)
        self.room -= n
        return self.f.write(bytes(data[:n]))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("mode", ["enospc", "zero"])
def test_a_full_disk_is_said_and_leaves_nothing(server, data, monkeypatch, mode):
    """A download that fills the disk says so (not 'sha256 mismatch'), tries no other source, keeps nothing."""
    asset = register(monkeypatch, server)
    server.routes["/a/hello.txt"] = body(CONTENT)
    real_open = open

    def small_disk(path, mode_="r", *args, **kwargs):
        f = real_open(path, mode_, *args, **kwargs)
        return FillingDisk(f, 100, mode) if str(path).endswith(".part") else f

    monkeypatch.setattr(assets, "open", small_disk, raising=False)  # the module's open(): the download's writer
    with pytest.raises(AssetError, match=r"the disk is full: could not write .*hello\.txt") as excinfo:
        fetch("hello")
    message = str(excinfo.value)
    assert "sha256" not in message and "LLM_DATA_DIR" in message and asset.filename in message
    assert server.requests == ["/a/hello.txt"]  # the backup would fill the same disk: not tried
    assert listing(data) == []
